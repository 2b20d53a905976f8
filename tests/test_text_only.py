"""A corpus without clips (transcripts only) trains single-modality runs: a run reads only the feature columns of
the roles it uses (``pipeline.collate.used_features``), and ``features`` runs only the encoders of the modalities
the corpus has."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.__main__ import main


@pytest.fixture(scope="module")
def text_only_cache(demo_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("meld-text")
    for csv in (demo_root / "meld").rglob("*_sent_emo.csv"):  # the transcripts, no clip folders
        shutil.copy2(csv, root / csv.name)
    cache_root = tmp_path_factory.mktemp("cache-text")
    assert main(["features", "--corpus", "demo-meld", "--root", str(root), "--cache-root", str(cache_root),
                 "--no-progress", "--num-workers", "0"]) == 0
    return cache_root / "demo-meld"


def test_features_runs_only_the_text_encoders(text_only_cache):
    meta = json.loads((text_only_cache / "meta.json").read_text())
    assert meta["modalities"] == ["text"]
    assert meta["columns"] and all(col.startswith("text.") for col in meta["columns"])


@pytest.mark.parametrize("method, overrides", [
    ("cmath", ["model.modalities=[text]"]),
    ("summer", ["model.modalities=[text]"]),
    ("cmath", ["features.audio=null", "features.video=null"]),
])
def test_single_modality_run_on_a_text_only_cache(method, overrides, text_only_cache, tmp_path, capsys):
    sets = [a for o in overrides for a in ("--set", o)]
    epochs = {"cmath": ["stages.main.epochs=1"], "summer": ["stages.teacher.epochs=1", "stages.student.epochs=1"]}
    sets += [a for o in epochs[method] for a in ("--set", o)]
    code = main(["train", "--method", method, "--cache", str(text_only_cache), "--out", str(tmp_path),
                 "--name", "run", *sets])
    err = capsys.readouterr().err
    assert code == 0, err
    run = tmp_path / "run"
    features = json.loads((run / "features.json").read_text())
    assert list(features["features"]) == ["text"] and all(c.startswith("text.") for c in features["columns"])
    card = (run / "run_card.md").read_text()
    assert "- text:" in card and "- audio:" not in card
    assert "Truncated inputs (cache report.json): none" in card  # measured by the extract stage (demo texts fit)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] and all(isinstance(v, (int, float, dict, list)) for v in metrics["test"].values())


def test_a_fused_run_on_a_text_only_cache_names_the_missing_column(text_only_cache, tmp_path, capsys):
    code = main(["train", "--method", "cmath", "--cache", str(text_only_cache), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "audio.opensmile" in err and "make features" in err
