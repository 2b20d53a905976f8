"""The remaining layouts end to end: generated media -> the catalog's reader -> offline features -> one method.

IEMOCAP 6-class and 4-class with CMATH on the IEMOCAP demo of ``demo_root`` (one extraction: the 4-class
run reads the cache's ``label.4class`` labels; the catalog's ``iemocap-4class`` entry is read and checked
against them), and UR-FUNNY with DMD. Only the columns the method reads
are extracted. Each accuracy must reach ``binomial_floor(n, p0)``: the right answers a model that learnt
nothing (a constant predictor: ``p0`` = the test split's majority share; a guess by the class prior does
no better) reaches with probability < 1%.
"""
from __future__ import annotations

from pathlib import Path

import pytest

COLUMNS = ["roberta", "opensmile", "densenet"]  # the text / audio / video columns of CMATH and DMD


def _extract(corpus: str, root: Path, cache: Path, sequence: tuple[str, ...] = ()) -> Path:
    from conftest import one_torch_thread
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    entry = corpus_entry(corpus, root)
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = corpus
    with one_torch_thread():
        extract(data, cache, ExtractSettings(encoders=list(COLUMNS), sequence=sequence, progress=False))
    return cache


def _train(method: str, config_corpus: str, cache: Path, out: Path, overrides: list[str] | None = None):
    from conftest import one_torch_thread
    from pipeline.config import load_config
    from pipeline.train import train

    config = load_config(method, config_corpus, overrides=overrides or [])
    with one_torch_thread():
        return train(config, cache, out, seed=config["train"]["seed"])


def _check_accuracy(result: dict, cache: Path, column: str = "label") -> None:
    from conftest import binomial_floor, majority_share
    from pipeline.cache import load_cache

    labels = load_cache(cache).dataset["test"][column]
    n = result["test"]["n"]
    assert n == sum(1 for y in labels if y >= 0)  # every labelled test item scored once
    floor = binomial_floor(n, majority_share(labels))
    assert round(result["test"]["accuracy"] * n) >= floor, (floor, n, result["test"])


@pytest.fixture(scope="module")
def iemocap_cache(demo_root, tmp_path_factory) -> Path:
    """The IEMOCAP demo through the catalog's demo-iemocap entry (6 classes; the cache also holds the
    4-class labels as ``label.4class``, -1 on frustrated turns)."""
    return _extract("demo-iemocap", demo_root / "iemocap", tmp_path_factory.mktemp("cache") / "demo-iemocap")


def test_iemocap_4class_entry_reads_the_6class_utterances_of_its_classes(iemocap_cache, demo_root):
    """The catalog's iemocap-4class entry keeps exactly the 6-class utterances of its four classes
    (excited merged into happy), with the labels of the 6-class cache's ``label.4class`` column."""
    from pipeline.cache import load_cache
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus

    six = load_cache(iemocap_cache)
    entry = corpus_entry("iemocap-4class", demo_root / "iemocap")
    four = read_corpus(entry.reader, entry.root, **entry.options)
    assert six.meta["label_sets"]["primary"] == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert four.label_sets["primary"] == six.meta["label_sets"]["4class"] == ["happy", "sad", "neutral", "angry"]
    merge = {"happy": "happy", "excited": "happy", "sad": "sad", "neutral": "neutral", "angry": "angry"}
    for split in ("train", "dev", "test"):
        a = six.dataset[split]
        expected = {u: merge[n] for u, n in zip(a["utterance_id"], a["label_name"]) if n in merge}
        assert {r.utterance_id: r.label_name for r in four.records if r.split == split} == expected, split
        assert len(expected) < a.num_rows  # frustrated turns exist and were dropped
        column = dict(zip(a["utterance_id"], a["label.4class"]))
        assert all(four.label_sets["primary"][column[u]] == name for u, name in expected.items())
        assert all(column[u] == -1 for u in column if u not in expected)
    assert set(six.dataset["test"]["label_name"]) == set(six.meta["label_sets"]["primary"])


@pytest.mark.parametrize("label_set", ["primary", "4class"])
def test_cmath_on_the_iemocap_demo(label_set, iemocap_cache, tmp_path):
    import json

    from pipeline.collate import label_column

    result = _train("cmath", "demo-iemocap", iemocap_cache, tmp_path / "run", [f"label_set={label_set}"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(saved["label_names"]) == (6 if label_set == "primary" else 4)
    _check_accuracy(result, iemocap_cache, label_column(label_set))
    for name in ("per_class.md", "confusion.png", "run_card.md", "stage-main.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name


@pytest.fixture(scope="module")
def urfunny_cache(tmp_path_factory) -> Path:
    """The UR-FUNNY demo with 40 test punchlines (default 10: too few for an accuracy bound) and the
    sequence columns DMD reads."""
    from pipeline.corpora.demo import generate_demo

    root = generate_demo(tmp_path_factory.mktemp("demo") / "urfunny", layout="urfunny", n_dialogues={"test": 40})
    return _extract("demo-urfunny", root, tmp_path_factory.mktemp("cache") / "demo-urfunny", tuple(COLUMNS))


def test_dmd_on_the_urfunny_demo(urfunny_cache, tmp_path):
    import json

    # binary humour detection: the demo-mustard config (tiny widths, 16 steps, dev accuracy) fits it as is
    result = _train("dmd", "demo-mustard", urfunny_cache, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["task"] == "classification" and saved["label_names"] == ["not_humorous", "humorous"]
    assert result["test"]["n"] == 40
    _check_accuracy(result, urfunny_cache)
