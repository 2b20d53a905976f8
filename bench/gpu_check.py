"""GPU check of the trainer (run on a CUDA machine, from the repo root, with the demo caches built):

    python3 bench/gpu_check.py [--out DIR]

Trains every method on its demo cache in fp32 and bf16 through the real CLI (one Accelerate
process on the GPU), re-scores each run with `evaluate`, and prints a table: wall seconds, the test
headline metric, and whether `evaluate` reproduced it. Used to fill the GPU rows of bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = [("telme", "demo-meld", "weighted_f1"), ("cmath", "demo-meld", "weighted_f1"),
        ("summer", "demo-meld", "weighted_f1"), ("dmd", "demo-mosi", "mae"), ("dhmd", "demo-mosi", "mae")]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs-gpu")
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    p.add_argument("--methods", nargs="+", default=[m for m, _, _ in RUNS])
    a = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
          f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}", flush=True)
    rows = []
    for method, corpus, metric in [r for r in RUNS if r[0] in a.methods]:
        for prec in a.precisions:
            name = f"{method}-{prec}"
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "pipeline", "train", "--method", method, "--corpus", corpus,
                                "--cache-root", "cache", "--out", a.out, "--name", name,
                                "--set", f"train.mixed_precision={prec}"], capture_output=True, text=True)
            secs = time.perf_counter() - t0
            run = Path(a.out) / name
            if r.returncode:
                rows.append((method, prec, secs, "FAILED", "", r.stderr[-300:].replace("\n", " ")))
                continue
            m = json.loads((run / "metrics.json").read_text())
            e = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", str(run)], capture_output=True, text=True)
            ev = json.loads((run / "eval.json").read_text()) if e.returncode == 0 else None
            same = ev is not None and abs(ev["test"][metric] - m["test"][metric]) < 1e-6
            rows.append((method, prec, secs, f"{m['test'][metric]:.4f}", "yes" if same else "NO", metric))
            print(rows[-1], flush=True)
    print(f"\n| method | precision | wall s | test metric | evaluate reproduces | metric |\n|---|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]} | {r[4]} | {r[5]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
