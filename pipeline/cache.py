"""The features cache: one Hugging Face ``DatasetDict`` per corpus, on disk.

Layout of ``<cache_root>/<corpus>/``::

    meta.json        corpus facts + one entry per feature column (fingerprint, dim, encoder, settings,
                     random_weights, dtype, seq_dim) + ``dataset``: the name of the current version folder
    dataset-<n>/     DatasetDict.save_to_disk(): splits "train" / "dev" / "test" (the merged view), version n
    shards/          internal: per-column, per-fingerprint shards written atomically (resumable)
    report.json      what the extract stage computed, reused, skipped and why
    .lock            the writers' lock (one ``features`` run at a time; ``.lock.json`` names the holder)

A save writes ``dataset-<n+1>.tmp-<writer>/``, renames it to ``dataset-<n+1>/`` and then replaces
``meta.json`` (which names the version) in one ``os.replace``: the dataset and its meta change
together, and a reader sees the old or the new version, never a mix. The previous version is kept
until the next save (a reader that read the old meta.json just before the swap still finds it);
older ones and the temp leftovers of killed runs are removed by the next writer. Caches written
before versioning (a plain ``dataset/`` folder, no ``dataset`` key in meta.json) load as they are and
move to the versioned layout on their next save.

Columns of every split (one row per utterance, in dialogue order):

    utterance_id str, dialogue_id str, position int32, speaker str, text str, split str,
    label int64 (-1 = none), label_name str, score float32 (nan = none),
    label.<set> int64 for every extra label set (e.g. "label.sentiment", "label.4class"),
    video_path / audio_path str ("" = none), start / end float32 (nan = whole file)

Feature columns are named ``<modality>.<encoder>`` (``text.roberta-context``, ``audio.data2vec``,
``video.timesformer``...): a fixed-length list of float16/float32 of size ``meta.columns[c].dim``.
``<col>.missing`` (bool) marks rows whose input could not be encoded (zeros are stored; the
reason is in report.json). Sequence features, where asked, are ``<col>.seq`` (list of
``seq_dim``-lists, unpadded) with ``<col>.seq_len`` (int32).

``meta.json`` keys: ``corpus``, ``task`` ("classification" | "regression"), ``label_sets``
({"primary": [...names], "<set>": [...]}), ``modalities``, ``records_fingerprint``, ``columns``.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import MissingFile, UnknownName

META_FILE = "meta.json"
DATASET_DIR = "dataset"
DATASET_KEY = "dataset"  # meta.json key naming the current dataset version folder
TMP_MARK = ".tmp-"


@dataclass
class Cache:
    path: Path
    dataset: Any  # datasets.DatasetDict
    meta: dict[str, Any]

    @property
    def task(self) -> str:
        return self.meta.get("task", "classification")

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_sets"]["primary"])

    def dim(self, column: str) -> int:
        try:
            return int(self.meta["columns"][column]["dim"])
        except KeyError:
            have = ", ".join(sorted(self.meta.get("columns", {}))) or "(none)"
            raise UnknownName(f"cache {self.path} has no feature column {column!r}; it has: {have}. "
                           f"Run `make features` with that encoder.") from None

    def fingerprint(self) -> str:
        from extractors.base import stable_hash

        return stable_hash({"records": self.meta.get("records_fingerprint"),
                            "columns": {c: v.get("fingerprint") for c, v in sorted(self.meta.get("columns", {}).items())}})


def load_cache(path: str | Path, *, retries: int = 5) -> Cache:
    """Open a cache written by the extract stage (memory-mapped; nothing is read into RAM).

    A save running meanwhile may swap versions between reading meta.json and opening the dataset;
    then the version read is gone or going: read meta.json again and open the new one."""
    import datasets

    path = Path(path)
    meta_file = path / META_FILE
    for attempt in range(retries + 1):
        if not meta_file.exists():
            raise MissingFile(f"{meta_file} not found: {path} is not a features cache (run `make features`)")
        text = meta_file.read_text()
        meta = json.loads(text)
        try:
            ds = datasets.load_from_disk(str(path / meta.get(DATASET_KEY, DATASET_DIR)))
        except FileNotFoundError:
            if attempt == retries or meta_file.read_text() == text:
                raise
            continue
        return Cache(path=path, dataset=ds, meta=meta)
    raise AssertionError("unreachable")


def version_of(name: str) -> int | None:
    """``dataset-<n>`` -> n; the pre-versioning ``dataset`` -> 0; anything else -> None."""
    if name == DATASET_DIR:
        return 0
    head, _, num = name.partition("-")
    return int(num) if head == DATASET_DIR and num.isdigit() else None


def current_version(path: Path) -> str | None:
    """The dataset folder meta.json names (``dataset`` for caches written before versioning), or None."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta.get(DATASET_KEY, DATASET_DIR)


