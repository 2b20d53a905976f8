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


# --------------------------------------------------------------------------- sequence caches (DMD / DHMD)

import contextlib  # noqa: E402  (this section was appended; the imports above are shared)
from typing import Iterator  # noqa: E402


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one intra-op thread, then restore the count. The demo models and encoders are
    tiny: on 2 shared cores a second thread only adds synchronisation (a DMD epoch takes ~10x longer
    with 2 threads than with 1 on a busy machine), and one thread gives the same floats everywhere."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _extract_sequences(root: Path, tmp_path_factory, corpus: str) -> Path:
    """Only the catalog's sequence encoders of ``corpus`` (the columns DMD / DHMD read), with their
    sequences: the other three offline encoders would triple the cost and no sequence method reads them."""
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    entry = corpus_entry(corpus, root)
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = corpus
    cache = tmp_path_factory.mktemp("cache") / corpus
    with one_torch_thread():
        extract(data, cache, ExtractSettings(encoders=list(entry.sequence), sequence=tuple(entry.sequence),
                                             progress=False))
    return cache


@pytest.fixture(scope="session")
def demo_mosi_cache(demo_root, tmp_path_factory) -> Path:
    """The MOSI demo (default size, ~300 clips) with text.roberta / audio.opensmile / video.densenet
    vectors and sequences."""
    return _extract_sequences(demo_root / "mosi", tmp_path_factory, "demo-mosi")


# MUStARD demo sizes for the suite: 40 FRIENDS targets (= the speaker-independent test split, so a binary
# accuracy bound has n = 40 instead of the default 14) and 40 BBT targets (dev = 10% of the non-FRIENDS
# targets: 5 instead of 3). Context turns have no media, so this costs ~2 s more extraction than the default.
MUSTARD_SUITE_SIZES = {"FRIENDS": 40, "BBT": 40}


@pytest.fixture(scope="session")
def demo_mustard_root(tmp_path_factory) -> Path:
    from pipeline.corpora.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo") / "mustard", layout="mustard",
                         n_dialogues=MUSTARD_SUITE_SIZES)


@pytest.fixture(scope="session")
def demo_mustard_cache(demo_mustard_root, tmp_path_factory) -> Path:
    """The MUStARD demo (94 targets, binary, balanced) with the same sequence columns as ``demo_mosi_cache``."""
    return _extract_sequences(demo_mustard_root, tmp_path_factory, "demo-mustard")


# --------------------------------------------------------------------------- CMATH / SUMMER on the MELD demo

DIALOGUE_FEATURES = {"text": "text.roberta", "audio": "audio.opensmile", "video": "video.densenet"}


def _train_one_thread(method: str, corpus: str, overrides: list[str], cache: Path, out: Path,
                      seed: int | None) -> dict:
    """One ``train`` on one torch thread (run in a worker process of ``_training_pool``)."""
    from pipeline.config import load_config
    from pipeline.train import train

    config = load_config(method, corpus, overrides=overrides)
    with one_torch_thread():
        return train(config, cache, out, seed=config["train"]["seed"] if seed is None else seed)


_POOL = None


def _training_pool():
    """Two spawned worker processes for independent one-thread trainings: a one-thread run leaves the
    second core idle, so two at once halve the wall time of the multi-seed fixtures (same floats: each
    run is one thread in a fresh process either way)."""
    global _POOL
    if _POOL is None:
        import atexit
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _POOL = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_POOL.shutdown)
    return _POOL


def fused_and_single_modality_runs_by_seed(method: str, corpus: str, cache: Path, roots: dict[int | None, Path],
                                           features: dict[str, str]) -> dict[int | None, dict[str, tuple[Path, dict]]]:
    """``fused_and_single_modality_runs`` for several seeds ({seed: root}), all runs two at a time."""
    from pipeline.config import load_config

    assert load_config(method, corpus)["features"] == features
    pool = _training_pool()
    futures = {}
    for seed, root in roots.items():
        for name in ("fused", *features):
            overrides = [] if name == "fused" else [f"features={{{name}: {features[name]}}}"]
            futures[seed, name] = pool.submit(_train_one_thread, method, corpus, overrides, cache, root / name, seed)
    out: dict[int | None, dict[str, tuple[Path, dict]]] = {}
    for (seed, name), future in futures.items():
        out.setdefault(seed, {})[name] = (roots[seed] / name, future.result())
    return out


def fused_and_single_modality_runs(method: str, corpus: str, cache: Path, root: Path, features: dict[str, str],
                                   seed: int | None = None) -> dict[str, tuple[Path, dict]]:
    """``method``'s ``corpus`` run on all roles of ``features`` ("fused") and one run per role, each trained once
    on one thread with ``seed`` (default: the config's): {"fused" | role: (run dir, result)}. A single-modality
    run is the documented override ``--set features='{<role>: <column>}'`` (the model then builds and reads
    that one role only)."""
    return fused_and_single_modality_runs_by_seed(method, corpus, cache, {seed: root}, features)[seed]


def _fused_and_single_modality_runs(method: str, cache: Path, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The demo-meld runs of ``method`` with the config's seed (see ``fused_and_single_modality_runs``)."""
    return fused_and_single_modality_runs(method, "demo-meld", cache, tmp_path_factory.mktemp(f"{method}-runs"),
                                          DIALOGUE_FEATURES)


@pytest.fixture(scope="session")
def cmath_meld_runs(demo_meld_cache, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """CMATH on the MELD demo: the fused run and one run per modality (~30 s in all)."""
    return _fused_and_single_modality_runs("cmath", demo_meld_cache, tmp_path_factory)


@pytest.fixture(scope="session")
def summer_meld_runs(demo_meld_cache, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """SUMMER on the MELD demo: the fused run and one run per modality, both stages each (~40 s in all)."""
    return _fused_and_single_modality_runs("summer", demo_meld_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def single_thread_module():
    """Module-wide :func:`one_torch_thread` (model unit tests on tiny tensors use it via
    ``pytestmark = pytest.mark.usefixtures("single_thread_module")``)."""
    with one_torch_thread():
        yield


# --------------------------------------------------------------------------- accuracy bounds for small test splits

def binomial_floor(n: int, p0: float, alpha: float = 0.01) -> int:
    """The fewest right answers out of ``n`` that a predictor right with probability ``p0`` on each item (a
    constant or coin-flip predictor: ``p0`` = the majority class share) reaches with probability < ``alpha``:
    min k with P[Binomial(n, p0) >= k] < alpha. An accuracy test asks for at least this many, so a model
    that learnt nothing passes it by luck in fewer than 1 run in 1/alpha."""
    import math

    for k in range(n + 1):
        if sum(math.comb(n, i) * p0 ** i * (1 - p0) ** (n - i) for i in range(k, n + 1)) < alpha:
            return k
    return n + 1


def majority_share(labels) -> float:
    """The share of the most frequent label among the labelled (>= 0) ones: a constant predictor's accuracy."""
    import collections

    counts = collections.Counter(int(y) for y in labels if int(y) >= 0)
    return max(counts.values()) / sum(counts.values())
