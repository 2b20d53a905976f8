"""Transcripts by ASR (issue 17): a tiny random Whisper built from a config (no download) takes the path
audio -> timestamped chunks -> utterances -> prediction; its words are noise, so the tests check the path
(text made, marked machine-made, segments inside the recording, labels produced), not the words.
Segmentation rules are checked on hand-made chunk lists."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.asr import Chunk, segment_chunks


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> Path:
    from pipeline.asr import write_tiny_whisper

    return write_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


@pytest.fixture(scope="module")
def recording(demo_root, tmp_path_factory) -> Path:
    """A ~7 s wav: three demo test clips' sound tracks one after another."""
    import soundfile as sf

    from pipeline.media import load_audio

    clips = sorted((demo_root / "meld" / "output_repeated_splits_test").glob("dia0_utt*.mp4"))[:3]
    wave = np.concatenate([load_audio(c, sample_rate=16000) for c in clips])
    path = tmp_path_factory.mktemp("rec") / "recording.wav"
    sf.write(path, wave, 16000)
    return path


def test_segments_from_hand_made_chunks():
    chunks = [Chunk(4.0, 6.0, " world "), Chunk(0.0, 2.5, "hello  there"), Chunk(2.5, 2.7, "uh"),
              Chunk(6.0, None, "last one"), Chunk(7.0, 8.0, "   "), Chunk(12.0, 14.0, "after the end")]
    got = segment_chunks(chunks, duration=9.0)
    assert [(c.start, c.end, c.text) for c in got] == [(0.0, 2.7, "hello there uh"), (4.0, 6.0, "world"),
                                                       (6.0, 9.0, "last one")]
    # an end past the audio is clipped, a missing end is the next chunk's start; a short first chunk joins the next
    got = segment_chunks([Chunk(0.0, 0.2, "a"), Chunk(0.2, None, "b c"), Chunk(3.0, 30.0, "d")], duration=5.0)
    assert [(c.start, c.end, c.text) for c in got] == [(0.0, 3.0, "a b c"), (3.0, 5.0, "d")]
    assert segment_chunks([Chunk(0.0, 1.0, " ")], duration=2.0) == []
    assert [c.text for c in segment_chunks([Chunk(0, 1, "x"), Chunk(1, 2, "y")], 2.0, min_seconds=0.0)] == ["x", "y"]


