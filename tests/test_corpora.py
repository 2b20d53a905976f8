"""Corpus readers (MELD, IEMOCAP, CMU-MOSI/MOSEI) on small synthetic releases written in tmp_path."""
from __future__ import annotations

import csv
import io
import wave
from pathlib import Path
from typing import Sequence

import pytest

from pipeline.corpora import CORPORA, CorpusError, read_corpus
from pipeline.corpora.common import (
    KNOWN_ISSUES_DIR,
    cap_span,
    load_known_issues,
    media_problem,
    read_text,
    repair_text,
)
from pipeline.corpora.base import ReadReport
from pipeline.corpora.iemocap import IemocapReader
from pipeline.corpora.meld import MeldReader
from pipeline.corpora.mosi import MoseiReader, MosiReader


def assert_skip(reader, root: Path, pattern: str):
    """A bad row / line is a recorded skip naming file:line (the read goes on); ``--strict`` stops on it."""
    import re

    data = reader.read(root)
    entries = [str(e) for e in data.report.of("skip")]
    assert any(re.search(pattern, e) for e in entries), entries
    assert data.records, "the good rows are still read"
    with pytest.raises(CorpusError, match="--strict"):
        data.report.strict_check()
    return data


MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 16
AVI = b"RIFF\x10\x00\x00\x00AVI LIST" + b"\x00" * 16


def write_wav(path: Path, frames: int = 160) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * frames)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# =========================================================================== MELD

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


def meld_row(sr: int, dia: int, utt: int, text: str = "Hello there.", speaker: str = "Ross",
             emotion: str = "neutral", sentiment: str = "neutral", start: str = "00:00:01,000",
             end: str = "00:00:03,500") -> list[object]:
    return [sr, text, speaker, emotion, sentiment, dia, utt, 1, 1, start, end]


def default_meld_rows() -> dict[str, list[list[object]]]:
    return {
        # train rows deliberately not in dialogue / utterance order; dialogue ids not contiguous
        "train": [
            meld_row(7, 10, 1, "Second of ten.", "Monica", "joy", "positive"),
            meld_row(3, 2, 0, "First of two.", "Ross", "surprise", "positive"),
            meld_row(9, 10, 0, "First of ten.", "Chandler", "anger", "negative"),
            meld_row(1, 2, 1, "Second of two.", "Rachel", "sadness", "negative"),
            meld_row(2, 2, 2, "Third of two.", "Ross", "neutral", "neutral"),
        ],
        "dev": [meld_row(1, 0, 0, "Dev one.", "Joey", "fear", "negative"),
                meld_row(2, 0, 1, "Dev two.", "Phoebe", "disgust", "negative")],
        "test": [meld_row(1, 0, 0, "Test one.", "Ross", "neutral", "neutral"),
                 meld_row(2, 0, 1, "Test two.", "Rachel", "joy", "positive")],
    }


def write_meld(root: Path, rows: dict[str, list[list[object]]] | None = None, nested: bool = False,
               clips: dict[str, list[tuple[int, int]]] | None = None,
               csv_bytes: dict[str, bytes] | None = None) -> Path:
    """A MELD.Raw-like tree: CSVs + one fake mp4 per row (or the given clip ids)."""
    rows = default_meld_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        base = root / split if nested else root
        base.mkdir(parents=True, exist_ok=True)
        data = (csv_bytes or {}).get(split) or csv_text(MELD_HEADER, split_rows).encode("utf-8")
        (base / f"{split}_sent_emo.csv").write_bytes(data)
        clip_dir = base / CLIP_DIRS[split]
        clip_dir.mkdir(parents=True, exist_ok=True)
        ids = [(int(str(r[5])), int(str(r[6]))) for r in split_rows]
        if clips is not None and split in clips:
            ids = clips[split]
        for d, u in ids:
            (clip_dir / f"dia{d}_utt{u}.mp4").write_bytes(MP4)
    return root


def test_registry_has_all_readers() -> None:
    assert {"meld", "iemocap", "mosi", "mosei"} <= set(CORPORA.names())
    assert CORPORA.get("mosei") is MoseiReader and issubclass(MoseiReader, MosiReader)


def test_meld_basic_read(tmp_path: Path) -> None:
    root = write_meld(tmp_path / "MELD.Raw")
    data = read_corpus("meld", root)
    assert data.name == "meld" and data.task == "classification"
    assert list(data.label_sets) == ["primary", "sentiment"]
    assert data.label_sets["primary"] == ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
    assert data.label_sets["sentiment"] == ["neutral", "positive", "negative"]
    assert data.modalities == ("text", "audio", "video")
    assert data.report.counts == {"train": 5, "dev": 2, "test": 2}
    train = data.split("train")
    # dialogue 2 before dialogue 10 (numeric), utterances by Utterance_ID, positions contiguous
    assert [r.utterance_id for r in train] == ["train_dia2_utt0", "train_dia2_utt1", "train_dia2_utt2",
                                              "train_dia10_utt0", "train_dia10_utt1"]
    assert [r.position for r in train] == [0, 1, 2, 0, 1]
    assert [r.dialogue_id for r in train] == ["train_dia2"] * 3 + ["train_dia10"] * 2
    assert [r.text for r in train][:2] == ["First of two.", "Second of two."]
    assert [r.speaker for r in train] == ["Ross", "Rachel", "Ross", "Chandler", "Monica"]
    assert [r.label_name for r in train] == ["surprise", "sadness", "neutral", "anger", "joy"]
    assert [r.label for r in train] == [1, 3, 0, 6, 4]
    assert [r.extra_labels["sentiment"] for r in train] == [1, 2, 0, 2, 1]
    first = train[0]
    assert first.video_path == str(root / "train_splits" / "dia2_utt0.mp4")
    assert first.audio_path == first.video_path
    assert first.start is None and first.end is None
    assert data.splits() == ["train", "dev", "test"]
    assert [r.split for r in data.records] == ["train"] * 5 + ["dev"] * 2 + ["test"] * 2
    # the corpus-wide known issue is always listed, with its reason
    assert any("silent" in e.reason for e in data.report.of("known-issue"))
    # train stops at dialogue 10: the "no dialogue 60" note does not apply
    assert not any("dialogue 60" in e.reason for e in data.report.of("known-issue"))


