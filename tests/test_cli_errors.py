"""One error policy for every command (pipeline/errors.py): bad arguments and bad files give ONE line on stderr
naming the file / key and exit code 2, never a traceback; ``--debug`` shows the traceback."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of ``python -m pipeline ARGV`` run in this process (argparse errors included)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    for n in needles:
        assert n in err, (n, err)


def _bad_meld(root: Path) -> Path:
    from test_corpora import default_meld_rows, meld_row, write_meld

    rows = default_meld_rows()
    rows["train"][2] = meld_row(9, 10, 0, "Bad label.", "Chandler", "angry", "negative")
    rows["dev"][1] = meld_row(2, 0, 1, "x", start="soon")
    return write_meld(root, rows)


def test_every_command_gives_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing"
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["read", "--corpus", "nosuch"], ["unknown corpus 'nosuch'"]),
        (["read", "--corpus", "demo-meld", "--root", str(missing)], [str(missing), "corpus root not found"]),
        (["features", "--corpus", "nosuch"], ["unknown corpus 'nosuch'"]),
        (["features", "--corpus", "demo-meld", "--root", str(missing)], [str(missing)]),
        (["train", "--resume", str(missing)], [str(missing / "run.json"), "not a run dir"]),
        (["train", "--method", "cmath", "--cache", str(missing)], [str(missing / "meta.json"), "make features"]),
        (["evaluate", str(missing)], [str(missing), "not a run dir"]),
        (["predict", str(missing), str(tmp_path / "clip.mp4")], [str(missing / "metrics.json")]),
        (["compare", "--cache", str(missing)], [str(missing), "not a features cache"]),
        (["analyse", str(missing), "--cues", str(tmp_path / "cues.csv")], [str(missing)]),
        (["demo-data", "--out", str(tmp_path / "a-file")], ["a-file", "is a file"]),
        (["demo-data", "--out", str(tmp_path / "d"), "--layout", "nosuch"], ["nosuch"]),
    ]
    for argv, needles in cases:
        code, err = run_main(argv, capsys)
        assert_one_line(code, err, *needles)
        assert err.startswith(f"{argv[0]}: error:") or err.startswith("usage:"), err


def test_unknown_encoder_and_strict_reader(tmp_path, capsys):
    root = _bad_meld(tmp_path / "meld")
    code, err = run_main(["features", "--corpus", "demo-meld", "--root", str(root), "--encoders", "nosuch",
                          "--cache-root", str(tmp_path / "cache"), "--no-progress"], capsys)
    assert_one_line(code, err, "unknown encoder 'nosuch'")
    # without --strict the bad rows are listed as skips with file:line and the read goes on
    code = main(["read", "--corpus", "demo-meld", "--root", str(root)])
    out = capsys.readouterr().out
    assert code == 0
    assert "train_sent_emo.csv:4" in out and "unknown emotion 'angry'" in out
    assert "dev_sent_emo.csv:3" in out and "bad time 'soon'" in out
    # --strict lists every skip, then stops with one line
    code = main(["read", "--corpus", "demo-meld", "--root", str(root), "--strict"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert "unknown emotion 'angry'" in captured.out and "bad time 'soon'" in captured.out
    assert "--strict" in captured.err and "skip(s)" in captured.err
    code, err = run_main(["features", "--corpus", "demo-meld", "--root", str(root), "--strict",
                          "--cache-root", str(tmp_path / "cache"), "--no-progress"], capsys)
    assert code == 2 and "--strict" in err
    assert not (tmp_path / "cache" / "demo-meld" / "meta.json").exists()  # stopped before extracting


def test_run_dir_errors(demo_meld_cache, tmp_path, capsys):
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    (out / "taken" / "run.json").write_text("{}")
    code, err = run_main(["train", "--method", "cmath", "--cache", str(demo_meld_cache), "--out", str(out),
                          "--name", "taken"], capsys)
    assert_one_line(code, err, str(out / "taken"), "already holds a run", "--resume")
    code, err = run_main(["train", "--method", "nosuch", "--cache", str(demo_meld_cache), "--out", str(out)], capsys)
    assert_one_line(code, err, "nosuch")
    # a run dir whose weights are a pickle: refused before anything is unpickled, one line
    run = tmp_path / "pickled"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "cmath"}))
    (run / "metrics.json").write_text(json.dumps({"final_weights": "stage-main.safetensors", "final_stage": "main",
                                                  "cache": str(demo_meld_cache)}))
    (run / "stage-main.safetensors").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    code, err = run_main(["evaluate", str(run)], capsys)
    assert_one_line(code, err, "stage-main.safetensors", "pickle")


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "pipeline", "read", "--corpus", "demo-meld", "--root", str(tmp_path / "none")]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.count("\n") == 1 and "corpus root not found" in plain.stderr
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "CorpusError" in debug.stderr
