"""The whole chain on the demo corpus: generated media -> offline features -> a method -> metrics.

The demo plants each utterance's label cue in every modality (40%) or in one modality only
(20% each). A fused model must beat each single-modality head of itself on the utterances whose cue
is in another modality: a broken fusion (one that ignores the audio-visual shift, say) equals the
text teacher there and misses the margin by construction.
"""
from __future__ import annotations

import pytest

MARGIN = 0.15


@pytest.fixture(scope="module")
def telme_run(demo_meld_cache, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.train import train

    config = load_config("telme", "demo-meld")
    out = tmp_path_factory.mktemp("runs") / "telme"
    result = train(config, demo_meld_cache, out, seed=config["train"]["seed"])
    return out, result


def test_telme_fusion_beats_each_modality_where_the_cue_is_elsewhere(telme_run, demo_root):
    from pipeline.analysis import cue_breakdown

    run_dir, result = telme_run
    b = cue_breakdown(run_dir, demo_root / "meld" / "demo_cues.csv")
    assert set(b["cue_elsewhere"]) == {"teacher", "student_audio", "student_video"}
    for head, v in b["cue_elsewhere"].items():
        assert v["n"] >= 30
        assert v["fused"] >= v["unimodal"] + MARGIN, (head, v)
    # each unimodal head did learn its own modality's cue (the features kept it)
    assert b["by_cue"]["teacher"]["text"] >= 0.5
    assert b["by_cue"]["student_audio"]["audio"] >= 0.5
    assert b["by_cue"]["student_video"]["video"] >= 0.5
    assert result["test"]["accuracy"] > 0.6  # 7 classes: chance is ~0.25 for the majority class


def test_telme_run_dir_has_every_report(telme_run):
    run_dir, _ = telme_run
    for name in ("metrics.json", "per_class.md", "confusion.png", "curves.png", "run_card.md", "config.yaml",
                 "stage-teacher.safetensors", "stage-fusion.safetensors"):
        assert (run_dir / name).is_file(), name
    card = (run_dir / "run_card.md").read_text()
    assert "dev" in card and "RANDOM" in card.upper()  # the selection rule and the random-weights warning
