"""The Makefile's variables honoured end to end: `make train` with CACHE, RUNS and DEMO_DATA pointing
elsewhere reads the demo from DEMO_DATA, writes the cache under CACHE and the run under RUNS.

The chain runs for real (features -> train), against a throwaway VENV directory whose `python` forwards
to this interpreter, whose dependency stamp exists and whose `.project-dir` names this checkout, so the
`install` prerequisite has nothing to do; its `pip` fails loudly if anything calls it anyway (the shared
environment is never re-pointed)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _inert_venv(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    python = path / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    pip = path / "bin" / "pip"
    pip.write_text('#!/bin/sh\necho "test_makefile: pip must not run here" >&2\nexit 97\n')
    for f in (python, pip):
        f.chmod(0o755)
    (path / ".deps-installed").touch()
    (path / ".project-dir").write_text(f"{REPO}\n")
    return path


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_train_honours_cache_runs_and_demo_data(tmp_path: Path) -> None:
    from pipeline.corpora.demo import generate_demo

    demo = tmp_path / "elsewhere" / "demo"
    # a small MUStARD demo where `make demo-data DEMO_DATA=...` would put it (the layout's folder)
    generate_demo(demo / "mustard", layout="mustard", n_dialogues={"BBT": 6, "FRIENDS": 4, "GOLDENGIRLS": 2,
                                                                   "SARCASMOHOLICS": 2})
    cache, runs = tmp_path / "my-cache", tmp_path / "my-runs"
    before = {p: p.exists() for p in (REPO / "data" / "demo" / "mustard", REPO / "cache" / "demo-mustard")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("MAKEFLAGS", None)
    cmd = ["make", "--no-print-directory", "-C", str(REPO), "train", f"VENV={_inert_venv(tmp_path / 'venv')}",
           "METHOD=dhmd", "CORPUS=demo-mustard", f"CACHE={cache}", f"RUNS={runs}", f"DEMO_DATA={demo}",
           "ENCODERS=roberta opensmile densenet", "SET=stages.main.epochs=1"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert "pip must not run" not in p.stderr
    assert (cache / "demo-mustard" / "meta.json").is_file()  # CACHE
    report = json.loads((cache / "demo-mustard" / "report.json").read_text())
    assert Path(report["reader"]["root"]).resolve() == (demo / "mustard").resolve()  # DEMO_DATA was read
    metrics = list(runs.rglob("metrics.json"))  # RUNS
    assert len(metrics) == 1 and metrics[0].parent.parent == runs, metrics
    for path, existed in before.items():  # nothing went to the default places
        assert path.exists() == existed, path


def test_features_on_a_missing_root_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "pipeline", "features", "--corpus", "demo-meld", "--root",
                        str(tmp_path / "nowhere"), "--cache-root", str(tmp_path / "c"), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "nowhere") in lines[0] and "demo-data" in lines[0], lines
