"""The corpus catalog (``configs/corpora.yaml``): a corpus name -> reader, default root, options."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def configs_dir() -> Path:
    """``$MERC_CONFIGS`` or the ``configs/`` folder of the working directory or of this checkout."""
    env = os.environ.get("MERC_CONFIGS")
    if env:
        return Path(env)
    for cand in (Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("no configs/ directory found (set MERC_CONFIGS)")


@dataclass
class CorpusEntry:
    name: str
    reader: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)


def corpus_entry(name: str, root: str | Path | None = None) -> CorpusEntry:
    catalog_file = configs_dir() / "corpora.yaml"
    catalog = yaml.safe_load(catalog_file.read_text()) or {}
    if name not in catalog:
        raise KeyError(f"unknown corpus {name!r} (not in {catalog_file}); known: {', '.join(sorted(catalog))}")
    e = catalog[name]
    return CorpusEntry(name=name, reader=e["reader"], root=Path(root or e["root"]), options=dict(e.get("options") or {}))
