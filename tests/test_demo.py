"""The demo corpus generator: real release layouts, decodable media, and measurable per-modality cues."""
from __future__ import annotations

import colorsys
import csv
import hashlib
import math
import re
import wave
from collections import Counter
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from pipeline.corpora import demo
from pipeline.corpora.demo import (
    CUE_MODES,
    IEMOCAP_CUES,
    MELD_CUES,
    MELD_PRIOR,
    MOSI_PHRASES,
    UNINFORMATIVE_F0_HZ,
    assign_cue_modes,
    draw_labels,
    generate_demo,
    read_cues,
)

SR = 16000
FPS = 10
SIZE = 96
MELD_SIZES = {"train": 8, "dev": 4, "test": 4}
MELD_HEADER = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
               "StartTime,EndTime")
MOSI_HEADER = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"
MELD_TIME = re.compile(r"^\d\d:\d\d:\d\d,\d\d\d$")
EVAL_LINE = re.compile(r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t(\w{3})\t\[\d\.\d{4}, \d\.\d{4}, \d\.\d{4}\]$")
TRANS_LINE = re.compile(r"^(\S+) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.+)$")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def meld(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("meld"), "meld", seed=3, n_dialogues=MELD_SIZES)


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("iemocap"), "iemocap", seed=3)


@pytest.fixture(scope="module")
def mosi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("mosi"), "mosi", seed=3)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _meld_rows(root: Path) -> dict[str, list[dict[str, str]]]:
    return {s: _rows(root / f"{s}_sent_emo.csv") for s in ("train", "dev", "test")}


def _meld_clip(root: Path, split: str, row: dict[str, str]) -> Path:
    return root / demo.MELD_CLIP_DIRS[split] / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"


def _seconds(t: str) -> float:
    h, m, rest = t.split(":")
    s, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


# --------------------------------------------------------------------------- measurements from raw media


def _colour(frames: np.ndarray) -> tuple[float, float, float]:
    """(hue degrees, saturation, value) of the mean colour of the frames' central region."""
    h, w = frames.shape[1:3]
    centre = frames[:, int(0.35 * h):int(0.65 * h), int(0.35 * w):int(0.65 * w)].reshape(-1, 3).mean(0) / 255.0
    hue, sat, val = colorsys.rgb_to_hsv(*centre)
    return hue * 360.0, sat, val