def test_meld_nested_layout(tmp_path: Path) -> None:
    root = write_meld(tmp_path / "MELD.Raw", nested=True)
    data = MeldReader().read(root)
    assert data.report.counts == {"train": 5, "dev": 2, "test": 2}
    dev = data.split("dev")[0]
    assert dev.video_path == str(root / "dev" / "dev_splits_complete" / "dia0_utt0.mp4")


def test_meld_missing_clip_is_text_only_or_dropped(tmp_path: Path) -> None:
    rows = default_meld_rows()
    clips = {"train": [(2, 0), (2, 1), (10, 0), (10, 1)]}  # (2, 2) has no clip
    root = write_meld(tmp_path / "m", rows, clips=clips)
    data = MeldReader().read(root)
    rec = next(r for r in data.records if r.utterance_id == "train_dia2_utt2")
    assert rec.video_path is None and rec.audio_path is None and rec.text == "Third of two."
    skips = [e for e in data.report.of("skip") if e.utterance_id == "train_dia2_utt2"]
    assert len(skips) == 1 and "file not found" in skips[0].reason and skips[0].file.endswith("dia2_utt2.mp4")
    strict = MeldReader(require_media=True).read(root)
    assert "train_dia2_utt2" not in {r.utterance_id for r in strict.records}
    assert strict.report.counts["train"] == 4


def test_meld_corrupt_clips_dropped(tmp_path: Path) -> None:
    root = write_meld(tmp_path / "m")
    (root / "train_splits" / "dia2_utt0.mp4").write_bytes(b"")
    (root / "train_splits" / "dia2_utt1.mp4").write_bytes(b"<html>not a video</html>")
    data = MeldReader().read(root)
    by_id = {r.utterance_id: r for r in data.records}
    assert by_id["train_dia2_utt0"].video_path is None
    assert by_id["train_dia2_utt1"].audio_path is None
    assert by_id["train_dia2_utt2"].video_path is not None
    reasons = {e.utterance_id: e.reason for e in data.report.of("skip")}
    assert "zero-length" in reasons["train_dia2_utt0"]
    assert "ftyp" in reasons["train_dia2_utt1"]


