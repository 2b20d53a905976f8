"""Decode audio and video of one utterance into numpy arrays.

Two entry points, used by the encoders' ``load`` (in DataLoader workers):

* :func:`load_audio` -> float32 mono waveform at ``sample_rate``.
  Decoders are tried in order: decord (``AudioReader``), PyAV, and for sound files (.wav, .flac,
  .ogg) soundfile. A decoder that returns another rate is resampled with
  ``torchaudio.functional.resample``.
* :func:`load_frames` -> uint8 ``[T, H, W, 3]`` RGB frames sampled uniformly over a time span.
  Decoders: decord (``VideoReader``), then PyAV.

Every problem with the *file* (missing, zero bytes, corrupt, no audio stream, a span outside the
clip) raises :class:`MediaError`, whose message starts with the file name. Bad *arguments*
(a negative ``num_frames``, an unknown ``side``) raise ``ValueError``.

A long file (an IEMOCAP dialogue video) is read once per utterance; the last two opened decord
readers are kept per process so that consecutive utterances of one file do not re-open (and, for
audio, re-decode) it.
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

AUDIO_BACKENDS: tuple[str, ...] = ("decord", "pyav", "soundfile")
VIDEO_BACKENDS: tuple[str, ...] = ("decord", "pyav")
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})
SIDES = ("left", "right")


class MediaError(ValueError):
    """A media file that cannot be used. The message names the file."""


# ----------------------------------------------------------------------------- small helpers


def _check_file(path: str | Path) -> Path:
    """Cheap validation before any decoder is started."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: file not found")
    if not p.is_file():
        raise MediaError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")
    return p


def _check_span(path: Path, start: float | None, end: float | None) -> None:
    for name, v in (("start", start), ("end", end)):
        if v is not None and (not math.isfinite(v) or v < 0):
            raise MediaError(f"{path}: bad {name}={v!r} (must be a finite time >= 0 in seconds)")
    if start is not None and end is not None and end < start:
        raise MediaError(f"{path}: span end {end:.3f}s is before its start {start:.3f}s")


class _ReaderCache:
    """A tiny per-process LRU of opened readers. Keyed by path, size and mtime (a rewritten file is
    re-opened); cleared after a fork because decoder handles are not fork-safe."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._pid = os.getpid()
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if os.getpid() != self._pid:
            # Forked from a process that held open readers: never close them here. Their destructors join
            # decoder threads that do not exist in the child and would hang it forever (seen: a DataLoader
            # worker forked after `predict` decoded in the parent). They are left alive, unused.
            _INHERITED.append(self._items)
            self._items = OrderedDict()
            self._pid = os.getpid()
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


_INHERITED: list[Any] = []  # readers opened by the parent of a forked process (see _ReaderCache.get)
_AUDIO_READERS = _ReaderCache()
_VIDEO_READERS = _ReaderCache()
# The last decoded spans of this process: the encoders of one modality load an utterance one after the other
# (pipeline.extract.compute_group), so the second one reuses the first one's decode. Callers get copies.
_DECODED = _ReaderCache(capacity=4)


def _file_key(p: Path, *extra: Any) -> tuple[Any, ...]:
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, *extra)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling with ``torchaudio.functional.resample`` (float32 in, float32 out)."""
    if orig_rate == new_rate:
        return wave.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(orig_rate), int(new_rate))
    return out.numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- audio decoders
# Each returns (mono float32 waveform cut to [start, end], its sample rate).


def _short(e: BaseException) -> str:
    """One line of a decoder's error, without decord's ``[time] source.cc:line:`` prefix."""
    text = str(e).strip()
    line = text.splitlines()[-1] if text else ""
    return f"{type(e).__name__}: " + re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", line)


def _slice_seconds(wave: np.ndarray, rate: int, start: float | None, end: float | None) -> np.ndarray:
    a = 0 if start is None else int(round(start * rate))
    b = len(wave) if end is None else int(round(end * rate))
    return wave[a:b]


def _audio_decord(p: Path, start: float | None, end: float | None, rate: int) -> tuple[np.ndarray, int]:
    import decord

    def make() -> np.ndarray:
        reader = decord.AudioReader(str(p), sample_rate=rate, mono=True)
        return reader[:].asnumpy().reshape(-1).astype(np.float32, copy=False)

    wave = _AUDIO_READERS.get(_file_key(p, "decord", rate), make)
    return _slice_seconds(wave, rate, start, end), rate


def _audio_pyav(p: Path, start: float | None, end: float | None, rate: int) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(p)) as container:
        if not container.streams.audio:
            raise MediaError(f"{p}: no audio stream")
        stream = container.streams.audio[0]
        if start:
            container.seek(int(start * av.time_base), any_frame=False)  # container-level seek, microseconds
        # Downmix + planar float, native rate (resampled below with torchaudio).
        resampler = av.AudioResampler(format="fltp", layout="mono")
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        native = int(stream.rate or stream.codec_context.sample_rate)
        for frame in container.decode(stream):
            t = frame.time
            if end is not None and t is not None and t > end:
                break
            for out in resampler.resample(frame):
                if first_time is None:
                    first_time = float(t) if t is not None else 0.0
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, np.float32), native
    wave = np.concatenate(chunks).astype(np.float32, copy=False)
    offset = first_time or 0.0
    a = 0 if start is None else max(0, int(round((start - offset) * native)))
    b = len(wave) if end is None else max(a, int(round((end - offset) * native)))
    return wave[a:b], native


