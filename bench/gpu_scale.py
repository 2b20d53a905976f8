"""Paper-size chain on a lent GPU (issue 16, item 5): ``python bench/gpu_scale.py`` prints markdown tables.

Prepared on a CPU-only session; meant for one H100/H200-class GPU with 16 CPU cores, in one command that fits
a ~10 min device slot (``--clips`` sets the size; figures are extrapolated to MELD's 13,708 clips and printed as
such). Parts (``--parts``, all by default):

* ``machine``: GPU name, memory, torch / CUDA versions, CPU count (the table's header).
* ``clips``: ``--clips`` MELD-like 1280x720 clips (bench/scale_clips.py), written by 16 processes.
* ``encoders``: each ``paper-random`` encoder (RoBERTa-large, data2vec-audio-base, TimeSformer-base,
  DenseNet-121: the paper's architectures, random weights) in bf16 on the GPU: encoder-only utterances/s on
  pre-decoded samples (the ceiling) against the extract pipeline's (``--workers`` DataLoader workers decoding,
  grouped per modality); ratio (target >= 70%) and the 13,708-clip extrapolation (goal: all five paper
  encoders <= 5 min).
* ``decode``: decode-only throughput of the grouped CPU path on ``--workers`` workers, against GPU decode with
  ``torchcodec`` (CUDA) when it imports beside our torch (else the row says why not).
* ``train``: steps/s of each method on a MELD-sized cache (the demo cache's train split replicated to 9,989
  rows) in bf16, and CUDA kernel launches per training step (torch.profiler), eager and with
  ``torch.compile`` of the method.

Needs the demo caches for ``train`` (made here with ``python -m pipeline features`` when absent).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale_clips import MELD_ROWS, ClipSpec, meld_durations, write_clip, write_meld_corpus  # noqa: E402

PAPER = ["roberta-context", "roberta", "data2vec", "timesformer", "densenet"]  # the five paper encoders


def machine(a: argparse.Namespace) -> None:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0
    print(f"machine: {gpu} ({mem:.0f} GiB), torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)


def _one_clip(job: tuple[str, float, int]) -> None:
    path, duration, seed = job
    if not Path(path).exists():
        write_clip(Path(path), duration, ClipSpec(), seed=seed)


def clips(a: argparse.Namespace) -> Path:
    import numpy as np

    root = Path(a.work) / f"gpu-hd-{a.clips}"
    if (root / ".done").exists():
        return root
    tmp = Path(a.work) / f"gpu-hd-{a.clips}-clips"
    durations = meld_durations(a.clips, np.random.default_rng(5))
    jobs = [(str(tmp / f"c{i:05d}.mp4"), float(d), 1000 + i) for i, d in enumerate(durations)]
    t = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        list(pool.map(_one_clip, jobs, chunksize=4))
    write_meld_corpus(root, [(Path(p), d) for p, d, _ in jobs], copy_templates=False)
    (root / ".done").write_text(str(a.clips))
    print(f"clips: {a.clips} HD clips (mean {durations.mean():.2f} s) in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def _decoded(enc, items, a: argparse.Namespace) -> list:
    """``enc.load`` of ``items`` in DataLoader workers: the parent never opens a decoder (a decoder's threads
    in the parent can deadlock the workers it forks later)."""
    import torch

    from pipeline.extract import _collate, _Failed, _LoadDataset

    loader = torch.utils.data.DataLoader(_LoadDataset(enc, [(it.utterance_id, it) for it in items]),
                                         batch_size=a.batch_size, num_workers=max(1, a.workers), collate_fn=_collate)
    return [s for batch in loader for _, s in batch if not isinstance(s, _Failed)]


def encoders(a: argparse.Namespace) -> None:
    import torch

    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, build_encoder, encoder_inputs, extract

    root = clips(a)
    data = read_corpus("meld", root)
    data.name = "gpu-scale"
    items = encoder_inputs(data.records)
    device, dtype = torch.device("cuda" if torch.cuda.is_available() else "cpu"), torch.bfloat16
    print(f"\n### encoders: paper-random, bf16 on {device}, {len(items)} clips, batch {a.batch_size}\n")
    print("| encoder | encoder-only utt/s (ceiling) | pipeline utt/s | pipeline / ceiling | "
          "13,708 clips, pipeline (extrapolated) |")
    print("|---|---:|---:|---:|---:|")
    settings = ExtractSettings(encoders=[], profile="paper-random", batch_size=a.batch_size,
                               num_workers=a.workers, precision="bf16", progress=False)
    total = 0.0
    for name in a.encoders:
        enc = build_encoder(name, settings).to(device, dtype)
        samples = _decoded(enc, items[: a.ceiling_clips], a)
        enc.encode(samples[: a.batch_size])  # load + warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(samples), a.batch_size):
            enc.encode(samples[i:i + a.batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize()
        ceiling = len(samples) / (time.perf_counter() - t)
        cache = Path(a.work) / f"gpu-cache-{name}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        t = time.perf_counter()
        extract(data, cache, ExtractSettings(encoders=[enc], profile="paper-random", batch_size=a.batch_size,
                                             num_workers=a.workers, precision="bf16", progress=False))
        s = time.perf_counter() - t
        pipe = len(items) / s
        total += s / len(items) * MELD_ROWS
        print(f"| {name} | {ceiling:.1f} | {pipe:.1f} | {100 * pipe / ceiling:.0f}% | {s / len(items) * MELD_ROWS / 60:.1f} min |",
              flush=True)
        del enc
        torch.cuda.empty_cache() if device.type == "cuda" else None
    print(f"\nthe {len(a.encoders)} encoders run one by one, 13,708 clips (extrapolated): {total / 60:.1f} min")
    cache = Path(a.work) / "gpu-cache-all"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    t = time.perf_counter()
    report = extract(data, cache, ExtractSettings(encoders=list(a.encoders), profile="paper-random",
                                                  batch_size=a.batch_size, num_workers=a.workers, precision="bf16",
                                                  progress=False))
    s = time.perf_counter() - t
    print(f"all {len(a.encoders)} in ONE extract run (grouped per modality): {len(items) / s:.1f} utt/s, 13,708 clips "
          f"(extrapolated): {s / len(items) * MELD_ROWS / 60:.1f} min (goal <= 5 min); encode seconds per column: "
          + ", ".join(f"{c} {v['encode_seconds']}" for c, v in report["columns"].items()))


def decode(a: argparse.Namespace) -> None:
    import torch

    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ColumnJob, _collate, _GroupLoadDataset, encoder_inputs, group_rows
    from pipeline.extract import ExtractSettings, build_encoder

    root = clips(a)
    data = read_corpus("meld", root)
    items = encoder_inputs(data.records)
    settings = ExtractSettings(encoders=[], profile="paper-random")
    print(f"\n### decode: {len(items)} HD clips\n\n| decoder | clips/s | 13,708 clips (extrapolated) |\n|---|---:|---:|")
    for modality, names in (("video", ["timesformer", "densenet"]), ("audio", ["data2vec"])):
        jobs = [ColumnJob(build_encoder(n, settings), [(it.utterance_id, it) for it in items], Path("/nonexistent"))
                for n in names]
        ds = _GroupLoadDataset(jobs, group_rows(jobs))
        loader = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, num_workers=a.workers, collate_fn=_collate,
                                             prefetch_factor=4)
        t = time.perf_counter()
        n = sum(len(b) for b in loader)
        s = time.perf_counter() - t
        print(f"| CPU, grouped {modality} ({'+'.join(names)}), {a.workers} workers | {n / s:.1f} | "
              f"{s / n * MELD_ROWS / 60:.1f} min |", flush=True)
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as e:  # noqa: BLE001 - report why, do not fail the run
        print(f"| GPU (torchcodec, CUDA) | - | not available: {type(e).__name__}: {str(e)[:120]} |")
        return
    t = time.perf_counter()
    for it in items:
        dec = VideoDecoder(it.video_path, device="cuda")
        n_frames = dec.metadata.num_frames or 1
        idx = [min(n_frames - 1, int((k + 0.5) * n_frames / 8)) for k in range(8)]
        dec.get_frames_at(indices=idx)
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    print(f"| GPU (torchcodec, CUDA, 8 frames per clip, one process) | {len(items) / s:.1f} | "
          f"{s / len(items) * MELD_ROWS / 60:.1f} min |")


def _meld_sized(cache_dir: Path, out: Path, train_rows: int = 9989) -> Path:
    """The demo cache with its train split replicated to ``train_rows`` rows (new ids), dev/test as they are."""
    import datasets

    from pipeline.cache import CacheLock, load_cache, save_cache

    if (out / "meta.json").exists():
        return out
    cache = load_cache(cache_dir)
    train = cache.dataset["train"]
    k = -(-train_rows // len(train))
    parts = [train.map(lambda r, i=i: {"utterance_id": f"{r['utterance_id']}#{i}"}) for i in range(k)]
    big = datasets.concatenate_datasets(parts).select(range(train_rows))
    dd = datasets.DatasetDict({**{s: cache.dataset[s] for s in cache.dataset}, "train": big})
    meta = json.loads(json.dumps(cache.meta))
    meta.setdefault("num_rows", {})["train"] = train_rows
    with CacheLock(out):
        save_cache(out, dd, meta)
    return out


def train(a: argparse.Namespace) -> None:
    import torch

    from pipeline.cache import load_cache
    from pipeline.collate import make_loader, prepare_data
    from pipeline.config import load_config
    from pipeline.train import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\n### training steps on a MELD-sized cache (train 9,989 rows), bf16 autocast on {device}\n")
    print("| method | batch | eager steps/s | CUDA launches/step (eager) | compiled steps/s | launches/step (compiled) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method_name in a.methods:
        config = load_config(method_name)
        corpus = config["default_corpus"]
        demo_cache = demo_cache_dir(a, corpus)
        cache = load_cache(_meld_sized(demo_cache, Path(a.work) / "meld-sized" / corpus))
        data = prepare_data(config, cache, splits=("train",))
        stage = build_model(config, data).stages()[-1]
        bs = int(config["stages"][stage.name]["batch_size"])
        row = [method_name, str(bs)]
        for compiled in (False, True):
            torch.manual_seed(0)
            method = build_model(config, data).to(device)
            method.train()
            params = [p for p in method.param_groups(stage)]
            opt = torch.optim.AdamW(params, lr=1e-4)
            fwd = torch.compile(method) if compiled else method
            loader = make_loader(data.splits["train"], batch_size=bs)

            def step(batch) -> None:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    out = fwd(batch, stage=stage.name)
                    loss = sum(out.losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            it = iter(loader)
            for _ in range(3):
                step(next(it))  # warm-up (and compile)
            launches = _launches(step, next(it)) if device.type == "cuda" else 0
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            n = 0
            for batch in it:
                step(batch)
                n += 1
                if n >= a.train_steps:
                    break
            if device.type == "cuda":
                torch.cuda.synchronize()
            row += [f"{n / (time.perf_counter() - t):.1f}", str(launches)]
        print("| " + " | ".join(row) + " |", flush=True)


def demo_cache_dir(a: argparse.Namespace, corpus: str) -> Path:
    """The offline-profile cache of demo corpus ``corpus`` under ``--work`` (demo data and features made once)."""
    demo_root = Path(a.work) / "demo"
    cache = Path(a.work) / "demo-caches" / corpus
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not demo_root.exists():
        subprocess.run([sys.executable, "-m", "pipeline", "demo-data", "--out", str(demo_root)], check=True, cwd=ROOT,
                       env=env)
    if not (cache / "meta.json").exists():
        subprocess.run([sys.executable, "-m", "pipeline", "features", "--corpus", corpus, "--cache-root",
                        str(cache.parent), "--root", str(demo_root / corpus.split("-", 1)[1]), "--no-progress"],
                       check=True, cwd=ROOT, env=env)
    return cache


def _launches(step, batch) -> int:
    """CUDA kernel launches of one training step (torch.profiler's cudaLaunchKernel-family events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(batch)
    return sum(e.count for e in prof.key_averages() if "LaunchKernel" in e.key or "cuLaunch" in e.key)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["machine", "encoders", "decode", "train"],
                   choices=["machine", "clips", "encoders", "decode", "train"])
    p.add_argument("--work", default=os.environ.get("MERC_GPU_WORK", "/tmp/merc-gpu-scale"))
    p.add_argument("--clips", type=int, default=512, help="HD clips generated (extrapolated to 13,708)")
    p.add_argument("--ceiling-clips", type=int, default=128, help="clips of the encoder-only ceiling")
    p.add_argument("--encoders", nargs="+", default=PAPER)
    p.add_argument("--methods", nargs="+", default=["telme", "cmath", "summer", "dmd", "dhmd"])
    p.add_argument("--train-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    a = p.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    for part in a.parts:
        {"machine": machine, "clips": clips, "encoders": encoders, "decode": decode, "train": train}[part](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
