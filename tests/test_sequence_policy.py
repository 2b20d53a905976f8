"""Sequence step policies (pipeline.collate.SEQ_POLICIES): how much of an utterance reaches a sequence
method. uniform pools the whole utterance into T steps, words gives one step per word (synthetic timings:
no corpus reader here gives word timings), truncate keeps the head and is counted."""
from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.collate import SEQ_POLICIES, build_split_dataset, seq_policies, uniform_steps
from pipeline.config import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread_module")


def _split(lengths: list[int], dim: int = 2, **extra: list) -> datasets.Dataset:
    """Rows whose frame t of row i is [t, i] (so a step's value tells which frames it pooled)."""
    n = len(lengths)
    cols = {"utterance_id": [f"u{i}" for i in range(n)], "dialogue_id": [f"d{i}" for i in range(n)],
            "position": [0] * n, "speaker": ["A"] * n, "label": [0] * n,
            "audio.a": [[0.0] * dim for _ in range(n)],
            "audio.a.seq": [[[float(t), float(i)] for t in range(L)] for i, L in enumerate(lengths)]}
    cols.update(extra)
    return datasets.Dataset.from_dict(cols)


def _build(split: datasets.Dataset, policy: object, max_len: int = 4):
    return build_split_dataset(split, granularity="sequence", features={"audio": "audio.a"},
                               task="classification", max_len=max_len, seq_policy=policy)


def test_uniform_pools_the_whole_utterance_into_t_steps() -> None:
    ds = _build(_split([100, 3, 8]), "uniform", max_len=4)
    batch = ds.collate([0, 1, 2])
    assert batch["audio_len"].tolist() == [4, 3, 4]  # a short row keeps its frames
    # row 0: 100 frames in 4 bins of 25 -> means 12, 37, 62, 87: the last step covers the end
    assert batch["audio"][0, :, 0].tolist() == pytest.approx([12.0, 37.0, 62.0, 87.0])
    assert batch["audio"][2, :, 0].tolist() == pytest.approx([0.5, 2.5, 4.5, 6.5])
    assert batch["audio"][1, :3, 0].tolist() == [0.0, 1.0, 2.0]
    cov = ds.coverage["audio"]
    assert cov == {"policy": "uniform", "steps": 4, "frames": 111, "frames_used": 111, "truncated_rows": 0,
                   "max_steps": 4}
    # unequal bins: 10 frames into 4 steps -> sizes 2, 3, 2, 3 (floor(k n / T) edges), every frame once
    out = uniform_steps(torch.arange(10, dtype=torch.float32).unsqueeze(1), 4)
    assert out[:, 0].tolist() == pytest.approx([0.5, 3.0, 5.5, 8.0])