def unique_tmp(name: str) -> str:
    """A temp name no other writer (process, rank or thread) uses: ``<name>.tmp-<pid>-<random>``."""
    return f"{name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_text_atomic(target: Path, text: str) -> None:
    tmp = target.with_name(unique_tmp(target.name))
    tmp.write_text(text)
    os.replace(tmp, target)


def stale_entries(path: Path, *, keep_previous: bool = True) -> list[Path]:
    """What a writer (holding the lock) may delete in the cache root: temp leftovers of killed runs and
    dataset versions other than the current one and (``keep_previous``) the newest older one."""
    path = Path(path)
    if not path.is_dir():
        return []
    current = current_version(path)
    cur_n = version_of(current) if current else None
    versions = sorted((version_of(p.name), p) for p in path.iterdir()
                      if p.is_dir() and version_of(p.name) is not None)
    older = [p for n, p in versions if p.name != current and (cur_n is None or n < cur_n)]
    keep = {current} | ({older[-1].name} if keep_previous and older else set())
    out = [p for p in path.iterdir()
           if TMP_MARK in p.name or p.name.endswith(".tmp") or p.name == DATASET_DIR + ".old"]  # .old: old layout
    out += [p for n, p in versions if p.name not in keep]
    return sorted(set(out))


def remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def save_cache(path: str | Path, dataset: Any, meta: dict[str, Any]) -> Cache:
    """Write ``dataset`` (a DatasetDict) and ``meta`` as the next version of the cache at ``path``.

    The caller holds the cache's writer lock (``pipeline.extract.cache_lock``). Steps, each a
    possible kill point (``faultpoint``): the dataset to a temp folder of this writer; rename to
    ``dataset-<n+1>``; meta.json (naming it) replaced atomically; then versions older than the
    previous one and leftovers are removed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    numbers = [version_of(p.name) for p in path.iterdir() if p.is_dir()]
    n = max([v for v in numbers if v is not None], default=0) + 1
    name = f"{DATASET_DIR}-{n}"
    tmp = path / unique_tmp(name)
    dataset.save_to_disk(str(tmp))
    faultpoint("save-dataset")
    os.replace(tmp, path / name)
    faultpoint("save-pointer")
    write_text_atomic(path / META_FILE, json.dumps({**meta, DATASET_KEY: name}, indent=2, sort_keys=True))
    faultpoint("save-cleanup")
    for p in stale_entries(path):
        remove(p)
    return load_cache(path)


def faultpoint(name: str) -> None:
    """Fault injection for the kill tests and ``make faults``: with ``MERC_FAULT_AT=<name>[:<k>]`` the
    process kills itself (SIGKILL) the k-th time (default first) it reaches point ``name``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, k = spec.partition(":")
    if want != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] >= int(k or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


FAULT_ENV = "MERC_FAULT_AT"
_FAULT_HITS: dict[str, int] = {}


# ------------------------------------------------------------------------------------------ writer lock
LOCK_FILE = ".lock"
LOCK_INFO = ".lock.json"


class CacheLocked(RuntimeError):
    """Another writer holds the cache and the caller asked not to wait."""


def lock_holder(path: Path) -> str:
    """``pid P on HOST since TIME (COMMAND)`` from the holder's ``.lock.json`` (or "another process")."""
    try:
        info = json.loads((Path(path) / LOCK_INFO).read_text())
    except (OSError, ValueError):
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
            + (f" ({info['command']})" if info.get("command") else ""))


class CacheLock:
    """One writer at a time per cache: an OS file lock (``filelock``; released by the kernel when the
    holder dies, even by SIGKILL) on ``<cache>/.lock``, with the holder named in ``.lock.json``.

    ``wait=True`` waits for the holder and says so once (``say``: where the message goes);
    ``wait=False`` raises :class:`CacheLocked` at once."""

    def __init__(self, path: str | Path, *, wait: bool = True, say: Any = None, command: str = "") -> None:
        from filelock import FileLock

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.wait, self.say, self.command = wait, say, command
        # the lock file stays (deleting it on release lets a third process lock a new inode meanwhile)
        self.lock = FileLock(str(self.path / LOCK_FILE), fallback_to_soft=False, preserve_lock_file=True)

    def __enter__(self) -> "CacheLock":
        import socket
        import sys
        import time

        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            holder = lock_holder(self.path)
            if not self.wait:
                raise CacheLocked(f"cache {self.path} is being written by {holder}; "
                                  f"wait for it to finish or run without --no-wait") from None
            print(f"cache {self.path} is being written by {holder}; waiting for it to finish "
                  f"(--no-wait stops instead)", file=self.say or sys.stderr, flush=True)
            self.lock.acquire()
        write_text_atomic(self.path / LOCK_INFO, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
