"""Batches per granularity: shapes, padding, masks, speakers, missing features, ignored labels."""
from __future__ import annotations

import math

import datasets
import numpy as np
import pytest
import torch

from pipeline.collate import GRANULARITIES, build_split_dataset, label_column, make_loader

# Two dialogues, rows stored out of position order; d1 has speakers B, A, B; u3 is unlabelled; u4 misses audio.
ROWS = [
    # utterance_id, dialogue_id, position, speaker, label, score, label.binary, audio missing, seq length
    ("u0", "d1", 1, "A", 2, 0.5, 1, False, 3),
    ("u1", "d1", 0, "B", 1, -1.0, 1, False, 1),
    ("u2", "d2", 0, "C", 0, 2.0, 0, False, 6),
    ("u3", "d1", 2, "B", -1, math.nan, -1, False, 2),
    ("u4", "d2", 1, "C", 1, 0.0, 1, True, 4),
]


def _split(with_seq: bool = True) -> datasets.Dataset:
    n = len(ROWS)
    cols = {
        "utterance_id": [r[0] for r in ROWS], "dialogue_id": [r[1] for r in ROWS],
        "position": [r[2] for r in ROWS], "speaker": [r[3] for r in ROWS],
        "label": [r[4] for r in ROWS], "score": [r[5] for r in ROWS], "label.binary": [r[6] for r in ROWS],
        # text row i = [i, i, i], audio row i = [10 i, 10 i] (zeros where missing)
        "text.t": [[float(i)] * 3 for i in range(n)],
        "audio.a": [[10.0 * i] * 2 if not r[7] else [0.0, 0.0] for i, r in enumerate(ROWS)],
        "audio.a.missing": [r[7] for r in ROWS],
    }
    if with_seq:
        cols["text.t.seq"] = [[[float(i) + t / 10] * 3 for t in range(r[8])] for i, r in enumerate(ROWS)]
        cols["text.t.seq_len"] = [r[8] for r in ROWS]
    return datasets.Dataset.from_dict(cols)


FEATURES = {"text": "text.t", "audio": "audio.a"}


def test_utterance_batches() -> None:
    ds = build_split_dataset(_split(), granularity="utterance", features=FEATURES, task="classification")
    assert len(ds) == 4  # the unlabelled u3 is dropped
    assert ds.input_dims() == {"text": 3, "audio": 2}
    batch = ds.collate([0, 1, 2, 3])
    assert batch["text"].shape == (4, 3) and batch["audio"].shape == (4, 2)
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [2, 1, 0, 1]
    assert batch["text"][:, 0].tolist() == [0.0, 1.0, 2.0, 4.0]
    assert batch["audio_missing"].tolist() == [False, False, False, True]
    assert batch["audio"][3].abs().sum() == 0
    assert batch["text_missing"].sum() == 0


def test_other_label_set_and_regression() -> None:
    ds = build_split_dataset(_split(), granularity="utterance", features=FEATURES, task="classification",
                             label_column=label_column("binary"))
    assert label_column("binary") == "label.binary" and label_column("primary") == "label"
    assert ds.collate(list(range(len(ds))))["label"].tolist() == [1, 1, 0, 1]
    reg = build_split_dataset(_split(), granularity="utterance", features=FEATURES, task="regression")
    batch = reg.collate(list(range(len(reg))))
    assert "label" not in batch
    assert batch["score"].dtype == torch.float32 and batch["score"].tolist() == [0.5, -1.0, 2.0, 0.0]
    assert batch["label_mask"].all()


