"""The corpus catalog (``configs/corpora.yaml``): a corpus name -> reader, default root, options."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import configs_dir
from pipeline.errors import UnknownName


DEFAULT_ENCODERS = ["roberta", "roberta-context", "data2vec", "timesformer", "opensmile", "densenet"]


@dataclass
class CorpusEntry:
    """A catalog entry: reader + root + reader options, and the corpus' default extraction
    (``encoders``, and ``sequence``: the encoders that also store per-step sequences, for the
    sequence methods DMD / DHMD)."""

    name: str
    reader: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    encoders: list[str] = field(default_factory=lambda: list(DEFAULT_ENCODERS))
    sequence: list[str] = field(default_factory=list)


def corpus_entry(name: str, root: str | Path | None = None) -> CorpusEntry:
    catalog_file = configs_dir() / "corpora.yaml"
    catalog = yaml.safe_load(catalog_file.read_text()) or {}
    if name not in catalog:
        raise UnknownName(f"unknown corpus {name!r} (not in {catalog_file}); known: {', '.join(sorted(catalog))}")
    e = catalog[name]
    unknown = sorted(set(e) - {"reader", "root", "options", "encoders", "sequence"})
    if unknown:
        raise UnknownName(f"{catalog_file}: corpus {name!r} has unknown keys {unknown}")
    return CorpusEntry(name=name, reader=e["reader"], root=Path(root or e["root"]), options=dict(e.get("options") or {}),
                       encoders=list(e.get("encoders") or DEFAULT_ENCODERS), sequence=list(e.get("sequence") or []))