def _audio_soundfile(p: Path, start: float | None, end: float | None, rate: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if p.suffix.lower() not in SOUNDFILE_SUFFIXES:
        raise MediaError(f"{p}: soundfile only reads {sorted(SOUNDFILE_SUFFIXES)}")
    info = sf.info(str(p))
    native = int(info.samplerate)
    a = 0 if start is None else int(round(start * native))
    b = None if end is None else int(round(end * native))
    data, _ = sf.read(str(p), start=a, stop=b, dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32, copy=False), native


_AUDIO_DECODERS: dict[str, Callable[[Path, float | None, float | None, int], tuple[np.ndarray, int]]] = {
    "decord": _audio_decord,
    "pyav": _audio_pyav,
    "soundfile": _audio_soundfile,
}


def load_audio(
    path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    backends: Sequence[str] | None = None,
) -> np.ndarray:
    """Decode ``[start, end]`` seconds of ``path`` (whole file when ``None``) to a float32 mono
    waveform at ``sample_rate``.

    ``max_seconds`` keeps the LAST ``max_seconds`` of the span (TelME keeps the last 400k samples).
    ``backends`` restricts/reorders the decoders (default ``AUDIO_BACKENDS``; soundfile only for
    .wav/.flac/.ogg). Raises :class:`MediaError` for a missing, empty or corrupt file, a file without
    an audio stream, or a span with zero samples.
    """
    p = _check_file(path)
    _check_span(p, start, end)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    order = list(backends) if backends is not None else list(AUDIO_BACKENDS)
    for b in order:
        if b not in _AUDIO_DECODERS:
            raise ValueError(f"unknown audio backend {b!r}; known: {', '.join(_AUDIO_DECODERS)}")
    if p.suffix.lower() not in SOUNDFILE_SUFFIXES and backends is None:
        order = [b for b in order if b != "soundfile"]
    wave = _DECODED.get(_file_key(p, "audio", start, end, sample_rate, tuple(order)),
                        lambda: _decode_audio(p, start, end, sample_rate, order))
    if max_seconds is not None:
        wave = wave[-int(round(max_seconds * sample_rate)):]
    return wave.copy()


def _decode_audio(p: Path, start: float | None, end: float | None, sample_rate: int, order: list[str]) -> np.ndarray:
    """The first decoder in ``order`` that works, resampled to ``sample_rate`` (see :func:`load_audio`)."""
    errors: list[str] = []
    for name in order:
        try:
            wave, rate = _AUDIO_DECODERS[name](p, start, end, sample_rate)
        except MediaError as e:
            errors.append(f"{name}: {str(e).removeprefix(f'{p}: ')}")
            continue
        except Exception as e:  # noqa: BLE001 - decoders raise many types; we report them all
            errors.append(f"{name}: {_short(e)}")
            continue
        wave = resample(np.asarray(wave, dtype=np.float32).reshape(-1), rate, sample_rate)
        if wave.size == 0:
            span = f"[{start}, {end}]s" if start is not None or end is not None else "the whole file"
            raise MediaError(f"{p}: no audio samples in {span}")
        return np.ascontiguousarray(wave, dtype=np.float32)
    raise MediaError(f"{p}: cannot decode audio ({'; '.join(errors) or 'no decoder tried'})")


# ----------------------------------------------------------------------------- video


def sample_indices(num_total: int, fps: float, start: float | None, end: float | None, num_frames: int,
                   path: str | Path = "?") -> np.ndarray:
    """Frame indices sampled uniformly over ``[start, end]``: the span is cut into ``num_frames``
    equal segments and the middle frame of each is taken (indices repeat when the span is shorter
    than ``num_frames`` frames). ``end`` is clipped to the clip length."""
    if num_total <= 0:
        raise MediaError(f"{path}: video has no frames")
    first = 0 if start is None else int(math.floor(start * fps))
    if first >= num_total:
        raise MediaError(f"{path}: span starts at {start:.3f}s but the clip is {num_total / fps:.3f}s long")
    stop = num_total if end is None else min(num_total, int(math.ceil(end * fps)))
    stop = max(stop, first + 1)
    count = stop - first
    return first + np.floor((np.arange(num_frames) + 0.5) * count / num_frames).astype(np.int64)


def _video_decord(p: Path, start: float | None, end: float | None, num_frames: int) -> np.ndarray:
    import decord

    reader = _VIDEO_READERS.get(_file_key(p, "decord"), lambda: decord.VideoReader(str(p), num_threads=1))
    fps = float(reader.get_avg_fps()) or 25.0
    idx = sample_indices(len(reader), fps, start, end, num_frames, p)
    return reader.get_batch(idx.tolist()).asnumpy()


def _video_pyav(p: Path, start: float | None, end: float | None, num_frames: int) -> np.ndarray:
    import av

    with av.open(str(p)) as container:
        if not container.streams.video:
            raise MediaError(f"{p}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        total = int(stream.frames or 0)
        if total <= 0:
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            total = int(round(seconds * fps))
        idx = sample_indices(total, fps, start, end, num_frames, p)
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if start:
            container.seek(int((start + t0) * av.time_base), any_frame=False)
        targets = sorted(set(idx.tolist()))
        got: dict[int, np.ndarray] = {}
        latest: Any = None  # the last decoded frame, converted only if the tail is short
        k = 0
        for frame in container.decode(stream):
            latest = frame
            frame_idx = int(round((float(frame.time or 0.0) - t0) * fps))
            if targets[k] > frame_idx:
                continue
            arr = frame.to_ndarray(format="rgb24")
            while k < len(targets) and targets[k] <= frame_idx:
                got[targets[k]] = arr
                k += 1
            if k == len(targets):
                break
        if latest is None:
            raise MediaError(f"{p}: no video frame decoded in the span")
        if k < len(targets):  # the container announced more frames than it holds
            tail = latest.to_ndarray(format="rgb24")
            for t in targets[k:]:
                got[t] = tail
    return np.stack([got[int(i)] for i in idx])


_VIDEO_DECODERS: dict[str, Callable[[Path, float | None, float | None, int], np.ndarray]] = {
    "decord": _video_decord,
    "pyav": _video_pyav,
}


def crop_side(frames: np.ndarray, side: str | None) -> np.ndarray:
    """Keep the left or right half of ``[T, H, W, 3]`` frames (two-speaker video, e.g. IEMOCAP)."""
    if side is None:
        return frames
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES} or None, got {side!r}")
    half = frames.shape[2] // 2
    return frames[:, :, :half] if side == "left" else frames[:, :, frames.shape[2] - half:]


def resize_frames(frames: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize ``[T, H, W, 3]`` uint8 frames with ``torch.nn.functional.interpolate`` (bilinear,
    antialiased). An int gives a SQUARE ``size x size`` output (the aspect ratio is not kept, so
    nothing of the frame is cut away); a pair is ``(height, width)``."""
    import torch
    import torch.nn.functional as F

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if frames.shape[1:3] == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_frames(
    path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    num_frames: int = 8,
    side: str | None = None,
    size: int | tuple[int, int] | None = None,
    backends: Sequence[str] | None = None,
) -> np.ndarray:
    """``num_frames`` RGB frames (uint8 ``[T, H, W, 3]``) sampled uniformly over ``[start, end]``
    seconds (whole clip when ``None``; ``end`` clipped to the clip length; see :func:`sample_indices`).

    ``side`` ("left"/"right") keeps that half of the frame; ``size`` then resizes (int = square, see
    :func:`resize_frames`). Raises :class:`MediaError` for a missing, empty or corrupt file, a file
    without video, or a span that starts after the clip ends.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be > 0, got {num_frames}")
    if side is not None and side not in SIDES:
        raise ValueError(f"side must be one of {SIDES} or None, got {side!r}")
    p = _check_file(path)
    _check_span(p, start, end)
    order = list(backends) if backends is not None else list(VIDEO_BACKENDS)
    for name in order:
        if name not in _VIDEO_DECODERS:
            raise ValueError(f"unknown video backend {name!r}; known: {', '.join(_VIDEO_DECODERS)}")
    key = _file_key(p, "video", start, end, num_frames, side, tuple(order))
    frames = _DECODED.get(key, lambda: _decode_frames(p, start, end, num_frames, side, order))
    if size is not None:  # resized once per size: two encoders of one size share it too
        frames = _DECODED.get((*key, size), lambda: resize_frames(frames, size))
    return frames.copy()


def _decode_frames(p: Path, start: float | None, end: float | None, num_frames: int, side: str | None,
                   order: list[str]) -> np.ndarray:
    """The first decoder in ``order`` that works, cropped to ``side`` (see :func:`load_frames`)."""
    errors: list[str] = []
    for name in order:
        try:
            frames = _VIDEO_DECODERS[name](p, start, end, num_frames)
        except MediaError as e:
            msg = str(e)
            if "span starts at" in msg or "no video stream" in msg:
                raise  # a definite answer: another decoder cannot do better
            errors.append(f"{name}: {msg.removeprefix(f'{p}: ')}")
            continue
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {_short(e)}")
            continue
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != num_frames:
            errors.append(f"{name}: unexpected frame array shape {frames.shape}")
            continue
        return np.ascontiguousarray(crop_side(frames.astype(np.uint8, copy=False), side))
    raise MediaError(f"{p}: cannot decode video ({'; '.join(errors) or 'no decoder tried'})")
