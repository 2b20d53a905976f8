"""Generated clips and a MELD-layout corpus with the real corpus' properties, for ``bench/bench_scale.py``.

Real MELD (MELD.Raw): 13,708 utterance clips (train 9,989 / dev 1,109 / test 2,610 in 1,039 / 114 / 280
dialogues), H.264 1280x720 at ~24 fps with 48 kHz stereo AAC, mean duration ~3.5 s with a long tail (a few
clips past 30 s). :func:`meld_durations` draws durations from a log-normal with that mean (median 2.9 s,
clipped to [0.3, 40] s); :func:`write_clip` writes one clip with PyAV (libx264 + AAC, no ffmpeg binary);
:func:`write_meld_corpus` writes the ``{split}_sent_emo.csv`` files and clip folders the ``meld`` reader
reads. Clips are generated into a temp / cache dir, never committed.

The count axis copies a few dozen cheap template clips (same rate, channels and durations, small frames)
to 13,708 distinct files; the realism axis writes every clip at full size.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

MELD_SPLITS = {"train": (9989, 1039), "dev": (1109, 114), "test": (2610, 280)}  # utterances, dialogues
MELD_ROWS = sum(n for n, _ in MELD_SPLITS.values())  # 13,708
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "Season", "Episode", "StartTime", "EndTime")
EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SENTIMENT = {"neutral": "neutral", "surprise": "positive", "joy": "positive", "fear": "negative",
             "sadness": "negative", "disgust": "negative", "anger": "negative"}
WORDS = ("oh my god you know i mean what are we going to do about this okay so listen he said she told me "
         "that the apartment is really nice but wait why would you even think that hey").split()


@dataclass(frozen=True)
class ClipSpec:
    """What a generated clip looks like. Defaults: MELD's (1280x720, 24 fps, 48 kHz stereo)."""

    width: int = 1280
    height: int = 720
    fps: int = 24
    audio_rate: int = 48000
    channels: int = 2
    keyint: int = 250  # x264's default GOP (MELD's clips were cut with it: one keyframe per clip, mostly)


def meld_durations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` MELD-like durations in seconds: log-normal, median 2.9 s, mean ~3.5 s, clipped to [0.3, 40]."""
    return np.clip(rng.lognormal(mean=np.log(2.9), sigma=0.62, size=n), 0.3, 40.0)


def _frames(spec: ClipSpec, n: int, seed: int) -> np.ndarray:
    """``n`` frames of a drifting gradient with a moving block and a fixed noise texture (cheap to make,
    not trivially compressible)."""
    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                     np.full_like(xx, int(rng.integers(0, 256)))], -1).astype(np.int16)
    base += rng.integers(-12, 13, size=base.shape, dtype=np.int16)
    out = np.empty((n, h, w, 3), np.uint8)
    bh, bw = max(2, h // 4), max(2, w // 5)
    for t in range(n):
        img = np.roll(base, shift=3 * t, axis=1)
        y0 = int((h - bh) * (0.5 + 0.4 * np.sin(t / 7.0)))
        x0 = int((w - bw) * (0.5 + 0.4 * np.cos(t / 11.0)))
        img[y0:y0 + bh, x0:x0 + bw] = (t * 9) % 256
        out[t] = np.clip(img, 0, 255)
    return out


def _audio(spec: ClipSpec, n: int, seed: int) -> np.ndarray:
    """[channels, n] float32: a gliding tone plus noise, a different level per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / spec.audio_rate
    f0 = float(rng.uniform(120, 260))
    tone = 0.3 * np.sin(2 * np.pi * (f0 * t + 20 * t * t))
    chans = [(tone * (1.0 - 0.3 * c) + 0.02 * rng.standard_normal(n)) for c in range(spec.channels)]
    return np.stack(chans).astype(np.float32)


def write_clip(path: Path, duration: float, spec: ClipSpec = ClipSpec(), seed: int = 0) -> None:
    """One mp4: H.264 (libx264 ultrafast, yuv420p, GOP ``spec.keyint``) + AAC at ``spec.audio_rate``,
    ``spec.channels`` channels, ``duration`` seconds."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = max(1, int(round(duration * spec.fps)))
    n_samples = max(1024, int(round(duration * spec.audio_rate)))
    layout = "stereo" if spec.channels == 2 else "mono"
    with av.open(str(path), "w") as container:
        vs = container.add_stream("libx264", rate=spec.fps, options={
            "crf": "23", "preset": "ultrafast", "g": str(spec.keyint), "threads": "2"})
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, "yuv420p"
        aus = container.add_stream("aac", rate=spec.audio_rate, layout=layout)
        aus.bit_rate = 128_000
        for i, img in enumerate(_frames(spec, n_frames, seed)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            container.mux(vs.encode(vf))
        container.mux(vs.encode())
        af = av.AudioFrame.from_ndarray(_audio(spec, n_samples, seed), format="fltp", layout=layout)
        af.sample_rate, af.pts = spec.audio_rate, 0
        container.mux(aus.encode(af))
        container.mux(aus.encode())


def _time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def meld_rows(scale: float = 1.0) -> dict[str, list[tuple[int, int]]]:
    """(Dialogue_ID, Utterance_ID) of every utterance per split, MELD's counts times ``scale``."""
    out: dict[str, list[tuple[int, int]]] = {}
    for split, (n_utt, n_dia) in MELD_SPLITS.items():
        n_utt, n_dia = max(1, round(n_utt * scale)), max(1, round(n_dia * scale))
        per = np.full(n_dia, n_utt // n_dia)
        per[: n_utt % n_dia] += 1
        out[split] = [(d, u) for d in range(n_dia) for u in range(int(per[d]))]
    return out


def write_meld_corpus(root: Path, clips: Sequence[tuple[Path, float]], *, scale: float = 1.0, seed: int = 0,
                      copy_templates: bool = True) -> int:
    """A MELD.Raw-layout corpus under ``root`` with MELD's split/dialogue counts times ``scale``.

    ``clips`` are (file, duration) pairs: with ``copy_templates`` each utterance gets a COPY of a randomly
    drawn one (distinct files, so the planner stats and hashes every row), else utterance ``i`` gets
    ``clips[i]`` (moved into place). Returns the number of utterances."""
    import csv

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, keys in meld_rows(scale).items():
        folder = root / CLIP_DIRS[split]
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        clock = 30.0
        for dia, utt in keys:
            src, duration = clips[int(rng.integers(len(clips)))] if copy_templates else clips[k]
            dst = folder / f"dia{dia}_utt{utt}.mp4"
            shutil.copyfile(src, dst) if copy_templates else shutil.move(str(src), dst)
            emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 25))))
            rows.append([len(rows) + 1, text, f"Speaker{int(rng.integers(1, 7))}", emotion, SENTIMENT[emotion],
                         dia, utt, 1, 1, _time(clock), _time(clock + duration)])
            clock += duration + 0.5
            k += 1
            if not copy_templates and k >= len(clips):
                break
        with open(root / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows(rows)
        if not copy_templates and k >= len(clips):
            for rest in list(CLIP_DIRS)[list(CLIP_DIRS).index(split) + 1:]:
                (root / CLIP_DIRS[rest]).mkdir(parents=True, exist_ok=True)
                with open(root / f"{rest}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow(COLUMNS)
            break
    return k