def test_tiny_whisper_transcribes_with_timestamps(whisper, recording):
    from pipeline.asr import Transcriber

    assert not list(whisper.glob("*.bin")) and (whisper / "model.safetensors").is_file()
    chunks, duration = Transcriber(whisper).chunks(recording)
    assert 5.0 < duration < 12.0 and chunks
    assert all(isinstance(c.start, float) for c in chunks) and any(c.text.strip() for c in chunks)
    segments = segment_chunks(chunks, duration)
    assert segments and all(0.0 <= s.start < s.end <= duration for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_recording_over_30_s_goes_through_windows(whisper, recording, tmp_path):
    """Whisper reads 30 s at a time: a longer recording is transcribed in 30 s windows (the ASR pipeline's
    chunked mode) and its segments stay inside the whole recording."""
    import soundfile as sf

    from pipeline.asr import SAMPLE_RATE, Transcriber

    wave, rate = sf.read(recording, dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(wave, int(np.ceil(42 * rate / len(wave)))), rate)
    asr = Transcriber(whisper)
    pipe = asr._load()
    calls: list[dict] = []

    def spy(inputs, **kwargs):
        calls.append({"seconds": len(inputs["raw"]) / inputs["sampling_rate"], **kwargs})
        return pipe(inputs, **kwargs)

    asr._pipe = spy
    chunks, duration = asr.chunks(long)
    assert 42.0 <= duration < 50.0 and calls[0]["seconds"] == pytest.approx(duration)
    assert calls[0]["chunk_length_s"] == 30 and SAMPLE_RATE == 16000
    segments = segment_chunks(chunks, duration)
    assert all(0.0 <= s.start < s.end <= duration for s in segments)
    assert asr.chunks(recording)[1] < 30 and "chunk_length_s" not in calls[-1]  # a short one: one pass


def test_predict_with_asr_and_segment(cmath_meld_runs, whisper, recording, demo_root, tmp_path, capsys):
    """``--asr``: a clip without transcript gets one, marked machine-made; ``--segment`` splits a recording
    into a dialogue of utterances at the ASR's timestamps; each gets a label."""
    from pipeline.__main__ import main

    run = cmath_meld_runs["fused"][0]
    clip = tmp_path / "clip.mp4"
    shutil.copy2(next((demo_root / "meld" / "output_repeated_splits_test").glob("dia1_utt0.mp4")), clip)
    assert main(["predict", str(run), str(clip)]) == 2  # no transcript, no ASR: one line says what to do
    assert "--asr MODEL" in capsys.readouterr().err
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    assert main(["predict", str(run), str(clip), str(recording), "--asr", str(whisper), "--segment",
                 "--json", str(out_json), "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    got = json.loads(out_json.read_text())
    by_dialogue: dict[str, list[dict]] = {}
    for u in got["utterances"]:
        by_dialogue.setdefault(u["dialogue"], []).append(u)
    assert set(by_dialogue) == {"input0", "input1"}
    source = f"asr:{whisper}"
    for u in got["utterances"]:
        assert u["transcript_source"] == source and u["text"].strip() and u["label"] in got["label_names"]
        assert sum(u["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= u["start"] < u["end"]
    turns = by_dialogue["input1"]  # the recording: utterances in time order, inside its ~7 s
    assert [u["position"] for u in turns] == list(range(len(turns)))
    assert all(a["end"] <= b["start"] for a, b in zip(turns, turns[1:])) and turns[-1]["end"] < 12.0
    assert "[asr]" in printed and f"machine-made transcript ({source})" in printed
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["transcript_source"] for r in rows] == [source] * len(got["utterances"])
    # without --segment a clip is one utterance with the ASR's whole transcript; a given --text wins
    from pipeline.predict import read_inputs

    records, report = read_inputs([clip], asr=str(whisper))
    assert len(records) == 1 and records[0].text and report.sources[records[0].utterance_id] == source
    records, report = read_inputs([clip], text="given words", asr=str(whisper))
    assert records[0].text == "given words" and report.sources[records[0].utterance_id] == "text"
    assert main(["predict", str(run), str(clip), "--segment"]) == 2
    assert "--asr MODEL" in capsys.readouterr().err


def test_bad_asr_model_is_one_line(cmath_meld_runs, demo_root, tmp_path, capsys):
    from pipeline.__main__ import main

    clip = next((demo_root / "meld" / "output_repeated_splits_test").glob("dia1_utt0.mp4"))
    not_whisper = tmp_path / "not-whisper"
    not_whisper.mkdir()
    (not_whisper / "pytorch_model.bin").write_bytes(b"\x80\x04 pickled")
    assert main(["predict", str(cmath_meld_runs["fused"][0]), str(clip), "--asr", str(not_whisper)]) == 2
    err = capsys.readouterr().err
    assert f"--asr {not_whisper}: cannot load a Whisper model" in err and "Traceback" not in err


def test_reader_fills_missing_transcripts(demo_root, whisper, tmp_path, capsys):
    """``read --asr``: MELD rows with an empty transcript and a clip are kept and transcribed (counted,
    each marked machine-made); without it they are skipped as before; a row without a clip is still skipped."""
    from pipeline.corpora.base import read_corpus
    from pipeline.corpora.cli import cli as read_cli

    src = demo_root / "meld"
    root = tmp_path / "meld"
    root.mkdir()
    for item in src.iterdir():  # clip folders linked; each split's CSV cut to its first 8 rows (a fast read)
        if item.is_dir():
            (root / item.name).symlink_to(item)
        elif item.suffix == ".csv":
            with item.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))[:8]
            if item.name == "test_sent_emo.csv":  # 3 blank transcripts: two with a clip, one without
                for row in rows[:3]:
                    row["Utterance"] = ""
                rows[2]["Dialogue_ID"], rows[2]["Utterance_ID"] = "999", "0"  # no dia999_utt0.mp4
            with (root / item.name).open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    plain = read_corpus("meld", root)
    filled = read_corpus("meld", root, asr=str(whisper))
    assert len(filled.records) == len(plain.records) + 2
    by_id = {r.utterance_id: r for r in filled.records}
    machine = dict(filled.report.sources)
    assert len(machine) == 2 and set(machine.values()) == {f"asr:{whisper}"}
    assert all(by_id[uid].text.strip() for uid in machine) and filled.report.counts["asr_filled"] == 2
    assert any("no clip for the ASR" in e.reason for e in filled.report.of("skip"))
    assert read_cli(["--corpus", "demo-meld", "--root", str(root), "--asr", str(whisper)]) == 0
    assert f"ASR {whisper}: filled 2 missing transcript(s)" in capsys.readouterr().out