def _pitch(x: np.ndarray, sr: int) -> float:
    """The strongest spectral peak between 60 and 1000 Hz."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / sr)
    band = (freqs >= 60) & (freqs <= 1000)
    return float(freqs[band][np.argmax(spec[band])])


def _chroma(hue: float, sat: float) -> np.ndarray:
    return np.array([sat * math.cos(math.radians(hue)), sat * math.sin(math.radians(hue))])


def _centroid_accuracy(features: list[np.ndarray], labels: list[str], leave_one_out: bool = False) -> float:
    """Nearest class-centroid accuracy (leave-one-out: classes with one member are skipped)."""
    x = np.stack([np.atleast_1d(f) for f in features]).astype(float)
    y = np.array(labels)
    hits, total = 0, 0
    for i in range(len(y)):
        keep = np.ones(len(y), bool)
        if leave_one_out:
            keep[i] = False
            if not (keep & (y == y[i])).any():
                continue
        classes = sorted(set(y[keep]))
        cents = np.stack([x[keep & (y == c)].mean(0) for c in classes])
        hits += classes[int(np.argmin(((cents - x[i]) ** 2).sum(1)))] == y[i]
        total += 1
    return hits / total


def _mp4_measure(path: Path) -> dict[str, float]:
    frames = decord.VideoReader(str(path))[:].asnumpy()
    audio = decord.AudioReader(str(path), sample_rate=SR, mono=True)[:].asnumpy()[0]
    hue, sat, val = _colour(frames)
    return {"hue": hue, "sat": sat, "val": val, "f0": _pitch(audio, SR),
            "rms": float(np.sqrt(np.mean(audio ** 2)))}


def _phrase_classes(text: str, table: dict[str, tuple[str, ...]]) -> set[str]:
    low = text.lower()
    return {name for name, phrases in table.items() if any(p.lower() in low for p in phrases)}


def _check_cues(measures: dict[str, dict[str, float]], labels: dict[str, str], cues: dict[str, str],
                texts: dict[str, str], phrase_table: dict[str, tuple[str, ...]]) -> None:
    """Shared checks for the classification layouts: cue present where the mode says, absent elsewhere."""
    keys = sorted(measures)
    with_video = [k for k in keys if cues[k] in ("all", "video")]
    without_video = [k for k in keys if cues[k] not in ("all", "video")]
    with_audio = [k for k in keys if cues[k] in ("all", "audio")]
    without_audio = [k for k in keys if cues[k] not in ("all", "audio")]
    assert len(with_video) >= 10 and len(without_video) >= 10 and len(with_audio) >= 10 and len(without_audio) >= 10

    # video: saturated, class-specific hue with the cue; grey (no hue at all) without it
    assert min(measures[k]["sat"] for k in with_video) > 0.4
    chroma = [_chroma(measures[k]["hue"], measures[k]["sat"]) for k in with_video]
    assert _centroid_accuracy(chroma, [labels[k] for k in with_video]) >= 0.95
    assert max(measures[k]["sat"] for k in without_video) < 0.12
    grey = [np.array([measures[k]["val"]]) for k in without_video]
    assert _centroid_accuracy(grey, [labels[k] for k in without_video], leave_one_out=True) < 0.5

    # audio: class pitch in 120-400 Hz with the cue; a class-independent band above it without
    pitch_cue = [math.log(measures[k]["f0"]) for k in with_audio]
    assert all(105 < measures[k]["f0"] < 450 for k in with_audio)
    assert _centroid_accuracy(pitch_cue, [labels[k] for k in with_audio]) >= 0.95
    lo, hi = UNINFORMATIVE_F0_HZ
    assert all(lo - 10 < measures[k]["f0"] < hi + 10 for k in without_audio)
    pitch_none = [np.array([measures[k]["f0"]]) for k in without_audio]
    assert _centroid_accuracy(pitch_none, [labels[k] for k in without_audio], leave_one_out=True) < 0.5

    # text: exactly the class's phrase with the cue, no phrase of any class without it
    for k in keys:
        found = _phrase_classes(texts[k], phrase_table)
        if cues[k] in ("all", "text"):
            assert labels[k] in found, (k, texts[k])
        else:
            assert not found, (k, texts[k])


# --------------------------------------------------------------------------- MELD


def test_meld_layout_and_csv(meld: Path) -> None:
    rows = _meld_rows(meld)
    for split, dirname in demo.MELD_CLIP_DIRS.items():
        header = (meld / f"{split}_sent_emo.csv").read_text(encoding="utf-8").splitlines()[0]
        assert header == MELD_HEADER
        assert (meld / dirname).is_dir()
        assert [int(r["Sr No."]) for r in rows[split]] == list(range(1, len(rows[split]) + 1))
        for r in rows[split]:
            assert _meld_clip(meld, split, r).is_file()
            assert r["Emotion"] in MELD_CUES
            assert r["Sentiment"] == {"joy": "positive", "surprise": "positive", "neutral": "neutral"}.get(
                r["Emotion"], "negative")
            assert MELD_TIME.match(r["StartTime"]) and MELD_TIME.match(r["EndTime"])
            assert 1.0 <= _seconds(r["EndTime"]) - _seconds(r["StartTime"]) <= 2.0
        # every class present in every split
        assert set(r["Emotion"] for r in rows[split]) == set(MELD_CUES)
        # 3-6 utterances and 2-3 speakers per dialogue, utterance ids 0..n-1
        by_dia: dict[str, list[dict[str, str]]] = {}
        for r in rows[split]:
            by_dia.setdefault(r["Dialogue_ID"], []).append(r)
        assert len(by_dia) == MELD_SIZES[split]
        for d in by_dia.values():
            assert 3 <= len(d) <= 6 and 2 <= len({r["Speaker"] for r in d}) <= 3
            assert [int(r["Utterance_ID"]) for r in d] == list(range(len(d)))
    train_ids = sorted({int(r["Dialogue_ID"]) for r in rows["train"]})
    assert train_ids != list(range(len(train_ids)))  # one id skipped, like the real release
    assert sorted({int(r["Dialogue_ID"]) for r in rows["dev"]}) == list(range(MELD_SIZES["dev"]))
    train_text = (meld / "train_sent_emo.csv").read_text(encoding="utf-8")
    assert 2 <= train_text.count("\u00e2\u20ac\u2122") and "\u00e2\u20ac\u2122" not in (
        meld / "dev_sent_emo.csv").read_text(encoding="utf-8")


def test_meld_clips_decode(meld: Path) -> None:
    rows = _meld_rows(meld)
    for split in ("dev", "test"):
        for r in rows[split]:
            path = _meld_clip(meld, split, r)
            expected = _seconds(r["EndTime"]) - _seconds(r["StartTime"])
            vr = decord.VideoReader(str(path))
            assert vr.get_avg_fps() == pytest.approx(FPS)
            assert abs(len(vr) / FPS - expected) < 0.11
            assert vr[0].asnumpy().shape == (SIZE, SIZE, 3)
            ar = decord.AudioReader(str(path), sample_rate=SR, mono=True)
            samples = ar[:].asnumpy()
            assert samples.shape[0] == 1 and abs(samples.shape[1] / SR - expected) < 0.15
            assert np.abs(samples).max() > 0.1  # a voiced tone, not silence
            with av.open(str(path)) as c:
                vs, aus = c.streams.video[0], c.streams.audio[0]
                assert vs.codec_context.name == "h264" and vs.codec_context.pix_fmt == "yuv420p"
                assert aus.codec_context.name == "aac" and aus.codec_context.sample_rate == SR
                assert aus.codec_context.layout.nb_channels == 1
                assert sum(1 for _ in c.decode(video=0)) == len(vr)
            with av.open(str(path)) as c:
                assert sum(f.samples for f in c.decode(audio=0)) >= expected * SR - 1


def test_meld_cues_measurable(meld: Path) -> None:
    rows = _meld_rows(meld)
    cue_rows = {(c.split, c.key): c for c in read_cues(meld)}
    measures, labels, cues, texts = {}, {}, {}, {}
    for split, rs in rows.items():
        for r in rs:
            key = f"{split}/dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}"
            c = cue_rows[(split, key.split("/")[1])]
            assert c.label == r["Emotion"]
            measures[key] = _mp4_measure(_meld_clip(meld, split, r))
            labels[key], cues[key] = r["Emotion"], c.cue
            texts[key] = r["Utterance"].replace("\u00e2\u20ac\u2122", "'")
    assert len(measures) == len(cue_rows)
    _check_cues(measures, labels, cues, texts, {k: v.phrases for k, v in MELD_CUES.items()})
    # loudness follows the class energy (class means, utterances with the audio cue)
    audio_keys = [k for k in measures if cues[k] in ("all", "audio")]
    classes = sorted({labels[k] for k in audio_keys})
    mean_rms = [np.mean([measures[k]["rms"] for k in audio_keys if labels[k] == c]) for c in classes]
    assert np.corrcoef(mean_rms, [MELD_CUES[c].energy for c in classes])[0, 1] > 0.9


def test_cue_mode_proportions(meld: Path, mosi: Path, iemocap: Path) -> None:
    for root in (meld, mosi, iemocap):
        modes = Counter(c.cue for c in read_cues(root))
        total = sum(modes.values())
        for mode, share in demo.DEFAULT_CUE_MIX.items():
            assert abs(modes[mode] / total - share) < 0.1, (root.name, modes)
    rng = np.random.default_rng(0)
    labels = draw_labels(300, MELD_PRIOR, 3, rng)
    modes = assign_cue_modes(labels, {"all": 0.1, "text": 0.6, "audio": 0.3}, rng)
    counts = Counter(modes)
    assert abs(counts["text"] / 300 - 0.6) < 0.05 and abs(counts["all"] / 300 - 0.1) < 0.05
    assert counts["video"] == 0
    for c in MELD_PRIOR:  # every class gets several of the dominant mode
        assert sum(1 for lab, m in zip(labels, modes) if lab == c and m == "text") >= 2


def test_label_draw_is_skewed_but_complete() -> None:
    labels = draw_labels(36, MELD_PRIOR, 3, np.random.default_rng(1))
    counts = Counter(labels)
    assert len(labels) == 36 and min(counts.values()) >= 3 and set(counts) == set(MELD_PRIOR)
    big = Counter(draw_labels(2000, MELD_PRIOR, 3, np.random.default_rng(1)))
    assert big.most_common(1)[0][0] == "neutral" and big["neutral"] > 3 * big["fear"]


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("layout,sizes,texts", [
    ("meld", {"train": 2, "dev": 1, "test": 1}, ["train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"]),
    ("iemocap", {f"Session{i}": 1 for i in range(1, 6)}, []),
    ("mosi", {"train": 2, "valid": 1, "test": 1}, ["label.csv"]),
])
def test_same_seed_same_bytes(tmp_path: Path, layout: str, sizes: dict[str, int], texts: list[str]) -> None:
    turns = (3, 4)
    a = generate_demo(tmp_path / "a", layout, seed=7, n_dialogues=sizes, turns=turns, frame_size=32)
    b = generate_demo(tmp_path / "b", layout, seed=7, n_dialogues=sizes, turns=turns, frame_size=32)
    c = generate_demo(tmp_path / "c", layout, seed=8, n_dialogues=sizes, turns=turns, frame_size=32)

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    da, db, dc = digests(a), digests(b), digests(c)
    assert da == db  # labels, texts and media: byte for byte
    label_files = texts + [demo.CUES_FILE] + [k for k in da if k.endswith(".txt")]
    assert len(label_files) >= 2
    assert any(da[f] != dc.get(f) for f in label_files)  # another seed gives another corpus


# --------------------------------------------------------------------------- IEMOCAP


def _iemocap_turns(root: Path) -> list[dict[str, object]]:
    turns: list[dict[str, object]] = []
    for eval_path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        session_dir = eval_path.parents[2]
        dialog = eval_path.stem
        lines = eval_path.read_text(encoding="utf-8").split("\n")
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]" and lines[1] == ""
        trans = {}
        trans_path = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
        for line in trans_path.read_text(encoding="utf-8").splitlines():
            m = TRANS_LINE.match(line)
            assert m, line
            trans[m.group(1)] = (float(m.group(2)), float(m.group(3)), m.group(4))
        for i, line in enumerate(lines):
            if line.startswith("["):
                m = EVAL_LINE.match(line)
                assert m, line
                assert lines[i + 1].startswith("C-E2:\t") and lines[i + 1].endswith(";\t()")
                start, end, name, code = float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
                assert re.fullmatch(re.escape(dialog) + r"_[FM]\d{3}", name)
                assert trans[name][:2] == (start, end)
                turns.append({"session": session_dir, "dialog": dialog, "name": name, "code": code,
                              "start": start, "end": end, "text": trans[name][2]})
        assert len(trans) == sum(1 for t in turns if t["dialog"] == dialog)
    return turns


def test_iemocap_layout(iemocap: Path) -> None:
    turns = _iemocap_turns(iemocap)
    sessions = {t["session"].name for t in turns}  # type: ignore[union-attr]
    assert sessions == {f"Session{i}" for i in range(1, 6)}
    codes = Counter(t["code"] for t in turns)
    assert set(IEMOCAP_CUES) <= set(codes) and codes["xxx"] + codes["oth"] >= 2
    sizes, (lo, hi) = demo.IemocapDemo.default_dialogues, demo.IemocapDemo.default_turns
    assert lo * sum(sizes.values()) <= sum(codes[c] for c in IEMOCAP_CUES) <= hi * sum(sizes.values())
    assert Counter(t["session"].name for t in turns if t["code"] == "xxx" or t["code"] == "oth") == sizes  # type: ignore[union-attr]
    for dialog in {t["dialog"] for t in turns}:
        mine = [t for t in turns if t["dialog"] == dialog]
        letters = [str(t["name"]).rsplit("_", 1)[1][0] for t in mine]
        assert all(a != b for a, b in zip(letters, letters[1:]))  # speakers alternate F/M
        assert all(a["end"] < b["start"] for a, b in zip(mine, mine[1:]))  # type: ignore[operator]
    for t in turns:
        wav_path = t["session"] / "sentences" / "wav" / t["dialog"] / f"{t['name']}.wav"  # type: ignore[operator]
        with wave.open(str(wav_path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
            assert abs(w.getnframes() - (t["end"] - t["start"]) * SR) <= 1  # type: ignore[operator]
    for avi in sorted(iemocap.glob("Session*/dialog/avi/DivX/*.avi")):
        vr = decord.VideoReader(str(avi))
        last_end = max(float(t["end"]) for t in turns if t["dialog"] == avi.stem)  # type: ignore[arg-type]
        assert vr[0].asnumpy().shape == (SIZE, 2 * SIZE, 3) and len(vr) / FPS >= last_end
        assert decord.AudioReader(str(avi), sample_rate=SR, mono=True)[:].asnumpy().shape[1] >= last_end * SR
        with av.open(str(avi)) as c:
            assert c.format.name == "avi" and c.streams.video[0].codec_context.name == "mpeg4"
            assert sum(1 for _ in c.decode(video=0)) == len(vr)
    assert {t["dialog"] for t in turns} == {p.stem for p in iemocap.glob("Session*/dialog/avi/DivX/*.avi")}


def test_iemocap_cues_measurable(iemocap: Path) -> None:
    turns = [t for t in _iemocap_turns(iemocap) if t["code"] in IEMOCAP_CUES]
    cues = {c.key: c.cue for c in read_cues(iemocap)}
    assert set(cues) == {t["name"] for t in turns}
    measures, labels, texts = {}, {}, {}
    videos: dict[str, np.ndarray] = {}
    for t in turns:
        name, dialog = str(t["name"]), str(t["dialog"])
        avi = t["session"] / "dialog" / "avi" / "DivX" / f"{dialog}.avi"  # type: ignore[operator]
        if dialog not in videos:
            videos[dialog] = decord.VideoReader(str(avi))[:].asnumpy()
        span = videos[dialog][math.ceil(float(t["start"]) * FPS) + 1:math.ceil(float(t["end"]) * FPS) - 1]
        left_speaks = name.rsplit("_", 1)[1][0] == dialog[5]  # session-letter actor on the left
        left, right = span[:, :, :SIZE], span[:, :, SIZE:]
        speaker, listener = (left, right) if left_speaks else (right, left)
        assert _colour(listener)[1] < 0.1  # the listener's half never carries a cue
        hue, sat, val = _colour(speaker)
        wav = t["session"] / "sentences" / "wav" / dialog / f"{name}.wav"  # type: ignore[operator]
        with wave.open(str(wav)) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16) / 32768.0
        measures[name] = {"hue": hue, "sat": sat, "val": val, "f0": _pitch(audio, SR)}
        labels[name], texts[name] = str(t["code"]), str(t["text"])
    _check_cues(measures, labels, cues, texts, {k: v.phrases for k, v in IEMOCAP_CUES.items()})


# --------------------------------------------------------------------------- MOSI


def test_mosi_layout(mosi: Path) -> None:
    assert (mosi / "label.csv").read_text(encoding="utf-8").splitlines()[0] == MOSI_HEADER
    rows = _rows(mosi / "label.csv")
    sizes = demo.MosiDemo.default_dialogues
    lo, hi = demo.MosiDemo.default_turns
    assert lo * sum(sizes.values()) <= len(rows) <= hi * sum(sizes.values())
    videos: dict[str, set[str]] = {}
    for r in rows:
        score = float(r["label"])
        assert -3.0 <= score <= 3.0 and abs(score * 5 - round(score * 5)) < 1e-9
        assert r["annotation"] == ("Positive" if score > 0 else "Negative" if score < 0 else "Neutral")
        assert r["text"] == r["text"].lower() and r["text"].strip()
        assert (mosi / "Raw" / r["video_id"] / f"{r['clip_id']}.mp4").is_file()
        videos.setdefault(r["video_id"], set()).add(r["mode"])
    assert all(len(m) == 1 for m in videos.values())  # a video lives in one mode
    assert Counter(next(iter(m)) for m in videos.values()) == {"train": 26, "valid": 6, "test": 16}
    for mode in ("train", "valid", "test"):
        signs = {r["annotation"] for r in rows if r["mode"] == mode}
        assert {"Positive", "Negative"} <= signs


def test_mosi_cues_scale_with_score(mosi: Path) -> None:
    rows = _rows(mosi / "label.csv")
    cues = {c.key: c.cue for c in read_cues(mosi)}
    scores, m, cue = [], [], []
    for r in rows:
        path = mosi / "Raw" / r["video_id"] / f"{r['clip_id']}.mp4"
        m.append(_mp4_measure(path))
        scores.append(float(r["label"]))
        cue.append(cues[f"{r['video_id']}_{r['clip_id']}"])
        phrase_bins = _phrase_classes(r["text"], {str(b): p for b, p in MOSI_PHRASES.items()})
        if cue[-1] in ("all", "text"):
            assert phrase_bins == {str(int(round(scores[-1])))}
        else:
            assert not phrase_bins
    s = np.array(scores)
    audio = np.array([c in ("all", "audio") for c in cue])
    video = np.array([c in ("all", "video") for c in cue])
    f0 = np.log([x["f0"] for x in m])
    hue = np.array([x["hue"] for x in m])
    sat = np.array([x["sat"] for x in m])
    assert np.corrcoef(s[audio], f0[audio])[0, 1] > 0.95
    assert np.corrcoef(s[video], hue[video])[0, 1] > 0.95
    lo, hi = UNINFORMATIVE_F0_HZ
    assert np.all((np.exp(f0[~audio]) > lo - 10) & (np.exp(f0[~audio]) < hi + 10))
    assert abs(np.corrcoef(s[~audio], f0[~audio])[0, 1]) < 0.5
    assert np.all(sat[~video] < 0.12) and np.all(sat[video] > 0.4)


# --------------------------------------------------------------------------- the readers, the CLI, errors


def test_readers_parse_the_demo(meld: Path, iemocap: Path, mosi: Path) -> None:
    from pipeline.corpora.base import read_corpus

    data = read_corpus("meld", meld)
    assert len(data.records) == len(read_cues(meld))
    assert all(r.video_path and Path(r.video_path).is_file() for r in data.records)
    assert not any("\u00e2\u20ac" in r.text for r in data.records)  # the reader repaired the mojibake
    assert Counter(r.label_name for r in data.records) == Counter(c.label for c in read_cues(meld))
    data = read_corpus("iemocap", iemocap)
    assert sorted(r.utterance_id for r in data.records) == sorted(c.key for c in read_cues(iemocap))
    data = read_corpus("mosi", mosi)
    assert sorted(r.score for r in data.records) == sorted(float(c.label) for c in read_cues(mosi))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        demo.cli(["--help"])
    assert e.value.code == 0 and "--layout" in capsys.readouterr().out
    out = tmp_path / "tiny"
    assert demo.cli(["--out", str(out), "--layout", "mosi", "--seed", "1", "--dialogues", "train=1",
                     "--dialogues", "valid=1", "--dialogues", "test=1"]) == 0
    printed = capsys.readouterr().out
    assert "label.csv" in printed and str(out) in printed
    assert len(_rows(out / "label.csv")) == len(list((out / "Raw").rglob("*.mp4"))) >= 3
    generate_demo(out, "mosi", seed=2, n_dialogues={"train": 1, "valid": 1, "test": 1}, frame_size=32)
    rows = _rows(out / "label.csv")  # a rewrite leaves no clip of the earlier run behind
    assert sorted(p.relative_to(out / "Raw") for p in (out / "Raw").rglob("*.mp4")) == sorted(
        Path(r["video_id"]) / f"{r['clip_id']}.mp4" for r in rows)
    with pytest.raises(SystemExit) as e:
        demo.cli(["--out", str(out), "--layout", "mosi", "--dialogues", "Session1=2"])
    assert e.value.code == 2 and "Session1" in capsys.readouterr().err


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="meld"):
        generate_demo(tmp_path, "friends")
    with pytest.raises(ValueError, match="valid"):
        generate_demo(tmp_path, "meld", n_dialogues={"valid": 2})
    with pytest.raises(ValueError, match="cue_mix"):
        generate_demo(tmp_path, "mosi", cue_mix={"smell": 1.0})
    assert set(CUE_MODES) == set(demo.DEFAULT_CUE_MIX)