def test_meld_orphan_clips_and_known_issues(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["train"].append(meld_row(20, 125, 3, "Corrupt clip row."))
    rows["train"].append(meld_row(21, 125, 4, "Next row."))
    clips = {"train": [(2, 0), (2, 1), (2, 2), (10, 0), (10, 1), (125, 3), (125, 4), (7, 7)],
             "dev": [(0, 0), (0, 1), (66, 9)]}
    root = write_meld(tmp_path / "m", rows, clips=clips)
    data = MeldReader().read(root)
    known = data.report.of("known-issue")
    # train dia125_utt3: known corrupt clip -> media dropped although the file looks fine
    rec = next(r for r in data.records if r.utterance_id == "train_dia125_utt3")
    assert rec.video_path is None and rec.text == "Corrupt clip row."
    assert any(e.utterance_id == "train_dia125_utt3" and "corrupt" in e.reason for e in known)
    # dev dia66_utt9: a clip without a row, listed as a known issue (not as a plain skip)
    assert any(e.utterance_id == "dev_dia66_utt9" and "without a CSV row" in e.reason for e in known)
    assert not any(e.utterance_id == "dev_dia66_utt9" for e in data.report.of("skip"))
    # train dia7_utt7: an unknown orphan clip -> a plain skip, never a record
    orphan = [e for e in data.report.of("skip") if e.utterance_id == "train_dia7_utt7"]
    assert len(orphan) == 1 and "no row" in orphan[0].reason
    assert "train_dia7_utt7" not in {r.utterance_id for r in data.records}
    # dialogue-level note for train (no dialogue 60); entries for absent ids are not applied
    assert any("dialogue 60" in e.reason for e in known)
    assert not any(e.utterance_id == "test_dia220_utt0" for e in known)
    # every known-issue entry points at the YAML file and line it came from
    assert all(e.file.endswith("meld.yaml") and e.line for e in known)
    off = MeldReader(known_issues=False).read(root)
    assert not off.report.of("known-issue")
    assert next(r for r in off.records if r.utterance_id == "train_dia125_utt3").video_path is not None


def test_meld_known_missing_clip_is_reported_as_known_issue(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["dev"].append(meld_row(3, 110, 7, "Missing clip."))
    root = write_meld(tmp_path / "m", rows, clips={"dev": [(0, 0), (0, 1)]})
    data = MeldReader().read(root)
    rec = next(r for r in data.records if r.utterance_id == "dev_dia110_utt7")
    assert rec.video_path is None
    assert any(e.utterance_id == "dev_dia110_utt7" and "missing" in e.reason for e in data.report.of("known-issue"))
    assert not any(e.utterance_id == "dev_dia110_utt7" for e in data.report.of("skip"))
    # single-utterance dialogue: kept and reported as info
    assert any(e.utterance_id == "dev_dia110_utt7" and "single utterance" in e.reason for e in data.report.of("info"))


def test_meld_mojibake_repair_utf8(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["train"][0] = meld_row(7, 10, 1, "Iâ€™m fine â€” reallyâ€¦", "Monica", "joy", "positive")
    rows["train"][1] = meld_row(3, 2, 0, "You\x92re late.", "Ross", "surprise", "positive")
    rows["train"][3] = meld_row(1, 2, 1, "Whatâ\x80\x99s upÂ\xa0now", "Rachel", "sadness", "negative")
    root = write_meld(tmp_path / "m", rows)
    data = MeldReader().read(root)
    by_id = {r.utterance_id: r.text for r in data.records}
    assert by_id["train_dia10_utt1"] == "I'm fine - really..."
    assert by_id["train_dia2_utt0"] == "You're late."
    assert by_id["train_dia2_utt1"] == "What's up now"
    fixes = [e for e in data.report.of("fix") if e.file.endswith("train_sent_emo.csv")]
    assert len(fixes) == 1 and "3 row(s)" in fixes[0].reason
    assert not any(e.file.endswith("dev_sent_emo.csv") for e in data.report.of("fix"))


def test_meld_cp1252_csv_is_decoded_and_reported(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["dev"][0] = meld_row(1, 0, 0, "Don\u2019t \u2013 stop\u2026 café", "Joey", "fear", "negative")
    raw = csv_text(MELD_HEADER, rows["dev"]).encode("cp1252")
    assert b"\x92" in raw
    root = write_meld(tmp_path / "m", rows, csv_bytes={"dev": raw})
    data = MeldReader().read(root)
    assert data.split("dev")[0].text == "Don't - stop... café"
    fixes = [e for e in data.report.of("fix") if e.file.endswith("dev_sent_emo.csv")]
    assert any("Windows-1252" in e.reason for e in fixes)
    assert any("1 row(s)" in e.reason for e in fixes)


def test_meld_undecodable_csv(tmp_path: Path) -> None:
    raw = csv_text(MELD_HEADER, default_meld_rows()["test"]).encode() + b"\x81\x8d\xff broken\n"
    root = write_meld(tmp_path / "m", csv_bytes={"test": raw})
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv:4: undecodable"):
        MeldReader().read(root)


def test_meld_unknown_emotion_names_file_and_line(tmp_path: Path) -> None:
    rows = default_meld_rows()
    # a quoted multi-line transcript before the bad row: the line number must still be right
    rows["train"][0] = meld_row(7, 10, 1, "two\nlines", "Monica", "joy", "positive")
    rows["train"][2] = meld_row(9, 10, 0, "Bad label.", "Chandler", "angry", "negative")
    root = write_meld(tmp_path / "m", rows)
    assert_skip(MeldReader(), root, r"train_sent_emo\.csv:5: unknown emotion 'angry'")
    # a bad row that itself spans lines is named by its first line
    rows["train"][2] = meld_row(9, 10, 0, "three\nline\nrow", "Chandler", "angry", "negative")
    root = write_meld(tmp_path / "m2", rows)
    assert_skip(MeldReader(), root, r"train_sent_emo\.csv:5: unknown emotion 'angry'")


def test_meld_unknown_sentiment(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["test"][1] = meld_row(2, 0, 1, "x", "Rachel", "joy", "happy")
    root = write_meld(tmp_path / "m", rows)
    assert_skip(MeldReader(), root, r"test_sent_emo\.csv:3: unknown sentiment 'happy'")


def test_meld_duplicate_utterance(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["dev"].append(meld_row(3, 0, 1, "Again."))
    root = write_meld(tmp_path / "m", rows)
    assert_skip(MeldReader(), root, r"dev_sent_emo\.csv:4: duplicate utterance .*first on line 3")


def test_meld_empty_transcript_skipped(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["test"][0] = meld_row(1, 0, 0, "   ", "Ross")
    root = write_meld(tmp_path / "m", rows)
    data = MeldReader().read(root)
    assert "test_dia0_utt0" not in {r.utterance_id for r in data.records}
    entry = next(e for e in data.report.of("skip") if e.utterance_id == "test_dia0_utt0")
    assert "empty transcript" in entry.reason and entry.line == 2
    # the remaining utterance is re-numbered from 0 and reported as a single-utterance dialogue
    assert data.split("test")[0].position == 0
    assert any(e.utterance_id == "test_dia0_utt1" for e in data.report.of("info"))


def test_meld_missing_column_root_and_csv(tmp_path: Path) -> None:
    header = [h for h in MELD_HEADER if h != "Emotion"]
    raw = csv_text(header, [[1, "x", "Ross", "neutral", 0, 0, 1, 1, "00:00:01,000", "00:00:02,000"]]).encode()
    root = write_meld(tmp_path / "m", csv_bytes={"dev": raw})
    with pytest.raises(CorpusError, match=r"dev_sent_emo\.csv:1: missing required column\(s\) 'Emotion'"):
        MeldReader().read(root)
    with pytest.raises(CorpusError, match=r"nowhere.*corpus root not found"):
        MeldReader().read(tmp_path / "nowhere")
    root2 = write_meld(tmp_path / "m2")
    (root2 / "test_sent_emo.csv").unlink()
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv: MELD CSV for split 'test' not found"):
        MeldReader().read(root2)


def test_meld_duration_cap(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["train"][4] = meld_row(2, 2, 2, "Long one.", "Ross", start="00:01:00,000", end="00:01:45,500")
    rows["train"][0] = meld_row(7, 10, 1, "Long, no clip.", "Monica", "joy", "positive",
                                start="00:00:00,000", end="00:02:00,000")
    clips = {"train": [(2, 0), (2, 1), (2, 2), (10, 0)]}
    root = write_meld(tmp_path / "m", rows, clips=clips)
    data = MeldReader().read(root)
    by_id = {r.utterance_id: r for r in data.records}
    assert (by_id["train_dia2_utt2"].start, by_id["train_dia2_utt2"].end) == (0.0, 30.0)
    assert (by_id["train_dia2_utt0"].start, by_id["train_dia2_utt0"].end) == (None, None)
    assert by_id["train_dia10_utt1"].end is None  # no clip: nothing to cap
    caps = data.report.of("cap")
    assert [e.utterance_id for e in caps] == ["train_dia2_utt2"] and "45.5s" in caps[0].reason
    uncapped = MeldReader(max_duration=None).read(root)
    assert not uncapped.report.of("cap")
    assert MeldReader(max_duration=60.0).read(root).report.of("cap") == []
    with pytest.raises(ValueError):
        MeldReader(max_duration=0.0)


def test_meld_bad_time(tmp_path: Path) -> None:
    rows = default_meld_rows()
    rows["dev"][1] = meld_row(2, 0, 1, "x", start="soon")
    root = write_meld(tmp_path / "m", rows)
    assert_skip(MeldReader(), root, r"dev_sent_emo\.csv:3: bad time 'soon'")


# =========================================================================== IEMOCAP

Turn = tuple[str, float, float, str, str]  # (turn id, start, end, code, text)


def iemocap_dialog(session: int, name: str, n: int = 3, codes: Sequence[str] = ("neu", "hap", "exc")) -> list[Turn]:
    turns: list[Turn] = []
    for i in range(n):
        gender = "F" if i % 2 == 0 else "M"
        turns.append((f"{name}_{gender}{i:03d}", 1.0 + 3 * i, 3.0 + 3 * i, codes[i % len(codes)],
                      f"line {i} of {name}"))
    return turns


def write_iemocap(root: Path, dialogs: dict[str, list[Turn]], extra_trans: dict[str, list[str]] | None = None,
                  media: bool = True) -> Path:
    for dialog, turns in dialogs.items():
        session = int(dialog[3:5])
        sess = root / f"Session{session}"
        emo = sess / "dialog" / "EmoEvaluation"
        trans = sess / "dialog" / "transcriptions"
        emo.mkdir(parents=True, exist_ok=True)
        trans.mkdir(parents=True, exist_ok=True)
        (emo / "Categorical").mkdir(exist_ok=True)  # subfolders of the real release are not read
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for tid, start, end, code, _ in turns:
            lines += [f"[{start:.4f} - {end:.4f}]\t{tid}\t{code}\t[2.5000, 2.5000, 2.5000]",
                      "C-E1:\tNeutral;\t()", "A-E2:\tval 3; act 2; dom  2;\t()", ""]
        (emo / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        tlines = [f"{tid} [{start:08.4f}-{end:08.4f}]: {text}" for tid, start, end, _, text in turns]
        tlines.insert(1, "M: breathing")
        tlines += (extra_trans or {}).get(dialog, [])
        (trans / f"{dialog}.txt").write_text("\n".join(tlines) + "\n")
        if media:
            avi = sess / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            avi.parent.mkdir(parents=True, exist_ok=True)
            avi.write_bytes(AVI)
            for tid, *_ in turns:
                write_wav(sess / "sentences" / "wav" / dialog / f"{tid}.wav")
    return root


def standard_iemocap(root: Path, per_session: int = 5) -> tuple[Path, dict[str, list[Turn]]]:
    dialogs: dict[str, list[Turn]] = {}
    for s in range(1, 6):
        for k in range(per_session):
            letter = "F" if k % 2 == 0 else "M"
            name = f"Ses0{s}{letter}_impro0{k + 1}"
            dialogs[name] = iemocap_dialog(s, name, codes=("neu", "hap", "exc", "fru", "xxx", "sad", "ang"), n=7)
    return write_iemocap(root, dialogs), dialogs


def test_iemocap_basic_read_and_splits(tmp_path: Path) -> None:
    root, dialogs = standard_iemocap(tmp_path / "IEMOCAP_full_release")
    data = IemocapReader().read(root)
    assert data.label_sets["primary"] == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert list(data.label_sets) == ["primary", "4class"]
    assert data.modalities == ("text", "audio", "video")
    by_dialog: dict[str, set[str]] = {}
    for r in data.records:
        by_dialog.setdefault(r.dialogue_id, set()).add(r.split)
    assert all(len(s) == 1 for s in by_dialog.values())  # a dialogue never straddles splits
    test_dialogs = {d for d, s in by_dialog.items() if s == {"test"}}
    assert test_dialogs == {d for d in dialogs if d.startswith("Ses05")}
    dev_dialogs = {d for d, s in by_dialog.items() if s == {"dev"}}
    assert len(dev_dialogs) == 4 and not any(d.startswith("Ses05") for d in dev_dialogs)  # 20% of 20
    again = IemocapReader().read(root)
    assert [(r.utterance_id, r.split) for r in again.records] == [(r.utterance_id, r.split) for r in data.records]
    other = IemocapReader(seed=1).read(root)
    assert {r.dialogue_id for r in other.records if r.split == "dev"} != dev_dialogs
    four = IemocapReader(label_set="4class").read(root)
    assert {r.dialogue_id for r in four.records if r.split == "dev"} == dev_dialogs
    # 7 turns per dialogue, one 'xxx' dropped -> 6 kept
    assert data.report.counts == {"train": 16 * 6, "dev": 4 * 6, "test": 5 * 6}
    assert [r.split for r in data.records] == sorted((r.split for r in data.records),
                                                     key=["train", "dev", "test"].index)


def test_iemocap_labels_speakers_sides_media(tmp_path: Path) -> None:
    root, _ = standard_iemocap(tmp_path / "I", per_session=1)
    data = IemocapReader().read(root)
    recs = [r for r in data.records if r.dialogue_id == "Ses01F_impro01"]
    assert [r.label_name for r in recs] == ["neutral", "happy", "excited", "frustrated", "sad", "angry"]
    assert [r.label for r in recs] == [2, 0, 4, 5, 1, 3]
    assert [r.extra_labels.get("4class") for r in recs] == [2, 0, 0, None, 1, 3]
    assert "4class" not in recs[3].extra_labels
    assert [r.position for r in recs] == list(range(6))
    first, second = recs[0], recs[1]
    assert first.utterance_id == "Ses01F_impro01_F000" and first.speaker == "Ses01_F"
    assert second.speaker == "Ses01_M"
    assert (first.video_side, second.video_side) == ("left", "right")
    assert first.text == "line 0 of Ses01F_impro01"
    wav_dir = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    assert first.audio_path == str(wav_dir / "Ses01F_impro01_F000.wav")
    assert first.video_path == str(root / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi")
    assert (first.start, first.end) == (1.0, 3.0)
    flipped = IemocapReader(marker_side="right").read(root)
    assert flipped.records[0].video_side == "right"
    # dropped codes: one entry per code with its count, not one per turn
    drops = [e for e in data.report.of("skip") if "dropped" in e.reason]
    assert len(drops) == 1 and "5 turn(s) labelled 'xxx'" in drops[0].reason
    # known facts from known_issues/iemocap.yaml are listed
    assert any("7,380" in e.reason and "7,433" in e.reason for e in data.report.of("known-issue"))


def test_iemocap_4class_merge(tmp_path: Path) -> None:
    root, _ = standard_iemocap(tmp_path / "I", per_session=1)
    data = IemocapReader(label_set="4class").read(root)
    assert data.label_sets["primary"] == ["happy", "sad", "neutral", "angry"]
    names = [r.label_name for r in data.records if r.dialogue_id == "Ses02F_impro01"]
    assert names == ["neutral", "happy", "happy", "sad", "angry"]  # exc -> happy; fru, xxx dropped
    assert all(r.extra_labels["4class"] == r.label for r in data.records)
    reasons = " | ".join(e.reason for e in data.report.of("skip"))
    assert "5 turn(s) labelled 'fru'" in reasons and "5 turn(s) labelled 'xxx'" in reasons
    with pytest.raises(ValueError, match="label_set"):
        IemocapReader(label_set="8class")


def test_iemocap_position_by_start_time(tmp_path: Path) -> None:
    turns = [("Ses01F_impro01_M001", 9.0, 10.0, "ang", "later"), ("Ses01F_impro01_F000", 2.0, 4.0, "sad", "earlier"),
             ("Ses01F_impro01_F002", 5.0, 6.0, "neu", "middle")]
    root = write_iemocap(tmp_path / "I", {"Ses01F_impro01": turns})
    data = IemocapReader(sessions=(1,)).read(root)
    assert [r.text for r in data.records] == ["earlier", "middle", "later"]
    assert [r.position for r in data.records] == [0, 1, 2]
    assert data.report.counts == {"train": 3, "dev": 0, "test": 0}


def test_iemocap_bad_media_and_transcripts(tmp_path: Path) -> None:
    dialogs = {"Ses01F_impro01": iemocap_dialog(1, "Ses01F_impro01", n=4, codes=("neu",)),
               "Ses01M_impro02": iemocap_dialog(1, "Ses01M_impro02", n=2, codes=("sad",))}
    dialogs["Ses01F_impro01"][2] = ("Ses01F_impro01_F002", 7.0, 9.0, "neu", "")  # empty transcript
    root = write_iemocap(tmp_path / "I", dialogs)
    wav_dir = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    (wav_dir / "Ses01F_impro01_F000.wav").write_bytes(b"")
    (wav_dir / "Ses01F_impro01_M001.wav").write_bytes(b"ID3 not a wav file at all")
    (root / "Session1" / "dialog" / "avi" / "DivX" / "Ses01M_impro02.avi").unlink()
    trans = root / "Session1" / "dialog" / "transcriptions" / "Ses01M_impro02.txt"
    trans.write_text("\n".join(trans.read_text().splitlines()[:2]) + "\n")  # drops the M001 line
    data = IemocapReader(sessions=(1,), dev_fraction=0.0).read(root)
    by_id = {r.utterance_id: r for r in data.records}
    assert by_id["Ses01F_impro01_F000"].audio_path is None and by_id["Ses01F_impro01_F000"].video_path
    assert by_id["Ses01F_impro01_M001"].audio_path is None
    assert by_id["Ses01F_impro01_M003"].audio_path is not None
    assert "Ses01F_impro01_F002" not in by_id
    skip = {e.utterance_id: e.reason for e in data.report.of("skip") if e.utterance_id}
    assert "zero-length" in skip["Ses01F_impro01_F000"]
    assert "RIFF" in skip["Ses01F_impro01_M001"]
    assert "empty transcript" in skip["Ses01F_impro01_F002"]
    assert "no transcription line" in skip["Ses01M_impro02_M001"]
    f000 = by_id["Ses01M_impro02_F000"]
    assert f000.video_path is None and f000.start is None and f000.video_side is None
    assert any(e.file.endswith("Ses01M_impro02.avi") and "file not found" in e.reason for e in data.report.of("skip"))
    # the dialogue left with one utterance is kept and reported
    assert any(e.utterance_id == "Ses01M_impro02_F000" for e in data.report.of("info"))


def test_iemocap_unknown_code_and_duplicates(tmp_path: Path) -> None:
    turns = iemocap_dialog(1, "Ses01F_impro01", n=3)
    turns[1] = ("Ses01F_impro01_M001", 4.0, 6.0, "bor", "x")
    root = write_iemocap(tmp_path / "a", {"Ses01F_impro01": turns})
    # header, blank, then 4 lines per turn: the second turn is on line 7
    assert_skip(IemocapReader(sessions=(1,)), root, r"Ses01F_impro01\.txt:7: unknown emotion code 'bor'")
    turns = iemocap_dialog(1, "Ses01F_impro01", n=3)
    turns[2] = (turns[0][0], 8.0, 9.0, "neu", "again")
    root = write_iemocap(tmp_path / "b", {"Ses01F_impro01": turns})
    assert_skip(IemocapReader(sessions=(1,)), root, r"EmoEvaluation/Ses01F_impro01\.txt:11: duplicate turn id")


def test_iemocap_missing_files_and_bad_lines(tmp_path: Path) -> None:
    root = write_iemocap(tmp_path / "I", {"Ses01F_impro01": iemocap_dialog(1, "Ses01F_impro01")})
    with pytest.raises(CorpusError, match=r"Session2/dialog/EmoEvaluation: IEMOCAP EmoEvaluation folder not found"):
        IemocapReader().read(root)
    trans = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    good = trans.read_text()
    trans.write_text(good + "Ses01F_impro01_F004 no brackets here\n")
    assert_skip(IemocapReader(sessions=(1,)), root, r"Ses01F_impro01\.txt:5: unrecognised transcription line")
    trans.unlink()
    with pytest.raises(CorpusError, match=r"transcriptions/Ses01F_impro01\.txt: transcription file .* not found"):
        IemocapReader(sessions=(1,)).read(root)
    emo = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    trans.write_text(good)
    emo.write_text(emo.read_text() + "garbage line\n")
    assert_skip(IemocapReader(sessions=(1,)), root, r"Ses01F_impro01\.txt:\d+: unrecognised line 'garbage line'")


# =========================================================================== MOSI / MOSEI

MOSI_HEADER = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]


def mosi_row(video: str, clip: object, score: float | str, annotation: str = "Positive", mode: str = "train",
             text: str = "some words") -> list[object]:
    return [video, clip, text, score, 0.0, 0.0, 0.0, annotation, mode]


def write_mosi(root: Path, rows: list[list[object]], media: bool = True, header: Sequence[str] = MOSI_HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "label.csv").write_text(csv_text(header, rows))
    if media:
        for r in rows:
            clip = root / "Raw" / str(r[0]) / f"{r[1]}.mp4"
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.write_bytes(MP4)
    return root


def default_mosi_rows() -> list[list[object]]:
    return [
        mosi_row("vidA", 10, 2.6, "Positive", "train", "ten"),
        mosi_row("vidA", 2, -0.4, "Neutral", "train", "two"),
        mosi_row("vidA", 1, 2.5, "Positive", "train", "one"),
        mosi_row("vidB", 1, -1.2, "Negative", "valid"),
        mosi_row("vidB", 2, 0.0, "Neutral", "valid"),
        mosi_row("vid_C", "x1", -3.0, "Negative", "test"),
        mosi_row("vid_C", "x0", 3.0, "Positive", "test"),
    ]


def test_mosi_basic_read(tmp_path: Path) -> None:
    root = write_mosi(tmp_path / "MOSI", default_mosi_rows())
    data = read_corpus("mosi", root)
    assert data.task == "regression"
    assert data.label_sets == {"primary": ["-3", "-2", "-1", "0", "1", "2", "3"],
                               "binary": ["negative", "non-negative"],
                               "sentiment": ["negative", "neutral", "positive"]}
    assert list(data.label_sets)[0] == "primary"
    assert data.report.counts == {"train": 3, "dev": 2, "test": 2}
    assert [r.utterance_id for r in data.records] == ["vidA_1", "vidA_2", "vidA_10", "vidB_1", "vidB_2",
                                                      "vid_C_x0", "vid_C_x1"]
    assert [r.position for r in data.records] == [0, 1, 2, 0, 1, 0, 1]
    assert [r.split for r in data.records] == ["train"] * 3 + ["dev"] * 2 + ["test"] * 2
    a1, a2, a10 = data.records[:3]
    assert a1.speaker == a1.dialogue_id == "vidA"
    assert (a1.score, a1.label, a1.label_name) == (2.5, 5, "2")  # round half to even
    assert (a2.score, a2.label, a2.label_name) == (-0.4, 3, "0")
    assert (a10.label, a10.label_name) == (6, "3")
    assert [r.extra_labels["binary"] for r in data.records] == [1, 0, 1, 0, 1, 1, 0]
    assert [r.extra_labels["sentiment"] for r in data.records] == [2, 1, 2, 0, 1, 2, 0]
    assert a1.video_path == str(root / "Raw" / "vidA" / "1.mp4") == a1.audio_path
    assert data.modalities == ("text", "audio", "video")
    assert not data.report.of("fix")


def test_mosi_scores_clipped_and_mosei_known_issues(tmp_path: Path) -> None:
    rows = default_mosi_rows() + [mosi_row("2HP4KedfmSc", 5, 3.2), mosi_row("other", 1, -3.6, "Negative")]
    root = write_mosi(tmp_path / "MOSEI", rows)
    mosei = read_corpus("mosei", root)
    by_id = {r.utterance_id: r for r in mosei.records}
    assert by_id["2HP4KedfmSc_5"].score == 3.0 and by_id["2HP4KedfmSc_5"].label == 6
    assert by_id["other_1"].score == -3.0 and by_id["other_1"].label == 0
    assert all(r.corpus == "mosei" for r in mosei.records)
    known = mosei.report.of("known-issue")
    assert [e.utterance_id for e in known] == ["2HP4KedfmSc_5"] and "3.2 -> 3" in known[0].reason
    assert [e.utterance_id for e in mosei.report.of("fix")] == ["other_1"]
    mosi = MosiReader().read(root)  # MOSI has no known-issues file: both are plain fixes
    assert not mosi.report.of("known-issue")
    assert sorted(e.utterance_id or "" for e in mosi.report.of("fix")) == ["2HP4KedfmSc_5", "other_1"]
    # single-clip videos are summarised per split
    assert any("2 video(s) in train have a single clip" in e.reason for e in mosei.report.of("info"))


def test_mosi_media_problems(tmp_path: Path) -> None:
    root = write_mosi(tmp_path / "MOSI", default_mosi_rows())
    (root / "Raw" / "vidA" / "2.mp4").unlink()
    (root / "Raw" / "vidB" / "1.mp4").write_bytes(b"")
    (root / "Raw" / "vidB" / "2.mp4").write_bytes(b"\x00\x00\x00\x08moov....")
    data = MosiReader().read(root)
    by_id = {r.utterance_id: r for r in data.records}
    assert all(by_id[i].video_path is None for i in ("vidA_2", "vidB_1", "vidB_2"))
    assert by_id["vidA_1"].video_path is not None
    reasons = {e.utterance_id: e.reason for e in data.report.of("skip")}
    assert "file not found" in reasons["vidA_2"] and "zero-length" in reasons["vidB_1"] and "ftyp" in reasons["vidB_2"]
    strict = MosiReader(require_media=True).read(root)
    assert strict.report.counts == {"train": 2, "dev": 0, "test": 2}
    text_only = MosiReader().read(write_mosi(tmp_path / "T", default_mosi_rows(), media=False))
    assert text_only.modalities == ("text",) and len(text_only.records) == 7
    assert any("media folder not found" in e.reason for e in text_only.report.of("skip"))


def test_mosi_bad_input(tmp_path: Path) -> None:
    rows = default_mosi_rows()
    rows[3] = mosi_row("vidB", 1, -1.2, "Negative", "validation")
    assert_skip(MosiReader(), write_mosi(tmp_path / "a", rows), r"label\.csv:5: unknown mode 'validation'")
    rows = default_mosi_rows()
    rows[1] = mosi_row("vidA", 2, "n/a")
    assert_skip(MosiReader(), write_mosi(tmp_path / "b", rows), r"label\.csv:3: label 'n/a' is not a number")
    rows = default_mosi_rows() + [mosi_row("vidA", 10, 1.0)]
    assert_skip(MosiReader(), write_mosi(tmp_path / "c", rows), r"label\.csv:9: duplicate clip 'vidA_10' \(first on line 2\)")
    rows = default_mosi_rows()
    rows[0] = mosi_row("vidA", 10, 1.0, "Mixed")
    assert_skip(MosiReader(), write_mosi(tmp_path / "d", rows), r"label\.csv:2: unknown annotation 'Mixed'")
    header = [h for h in MOSI_HEADER if h != "mode"]
    with pytest.raises(CorpusError, match=r"label\.csv:1: missing required column\(s\) 'mode'"):
        MosiReader().read(write_mosi(tmp_path / "e", [r[:-1] for r in default_mosi_rows()], header=header))
    with pytest.raises(CorpusError, match=r"label\.csv: CSV file not found"):
        MosiReader().read(tmp_path / "a" / "Raw")
    rows = default_mosi_rows()
    rows[0] = mosi_row("vidA", 10, 1.0, text=" ")
    data = MosiReader().read(write_mosi(tmp_path / "f", rows))
    assert "vidA_10" not in {r.utterance_id for r in data.records}
    assert any(e.utterance_id == "vidA_10" and e.line == 2 for e in data.report.of("skip"))


# =========================================================================== shared helpers


@pytest.mark.parametrize("raw, fixed", [
    ("Iâ€™m", "I'm"), ("I\x92m", "I'm"), ("aâ€”b", "a-b"), ("wellâ€¦", "well..."),
    ("â€œhiâ€\x9d", '"hi"'),
    ("Â Hey", " Hey"), ("CafÃ©", "Café"), ("naïve déjà vu", "naïve déjà vu"), ("plain", "plain"),
    ("\u201cok\u201d \u2013 fine\u2026", '"ok" - fine...'),
    # a closing quote whose last byte cp1252 cannot hold (0x9D) comes back as U+FFFD: still the quote
    ("He said \u00e2\u20ac\u0153yes\u00e2\u20ac\ufffd and left", 'He said "yes" and left'),
    ("cafÃƒÂ©", "café"),  # encoded twice
])
def test_repair_text(raw: str, fixed: str) -> None:
    assert repair_text(raw) == fixed


def test_read_text_fallback_and_report(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_bytes("line one\nit\u2019s\n".encode("cp1252"))
    report = ReadReport("t", str(tmp_path))
    text, enc = read_text(p, report)
    assert enc == "cp1252" and text.splitlines()[1] == "it\u2019s"
    assert report.of("fix")[0].line == 2
    p.write_bytes("\ufeffhello".encode("utf-8"))
    assert read_text(p) == ("hello", "utf-8")


def test_media_problem(tmp_path: Path) -> None:
    mp4, wav, avi = tmp_path / "a.mp4", tmp_path / "a.wav", tmp_path / "a.avi"
    mp4.write_bytes(MP4)
    write_wav(wav)
    avi.write_bytes(AVI)
    assert media_problem(mp4, "mp4") is None and media_problem(wav, "wav") is None and media_problem(avi, "avi") is None
    assert media_problem(wav, "avi") == "RIFF file is not AVI"
    assert media_problem(avi, "mp4") is not None
    assert media_problem(tmp_path / "none.mp4", "mp4") == "file not found"


def test_cap_span() -> None:
    assert cap_span(10.0, 30.0) == (None, None, False)
    assert cap_span(31.0, 30.0) == (0.0, 30.0, True)
    assert cap_span(300.0, None) == (None, None, False)


def test_shipped_known_issue_files() -> None:
    meld = load_known_issues("meld")
    ids = {(i.split, i.id): i.action for i in meld}
    assert ids[("train", "dia125_utt3")] == "skip" and ids[("dev", "dia110_utt7")] == "skip"
    assert ids[("test", "dia220_utt0")] == "skip" and ids[("test", "dia38_utt4")] == "skip"
    for key in [("dev", "dia66_utt9"), ("dev", "dia66_utt10"), ("dev", "dia49_utt4"), ("dev", "dia49_utt5"),
                ("test", "dia108_utt2"), ("train", "dia60")]:
        assert ids[key] == "info"
    mosei = {i.id: i.action for i in load_known_issues("mosei")}
    assert mosei == {"2HP4KedfmSc_5": "fix", "XDVkhOziCkg_0": "fix", "sC1NvtirijU_21": "fix"}
    assert any("1708" in i.reason and "7,433" in i.reason for i in load_known_issues("iemocap"))
    assert load_known_issues("mosi") == []
    assert (KNOWN_ISSUES_DIR / "meld.yaml").is_file()


def test_bad_known_issue_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("- id: a\n  action: skip\n  reason: r\n- id: b\n  action: drop\n  reason: r\n")
    with pytest.raises(CorpusError, match=r"bad\.yaml:4: action 'drop'"):
        load_known_issues("bad", directory=tmp_path)
    (tmp_path / "bad2.yaml").write_text("- id: a\n  split: validation\n  action: info\n  reason: r\n")
    with pytest.raises(CorpusError, match=r"bad2\.yaml:1: split 'validation'"):
        load_known_issues("bad2", directory=tmp_path)
