"""Feature-extraction benchmark (``make bench-features``): prints a table.

On the demo MELD corpus (generated if absent) replicated to 1x and 4x its size, same encoders
(the ``offline`` profile):

* utterances/s of a plain per-utterance loop (decode one clip, encode it, next) against the
  pipeline (batched, decoding in DataLoader workers overlapping encoder compute), outputs checked
  equal;
* peak RSS of the pipeline at 1x and 4x corpus size (each run in a fresh subprocess);
* the cost of an unchanged re-run as a fraction of the first run.

Targets (issue 4): pipeline >= 3x the plain loop on a 2-core machine, peak memory flat in corpus
size, re-run < 5% of the first run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def replicated(data, factor: int):
    """The corpus ``factor`` times over (distinct ids, the same media files)."""
    if factor == 1:
        return data
    out = copy.copy(data)
    out.records = []
    for k in range(factor):
        for r in data.records:
            r2 = copy.copy(r)
            r2.utterance_id = f"{r.utterance_id}#rep{k}"
            r2.dialogue_id = f"{r.dialogue_id}#rep{k}"
            out.records.append(r2)
    return out


def load_demo(demo_root: Path):
    from pipeline.corpora.base import read_corpus

    if not (demo_root / "train_sent_emo.csv").exists():
        from pipeline.corpora.demo import generate_demo

        generate_demo(demo_root, layout="meld")
    return read_corpus("meld", demo_root)


def child(args) -> None:
    """One measured run in its own process (so peak RSS is its own)."""
    import numpy as np

    from pipeline.extract import ExtractSettings, build_encoder, encoder_inputs, extract

    data = replicated(load_demo(Path(args.demo)), args.factor)
    encoders = args.encoders.split(",")
    out: dict = {"n": len(data.records)}
    if args.mode == "plain":
        settings = ExtractSettings(encoders=encoders, progress=False)
        items = encoder_inputs(data.records)
        vecs = {}
        t0 = time.perf_counter()
        for name in encoders:
            enc = build_encoder(name, settings)
            rows = []
            for it in items:
                rows.append(enc.encode([enc.load(it)]).vec[0])
            vecs[name] = np.stack(rows)
        out["seconds"] = time.perf_counter() - t0
        np.savez(args.dump, **vecs)
    else:
        settings = ExtractSettings(encoders=encoders, batch_size=args.batch_size, num_workers=args.workers,
                                   progress=False)
        t0 = time.perf_counter()
        extract(data, Path(args.cache), settings)
        out["seconds"] = time.perf_counter() - t0
        if args.dump:
            from pipeline.cache import load_cache

            c = load_cache(args.cache)
            import numpy as np

            cols = {}
            for name in encoders:
                col = next(k for k in c.meta["columns"] if c.meta["columns"][k]["encoder"] == name)
                cols[name] = np.concatenate([c.dataset[s].with_format("numpy")[col] for s in c.dataset])
            np.savez(args.dump, **cols)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def run_child(**kw) -> dict:
    cmd = [sys.executable, __file__, "--child"] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"benchmark child failed:\n{p.stderr[-4000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="pipeline")
    p.add_argument("--factor", type=int, default=1)
    p.add_argument("--demo", default=str(ROOT / "data" / "demo" / "meld"))
    p.add_argument("--cache", default="")
    p.add_argument("--dump", default="")
    p.add_argument("--encoders", default="roberta,roberta-context,data2vec,timesformer,opensmile,densenet")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0

    import numpy as np

    load_demo(Path(args.demo))  # generate once, outside the timings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = run_child(mode="plain", factor=1, demo=args.demo, encoders=args.encoders, dump=tmp / "plain.npz")
        first = run_child(mode="pipeline", factor=1, demo=args.demo, encoders=args.encoders, cache=tmp / "c1",
                          dump=tmp / "pipe.npz", batch_size=args.batch_size, workers=args.workers)
        rerun = run_child(mode="pipeline", factor=1, demo=args.demo, encoders=args.encoders, cache=tmp / "c1",
                          batch_size=args.batch_size, workers=args.workers)
        big = run_child(mode="pipeline", factor=4, demo=args.demo, encoders=args.encoders, cache=tmp / "c4",
                        batch_size=args.batch_size, workers=args.workers)
        a, b = np.load(tmp / "plain.npz"), np.load(tmp / "pipe.npz")
        max_diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files)
    n = plain["n"]
    rows.append(("plain per-utterance loop", n, plain["seconds"], n / plain["seconds"], plain["peak_rss_mb"]))
    rows.append(("pipeline, 1x corpus", n, first["seconds"], n / first["seconds"], first["peak_rss_mb"]))
    rows.append(("pipeline, unchanged re-run", n, rerun["seconds"], n / rerun["seconds"], rerun["peak_rss_mb"]))
    rows.append(("pipeline, 4x corpus", big["n"], big["seconds"], big["n"] / big["seconds"], big["peak_rss_mb"]))
    print(f"\nencoders: {args.encoders}  (offline profile; batch {args.batch_size}, {args.workers} decode workers, "
          f"{os.cpu_count()} cores)")
    print(f"| run | utterances | seconds | utt/s | peak RSS MB |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.0f} |")
    speedup = plain["seconds"] / first["seconds"]
    print(f"\npipeline speed-up over the plain loop: {speedup:.2f}x (target >= 3x)")
    print(f"unchanged re-run / first run: {rerun['seconds'] / first['seconds'] * 100:.1f}% (target < 5%)")
    print(f"peak RSS 4x / 1x: {big['peak_rss_mb'] / first['peak_rss_mb']:.2f} (target: flat)")
    print(f"max |plain - pipeline| over all features: {max_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
