"""``export RUN OUT`` (issue 17): a self-contained Hugging Face-style folder that predict takes as it takes the
run (the same probabilities), with a model card, and with nothing executable in it."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import one_torch_thread


@pytest.fixture(scope="module")
def fused(cmath_meld_runs) -> Path:
    return cmath_meld_runs["fused"][0]


@pytest.fixture(scope="module")
def exported(fused, tmp_path_factory) -> Path:
    from pipeline.__main__ import main

    out = tmp_path_factory.mktemp("export") / "cmath-demo-meld"
    assert main(["export", str(fused), str(out)]) == 0
    return out


def test_export_layout_and_model_card(exported, fused):
    from pipeline.export import EXPORT_FILES

    assert sorted(p.name for p in exported.iterdir()) == sorted(EXPORT_FILES)
    assert not any(p.stat().st_mode & stat.S_IXUSR for p in exported.iterdir())
    saved = json.loads((fused / "metrics.json").read_text())
    config = json.loads((exported / "config.json").read_text())
    labels = json.loads((exported / "labels.json").read_text())["labels"]
    assert config["method"] == "cmath" and config["final_stage"] == saved["final_stage"]
    assert config["id2label"] == {str(i): n for i, n in enumerate(labels)} and labels == saved["label_names"]
    metrics = json.loads((exported / "metrics.json").read_text())
    assert metrics["final_weights"] == "model.safetensors" and metrics["test"] == saved["test"] and "cache" not in metrics
    card = (exported / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "merc-toolkit" and front["datasets"] == ["demo-meld"]
    reported = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert reported["accuracy"] == round(saved["test"]["accuracy"], 4)
    for heading in ("## Metrics", "## Data", "## Feature recipe", "## Intended use", "## Limits"):
        assert heading in card
    assert f"| test | {saved['test']['accuracy']:.4f} |" in card and "selected on dev weighted_f1" in card
    features = json.loads((fused / "features.json").read_text())
    for col, c in features["columns"].items():
        assert f"`{col}`" in card and c["fingerprint"] in card
    # the weights are the run's, tensor for tensor
    from safetensors.torch import load_file

    ours, theirs = load_file(str(exported / "model.safetensors")), load_file(str(fused / saved["final_weights"]))
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)

    # no path of this machine in the recipe: the profile's encoders are rebuilt from the profile by predict
    recipe = (exported / "features.json").read_text()
    assert str(Path.home()) not in recipe and "site-packages" not in recipe, recipe[:2000]
    shared = json.loads(recipe)["columns"]
    assert set(shared) == set(features["columns"]) and all(shared[c]["kwargs"] is None for c in shared)
    assert all(shared[c]["fingerprint"] == features["columns"][c]["fingerprint"] for c in shared)


def test_predict_on_the_export_equals_the_run(exported, fused, demo_root):
    """The exported folder, moved away from everything, predicts what the run predicts."""
    from pipeline import load_run

    clips = sorted((demo_root / "meld" / "output_repeated_splits_test").glob("dia3_utt*.mp4"))[:4]
    dialogue = [{"file": c, "speaker": "A" if i % 2 else "B", "text": f"turn {i}: well, fine."}
                for i, c in enumerate(clips)]
    with one_torch_thread():
        ours = load_run(exported).predict(dialogue)
        theirs = load_run(fused).predict(dialogue)
    cols = [c for c in theirs.columns if c.startswith("p_")]
    assert len(cols) == 7 and len(ours) == len(clips)
    np.testing.assert_array_equal(ours[cols].to_numpy(), theirs[cols].to_numpy())
    assert list(ours["label"]) == list(theirs["label"])


def test_export_refuses_what_it_cannot_share(fused, exported, tmp_path, capsys):
    from pipeline.__main__ import main
    from pipeline.export import ExportError, export_run, verify_export
    from pipeline.predict import WeightsError

    # OUT taken
    assert main(["export", str(fused), str(exported)]) == 2
    assert "already exists" in capsys.readouterr().err
    # a copy of the export with code, a pickle or an executable bit slipped in is not an export
    for name, data in (("handler.py", b"import os\n"), ("pytorch_model.bin", pickle.dumps({"w": 1})),
                       ("model.safetensors", None)):
        copy = tmp_path / name.replace(".", "-")
        shutil.copytree(exported, copy)
        if data is None:
            os.chmod(copy / name, 0o755)
        else:
            (copy / name).write_bytes(data)
        with pytest.raises(ExportError, match=name):
            verify_export(copy)
    # a run whose weights are a pickle is refused before anything is written
    run = tmp_path / "pickled"
    shutil.copytree(fused, run)
    saved = json.loads((run / "metrics.json").read_text())
    (run / saved["final_weights"]).write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(WeightsError, match="pickle"):
        export_run(run, tmp_path / "out-pickled")
    assert not (tmp_path / "out-pickled").exists()
    # a run trained with plugin code: the export would need that code
    plugin = tmp_path / "plugin"
    shutil.copytree(fused, plugin)
    (plugin / "run.json").write_text(json.dumps({"plugins": ["my_methods.py"]}))
    assert main(["export", str(plugin), str(tmp_path / "out-plugin")]) == 2
    err = capsys.readouterr().err
    assert "plugin code" in err and "Traceback" not in err and not (tmp_path / "out-plugin").exists()
