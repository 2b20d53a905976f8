"""``compare`` on the demo MELD cache: one row per method, numbers that are those of each run's
metrics.json (mean and sample std over two seeds), the unfit methods skipped with a reason, and the
paper's number beside ours where the corpus config carries one. One epoch per stage (CI time)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def compared(demo_meld_cache, tmp_path_factory) -> tuple[Path, list[dict]]:
    from pipeline.compare import cli

    out = tmp_path_factory.mktemp("compare")
    code = cli(["--cache", str(demo_meld_cache), "--seeds", *map(str, SEEDS), "--epochs", "1",
                "--set-all", "train.eval_batch_size=8", "--out", str(out)])
    assert code == 0
    with (out / "compare.csv").open() as f:
        return out, list(csv.DictReader(f))


def test_one_row_per_method(compared):
    import models  # noqa: F401
    from models.base import METHODS

    out, rows = compared
    assert sorted(r["method"] for r in rows) == METHODS.names()
    status = {r["method"]: r for r in rows}
    # the demo MELD cache stores vectors: the utterance and dialogue methods train, the sequence ones cannot
    assert {"telme", "cmath", "summer"} <= {m for m, r in status.items() if r["status"] == "ok"}
    for m in ("dmd", "dhmd"):
        assert status[m]["status"] == "skipped" and "sequences" in status[m]["reason"]
    md = (out / "compare.md").read_text()
    for m, r in status.items():
        if r["status"] == "ok":
            assert r["inputs_differ"]  # offline features: never the paper's inputs
            assert md.count(f"| {m} † | {len(SEEDS)} |") == 1  # † = inputs differ from the paper's
        else:
            assert f"- {m}: skipped: " in md
    assert (out / "compare.png").stat().st_size > 1000


def test_numbers_are_the_runs_metrics(compared):
    out, rows = compared
    trained = [r for r in rows if r["status"] == "ok"]
    assert trained
    for r in trained:
        runs = [Path(p) for p in r["runs"].split()]
        assert [p.name for p in runs] == [f"seed-{s}" for s in SEEDS] and r["seeds"] == " ".join(map(str, SEEDS))
        metrics = [json.loads((p / "metrics.json").read_text()) for p in runs]
        for p in runs:  # trained through the trainer with compare's overrides and nothing else
            config = yaml.safe_load((p / "config.yaml").read_text())
            assert config["train"]["eval_batch_size"] == 8
            assert {s["epochs"] for s in config["stages"].values()} == {1}
        assert [m["seed"] for m in metrics] == list(SEEDS)
        for name in ("accuracy", "weighted_f1", "macro_f1"):
            values = np.array([m["test"][name] for m in metrics])
            assert float(r[f"{name}_mean"]) == pytest.approx(values.mean(), abs=1e-9)
            assert float(r[f"{name}_std"]) == pytest.approx(values.std(ddof=1), abs=1e-9)
            assert f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" in (out / "compare.md").read_text()
        resources = [json.loads((p / "resources.json").read_text()) for p in runs]
        assert float(r["train_seconds_per_seed"]) == pytest.approx(np.mean([x["seconds"] for x in resources]))
        assert float(r["peak_rss_mb"]) > 50 and int(r["params"]) > 0
        assert r["paper_weighted_f1"] == ""  # no paper reports the demo corpus
    assert len({r["params"] for r in trained}) == len(trained)  # each method counted on its own model


def test_paper_numbers_come_from_the_corpus_config(tmp_path):
    """MELD's TelME config carries the paper's W-F1; the table puts it beside ours."""
    from pipeline.compare import markdown_table
    from pipeline.config import load_config

    config = load_config("telme", "meld")
    assert config["paper"]["test"] == {"weighted_f1": 0.6737}
    assert "test" not in load_config("telme", "demo-meld")["paper"]  # only base.yaml's inputs_differ
    row = {"method": "telme", "status": "ok", "seeds": [0, 1], "runs": [], "seconds": 1.0, "peak_rss_mb": 900.0,
           "peak_cuda_mb": None, "params": 10,
           "metrics": {n: {"mean": 0.5, "std": 0.01, "values": [0.49, 0.51]}
                       for n in ("accuracy", "weighted_f1", "macro_f1")},
           "paper": config["paper"]["test"], "paper_source": config["paper"]["source"]}
    md = markdown_table([row], "classification", title="t")
    assert "| 0.5000 ± 0.0100 (paper 0.6737) |" in md and "NAACL 2024" in md
