"""Realistic-scale benchmark (``make bench-scale [ARGS=...]``, issue 16): prints markdown tables.

Generated clips with real MELD's properties (``bench/scale_clips.py``: 24 fps, 48 kHz stereo AAC, H.264,
log-normal durations with mean ~3.5 s and a long tail), on two axes:

* **count** (``--rows``, default MELD's 13,708): cheap clips (MELD's rate, channels and durations, frames of
  ``--cheap-size``) copied to one file per utterance of a MELD.Raw-layout corpus, extracted with
  ``--count-encoders`` (offline profile) at 1/4 and full size, then re-run unchanged: planning (read + row
  hashing), merge, peak RSS (each run in its own process), re-run cost and weights loaded by the re-run.
* **realism** (``--hd-clips``, default 200): 1280x720 clips. Per clip: the raw decoder's own all-frames rate
  (PyAV, one thread); decode-only cost of what the encoders consume, today's path (every encoder decodes for
  itself) against the grouped path (one decode per modality, resized once per size), outputs checked equal;
  the whole pipeline (``--hd-encoders``, offline profile) with its encode-only ceiling; all extrapolated to
  13,708 clips and printed as such.
* **paper** (``--paper-clips``, default 8; 0 skips): per-encoder encode throughput of the ``paper-random``
  profile (paper architectures, random weights) on HD clips, and its weight-loading time.

Everything is generated under ``--work`` (default ``~/.cache/merc/bench-scale``), reused when present.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale_clips import MELD_ROWS, ClipSpec, meld_durations, write_clip, write_meld_corpus  # noqa: E402

PAPER_SIZE = 224  # TimeSformer-base's and DenseNet-121's input side: what the realism decode resizes to


# ------------------------------------------------------------------------------------------ generation
def _ready(marker: Path) -> bool:
    return marker.exists()


def count_corpus(work: Path, rows: int, scale_name: str, cheap: int, seconds: tuple[float, float],
                 templates: int = 48) -> Path:
    """A MELD-layout corpus of ``rows`` utterances whose clips are copies of cheap templates (MELD's frame rate,
    audio rate and channels; ``cheap`` px high, ``seconds`` long: what the count axis measures -- planning, row
    hashing, merge, memory, re-run -- does not depend on the clip's length or size)."""
    import numpy as np

    tdir = work / f"templates-{cheap}-{seconds[0]}-{seconds[1]}"
    if not _ready(tdir / ".done"):
        durations = np.sort(np.random.default_rng(1).uniform(seconds[0], seconds[1], templates))
        spec = ClipSpec(width=cheap * 16 // 9 // 2 * 2, height=cheap)
        for i, d in enumerate(durations):
            write_clip(tdir / f"t{i:03d}.mp4", float(d), spec, seed=i)
        (tdir / "durations.json").write_text(json.dumps([float(d) for d in durations]))
        (tdir / ".done").write_text("")
    durations = json.loads((tdir / "durations.json").read_text())
    root = work / f"count-{scale_name}-{rows}-{tdir.name}"
    if not _ready(root / ".done"):
        t = time.perf_counter()
        n = write_meld_corpus(root, [(tdir / f"t{i:03d}.mp4", d) for i, d in enumerate(durations)],
                              scale=rows / MELD_ROWS, seed=2)
        (root / ".done").write_text(str(n))
        print(f"wrote {root} ({n} clips) in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def hd_corpus(work: Path, n: int) -> Path:
    """A MELD-layout corpus of ``n`` distinct 1280x720 clips (train split)."""
    import numpy as np

    root = work / f"hd-{n}"
    if not _ready(root / ".done"):
        tmp = work / f"hd-{n}-clips"
        durations = meld_durations(n, np.random.default_rng(3))
        t = time.perf_counter()
        clips = []
        for i, d in enumerate(durations):
            p = tmp / f"c{i:04d}.mp4"
            if not p.exists():
                write_clip(p, float(d), ClipSpec(), seed=100 + i)
            clips.append((p, float(d)))
        write_meld_corpus(root, clips, scale=1.0, seed=4, copy_templates=False)
        (root / ".done").write_text(str(n))
        print(f"wrote {root} ({n} HD clips, mean {durations.mean():.2f} s) in {time.perf_counter() - t:.0f} s",
              flush=True)
    return root


# ---------------------------------------------------------------------------------------- child runs
def child_extract(a: argparse.Namespace) -> None:
    """One ``features`` run in this process: phases timed, weights loaded counted, peak RSS."""
    from extractors.base import WEIGHT_LOADS
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, encoder_inputs, extract, row_key

    t0 = time.perf_counter()
    data = read_corpus("meld", a.root)
    data.name = "bench-scale"
    t_read = time.perf_counter() - t0
    t = time.perf_counter()
    items = encoder_inputs(data.records)
    for it in items:
        for m in ("text", "audio", "video"):
            row_key(it, m)
    t_hash = time.perf_counter() - t
    t = time.perf_counter()
    report = extract(data, Path(a.cache), ExtractSettings(encoders=a.encoders, profile=a.profile,
                                                          num_workers=a.workers, progress=False))
    # seconds: what a `features` run costs (read + extract); the separate hashing pass above is only measured
    out = {"rows": len(data.records), "seconds": t_read + time.perf_counter() - t, "extract_seconds": time.perf_counter() - t,
           "read_seconds": t_read, "hash_seconds": t_hash, "weight_loads": sum(WEIGHT_LOADS.values()),
           "rewrote": report["rewrote_dataset"],
           "columns": {c: {k: v.get(k) for k in ("computed", "seconds", "encode_seconds")}
                       for c, v in report["columns"].items()},
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("RESULT " + json.dumps(out))


def run_child(root: Path, cache: Path, encoders: list[str], profile: str, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--root", str(root), "--cache", str(cache), "--profile", profile,
           "--workers", str(workers), "--encoders", *encoders]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"child failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


# ---------------------------------------------------------------------------------------------- axes
def count_axis(a: argparse.Namespace, work: Path) -> None:
    import shutil

    quarter = count_corpus(work, max(1, a.rows // 4), "quarter", a.cheap_size, tuple(a.cheap_seconds))
    full = count_corpus(work, a.rows, "full", a.cheap_size, tuple(a.cheap_seconds))
    runs = []
    for label, root in (("1/4 corpus, first run", quarter), ("full corpus, first run", full)):
        cache = work / f"cache-{root.name}"
        shutil.rmtree(cache, ignore_errors=True)
        runs.append((label, run_child(root, cache, a.count_encoders, "offline", a.workers)))
        print(f"  {label}: {runs[-1][1]['seconds']:.0f} s", flush=True)
    runs.append(("full corpus, unchanged re-run", run_child(full, work / f"cache-{full.name}", a.count_encoders,
                                                            "offline", a.workers)))
    print(f"\n### count axis: {a.rows} rows, encoders {' '.join(a.count_encoders)} (offline profile), "
          f"{a.workers} workers, cheap clips: {a.cheap_size}p, {a.cheap_seconds[0]}-{a.cheap_seconds[1]} s, 24 fps, "
          f"48 kHz stereo AAC\n")
    print("| run | rows | seconds (read + extract) | utt/s | read corpus s | row hashing s (all columns) | "
          "weights loaded | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in runs:
        print(f"| {label} | {r['rows']} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:.1f} | "
              f"{r['read_seconds']:.2f} | {r['hash_seconds']:.2f} | {r['weight_loads']} | {r['peak_rss_mb']:.0f} |")
    first, rerun = runs[1][1], runs[2][1]
    print(f"\nunchanged re-run / first run: {100 * rerun['seconds'] / first['seconds']:.2f}% (target < 5%); "
          f"weights loaded by the re-run: {rerun['weight_loads']} (rewrote dataset: {rerun['rewrote']})")
    print(f"peak RSS full / quarter: {first['peak_rss_mb'] / runs[0][1]['peak_rss_mb']:.2f} (target: flat)")
    print("per column (full first run): " + ", ".join(f"{c} {v['encode_seconds']} s encode"
                                                       for c, v in first["columns"].items()))


def _decode_calls(path: str, sizes: tuple[int, ...]) -> list:
    """What the paper profile's encoders consume of one clip: 8 frames per video encoder (resized to its size)
    and the 16 kHz waveform per audio encoder (data2vec keeps the last 25 s; openSMILE all)."""
    from pipeline.media import load_audio, load_frames

    out = [load_frames(path, num_frames=8, size=s) for s in sizes]
    out += [load_audio(path, sample_rate=16000, max_seconds=25.0), load_audio(path, sample_rate=16000)]
    return out


def realism_axis(a: argparse.Namespace, work: Path) -> None:
    import av
    import numpy as np

    from pipeline import media

    root = hd_corpus(work, a.hd_clips)
    clips = sorted(str(p) for p in (root / "train_splits").glob("*.mp4"))
    seconds_total = 0.0
    frames_total = 0
    t = time.perf_counter()
    for c in clips:  # the raw decoder: every frame, no conversion, one thread
        with av.open(c) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            seconds_total += float(stream.duration * stream.time_base)
            for _ in container.decode(stream):
                frames_total += 1
    raw = time.perf_counter() - t
    rows = []
    outputs: dict[str, list] = {}
    for label, capacity in (("today: each encoder decodes for itself", 0), ("grouped: one decode per modality", 4)):
        media._DECODED.capacity = capacity
        media._DECODED._items.clear()
        t = time.perf_counter()
        outputs[label] = [_decode_calls(c, (PAPER_SIZE, PAPER_SIZE)) for c in clips]
        rows.append((label, time.perf_counter() - t))
    media._DECODED.capacity = 4
    equal = all(np.array_equal(x, y) for a_, b_ in zip(*outputs.values()) for x, y in zip(a_, b_))
    n = len(clips)
    print(f"\n### realism axis: {n} clips 1280x720 H.264 24 fps + AAC 48 kHz stereo, mean {seconds_total / n:.2f} s\n")
    print("| decode (one process, one thread) | s/clip | clips/s | 13,708 clips, 1 core (extrapolated) | "
          "13,708 clips, 16 workers (extrapolated, ideal) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| raw decoder, every frame (PyAV, {frames_total / raw:.0f} frames/s) | {raw / n:.3f} | {n / raw:.2f} | "
          f"{raw / n * MELD_ROWS / 60:.1f} min | {raw / n * MELD_ROWS / 16 / 60:.1f} min |")
    for label, s in rows:
        print(f"| {label} (2 video x 8 frames at {PAPER_SIZE}, 2 audio at 16 kHz) | {s / n:.3f} | {n / s:.2f} | "
              f"{s / n * MELD_ROWS / 60:.1f} min | {s / n * MELD_ROWS / 16 / 60:.1f} min |")
    print(f"\ngrouped / today decode time: {rows[1][1] / rows[0][1]:.2f}; outputs equal: {equal}")
    cache = work / f"cache-hd-{n}"
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    r = run_child(root, cache, a.hd_encoders, "offline", a.workers)
    enc = sum(v["encode_seconds"] or 0.0 for v in r["columns"].values())
    print(f"\npipeline on the HD clips ({' '.join(a.hd_encoders)}, offline profile, {a.workers} workers): "
          f"{r['rows']} utt in {r['extract_seconds']:.1f} s = {r['rows'] / r['extract_seconds']:.2f} utt/s "
          f"(13,708 extrapolated: {r['extract_seconds'] / r['rows'] * MELD_ROWS / 60:.0f} min); encode-only "
          f"ceiling {r['rows'] / max(enc, 1e-9):.2f} utt/s; decode-only (grouped, 1 process) "
          f"{n / rows[1][1]:.2f} utt/s; peak RSS {r['peak_rss_mb']:.0f} MB")
    print("per column: " + ", ".join(f"{c} encode {v['encode_seconds']} s" for c, v in r["columns"].items()))


def paper_axis(a: argparse.Namespace, work: Path) -> None:
    import torch

    from extractors.base import EncoderInput
    from pipeline.extract import build_encoder, ExtractSettings

    root = hd_corpus(work, a.hd_clips)
    clips = sorted(str(p) for p in (root / "train_splits").glob("*.mp4"))[: a.paper_clips]
    items = [EncoderInput(utterance_id=f"u{i}", text="oh my god you know what i mean i can not believe he said that",
                          speaker="Joey", history=[("Ross", "hey what is going on here")] * 6, video_path=c,
                          audio_path=c) for i, c in enumerate(clips)]
    print(f"\n### paper axis: paper-random profile (paper architectures, RANDOM weights), {len(items)} HD clips, "
          f"batch {a.batch_size}, {torch.get_num_threads()} torch threads, fp32 CPU\n")
    print("| encoder | params (M) | weights load s | load (decode/tokenize) s/utt | encode utt/s | "
          "13,708 utt encode, extrapolated |")
    print("|---|---:|---:|---:|---:|---:|")
    settings = ExtractSettings(encoders=[], profile="paper-random")
    for name in a.paper_encoders:
        enc = build_encoder(name, settings)
        t = time.perf_counter()
        model = getattr(enc, "model", None)
        load_s = time.perf_counter() - t
        params = sum(p.numel() for p in model.parameters()) / 1e6 if model is not None else 0.0
        t = time.perf_counter()
        samples = [enc.load(it) for it in items]
        prep = (time.perf_counter() - t) / len(items)
        enc.encode(samples[:1])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(samples), a.batch_size):
            enc.encode(samples[i:i + a.batch_size])
        s = time.perf_counter() - t
        print(f"| {name} | {params:.0f} | {load_s:.1f} | {prep:.3f} | {len(samples) / s:.2f} | "
              f"{s / len(samples) * MELD_ROWS / 3600:.1f} h |", flush=True)
        del enc, model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--axes", nargs="+", default=["count", "realism", "paper"], choices=["count", "realism", "paper"])
    p.add_argument("--work", default="~/.cache/merc/bench-scale")
    p.add_argument("--rows", type=int, default=MELD_ROWS)
    p.add_argument("--cheap-size", type=int, default=72, help="frame height of the count axis' clips (16:9)")
    p.add_argument("--cheap-seconds", nargs=2, type=float, default=[0.4, 1.0],
                   help="duration range of the count axis' clips")
    p.add_argument("--count-encoders", nargs="+", default=["roberta", "data2vec", "timesformer", "densenet"])
    p.add_argument("--hd-clips", type=int, default=200)
    p.add_argument("--hd-encoders", nargs="+",
                   default=["roberta", "roberta-context", "data2vec", "opensmile", "timesformer", "densenet"])
    p.add_argument("--paper-clips", type=int, default=8)
    p.add_argument("--paper-encoders", nargs="+", default=["roberta-context", "data2vec", "timesformer", "densenet"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--profile", default="offline", help=argparse.SUPPRESS)
    p.add_argument("--encoders", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child_extract(a)
        return 0
    import platform

    import torch

    work = Path(a.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}", flush=True)
    t = time.perf_counter()
    for axis in a.axes:
        {"count": count_axis, "realism": realism_axis, "paper": paper_axis}[axis](a, work)
    print(f"\nbench-scale: {time.perf_counter() - t:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
