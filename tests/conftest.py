"""Session fixtures shared by the end-to-end tests: the demo corpora and their features caches.

Built once per test session (the MELD demo, ~460 utterances, takes ~10 s to generate and ~30 s to
extract with the offline profile on 2 cores)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from pipeline.corpora.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    for layout in ("meld", "iemocap", "mosi"):
        generate_demo(root / layout, layout=layout)
    return root


def _extract(demo_root: Path, tmp_path_factory, corpus: str, layout: str) -> Path:
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    entry = corpus_entry(corpus, demo_root / layout)
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = corpus
    cache = tmp_path_factory.mktemp("cache") / corpus
    extract(data, cache, ExtractSettings(encoders=entry.encoders, sequence=tuple(entry.sequence), progress=False))
    return cache


@pytest.fixture(scope="session")
def demo_meld_cache(demo_root, tmp_path_factory) -> Path:
    return _extract(demo_root, tmp_path_factory, "demo-meld", "meld")
