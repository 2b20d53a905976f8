"""The features cache: one Hugging Face ``DatasetDict`` per corpus, on disk.

Layout of ``<cache_root>/<corpus>/``::

    meta.json        corpus facts + one entry per feature column (fingerprint, dim, encoder, settings,
                     random_weights, dtype, seq_dim)
    dataset/         DatasetDict.save_to_disk(): splits "train" / "dev" / "test" (the merged view)
    shards/          internal: per-column, per-fingerprint shards written atomically (resumable)
    report.json      what the extract stage computed, reused, skipped and why

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import MissingFile, UnknownName

META_FILE = "meta.json"
DATASET_DIR = "dataset"


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


def load_cache(path: str | Path) -> Cache:
    """Open a cache written by the extract stage (memory-mapped; nothing is read into RAM)."""
    import datasets

    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise MissingFile(f"{meta_file} not found: {path} is not a features cache (run `make features`)")
    meta = json.loads(meta_file.read_text())
    ds = datasets.load_from_disk(str(path / DATASET_DIR))
    return Cache(path=path, dataset=ds, meta=meta)


def save_cache(path: str | Path, dataset: Any, meta: dict[str, Any]) -> Cache:
    """Write ``dataset`` (a DatasetDict) and ``meta`` as a cache (atomically: temp dir, then rename)."""
    import os
    import shutil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (DATASET_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    dataset.save_to_disk(str(tmp))
    final = path / DATASET_DIR
    old = path / (DATASET_DIR + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    tmp_meta = path / (META_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp_meta, path / META_FILE)
    return load_cache(path)
