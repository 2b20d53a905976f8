"""The Python API (issue 17): the README's "From Python" example runs as written (its three path names pointed
at the session's demo corpus and cache), and its round trip extract -> train -> load_run -> predict gives
exactly what the command line gives for the same run (metrics and probabilities)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import one_torch_thread

REPO = Path(__file__).resolve().parents[1]
PATHS_LINE = 'DEMO, CACHE, RUNS = Path("data/demo"), Path("cache"), Path("runs")'


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def example(demo_root, demo_meld_cache, tmp_path_factory) -> dict:
    """The README example's namespace after running it: the demo and cache of the session (so the extract
    finds every feature in place and computes nothing), runs under a fresh folder."""
    code = readme_example()
    assert code.count(PATHS_LINE) == 1
    runs = tmp_path_factory.mktemp("api-runs")
    code = code.replace(PATHS_LINE, f"DEMO, CACHE, RUNS = Path({str(demo_root)!r}), "
                                    f"Path({str(demo_meld_cache.parent)!r}), Path({str(runs)!r})")
    before = json.loads((demo_meld_cache / "meta.json").read_text())
    namespace: dict = {"__name__": "readme_example"}
    with one_torch_thread():
        exec(compile(code, "README.md (From Python)", "exec"), namespace)
    assert json.loads((demo_meld_cache / "meta.json").read_text()) == before  # nothing re-extracted
    return namespace


def test_readme_example_round_trip(example, demo_meld_cache):
    from pipeline import Run
    from pipeline.cache import load_cache

    cache, run, predictions = example["cache"], example["run"], example["predictions"]
    assert cache.fingerprint() == load_cache(demo_meld_cache).fingerprint()
    assert isinstance(run, Run) and run.method == "cmath" and run.path.name == "cmath-quick"
    assert set(run.test_metrics()) >= {"accuracy", "weighted_f1", "macro_f1"}
    saved = json.loads((run.path / "run.json").read_text())
    assert saved["seeds"] == [0] and "stages.main.epochs=1" in saved["overrides"]
    assert saved["command"].startswith("python -m pipeline train --method cmath --corpus demo-meld")
    labels = run.label_names
    assert list(predictions["speaker"]) == ["Ross", "Chandler", "Joey"]
    assert list(predictions["position"]) == [0, 1, 2] and set(predictions["label"]) <= set(labels)
    probs = predictions[[f"p_{c}" for c in labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert list(predictions["label"]) == [labels[i] for i in probs.argmax(axis=1)]
    assert (example["RUNS"] / "cmath-quick-export" / "model.safetensors").is_file()


def test_api_equals_the_command_line(example, demo_meld_cache, tmp_path, capsys):
    """The same training and prediction through ``python -m pipeline``: the same metrics, the same probabilities."""
    from pipeline.__main__ import main

    run = example["run"]
    root = demo_meld_cache.parent
    with one_torch_thread():
        assert main(["train", "--method", "cmath", "--corpus", "demo-meld", "--cache-root", str(root), "--seeds", "0",
                     "--set", "stages.main.epochs=1", "--out", str(tmp_path), "--name", "cli"]) == 0
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert cli_metrics[split] == run.metrics[split]
    folder = tmp_path / "dialogue.csv"
    with folder.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "speaker", "text"])
        for turn in example["dialogue"]:
            w.writerow([turn["file"], turn["speaker"], turn["text"]])
    out = tmp_path / "p.json"
    with one_torch_thread():  # as the example ran: the same float sums
        assert main(["predict", str(tmp_path / "cli"), str(folder), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    labels = got["label_names"]
    cli_probs = np.array([[u["probabilities"][c] for c in labels] for u in got["utterances"]])
    api_probs = example["predictions"][[f"p_{c}" for c in labels]].to_numpy()
    np.testing.assert_array_equal(cli_probs, api_probs)
    assert [u["text"] for u in got["utterances"]] == list(example["predictions"]["text"])
    capsys.readouterr()


def test_api_errors_are_user_errors(example, tmp_path):
    from pipeline import load_run, train_method
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="metrics.json not found"):
        load_run(tmp_path)
    with pytest.raises(UserError, match="nosuch"):
        train_method("cmath", "nosuch", cache_root=tmp_path)
    with pytest.raises(UserError, match="dialogue given as rows"):
        example["run"].predict([{"clip": "a.mp4", "text": "hi"}])