def test_truncate_is_explicit_and_counted() -> None:
    ds = _build(_split([100, 3, 8]), "truncate", max_len=4)
    batch = ds.collate([0, 1, 2])
    assert batch["audio"][0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # the head only
    cov = ds.coverage["audio"]
    assert cov["truncated_rows"] == 2 and cov["frames_used"] == 4 + 3 + 4 and cov["frames"] == 111


def test_word_aligned_steps_on_synthetic_timings() -> None:
    # 10 frames over a 1 s span (centres 0.05 .. 0.95); words: [0, .3), a 50 ms word between frame
    # centres (-> nearest frame, centre .35), [.5, 1.0)
    words = [[[0.0, 0.3], [0.3, 0.35], [0.5, 1.0]], [[0.0, 1.0]]]
    split = _split([10, 5], word_spans=words, start=[2.0, 0.0], end=[3.0, 0.5])
    ds = _build(split, "words", max_len=8)
    batch = ds.collate([0, 1])
    assert batch["audio_len"].tolist() == [3, 1]
    assert batch["audio"][0, :3, 0].tolist() == pytest.approx([1.0, 3.0, 7.0])
    assert batch["audio"][1, 0, 0].item() == pytest.approx(2.0)
    # more words than steps: pooled uniformly over the words
    many = [[[k / 10, (k + 1) / 10] for k in range(10)], [[0.0, 1.0]]]
    ds2 = _build(_split([10, 5], word_spans=many, start=[0.0, 0.0], end=[1.0, 1.0]), "words", max_len=5)
    assert ds2.collate([0])["audio"][0, :, 0].tolist() == pytest.approx([0.5, 2.5, 4.5, 6.5, 8.5])


def test_word_policy_without_timings_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs word timings .*word_spans.*no corpus reader here gives word timings"):
        _build(_split([10]), "words")
    no_span = _split([10], word_spans=[[[0.0, 0.5]]], start=[float("nan")], end=[float("nan")])
    with pytest.raises(ValueError, match=r"rows \['u0'\] have no start/end span"):
        _build(no_span, "words")
    empty = _split([10, 4], word_spans=[[[0.0, 0.5]], []], start=[0.0, 0.0], end=[1.0, 1.0])
    with pytest.raises(ValueError, match="row 'u1' has no word timings"):
        _build(empty, "words")


def test_policy_names_and_per_role_settings() -> None:
    assert SEQ_POLICIES.names() == ["truncate", "uniform", "words"]
    assert seq_policies(None, ["text", "audio"]) == {"text": "uniform", "audio": "uniform"}
    assert seq_policies({"audio": "words"}, ["text", "audio"]) == {"text": "uniform", "audio": "words"}
    with pytest.raises(ConfigError, match="unknown sequence policy 'head'; known: truncate, uniform, words"):
        seq_policies("head", ["audio"])
    with pytest.raises(ConfigError, match=r"names roles \['video'\]"):
        seq_policies({"video": "uniform"}, ["audio"])


def _clip(path: Path, cue: bool, seconds: float = 4.0, sr: int = 16000) -> None:
    """Quiet noise; with ``cue`` a loud 1 kHz tone in the LAST second only."""
    rng = np.random.default_rng(0)
    wave = 0.01 * rng.standard_normal(int(seconds * sr))
    if cue:
        t = np.arange(sr) / sr
        wave[-sr:] += 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(path, wave.astype(np.float32), sr)


def test_a_cue_in_the_last_second_reaches_dmd_only_without_head_truncation(tmp_path: Path) -> None:
    from extractors.base import EncoderInput, create_encoder
    from models.dmd import DMD

    enc = create_encoder("opensmile", feature_set="eGeMAPSv02", sequence=True)
    seqs = []
    for cue in (False, True):
        _clip(tmp_path / f"c{cue}.wav", cue)
        seqs.append(enc.encode([enc.load(EncoderInput(utterance_id="u", audio_path=str(tmp_path / f"c{cue}.wav")))])
                    .seq[0])
    assert seqs[0].shape[0] > 350  # ~400 LLD frames of 10 ms for 4 s
    split = datasets.Dataset.from_dict({
        "utterance_id": ["quiet", "cue"], "dialogue_id": ["d0", "d1"], "position": [0, 0], "speaker": ["A", "A"],
        "label": [0, 1], "audio.a": [[0.0], [0.0]], "audio.a.seq": [s.tolist() for s in seqs]})
    torch.manual_seed(0)
    model = DMD(input_dims={"audio": seqs[0].shape[1]}, num_classes=2, seq_len=16, d_model=8, num_heads=2,
                num_layers=1, kernel_sizes={"audio": 1}).eval()
    outputs = {}
    for policy in ("uniform", "truncate"):
        batch = _build(split, policy, max_len=16).collate([0, 1])
        x = batch["audio"]
        assert x.shape[1] == 16
        # what DMD reads: the step inputs of the two clips differ only where the cue is
        differs = (x[0] - x[1]).abs().amax(-1) > 1e-4
        outputs[policy] = (differs, model(batch).logits)
    differs, logits = outputs["uniform"]
    assert differs[-4:].all() and not differs[:8].any()  # the last of 4 s = the last quarter of the steps
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)  # and DMD's output moves with it
    differs, logits = outputs["truncate"]
    assert not differs.any()  # the first 16 frames (0.16 s): the cue never reaches the model
    assert torch.allclose(logits[0], logits[1], atol=1e-6)


def test_run_card_reports_policy_and_truncation() -> None:
    from pipeline.report import _sequence_lines

    cut = _build(_split([100, 3, 8]), "truncate", max_len=4).coverage
    lines = "\n".join(_sequence_lines({"train": cut}))
    assert "policy `truncate`, at most 4 steps, 9.9% of 111 frames used" in lines
    assert "truncated: 2 rows lost frames (90.1% of all frames never reach the model)" in lines
    whole = "\n".join(_sequence_lines({"train": _build(_split([100, 3]), "uniform").coverage}))
    assert "policy `uniform`" in whole and "100.0% of 103 frames used" in whole and "truncated" not in whole
