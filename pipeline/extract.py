"""The extract stage: corpus records in, one cached ``DatasetDict`` out (``python -m pipeline features``).

Plan -> compute -> merge:

1. **Plan.** Read the corpus, turn every record into an ``EncoderInput`` (with its dialogue history) and
   give each a *row key*: a hash of that input plus the size and mtime of its media files. A feature
   column lives in ``shards/<column>/<encoder fingerprint>/``; a row is *missing* when no shard there
   holds its key. An unchanged re-run finds nothing missing and does no encoding.
2. **Compute.** Missing rows go through a ``DataLoader`` whose workers run ``encoder.load`` (decode /
   tokenize) while the main process runs ``encoder.encode`` on the previous batch. Every
   ``shard_size`` rows are written as one Arrow file, atomically (temp file + rename): a kill loses
   at most the shard in flight and the next run resumes. Under ``accelerate launch`` each rank takes
   a slice of the missing rows and writes its own shards.
3. **Merge.** The main process joins the metadata table with every column's shards by row key (Arrow
   ``take`` on memory-mapped shards, so memory does not grow with the corpus) and saves the
   ``DatasetDict`` + ``meta.json`` + ``report.json`` (see ``pipeline/cache.py`` for the schema).

The whole run holds the cache's writer lock (one ``features`` run at a time; a second one waits or,
``--no-wait``, stops). The save is versioned (``dataset-<n>/`` + one ``meta.json`` replace), so readers
never see a half-written cache. No run deletes shards: ``features --prune`` removes those no column
uses. DataLoader workers die with the run (``die_with_parent``), even when it is SIGKILLed.

Inputs that cannot be encoded (missing or corrupt media) are stored as zeros with ``<col>.missing``
set and their reason in the report: a recorded skip, never a crash and never a silent wrong value.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from extractors.base import Encoder, EncoderInput, EncoderInputError, stable_hash
from pipeline.cache import (DATASET_KEY, META_FILE, CacheLock, current_version, faultpoint, remove, save_cache,
                            stale_entries, write_text_atomic)
from pipeline.corpora.base import CorpusData, Utterance

SHARDS_DIR = "shards"
INPUTS_DIR = "inputs"  # decoded inputs (pipeline/inputs.py): inputs/<col>/<fingerprint>/shard-*.arrow
INPUTS_META = "inputs"  # their meta.json section
META_COLUMNS = ("utterance_id", "dialogue_id", "position", "speaker", "text", "split", "label", "label_name",
                "score", "video_path", "audio_path", "start", "end", "video_side")
MEDIA_FIELDS = {"audio": "audio_path", "video": "video_path"}


# ----------------------------------------------------------------------------------------------- plan
def encoder_inputs(records: Sequence[Utterance]) -> list[EncoderInput]:
    """One ``EncoderInput`` per record; ``history`` holds the earlier turns of the same dialogue."""
    by_dialogue: dict[tuple[str, str], list[Utterance]] = {}
    for r in records:
        by_dialogue.setdefault((r.split, r.dialogue_id), []).append(r)
    history: dict[str, list[tuple[str, str]]] = {}
    for turns in by_dialogue.values():
        turns = sorted(turns, key=lambda u: u.position)
        for i, u in enumerate(turns):
            history[u.utterance_id] = [(t.speaker, t.text) for t in turns[:i]]
    return [EncoderInput(utterance_id=r.utterance_id, text=r.text, speaker=r.speaker,
                         history=history[r.utterance_id], video_path=r.video_path, audio_path=r.audio_path,
                         start=r.start, end=r.end, video_side=r.video_side) for r in records]


def modality_input(item: EncoderInput, modality: str) -> EncoderInput:
    """What one modality's encoder gets. ``start``/``end`` are seconds inside the video; a separate
    audio file beside a video (IEMOCAP's sentence wavs) is already cut to the utterance, so its span is
    dropped. Without a video the span is inside the audio file (a recording predict splits with ``--segment``)."""
    if modality == "audio" and item.audio_path and item.video_path and item.audio_path != item.video_path:
        return dataclasses.replace(item, start=None, end=None)
    return item


def _media_stamp(path: str | None, spelling: str | None = None) -> Any:
    """What identifies a media file in a row key: its path (``spelling``, default the absolute path, so
    ``data/meld/x.mp4`` read from the repo and ``/repo/data/meld/x.mp4`` are one file), size and mtime."""
    if not path:
        return None
    name = os.path.abspath(path) if spelling is None else spelling
    try:
        st = os.stat(path)
    except OSError:
        return [name, "absent"]
    return [name, st.st_size, st.st_mtime_ns]


def row_keys(item: EncoderInput, modality: str, uses_history: bool = False) -> list[str]:
    """Hash of what this modality's encoder reads of one utterance (so a text edit does not
    invalidate the video column, and a re-encoded clip invalidates only its own rows): the row's key
    first (media by absolute path), then the keys caches written before held for it (media by the path
    as the reader spelled it, or relative to the working directory), which a run still reuses."""
    it = modality_input(item, modality)  # fields read directly: dataclasses.asdict deep-copies the history
    if modality == "text":
        keep: dict[str, Any] = {"utterance_id": it.utterance_id, "text": it.text, "speaker": it.speaker}
        if uses_history:
            keep["history"] = [list(turn) for turn in it.history]
        return [stable_hash(keep)]
    path = getattr(it, MEDIA_FIELDS[modality])
    keep = {"utterance_id": it.utterance_id, "start": it.start, "end": it.end, "video_side": it.video_side}
    spellings: list[str | None] = [None]
    if path:
        full = os.path.abspath(path)
        spellings += [s for s in dict.fromkeys([str(path), os.path.relpath(full)]) if s != full]
    return [stable_hash({**keep, "media": _media_stamp(path, spelling)}) for spelling in spellings]


def row_key(item: EncoderInput, modality: str, uses_history: bool = False) -> str:
    """The key of one utterance's row in a column of ``modality`` (see :func:`row_keys`)."""
    return row_keys(item, modality, uses_history)[0]


