"""Honest feature labels: every feature line of the configs says whether it is the paper's feature, the
roles that are not are listed in ``paper.inputs_differ``, and the run card / compare table mark them."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.compare import markdown_table
from pipeline.config import load_config
from pipeline.report import TABLE_METRICS, input_differences

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_feature_line_is_tagged_and_differences_are_declared() -> None:
    checked = 0
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        if "features" not in data:
            continue
        block = text.split("\nfeatures:", 1)[1].split("\nlabel_set:", 1)[0]
        for role in data["features"]:
            line = next(ln for ln in block.splitlines() if re.match(rf"\s+{role}:", ln))
            assert "[OURS]" in line or re.search(r"\[P\]|\[C\]", line.split("#", 1)[-1]), (path, line)
            ours = "[OURS]" in line
            declared = (data.get("paper") or {}).get("inputs_differ") or {}
            assert bool(declared.get(role)) == ours, (path, role)  # [OURS] <=> a declared difference
            checked += 1
    assert checked >= 15  # five methods x three roles


def test_run_card_and_compare_mark_inputs_that_differ() -> None:
    config = load_config("dmd", "demo-mosi")
    columns = {"text.roberta": {"random_weights": False}, "audio.opensmile": {"random_weights": False},
               "video.densenet": {"random_weights": True}}
    diff = input_differences(config, columns)
    assert len(diff) == 3 and "COVAREP" in diff[1] and "random-weight stand-in" in diff[2]
    assert input_differences({"features": {"audio": "audio.x"}}, {"audio.x": {}}) == []  # nothing declared
    row = {"method": "dmd", "status": "ok", "seeds": [0], "runs": [], "seconds": 1.0, "peak_rss_mb": 9.0,
           "peak_cuda_mb": None, "params": 10, "paper": {}, "paper_source": None, "inputs_differ": diff,
           "metrics": {n: {"mean": 0.5, "std": 0.0, "values": [0.5]} for n in TABLE_METRICS["regression"]}}
    md = markdown_table([row], "regression", title="t")
    assert "| dmd † |" in md and "† inputs differ from the paper's" in md and "COVAREP" in md