def test_dialogue_batches() -> None:
    ds = build_split_dataset(_split(), granularity="dialogue", features=FEATURES, task="classification")
    assert len(ds) == 2
    batch = ds.collate([0, 1])  # d1 (3 turns), d2 (2 turns)
    assert batch["text"].shape == (2, 3, 3) and batch["audio"].shape == (2, 3, 2)
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    # d1 in position order is u1 (B), u0 (A), u3 (B); d2 is u2 (C), u4 (C)
    assert batch["text"][0, :, 0].tolist() == [1.0, 0.0, 3.0]
    assert batch["text"][1, :, 0].tolist() == [2.0, 4.0, 0.0]
    assert batch["speaker"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert batch["label"].tolist() == [[1, 2, -100], [0, 1, -100]]
    assert batch["audio_missing"].tolist() == [[False, False, False], [False, True, False]]
    assert batch["audio"][1, 2].abs().sum() == 0  # padding is zero
    reg = build_split_dataset(_split(), granularity="dialogue", features=FEATURES, task="regression")
    rb = reg.collate([0, 1])
    assert rb["label_mask"].tolist() == [[True, True, False], [True, True, False]]
    assert rb["score"][0].tolist() == [-1.0, 0.5, 0.0]


def test_sequence_batches_pad_and_cap() -> None:
    ds = build_split_dataset(_split(), granularity="sequence", features={"text": "text.t"}, task="classification",
                             max_len=5, seq_policy="truncate")
    assert ds.input_dims() == {"text": 3}
    batch = ds.collate([0, 1, 2])  # u0 (3 frames), u1 (1), u2 (6 -> capped at 5)
    assert batch["text"].shape == (3, 5, 3)
    assert batch["text_len"].tolist() == [3, 1, 5]
    assert batch["text_mask"].sum(1).tolist() == [3, 1, 5]
    assert batch["text"][0, :, 0].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.0, 0.0])
    assert batch["text"][2, 4, 0].item() == pytest.approx(2.4)  # the first 5 frames are kept
    assert batch["label"].tolist() == [2, 1, 0]
    short = ds.collate([1])
    assert short["text"].shape == (1, 1, 3)  # padded to the longest of the batch only
    assert ds.coverage["text"]["truncated_rows"] == 1  # u2 lost its 6th frame (reported in the run card)
    pooled = build_split_dataset(_split(), granularity="sequence", features={"text": "text.t"},
                                 task="classification", max_len=5)  # default: uniform over the whole row
    assert pooled.collate([2])["text"][0, 4, 0].item() == pytest.approx(2.45)  # frames 4 and 5 pooled: the end is kept


def test_loader_batches_everything_once() -> None:
    ds = build_split_dataset(_split(), granularity="utterance", features=FEATURES, task="classification")
    gen = torch.Generator().manual_seed(3)
    loader = make_loader(ds, batch_size=3, shuffle=True, generator=gen)
    seen = torch.cat([b["text"][:, 0] for b in loader])
    assert sorted(seen.tolist()) == [0.0, 1.0, 2.0, 4.0]
    gen.manual_seed(3)
    again = torch.cat([b["text"][:, 0] for b in loader])
    assert torch.equal(seen, again)  # same seed, same order


def test_errors_name_the_source_and_column() -> None:
    with pytest.raises(KeyError, match=r"cache X \[train\]: no feature column 'video.v'"):
        build_split_dataset(_split(), granularity="utterance", features={"video": "video.v"},
                            task="classification", source="cache X [train]")
    with pytest.raises(KeyError, match="no label column 'label.4class'"):
        build_split_dataset(_split(), granularity="utterance", features=FEATURES, task="classification",
                            label_column="label.4class")
    with pytest.raises(KeyError, match="text.t.seq"):
        build_split_dataset(_split(with_seq=False), granularity="sequence", features={"text": "text.t"},
                            task="classification")
    with pytest.raises(KeyError, match="unknown granularity 'graph'"):
        build_split_dataset(_split(), granularity="graph", features=FEATURES, task="classification")
    assert set(GRANULARITIES.names()) == {"utterance", "dialogue", "sequence"}


def test_features_are_read_as_float32_arrays() -> None:
    split = _split().cast_column("text.t", datasets.List(datasets.Value("float16"), length=3))
    ds = build_split_dataset(split, granularity="utterance", features={"text": "text.t"}, task="classification")
    assert ds.vectors["text"].dtype == torch.float32
    assert np.allclose(ds.vectors["text"][:, 0].numpy(), [0, 1, 2, 3, 4])