def resolve_keys(items: Sequence[EncoderInput], modality: str, uses_history: bool, have: set[str]) -> list[str]:
    """Each item's row key as the shards ``have`` it: its key, or an older spelling of it found there."""
    out = []
    for it in items:
        key = row_key(it, modality, uses_history)
        if key not in have and modality != "text":
            key = next((k for k in row_keys(it, modality, uses_history)[1:] if k in have), key)
        out.append(key)
    return out


# -------------------------------------------------------------------------------------------- shards
def _read_arrow(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as src:
        return pa.ipc.open_file(src).read_all()


def _write_arrow_atomic(table, path: Path) -> None:
    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    half = max(1, table.num_rows // 2)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(0, half))
        sink.flush()
        faultpoint("shard-write")  # a kill here leaves half a file: only ever under the temp name
        writer.write_table(table.slice(half))
    os.replace(tmp, path)


def load_shards(folder: Path):
    """All complete shards of one column fingerprint as one (memory-mapped) Arrow table, or None."""
    import pyarrow as pa

    files = sorted(folder.glob("shard-*.arrow")) if folder.is_dir() else []
    if not files:
        return None
    return pa.concat_tables([_read_arrow(f) for f in files])


def shard_table(keys: list[str], vecs: np.ndarray, missing: list[bool], reasons: list[str],
                seqs: list[np.ndarray] | None, dtype: str):
    import pyarrow as pa

    np_dtype = np.float16 if dtype == "float16" else np.float32
    dim = vecs.shape[1]
    flat = pa.array(vecs.astype(np_dtype, copy=False).reshape(-1))
    cols = {"key": pa.array(keys, pa.string()),
            "vec": pa.FixedSizeListArray.from_arrays(flat, dim),
            "missing": pa.array(missing, pa.bool_()),
            "reason": pa.array(reasons, pa.string())}
    if seqs is not None:
        seq_dim = next((s.shape[1] for s in seqs if s.ndim == 2 and s.shape[0]), 0)
        rows = []
        for s in seqs:
            s = s.astype(np_dtype, copy=False).reshape(-1, seq_dim) if seq_dim else np.zeros((0, 0), np_dtype)
            rows.append(pa.FixedSizeListArray.from_arrays(pa.array(s.reshape(-1)), max(seq_dim, 1))
                        if seq_dim else pa.array([], pa.list_(pa.float32())))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        inner = pa.concat_arrays(rows) if rows else pa.array([], pa.list_(pa.float32(), max(seq_dim, 1)))
        cols["seq"] = pa.ListArray.from_arrays(pa.array(offsets), inner)
        cols["seq_len"] = pa.array([int(s.shape[0]) for s in seqs], pa.int32())
    return pa.table(cols)


# ------------------------------------------------------------------------------------------- compute
@dataclasses.dataclass
class _Failed:
    reason: str


def load_one(encoder: Encoder, item: EncoderInput) -> Any:
    """``encoder.load`` of one utterance (in a DataLoader worker), or a :class:`_Failed` with the reason."""
    modality = encoder.modality
    if modality in MEDIA_FIELDS and not getattr(item, MEDIA_FIELDS[modality]):
        return _Failed(f"{item.utterance_id}: no {modality} for this utterance")
    if modality == "text" and not (item.text or "").strip():  # the readers' rule: no transcript, no text
        return _Failed(f"{item.utterance_id}: empty transcript")
    try:
        return encoder.load(modality_input(item, modality))
    except EncoderInputError as e:
        return _Failed(str(e))
    except Exception as e:  # a decoder crash on one file is that file's problem, not the run's
        path = getattr(item, MEDIA_FIELDS.get(modality, "text"), "") or item.utterance_id
        return _Failed(f"{path}: {type(e).__name__}: {e}")


class _LoadDataset:
    """Map-style dataset over (key, input) pairs of ONE encoder; runs ``encoder.load`` in DataLoader workers."""

    def __init__(self, encoder: Encoder, items: list[tuple[str, EncoderInput]]) -> None:
        self.encoder, self.items = encoder, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Any]:
        key, item = self.items[i]
        return key, load_one(self.encoder, item)


@dataclasses.dataclass
class ColumnJob:
    """One column to fill: its encoder, the rows it misses (key, input), its shard folder."""

    encoder: Encoder
    todo: list[tuple[str, EncoderInput]]
    folder: Path
    sequence: bool = False
    decoded: bool = False  # a decoded-inputs column (pipeline/inputs.py): meta "inputs", not "columns"


class _GroupLoadDataset:
    """Map-style dataset over utterances that one or more encoders of ONE modality miss. For each
    utterance the worker runs every such encoder's ``load`` one after the other, so the clip is
    opened and decoded once (``pipeline.media`` keeps the last decoded spans of the process: the
    second video encoder gets the first one's frames, resized to its own size)."""

    def __init__(self, jobs: list[ColumnJob], rows: list[tuple[EncoderInput, list[tuple[int, str]]]]) -> None:
        self.jobs, self.rows = jobs, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> list[tuple[int, str, Any]]:
        item, wanted = self.rows[i]
        return [(j, key, load_one(self.jobs[j].encoder, item)) for j, key in wanted]


def group_rows(jobs: list[ColumnJob]) -> list[tuple[EncoderInput, list[tuple[int, str]]]]:
    """The union of the jobs' missing rows, one entry per utterance (first-seen order) with the
    (job index, row key) of every job that misses it."""
    rows: dict[str, tuple[EncoderInput, list[tuple[int, str]]]] = {}
    for j, job in enumerate(jobs):
        for key, item in job.todo:
            rows.setdefault(item.utterance_id, (item, []))[1].append((j, key))
    return list(rows.values())


def _collate(batch: list) -> list:
    return batch


def die_with_parent(parent_pid: int, worker_id: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: the worker gets SIGKILL when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9`` of ``features`` leaves no worker behind (blocked
    on a full pipe, a worker would otherwise live forever). Elsewhere a thread watches the parent pid."""
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class FeatureRows:
    """Row format of feature shards: ``vec`` [dim] (+ ``seq`` [T, seq_dim]) from ``encoder.encode``. An encoder
    with another row format says so with ``shard_rows(dtype, sequence)`` (e.g. ``pipeline.inputs.InputRows``)."""

    def __init__(self, dtype: str, sequence: bool) -> None:
        self.dtype, self.sequence = dtype, sequence

    def rows(self, encoder: Encoder, samples: list[Any]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        out = encoder.encode(samples)
        if self.sequence and out.seq is None:
            raise RuntimeError(f"encoder {encoder.name} was asked for sequences but returned none")
        return [(np.asarray(out.vec[j], np.float32), np.asarray(out.seq[j], np.float32) if self.sequence else None)
                for j in range(len(samples))]

    def blank(self, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(encoder.dim, np.float32), np.zeros((0, 0), np.float32)

    def table(self, keys: list[str], rows: list[Any], missing: list[bool], reasons: list[str]):
        return shard_table(keys, np.stack([r[0] for r in rows]), missing, reasons,
                           [r[1] for r in rows] if self.sequence else None, self.dtype)


def compute_missing(encoder: Encoder, items: list[tuple[str, EncoderInput]], folder: Path, *, batch_size: int,
                    num_workers: int, shard_size: int, dtype: str, sequence: bool, tag: str = "r0",
                    progress: bool = True) -> dict[str, Any]:
    """Encode ``items`` with one encoder and write them as shards into ``folder`` (:func:`compute_group`
    with one job). Returns counts and skip reasons."""
    return compute_group([ColumnJob(encoder, items, folder, sequence)], batch_size=batch_size,
                         num_workers=num_workers, shard_size=shard_size, dtype=dtype, tag=tag, progress=progress)[0]


def compute_group(jobs: list[ColumnJob], *, batch_size: int, num_workers: int, shard_size: int, dtype: str,
                  tag: str = "r0", progress: bool = True) -> list[dict[str, Any]]:
    """Fill the columns of ``jobs`` (encoders of one modality) in ONE pass over their missing utterances:
    one DataLoader whose workers run every encoder's ``load`` on an utterance (one decode of its clip), the
    main process runs each encoder's ``encode`` on its part of the batch and writes each column's shards.
    Returns, per job, counts, skip reasons and its encode seconds."""
    import torch
    from tqdm.auto import tqdm

    rows = group_rows(jobs)
    for job in jobs:
        job.folder.mkdir(parents=True, exist_ok=True)
    fmts = [job.encoder.shard_rows(dtype, job.sequence) if hasattr(job.encoder, "shard_rows")
            else FeatureRows(dtype, job.sequence) for job in jobs]  # row format of each column's shards
    loader = torch.utils.data.DataLoader(_GroupLoadDataset(jobs, rows), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate,
                                         persistent_workers=False, prefetch_factor=4 if num_workers else None,
                                         worker_init_fn=functools.partial(die_with_parent, os.getpid())
                                         if num_workers else None)
    bufs: list[dict[str, list]] = [{"keys": [], "rows": [], "missing": [], "reasons": []} for _ in jobs]
    results: list[dict[str, Any]] = [{"computed": 0, "skipped": [], "encode_seconds": 0.0} for _ in jobs]

    def flush(j: int) -> None:
        buf = bufs[j]
        if not buf["keys"]:
            return
        table = fmts[j].table(buf["keys"], buf["rows"], buf["missing"], buf["reasons"])
        _write_arrow_atomic(table, jobs[j].folder / f"shard-{tag}-{time.time_ns()}-{uuid.uuid4().hex[:6]}.arrow")
        results[j]["computed"] += len(buf["keys"])
        for v in buf.values():
            v.clear()

    desc = f"{jobs[0].encoder.modality}." + "+".join(job.encoder.name for job in jobs) if jobs else ""
    bar = tqdm(total=len(rows), desc=desc, unit="utt", disable=not progress)
    for batch in loader:
        for j, job in enumerate(jobs):
            encoder, buf = job.encoder, bufs[j]
            part = [(k, s) for entry in batch for jj, k, s in entry if jj == j]
            ok = [s for _, s in part if not isinstance(s, _Failed)]
            t = time.perf_counter()
            out = iter(fmts[j].rows(encoder, ok) if ok else [])
            results[j]["encode_seconds"] += time.perf_counter() - t
            for k, s in part:
                buf["keys"].append(k)
                if isinstance(s, _Failed):
                    buf["rows"].append(fmts[j].blank(encoder))
                    buf["missing"].append(True)
                    buf["reasons"].append(s.reason)
                    results[j]["skipped"].append(s.reason)
                else:
                    buf["rows"].append(next(out))
                    buf["missing"].append(False)
                    buf["reasons"].append("")
                if len(buf["keys"]) >= shard_size:
                    flush(j)
        bar.update(len(batch))
    for j in range(len(jobs)):
        flush(j)
    bar.close()
    return results


# --------------------------------------------------------------------------------------------- merge
def metadata_columns(records: Sequence[Utterance], extra_sets: Iterable[str]) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in META_COLUMNS}
    extra_sets = list(extra_sets)
    for s in extra_sets:
        cols[f"label.{s}"] = []
    nan = float("nan")
    for r in records:
        cols["utterance_id"].append(r.utterance_id)
        cols["dialogue_id"].append(r.dialogue_id)
        cols["position"].append(int(r.position))
        cols["speaker"].append(r.speaker)
        cols["text"].append(r.text)
        cols["split"].append(r.split)
        cols["label"].append(-1 if r.label is None else int(r.label))
        cols["label_name"].append(r.label_name or "")
        cols["score"].append(nan if r.score is None else float(r.score))
        cols["video_path"].append(r.video_path or "")
        cols["audio_path"].append(r.audio_path or "")
        cols["start"].append(nan if r.start is None else float(r.start))
        cols["end"].append(nan if r.end is None else float(r.end))
        cols["video_side"].append(r.video_side or "")
        for s in extra_sets:
            cols[f"label.{s}"].append(int(r.extra_labels.get(s, -1)))
    return cols


def build_split_table(records: Sequence[Utterance], keys_by_column: dict[str, list[str]],
                      shards: dict[str, Any], extra_sets: Sequence[str],
                      inputs: dict[str, tuple[list[str], Any]] | None = None):
    """Metadata + every feature column for one split, rows in record order; for each decoded-inputs column
    (``inputs``: column -> (row keys, shards)) its ``<col>.input_key`` and ``<col>.input_missing``."""
    import pyarrow as pa

    table = pa.table(metadata_columns(records, extra_sets))
    table = table.cast(table.schema.set(table.schema.get_field_index("position"), pa.field("position", pa.int32())))
    for name in ("score", "start", "end"):
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, pa.field(name, pa.float32()), table.column(name).cast(pa.float32()))
    for col, keys in keys_by_column.items():
        shard = shards[col]
        index = {k: i for i, k in enumerate(shard.column("key").to_pylist())}
        missing_rows = [k for k in keys if k not in index]
        if missing_rows:
            raise RuntimeError(f"column {col}: {len(missing_rows)} rows have no shard (extraction incomplete)")
        sub = shard.take(pa.array([index[k] for k in keys], pa.int64()))
        table = table.append_column(col, sub.column("vec"))
        table = table.append_column(f"{col}.missing", sub.column("missing"))
        if "seq" in sub.column_names:
            table = table.append_column(f"{col}.seq", sub.column("seq"))
            table = table.append_column(f"{col}.seq_len", sub.column("seq_len"))
    for col, (keys, shard) in (inputs or {}).items():
        from pipeline.inputs import KEY_SUFFIX, MISSING_SUFFIX

        missing = dict(zip(shard.column("key").to_pylist(), shard.column("missing").to_pylist()))
        absent = [k for k in keys if k not in missing]
        if absent:
            raise RuntimeError(f"decoded inputs {col}: {len(absent)} rows have no shard (extraction incomplete)")
        table = table.append_column(f"{col}{KEY_SUFFIX}", pa.array(keys, pa.string()))
        table = table.append_column(f"{col}{MISSING_SUFFIX}", pa.array([missing[k] for k in keys], pa.bool_()))
    return table


# ----------------------------------------------------------------------------------------------- run
@dataclasses.dataclass
class ExtractSettings:
    encoders: list[Any]  # encoder names (built from the profile) or ready Encoder instances
    profile: str = "offline"
    dtype: str = "float32"
    batch_size: int = 16
    num_workers: int = 2
    shard_size: int = 256
    sequence: tuple[str, ...] = ()
    precision: str = "no"  # no | bf16 | fp16 (encoder compute on GPU)
    encoder_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    progress: bool = True
    inputs: list[Any] = dataclasses.field(default_factory=list)  # encoders whose DECODED INPUTS to cache
    threads: int | str = "auto"  # torch intra-op threads of the encoding process (see compute_threads)


# Modalities whose ``load`` is cheap (tokenizing): their DataLoader workers idle, so ``encode`` may take every core.
LIGHT_LOAD_MODALITIES = ("text",)


def compute_threads(setting: int | str, num_workers: int, modality: str | None = None) -> int:
    """Intra-op threads of the process that runs ``encode``: ``setting`` when a number, else (``"auto"``) the
    cores this process may use less the decoding workers, at least 1 (the workers and the encoders share the
    cores: more threads only contend; the audio group of the demo runs 1.2x faster on 1 thread than on 2 with
    2 decode workers), or every core for a modality whose workers only tokenize (the demo's two text
    columns: 9.3 s on 1 thread, 5.9 s on 2; bench/README.md)."""
    if setting != "auto":
        n = int(setting)
        if n < 1:
            raise ValueError(f"threads must be 'auto' or >= 1, got {setting!r}")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if modality in LIGHT_LOAD_MODALITIES else max(1, cores - int(num_workers))


def process_state():
    """Accelerate's process state. ``ACCELERATE_USE_CPU=1`` (set by ``accelerate launch --cpu`` or by
    hand for several CPU processes: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
    --num_processes 2 ...``) keeps every rank on the CPU with the gloo backend."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def column_name(encoder: Encoder) -> str:
    """``<modality>.<encoder>``, or ``<modality>.<encoder>@<tag>`` for an encoder built from a fine-tuning
    run (``column_tag``, default ``ft``): frozen and fine-tuned columns of one encoder coexist."""
    tag = getattr(encoder, "column_tag", None)
    return f"{encoder.modality}.{encoder.name}" + (f"@{tag}" if tag else "")


def finetuned_encoder(run_dir: str | Path, tag: str | None = None, sequence: Sequence[str] = ()) -> Encoder:
    """The encoder a ``finetune`` run saved (``<run>/encoder``, its settings from ``finetune.json``), tagged
    so its column is ``<modality>.<encoder>@<tag>``."""
    from extractors.base import create_encoder
    from pipeline.finetune import finetuned_encoder_kwargs

    name, kwargs, info = finetuned_encoder_kwargs(run_dir)
    if name in sequence:
        kwargs["sequence"] = True
    encoder = create_encoder(name, **kwargs)
    encoder.init_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    encoder.column_tag = tag or info.get("column_tag") or "ft"  # type: ignore[attr-defined]
    encoder.finetuned_from = str(Path(run_dir).resolve())  # type: ignore[attr-defined]
    return encoder


def build_encoder(name: str, settings: ExtractSettings) -> Encoder:
    """The encoder ``name`` of the settings' profile; its constructor kwargs are kept on it
    (``init_kwargs``) and saved in the cache meta, so ``predict`` rebuilds the very same encoder."""
    from extractors.base import create_encoder
    from extractors.profiles import encoder_kwargs

    kwargs = encoder_kwargs(settings.profile, name, overrides=settings.encoder_overrides.get(name))
    if name in settings.sequence:
        kwargs["sequence"] = True
    encoder = create_encoder(name, **kwargs)
    encoder.init_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return encoder


def records_fingerprint(records: Sequence[Utterance]) -> str:
    return stable_hash([r.to_dict() for r in records])


def extract(data: CorpusData, cache_dir: str | Path, settings: ExtractSettings, *, wait: bool = True) -> dict[str, Any]:
    """Fill the cache at ``cache_dir`` for ``data`` with the encoders in ``settings``; returns the report.

    One writer at a time: the main process holds the cache's lock (:class:`pipeline.cache.CacheLock`)
    for the whole run -- plan, compute, merge, save -- while the other ranks of an ``accelerate
    launch`` compute their slices under it. A second run waits (or, ``wait=False``, raises
    ``CacheLocked``). The run first removes what killed runs left (temp files, unused versions)."""
    state = process_state()
    cache_dir = Path(cache_dir)
    lock = None
    error = None
    if state.is_main_process:
        lock = CacheLock(cache_dir, wait=wait, command=" ".join(sys.argv))
        try:
            lock.__enter__()
        except Exception as e:  # CacheLocked: every rank must stop, not only this one
            lock, error = None, e
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        flag = [None if error is None else str(error)]
        broadcast_object_list(flag)
        if flag[0] is not None and error is None:
            from pipeline.cache import CacheLocked

            error = CacheLocked(flag[0])
    if error is not None:
        raise error
    try:
        if state.is_main_process:
            clean_leftovers(cache_dir)
        state.wait_for_everyone()
        return _extract_locked(data, cache_dir, settings, state)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def clean_leftovers(cache_dir: Path) -> list[Path]:
    """Remove what killed writers left (the caller holds the lock): temp files and folders in the cache
    root and the shard folders, and dataset versions other than the current and the previous one."""
    gone = stale_entries(cache_dir)
    for root in (cache_dir / SHARDS_DIR, cache_dir / INPUTS_DIR):
        if root.is_dir():
            gone += [p for p in root.rglob("*") if p.name.endswith(".tmp") and p.is_file()]
    for p in gone:
        remove(p)
    return gone


def _extract_locked(data: CorpusData, cache_dir: Path, settings: ExtractSettings, state: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    records = data.records
    items = encoder_inputs(records)
    old_meta = json.loads((cache_dir / META_FILE).read_text()) if (cache_dir / META_FILE).exists() else {}
    old_columns: dict[str, Any] = dict(old_meta.get("columns", {}))
    old_inputs: dict[str, Any] = dict(old_meta.get(INPUTS_META, {}))
    columns: dict[str, dict[str, Any]] = {}
    inputs: dict[str, dict[str, Any]] = {}
    keys_by_column: dict[str, list[str]] = {}
    keys_by_input: dict[str, list[str]] = {}
    report_cols: dict[str, Any] = {}

    from pipeline.inputs import DecodedInputs

    # Plan every column first (lazy encoders: configs and weight-file hashes only, no weights loaded); the
    # decoded-inputs columns (`inputs`) are planned the same way, into inputs/ instead of shards/.
    plans: list[tuple[str, str, list[str], ColumnJob]] = []
    for spec, decoded in [(spec, False) for spec in settings.encoders] + [(spec, True) for spec in settings.inputs]:
        encoder = spec if isinstance(spec, Encoder) else build_encoder(spec, settings)
        if decoded and not isinstance(encoder, DecodedInputs):
            encoder = DecodedInputs(encoder)
        device = state.device
        dtype = None
        if device.type == "cuda" and settings.precision in ("bf16", "fp16"):
            import torch

            dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float16
        encoder.to(device, dtype)
        col = column_name(encoder)
        fp = encoder.fingerprint()
        folder = cache_dir / (INPUTS_DIR if decoded else SHARDS_DIR) / col / fp
        done = set()
        if folder.is_dir():
            have = load_shards(folder)
            if have is not None:
                done = set(have.column("key").to_pylist())
        keys = resolve_keys(items, encoder.modality, encoder.uses_history, done)
        (keys_by_input if decoded else keys_by_column)[col] = keys
        todo = [(k, it) for k, it in zip(keys, items) if k not in done]
        if todo:
            _ = encoder.dim  # a column that will compute checks its structure now (a misfit file), before any work
        plans.append((col, fp, keys, ColumnJob(encoder, todo, folder, encoder.name in settings.sequence and not decoded,
                                                 decoded)))
    encoder = None  # the plans hold the encoders now (and drop each modality's after computing it)
    # Every rank plans from the same shards: none may start writing shards before all have read them (else a
    # slower rank sees a faster rank's new shard, plans a shorter list, and rows fall between the slices).
    state.wait_for_everyone()

    # Compute: the columns of one modality together (one decode of each clip for all of them); each rank takes
    # a slice of the utterances any of them misses.
    by_modality: dict[str, list[tuple[str, str, list[str], ColumnJob]]] = {}
    for plan in plans:
        by_modality.setdefault(plan[3].encoder.modality, []).append(plan)
    import torch

    threads_before = torch.get_num_threads()
    # A column that computes nothing over the same records keeps the truncation summary of the last run
    # (it reads every clip's header: the bulk of an unchanged re-run otherwise).
    old_report = _read_json(cache_dir / "report.json")
    records_fp = records_fingerprint(records)
    same_records = old_meta.get("records_fingerprint") == records_fp
    previous = {col: c for col, c in (old_report.get("columns") or {}).items()
                if same_records and "truncated" in c} if old_report else {}
    try:
        known = {col: (c.get("fingerprint"), c.get("dim")) for col, c in [*old_columns.items(), *old_inputs.items()]}
        _compute_columns(by_modality, items, settings, state, columns, report_cols, previous, inputs, known)
    finally:
        torch.set_num_threads(threads_before)

    # Columns (and decoded inputs) from earlier runs that were not asked for this time stay (incremental).
    for old, now, keys_of, root in ((old_columns, columns, keys_by_column, SHARDS_DIR),
                                    (old_inputs, inputs, keys_by_input, INPUTS_DIR)):
        _keep_earlier(cache_dir / root, items, old, now, keys_of, report_cols)

    meta = {"corpus": data.name, "task": data.task, "label_sets": data.label_sets,
            "modalities": list(data.modalities), "records_fingerprint": records_fp,
            "columns": columns, "num_rows": {s: len(data.split(s)) for s in data.splits()}}
    if inputs:
        meta[INPUTS_META] = inputs
    report: dict[str, Any] = {"corpus": data.name, "cache": str(cache_dir), "columns": report_cols}
    meta = json.loads(json.dumps(meta))  # normalise (tuples -> lists) so re-runs compare equal
    if state.is_main_process:
        current = current_version(cache_dir)
        old_meta.pop(DATASET_KEY, None)
        unchanged = (json.dumps(old_meta, sort_keys=True) == json.dumps(meta, sort_keys=True)
                     and all(c["computed"] == 0 for c in report_cols.values())
                     and current is not None and (cache_dir / current).is_dir())
        if not unchanged:
            _merge_and_save(data, cache_dir, columns, keys_by_column, meta, inputs, keys_by_input)
        report.update(_skips_from_shards(cache_dir, columns, keys_by_column, items))
        report["skipped"].update({f"{c} (inputs)": v for c, v in _skips_from_shards(
            cache_dir, inputs, keys_by_input, items, root=INPUTS_DIR)["skipped"].items()})
        report["rewrote_dataset"] = not unchanged
        report["seconds"] = round(time.perf_counter() - t0, 2)
        report["reader"] = json.loads(data.report.to_json())
        write_text_atomic(cache_dir / "report.json", json.dumps(report, indent=2))
    state.wait_for_everyone()
    return report


def _keep_earlier(root: Path, items: list[EncoderInput], old: dict[str, Any], now: dict[str, Any],
                  keys_of: dict[str, list[str]], report_cols: dict[str, Any]) -> None:
    """Carry the entries of ``old`` (meta of the last save) that this run did not compute into ``now``
    when their shards under ``root`` cover every row; otherwise drop them and say so in the report."""
    for col, info in old.items():
        if col in now:
            continue
        have = load_shards(root / col / info["fingerprint"])
        if have is None:
            continue
        modality = col.split(".", 1)[0]
        done = set(have.column("key").to_pylist())
        keys = resolve_keys(items, modality, bool(info.get("uses_history")), done)
        if set(keys) <= done:
            now[col] = info
            keys_of[col] = keys
        else:  # the corpus changed since: this column would have holes, so it is dropped (and said)
            report_cols[col] = {"encoder": info.get("encoder"), "dropped": "corpus changed; re-run with this encoder",
                                "fingerprint": info["fingerprint"], "dim": info["dim"], "computed": 0, "reused": 0,
                                "random_weights": info.get("random_weights", False), "seconds": 0.0}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _compute_columns(by_modality: dict[str, list[tuple[str, str, list[str], "ColumnJob"]]], items: list[EncoderInput],
                     settings: ExtractSettings, state: Any, columns: dict[str, Any], report_cols: dict[str, Any],
                     previous: dict[str, dict[str, Any]], inputs: dict[str, Any] | None = None,
                     known: dict[str, tuple[Any, Any]] | None = None) -> None:
    """Compute the planned columns, one modality at a time, and record each in ``columns`` (decoded-inputs
    columns in ``inputs``) / ``report_cols`` (``previous``: the last run's report of each column, over the
    same records; ``known``: column -> (fingerprint, dim) of the last save, so a column that computes nothing
    does not build its encoder's structure just to say its width)."""
    import torch

    for modality, group in by_modality.items():
        t_group = time.perf_counter()
        torch.set_num_threads(compute_threads(settings.threads, settings.num_workers, modality))
        jobs = [plan[3] for plan in group]
        mine = {row[0].utterance_id for row in group_rows(jobs)[state.process_index::state.num_processes]}
        rank_jobs = [dataclasses.replace(job, todo=[(k, it) for k, it in job.todo if it.utterance_id in mine])
                     for job in jobs]
        results = compute_group(rank_jobs, batch_size=settings.batch_size, num_workers=settings.num_workers,
                                shard_size=settings.shard_size, dtype=settings.dtype, tag=f"r{state.process_index}",
                                progress=settings.progress and state.is_local_main_process)
        state.wait_for_everyone()
        seconds = round(time.perf_counter() - t_group, 2)
        for (col, fp, keys, job), res in zip(group, results):
            encoder, todo = job.encoder, job.todo
            name = encoder.name
            last_fp, last_dim = (known or {}).get(col, (None, None))
            dim = int(last_dim) if not todo and last_fp == fp and last_dim is not None else int(encoder.dim)
            (inputs if job.decoded and inputs is not None else columns)[col] = {
                            "encoder": name, "version": encoder.version, "fingerprint": fp, "dim": dim,
                            "settings": encoder.settings(), "random_weights": bool(encoder.random_weights),
                            "dtype": settings.dtype, "sequence": job.sequence,
                            "uses_history": bool(encoder.uses_history), "profile": settings.profile,
                            "kwargs": getattr(encoder, "init_kwargs", None),
                            "finetuned_from": getattr(encoder, "finetuned_from", None)}
            rcol = col + (" (inputs)" if job.decoded else "")
            report_cols[rcol] = {"encoder": name, "kind": "inputs" if job.decoded else "features",
                                "fingerprint": fp, "dim": dim,
                                "reused": len(keys) - len(todo), "computed": len(todo),
                                "random_weights": bool(encoder.random_weights), "seconds": seconds,
                                "encode_seconds": round(res["encode_seconds"], 2),
                                "weights_loaded": bool(getattr(encoder, "loaded", False)),
                                "skipped_this_rank": res["skipped"], **encoder.report_counts()}
            if state.is_main_process:
                last = previous.get(rcol, {})
                report_cols[rcol]["truncated"] = (last["truncated"] if not todo and last.get("fingerprint") == fp
                                                  else truncation_summary(encoder, items))
        for job in jobs:  # this modality's models go before the next modality's load (an encoder we built)
            job.encoder = None  # type: ignore[assignment]
        del jobs, rank_jobs, encoder


def truncation_summary(encoder: Encoder, items: Sequence[EncoderInput]) -> dict[str, Any] | None:
    """How many utterances the encoder's settings cut (``Encoder.input_loss``: tokens past ``max_length``,
    seconds past ``max_seconds``) and the largest loss; ``None`` when nothing is cut."""
    losses = [(it.utterance_id, loss) for it in items if (loss := encoder.input_loss(it))]
    if not losses:
        return None
    uid, (lost, total, unit) = max(losses, key=lambda x: x[1][0])
    return {"unit": unit, "utterances": len(losses), "of": len(items), "max_lost": round(lost, 2),
            "max_of": round(total, 2), "max_utterance": uid, "utterance_ids": [u for u, _ in losses[:20]]}


def truncation_line(col: str, t: dict[str, Any]) -> str:
    return (f"{col}: {t['utterances']} of {t['of']} utterance(s) lost {t['unit']} (max {t['max_lost']:g} of "
            f"{t['max_of']:g} {t['unit']}, {t['max_utterance']})")


def _merge_and_save(data: CorpusData, cache_dir: Path, columns: dict[str, Any], keys_by_column: dict[str, list[str]],
                    meta: dict[str, Any], inputs: dict[str, Any] | None = None,
                    keys_by_input: dict[str, list[str]] | None = None) -> None:
    import datasets

    shards = {col: load_shards(cache_dir / SHARDS_DIR / col / info["fingerprint"]) for col, info in columns.items()}
    input_shards = {col: load_shards(cache_dir / INPUTS_DIR / col / info["fingerprint"])
                    for col, info in (inputs or {}).items()}
    extra_sets = [s for s in data.label_sets if s != "primary"]
    index_of = {r.utterance_id: i for i, r in enumerate(data.records)}
    splits = {}
    for split in data.splits():
        recs = data.split(split)
        idx = [index_of[r.utterance_id] for r in recs]
        table = build_split_table(recs, {c: [k[i] for i in idx] for c, k in keys_by_column.items()}, shards,
                                  extra_sets, {c: ([k[i] for i in idx], input_shards[c])
                                               for c, k in (keys_by_input or {}).items()})
        splits[split] = datasets.Dataset(table)
    save_cache(cache_dir, datasets.DatasetDict(splits), meta)
    # Shards of other fingerprints (older settings, columns not asked about, another run's work) stay:
    # only an explicit `features --prune` deletes them (see prune()).


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def prune(cache_dir: str | Path, *, wait: bool = True, dry_run: bool = False) -> list[tuple[Path, int]]:
    """What ``features --prune`` deletes, under the lock: shard folders of fingerprints (or whole
    columns) that meta.json does not use, dataset versions other than the current one, and temp
    leftovers. Returns (path, bytes) of each; ``dry_run`` only lists them."""
    cache_dir = Path(cache_dir)
    with CacheLock(cache_dir, wait=wait, command=" ".join(sys.argv)):
        meta = json.loads((cache_dir / META_FILE).read_text()) if (cache_dir / META_FILE).exists() else {}
        doomed = stale_entries(cache_dir, keep_previous=False)
        for section, folder in (("columns", SHARDS_DIR), (INPUTS_META, INPUTS_DIR)):
            used = {c: info.get("fingerprint") for c, info in meta.get(section, {}).items()}
            root = cache_dir / folder
            for col_dir in sorted(root.iterdir()) if root.is_dir() else []:
                if col_dir.name not in used:
                    doomed.append(col_dir)
                    continue
                doomed += [fp for fp in sorted(col_dir.iterdir()) if fp.name != used[col_dir.name]]
                doomed += [f for f in (col_dir / str(used[col_dir.name])).glob("*.tmp")]
        out = [(p, _size(p)) for p in doomed]
        if not dry_run:
            for p in doomed:
                remove(p)
    return out


def _skips_from_shards(cache_dir: Path, columns: dict[str, Any], keys_by_column: dict[str, list[str]],
                       items: list[EncoderInput], root: str = SHARDS_DIR) -> dict[str, Any]:
    out: dict[str, list[dict[str, str]]] = {}
    for col, info in columns.items():
        shard = load_shards(cache_dir / root / col / info["fingerprint"])
        if shard is None:
            continue
        miss = dict(zip(shard.column("key").to_pylist(), shard.column("reason").to_pylist()))
        entries = []
        for k, it in zip(keys_by_column[col], items):
            reason = miss.get(k, "not extracted")
            if reason:
                entries.append({"utterance_id": it.utterance_id, "reason": reason})
        out[col] = entries
    return {"skipped": out}


def print_report(report: dict[str, Any]) -> None:
    print(f"\nfeatures cache: {report['cache']}  ({report.get('seconds', '?')} s)")
    print(f"{'column':<26}{'dim':>6}{'computed':>10}{'reused':>8}{'skipped':>9}  weights")
    for col, c in report["columns"].items():
        if c.get("dropped"):
            print(f"{col:<26}{c['dim']:>6}  dropped: {c['dropped']}")
            continue
        n_skip = len(report.get("skipped", {}).get(col, []))
        w = "decoded inputs" if c.get("kind") == "inputs" else \
            "RANDOM (offline stand-in)" if c["random_weights"] else "pretrained"
        print(f"{col:<26}{c['dim']:>6}{c['computed']:>10}{c['reused']:>8}{n_skip:>9}  {w}")
    for col, c in report["columns"].items():
        if c.get("truncated"):
            print(f"  truncated {truncation_line(col, c['truncated'])}")
    for col, c in report["columns"].items():  # face policy: frames where no face was found (whole frame used)
        fb = c.get("face_fallbacks")
        if fb:
            print(f"  face {col}: policy {c['face']}, no face in {fb['fallback_frames']}/{fb['frames']} frames "
                  f"({fb['fallback_clips']}/{fb['clips']} clips): whole frame used there")
    skipped = report.get("skipped", {})
    shown = 0
    for col, entries in skipped.items():
        for e in entries[:5]:
            print(f"  skip {col}: {e['reason']}")
            shown += 1
    if any(len(v) > 5 for v in skipped.values()):
        print("  ... all skips with reasons in report.json")


def _present_encoders(names: list[str], modalities: Sequence[str]) -> list[str]:
    """The default encoders less those of a modality the corpus has none of (a transcripts-only corpus gets
    its text columns only; ``--encoders`` still runs what it names)."""
    import extractors  # noqa: F401  (registers the encoders)
    from extractors.base import ENCODERS

    keep = [n for n in names if ENCODERS.get(n).modality in modalities]
    dropped = [n for n in names if n not in keep]
    if dropped:
        print(f"corpus has no {'/'.join(sorted({ENCODERS.get(n).modality for n in dropped}))}: "
              f"not running {', '.join(dropped)}")
    return keep


def cli(argv: list[str] | None = None) -> int:
    """``python -m pipeline features``: the arguments of :func:`pipeline.api.run_extraction`, then its report."""
    from pipeline.api import run_extraction

    p = argparse.ArgumentParser(prog="python -m pipeline features",
                                description="Extract features of a corpus into its cache (incremental, resumable).")
    p.add_argument("--corpus", default="demo-meld", help="corpus name from configs/corpora.yaml (default demo-meld)")
    p.add_argument("--root", default=None, help="corpus root on disk (default: the catalog's root)")
    p.add_argument("--encoders", nargs="*", default=None,
                   help="encoders to run (default: the corpus' list in configs/corpora.yaml, else all six)")
    p.add_argument("--profile", default="offline", help="encoder profile: offline (default) | paper")
    p.add_argument("--cache-root", default="cache", help="caches live in <cache-root>/<corpus>/ (default cache/)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored feature dtype")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding media")
    p.add_argument("--shard-size", type=int, default=256, help="rows per shard (the most a kill can lose)")
    p.add_argument("--threads", default="auto",
                   help="torch threads of the encoding process (default auto: the cores left after --num-workers "
                        "for audio and video, every core for text, whose workers only tokenize)")
    p.add_argument("--sequence", nargs="*", default=None,
                   help="encoders that also store per-step sequences (default: the corpus' catalog entry)")
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"], help="encoder compute dtype on GPU")
    p.add_argument("--set", action="append", default=[], metavar="ENC.KEY=VALUE",
                   help="encoder setting override, e.g. --set timesformer.num_frames=16 --set roberta.weights=/models/rl")
    p.add_argument("--finetuned", nargs="+", default=[], metavar="RUN_DIR",
                   help="also cache the encoder of each `finetune` run as column <modality>.<encoder>@<tag>, "
                        "beside the frozen columns (`--encoders` with no name: only the fine-tuned ones)")
    p.add_argument("--tag", default=None, help="column tag of the --finetuned columns (default: ft)")
    p.add_argument("--inputs", nargs="+", default=[], metavar="ENCODER",
                   help="also cache the DECODED INPUTS of these encoders (data2vec: the waveform at its rate and "
                        "span; timesformer: the sampled uint8 frames), for fine-tuning them (TelME's students); "
                        "`--encoders` with no name: only the inputs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-wait", action="store_true",
                   help="if another run is writing this cache, stop at once (exit 2) instead of waiting for it")
    p.add_argument("--prune", action="store_true",
                   help="only delete what the cache no longer uses (shards of old fingerprints or of columns "
                        "not in meta.json, old dataset versions, leftovers of killed runs), listing each and the "
                        "space freed; extracts nothing")
    p.add_argument("--strict", action="store_true", help="stop before extracting when the reader skipped anything")
    p.add_argument("--asr", metavar="MODEL", default=None,
                   help="fill empty transcripts with this Whisper (dir or hub id) first; marked machine-made")
    a = p.parse_args(argv)
    from pipeline.cache import CacheLocked

    if a.prune:
        cache_dir = Path(a.cache_root) / a.corpus
        if not (cache_dir / META_FILE).exists():
            print(f"features --prune: {cache_dir} is not a features cache (no {META_FILE}); nothing to prune",
                  file=sys.stderr)
            return 2
        try:
            gone = prune(cache_dir, wait=not a.no_wait)
        except CacheLocked as e:
            print(f"features --prune: {e}", file=sys.stderr)
            return 2
        for path, size in gone:
            print(f"deleted {path}  ({size / 2**20:.1f} MiB)")
        print(f"pruned {cache_dir}: {len(gone)} entr{'y' if len(gone) == 1 else 'ies'}, "
              f"{sum(s for _, s in gone) / 2**20:.1f} MiB freed")
        return 0

    import yaml

    overrides: dict[str, dict[str, Any]] = {}
    for s in a.set:
        key, _, value = s.partition("=")
        enc, _, k = key.partition(".")
        if not k or not _:
            p.error(f"--set {s!r}: expected ENCODER.KEY=VALUE")
        overrides.setdefault(enc, {})[k] = yaml.safe_load(value)
    try:
        done = run_extraction(a.corpus, a.root, profile=a.profile, encoders=a.encoders, cache_root=a.cache_root,
                              sequence=a.sequence, dtype=a.dtype, batch_size=a.batch_size, num_workers=a.num_workers,
                              shard_size=a.shard_size, precision=a.precision, encoder_overrides=overrides,
                              finetuned=a.finetuned, tag=a.tag, inputs=a.inputs, asr=a.asr, strict=a.strict,
                              threads=a.threads if a.threads == "auto" else int(a.threads),
                              wait=not a.no_wait, progress=not a.no_progress)
    except CacheLocked as e:
        if process_state().is_main_process:
            print(f"features: {e}", file=sys.stderr)
        return 2
    if process_state().is_main_process:
        print(done.data.report.summary())
        print_report(done.report)
        print(f"wrote {Path(a.cache_root) / a.corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
