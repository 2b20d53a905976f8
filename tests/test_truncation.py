"""What the encoders' settings cut off (text past max_length tokens, audio past max_seconds) is measured and
reported: in the extract report (``truncated`` per column, printed) and in the run card."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from extractors.base import EncoderInput


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    samples = (np.sin(np.arange(int(seconds * rate)) / 20.0) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def test_audio_loss_from_span_or_header(tmp_path):
    from extractors.audio import audio_loss

    wav = _wav(tmp_path / "a.wav", 1.5)
    lost, total, unit = audio_loss(EncoderInput("u", audio_path=str(wav)), max_seconds=0.5)
    assert unit == "seconds" and total == pytest.approx(1.5, abs=0.01) and lost == pytest.approx(1.0, abs=0.01)
    assert audio_loss(EncoderInput("u", audio_path=str(wav), start=0.2, end=0.6), max_seconds=0.5) is None
    assert audio_loss(EncoderInput("u", audio_path=str(wav), start=1.0), max_seconds=0.25) == \
        pytest.approx((0.25, 0.5, "seconds"), abs=0.01)
    assert audio_loss(EncoderInput("u", audio_path=str(wav)), max_seconds=None) is None


def test_extract_report_counts_truncated_utterances(tmp_path, capsys):
    from extractors.base import create_encoder
    from extractors.profiles import encoder_kwargs
    from pipeline.corpora.base import CorpusData, ReadReport, Utterance
    from pipeline.extract import ExtractSettings, extract, print_report

    texts = ["short one", " ".join(["word"] * 30), "also short", " ".join(["many"] * 12)]
    recs = [Utterance(corpus="t", split=s, dialogue_id=f"d{i}", position=0, utterance_id=f"u{i}", speaker="A",
                      text=t, label=0, label_name="a") for i, (t, s) in enumerate(zip(texts, ["train", "dev", "test",
                                                                                              "train"]))]
    data = CorpusData("t", recs, ReadReport("t", str(tmp_path)), {"primary": ["a"]}, ("text",))
    enc = create_encoder("roberta", **{**encoder_kwargs("offline", "roberta"), "max_length": 8})
    report = extract(data, tmp_path / "cache", ExtractSettings(encoders=[enc], progress=False, num_workers=0))
    t = report["columns"]["text.roberta"]["truncated"]
    full = len(enc.tokenizer(texts[1])["input_ids"])
    assert t["unit"] == "tokens" and t["utterances"] == 2 and t["of"] == 4
    assert t["max_utterance"] == "u1" and t["max_lost"] == full - 8 and t["max_of"] == full
    assert t["utterance_ids"] == ["u1", "u3"]
    print_report(report)
    assert "truncated text.roberta: 2 of 4 utterance(s) lost tokens" in capsys.readouterr().out
