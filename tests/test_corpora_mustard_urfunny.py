"""MUStARD and UR-FUNNY v2 readers, the restricted unpickler, and their demo layouts."""
from __future__ import annotations

import collections
import csv
import json
import re
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytest

from pipeline.corpora import CORPORA, CorpusError, read_corpus
from pipeline.corpora.demo import HUMOR_PHRASES, LAYOUTS, SARCASM_PHRASES, generate_demo, read_cues
from pipeline.corpora.mustard import MustardReader, read_json_entries, stratified_assign
from pipeline.corpora.safe_pickle import allowed_globals, safe_load
from pipeline.corpora.urfunny import UrFunnyReader

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 16


def touch_mp4(path: Path, data: bytes = MP4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# =========================================================================== MUStARD


def entry(utterance: str, speaker: str, show: str, sarcasm: Any,
          context: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    context = context if context is not None else [("PENNY", "Hi."), ("LEONARD", "Hello there.")]
    return {"utterance": utterance, "speaker": speaker, "context": [t for _, t in context],
            "context_speakers": [s for s, _ in context], "show": show, "sarcasm": sarcasm}


def default_mustard() -> dict[str, dict[str, Any]]:
    return {
        "1_60": entry("Oh, that is just great.", "CHANDLER", "FRIENDS", True,
                      [("ROSS", "I broke it."), ("MONICA", "Again?"), ("ROSS", "Yes.")]),
        "1_70": entry("Thanks, I like it.", "RACHEL", "FRIENDS", False, [("JOEY", "Nice hat.")]),
        "1_105": entry("Sure, whatever.", "CHANDLER", "FRIENDS", True),
        "2_19": entry("Brilliant plan.", "SHELDON", "BBT", True),
        "2_7": entry("It is a good plan.", "LEONARD", "BBT", False),
        "2_300": entry("Wow, so smart.", "PENNY", "BBT", True),
        "2_44": entry("Okay, let us go.", "HOWARD", "BBT", False),
        "2_45": entry("I am thrilled, truly.", "SHELDON", "BBT", True),
        "3_1": entry("Thank you, dear.", "ROSE", "GOLDENGIRLS", False),
        "3_2": entry("What a surprise.", "SOPHIA", "GOLDENGIRLS", True, []),
    }


def write_mustard(root: Path, entries: dict[str, dict[str, Any]] | None = None, *, text: str | None = None,
                  clips: Iterable[str] | None = None, nested: bool = False) -> Path:
    """A MUStARD-like tree: sarcasm_data.json + a fake target clip (and context clip) per id."""
    entries = default_mustard() if entries is None else entries
    json_path = root / ("data/sarcasm_data.json" if nested else "sarcasm_data.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(text if text is not None else json.dumps(entries, indent=2), encoding="utf-8")
    video = root if nested else root / "videos"
    for uid in (entries if clips is None else clips):
        touch_mp4(video / "utterances_final" / f"{uid}.mp4")
        touch_mp4(video / "context_final" / f"{uid}_c.mp4")
    return root


def test_registry_has_the_readers() -> None:
    assert CORPORA.get("mustard") is MustardReader and CORPORA.get("urfunny") is UrFunnyReader


def test_mustard_records_dialogue_order_and_speaker_independent_split(tmp_path: Path) -> None:
    root = write_mustard(tmp_path)
    data = read_corpus("mustard", root)
    assert data.label_sets == {"primary": ["not_sarcastic", "sarcastic"]} and data.task == "classification"
    assert data.modalities == ("text", "audio", "video")
    targets = [r for r in data.records if r.label is not None]
    assert sorted(r.utterance_id for r in targets) == sorted(default_mustard())
    assert len(data.records) == 10 + sum(len(e["context"]) for e in default_mustard().values())
    # speaker independent: test = FRIENDS, train/dev = the other shows
    assert {r.dialogue_id for r in data.split("test")} == {"1_60", "1_70", "1_105"}
    assert {r.split for r in targets if r.dialogue_id.startswith(("2_", "3_"))} == {"train", "dev"}
    assert data.report.counts == Counter(r.split for r in data.records)
    dev = [r for r in data.split("dev") if r.label is not None]
    assert sorted(r.label for r in dev) == [0, 1]  # stratified: one of each label
    first = [r for r in data.records if r.dialogue_id == "1_60"]
    assert [(r.position, r.utterance_id, r.speaker, r.text, r.label) for r in first] == [
        (0, "1_60_c0", "ROSS", "I broke it.", None), (1, "1_60_c1", "MONICA", "Again?", None),
        (2, "1_60_c2", "ROSS", "Yes.", None), (3, "1_60", "CHANDLER", "Oh, that is just great.", 1)]
    assert all(r.video_path is None and r.audio_path is None and r.label_name is None for r in first[:3])
    assert first[3].label_name == "sarcastic"
    assert first[3].video_path == first[3].audio_path == str(root / "videos/utterances_final/1_60.mp4")
    for dialogue in {r.dialogue_id for r in data.records}:
        turns = [r for r in data.records if r.dialogue_id == dialogue]
        assert [r.position for r in turns] == list(range(len(turns)))
        assert [r.label is not None for r in turns] == [False] * (len(turns) - 1) + [True]
    assert [r.position for r in data.records if r.dialogue_id == "3_2"] == [0]  # no context
    # within a split, dialogues are in numeric id order (1_60 before 1_70 before 1_105)
    assert [r.dialogue_id for r in data.split("test") if r.label is not None] == ["1_60", "1_70", "1_105"]
    assert any("10 context clip(s)" in e.reason for e in data.report.of("info"))


def test_mustard_random_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    entries = {f"2_{i}": entry(f"Line {i}.", "SHELDON", "BBT", i % 2 == 0) for i in range(60)}
    root = write_mustard(tmp_path, entries)
    a = read_corpus("mustard", root, split="random", seed=1)
    b = read_corpus("mustard", root, split="random", seed=1)
    c = read_corpus("mustard", root, split="random", seed=2)

    def assignment(data: Any) -> dict[str, str]:
        return {r.utterance_id: r.split for r in data.records if r.label is not None}

    assert assignment(a) == assignment(b) != assignment(c)
    per_split = Counter((r.split, r.label) for r in a.records if r.label is not None)
    assert per_split == {("train", 0): 21, ("train", 1): 21, ("dev", 0): 3, ("dev", 1): 3,
                         ("test", 0): 6, ("test", 1): 6}
    si = read_corpus("mustard", write_mustard(tmp_path / "si"), seed=5)
    assert {r.dialogue_id for r in si.split("test")} == {"1_60", "1_70", "1_105"}  # seed never moves test


def test_stratified_assign() -> None:
    ids = {0: [f"a_{i}" for i in range(10)], 1: [f"b_{i}" for i in range(3)]}
    out = stratified_assign(ids, {"train": 0.7, "dev": 0.1, "test": 0.2}, seed=0)
    assert set(out) == set(ids[0]) | set(ids[1])
    assert Counter(out[i] for i in ids[0]) == {"train": 7, "dev": 1, "test": 2}
    assert Counter(out[i] for i in ids[1]) == {"train": 1, "dev": 1, "test": 1}  # every split gets one
    assert out == stratified_assign({k: list(reversed(v)) for k, v in ids.items()},
                                    {"train": 0.7, "dev": 0.1, "test": 0.2}, seed=0)  # input order is irrelevant


def test_mustard_without_friends_needs_random_split(tmp_path: Path) -> None:
    entries = {k: v for k, v in default_mustard().items() if v["show"] != "FRIENDS"}
    root = write_mustard(tmp_path, entries)
    with pytest.raises(CorpusError, match=r"sarcasm_data\.json: no utterance of the show 'FRIENDS'.*split: random"):
        read_corpus("mustard", root)
    assert len([r for r in read_corpus("mustard", root, split="random").records if r.label is not None]) == 7
    with pytest.raises(KeyError, match="speaker_independent"):
        MustardReader(split="by_show")
    with pytest.raises(ValueError, match="dev_fraction"):
        MustardReader(dev_fraction=0.5, test_fraction=0.6)


def test_mustard_media_problems_and_layouts(tmp_path: Path) -> None:
    root = write_mustard(tmp_path / "a", clips=[k for k in default_mustard() if k != "2_7"])
    touch_mp4(root / "videos/utterances_final/9_9.mp4")  # a clip with no entry
    touch_mp4(root / "videos/utterances_final/2_44.mp4", b"")  # zero-length
    data = read_corpus("mustard", root)
    by_id = {r.utterance_id: r for r in data.records}
    assert by_id["2_7"].video_path is None and by_id["2_7"].label == 0  # text-only, still scored
    assert by_id["2_44"].video_path is None and by_id["2_19"].video_path is not None
    skips = {Path(e.file).name: e.reason for e in data.report.of("skip")}
    assert "file not found" in skips["2_7.mp4"] and "zero-length" in skips["2_44.mp4"]
    assert "no entry" in skips["9_9.mp4"]
    strict = read_corpus("mustard", root, require_media=True)
    assert not {"2_7", "2_7_c0", "2_44"} & {r.utterance_id for r in strict.records}
    assert len([r for r in strict.records if r.label is not None]) == 8

    nested = read_corpus("mustard", write_mustard(tmp_path / "b", nested=True))
    assert all(r.video_path and "/utterances_final/" in r.video_path for r in nested.records if r.label is not None)
    bare = tmp_path / "c"
    bare.mkdir()
    (bare / "sarcasm_data.json").write_text(json.dumps(default_mustard()))
    text_only = read_corpus("mustard", bare)
    assert text_only.modalities == ("text",) and "clip folder not found" in text_only.report.of("skip")[0].reason


def test_mustard_text_repair_and_empty_sentences(tmp_path: Path) -> None:
    entries = default_mustard()
    entries["2_19"] = entry("I\u2019m  so \u201cthrilled\u201d\u2026", "SHELDON", "BBT", True,
                            [("PENNY", "  "), ("LEONARD", "Fine.")])
    entries["2_300"] = entry(" ", "PENNY", "BBT", True)
    data = read_corpus("mustard", write_mustard(tmp_path, entries))
    turns = [r for r in data.records if r.dialogue_id == "2_19"]
    assert [(r.utterance_id, r.text) for r in turns] == [("2_19_c0", "Fine."), ("2_19", 'I\'m so "thrilled"...')]
    assert "2_300" not in {r.dialogue_id for r in data.records}
    reasons = [e.reason for e in data.report.entries]
    assert any("empty context sentence 0" in r for r in reasons) and any("empty target" in r for r in reasons)
    assert any("repaired" in e.reason for e in data.report.of("fix"))


def test_read_json_entries_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{\n  "a": {"k": 1},\n\n  "b": [1,\n 2],\n  "c": null\n}\n')
    assert [(e.key, e.value, e.line) for e in read_json_entries(path)] == [
        ("a", {"k": 1}, 2), ("b", [1, 2], 4), ("c", None, 6)]


@pytest.mark.parametrize("text,message", [
    ('{\n  "1_1": {"utterance": "x",\n  }\n}', r"sarcasm_data\.json:3: malformed JSON"),
    ('[1, 2]', r"sarcasm_data\.json:1: malformed JSON: expected a JSON object"),
    ('{"a": 1}\n{"b": 2}', r"sarcasm_data\.json:2: malformed JSON: extra data"),
    ('{\n "1_1": {},\n "1_2": {},\n "1_1": {}\n}', r"sarcasm_data\.json:4: duplicate id '1_1' \(first on line 2\)"),
    ('{\n "1_1": {"show": "BBT",\n "show": "BBT"}\n}', r"sarcasm_data\.json:2: entry '1_1': duplicate key 'show'"),
])
def test_mustard_malformed_json(tmp_path: Path, text: str, message: str) -> None:
    root = write_mustard(tmp_path, {}, text=text)
    with pytest.raises(CorpusError, match=message):
        read_corpus("mustard", root)


def test_mustard_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"sarcasm_data\.json: MUStARD annotations not found"):
        read_corpus("mustard", tmp_path)

    def fails(entries: dict[str, Any], message: str) -> None:
        """A bad entry is a recorded skip naming file:line (the other entries are read); --strict stops."""
        root = write_mustard(tmp_path / str(len(list(tmp_path.iterdir()))), entries)
        if not entries:
            with pytest.raises(CorpusError, match=message):
                read_corpus("mustard", root)
            return
        data = read_corpus("mustard", root)
        skips = [str(e) for e in data.report.of("skip")]
        assert any(re.search(message, s) for s in skips), skips
        assert "2_19" not in {r.utterance_id for r in data.records} and data.records
        with pytest.raises(CorpusError, match="--strict"):
            data.report.strict_check()

    base = default_mustard()
    line = json.dumps(base, indent=2).splitlines().index('  "2_19": {') + 1
    fails({**base, "2_19": entry("x", "S", "BBT", "yes")},
          rf"sarcasm_data\.json:{line}: entry '2_19': unknown sarcasm label 'yes'")
    fails({**base, "2_19": entry("x", "S", "BBT", 2)}, "unknown sarcasm label 2")
    fails({**base, "2_19": {"utterance": "x", "speaker": "S"}}, r"entry '2_19' lacks 'context'")
    bad = entry("x", "S", "BBT", True)
    bad["context_speakers"] = ["A", "B", "C"]
    fails({**base, "2_19": bad}, "2 context sentence.* but 3 context speaker")
    fails({**base, "2_19": [1]}, "entry '2_19' is a list, expected an object")
    fails({**base, "2_19": {**entry("x", "S", "BBT", True), "utterance": 3}}, "'utterance' is int, expected str")
    fails({}, r"sarcasm_data\.json:1: no entries")


# =========================================================================== UR-FUNNY


def default_urfunny() -> tuple[dict[str, list[Any]], dict[Any, Any], dict[Any, Any]]:
    folds = {"train": [12, 3, 40], "dev": [7], "test": [100, 25]}
    language = {i: {"punchline_sentence": f"Punchline {i}.", "context_sentences": [f"Context {i} a.", f"Context {i} b."],
                    "punchline_embedding_indexes": [1, 2]} for ids in folds.values() for i in ids}
    labels = {i: i % 2 for ids in folds.values() for i in ids}
    return folds, language, labels


def write_urfunny(root: Path, folds: Any = None, language: Any = None, labels: Any = None, *,
                  clips: Iterable[Any] | None = None, video_dir: str = "urfunny2_videos", protocol: int = 2) -> Path:
    d_folds, d_language, d_labels = default_urfunny()
    root.mkdir(parents=True, exist_ok=True)
    for name, obj in (("data_folds.pkl", d_folds if folds is None else folds),
                      ("language_sdk.pkl", d_language if language is None else language),
                      ("humor_label_sdk.pkl", d_labels if labels is None else labels)):
        (root / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    for uid in (d_labels if clips is None else clips):
        touch_mp4(root / video_dir / f"{uid}.mp4")
    return root


def test_urfunny_records_and_folds(tmp_path: Path) -> None:
    data = read_corpus("urfunny", write_urfunny(tmp_path))
    assert data.label_sets == {"primary": ["not_humorous", "humorous"]} and data.modalities == ("text", "audio", "video")
    targets = [r for r in data.records if r.label is not None]
    assert [(r.split, r.utterance_id, r.label, r.label_name) for r in targets] == [
        ("train", "3", 1, "humorous"), ("train", "12", 0, "not_humorous"), ("train", "40", 0, "not_humorous"),
        ("dev", "7", 1, "humorous"), ("test", "25", 1, "humorous"), ("test", "100", 0, "not_humorous")]
    assert data.report.counts == {"train": 9, "dev": 3, "test": 6}
    turns = [r for r in data.records if r.dialogue_id == "12"]
    assert [(r.position, r.utterance_id, r.text, r.label) for r in turns] == [
        (0, "12_c0", "Context 12 a.", None), (1, "12_c1", "Context 12 b.", None), (2, "12", "Punchline 12.", 0)]
    assert {r.speaker for r in data.records} == {"speaker"}
    assert all(r.video_path is None for r in turns[:2])
    assert turns[2].video_path == turns[2].audio_path == str(tmp_path / "urfunny2_videos/12.mp4")


def test_urfunny_media_and_alternatives(tmp_path: Path) -> None:
    folds, language, labels = default_urfunny()
    language[3]["punchline_sentence"] = ["Split", "into", "words."]
    language[7]["context_sentences"] = np.array(["One.", "", "Two."])
    labels = {np.int64(k): np.int64(v) for k, v in labels.items()}
    root = write_urfunny(tmp_path, folds, language, labels, clips=[3, 12, 40, 7, 100], video_dir="videos",
                         protocol=4)
    touch_mp4(root / "videos/999.mp4")
    data = read_corpus("urfunny", root)
    by_id = {r.utterance_id: r for r in data.records}
    assert by_id["3"].text == "Split into words." and by_id["3"].video_path == str(root / "videos/3.mp4")
    assert [by_id[k].text for k in ("7_c0", "7_c1")] == ["One.", "Two."] and "7_c2" not in by_id
    assert by_id["25"].video_path is None and by_id["25"].label == 1  # missing clip: text-only, still scored
    skips = {Path(e.file).name: e.reason for e in data.report.of("skip")}
    assert "file not found" in skips["25.mp4"] and "no id in data_folds.pkl" in skips["999.mp4"]
    assert any("empty context sentence 1" in e.reason for e in data.report.of("skip"))
    strict = read_corpus("urfunny", root, require_media=True)
    assert "25" not in {r.dialogue_id for r in strict.records} and len(strict.split("test")) == 3


def test_urfunny_missing_entries_are_skipped(tmp_path: Path) -> None:
    folds, language, labels = default_urfunny()
    del language[40]
    del labels[7]
    language[555] = {"punchline_sentence": "Unused.", "context_sentences": []}
    data = read_corpus("urfunny", write_urfunny(tmp_path, folds, language, labels))
    assert {r.dialogue_id for r in data.records} == {"3", "12", "100", "25"}
    reasons = " | ".join(str(e) for e in data.report.entries)
    assert "language_sdk.pkl [40]: id in data_folds.pkl (train) has no entry" in reasons
    assert "humor_label_sdk.pkl [7]: id in data_folds.pkl (dev) has no label" in reasons
    assert "1 id(s) with a transcript or label are in no fold" in reasons


def test_urfunny_bad_input(tmp_path: Path) -> None:
    folds, language, labels = default_urfunny()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"labels": {**labels, 12: 2}}, r"humor_label_sdk\.pkl \[id 12\]: unknown humor label 2"),
        ({"labels": {**labels, 12: "funny"}}, "unknown humor label 'funny'"),
        ({"folds": {**folds, "dev": [7, 3]}}, r"data_folds\.pkl: duplicate id '3' \(in fold 'train' and 'dev'\)"),
        ({"folds": {**folds, "test": [100, 100]}}, "duplicate id '100'"),
        ({"folds": {"train": [3], "test": [12]}}, r"data_folds\.pkl: no dev fold"),
        ({"folds": [3, 12]}, r"data_folds\.pkl: expected a dictionary at the top level, found list"),
        ({"language": {**language, "12": language[12]}}, r"language_sdk\.pkl: duplicate id '12'"),
        ({"language": {**language, 12: {"punchline_sentence": "x"}}}, r"\[id 12\]: entry lacks 'context_sentences'"),
        ({"language": {**language, 12: {"punchline_sentence": 5, "context_sentences": []}}},
         r"\[id 12\]: a sentence is a int"),
        ({"folds": {**folds, "dev": [None]}}, r"data_folds\.pkl \[fold 'dev'\]: bad id None"),
    ]
    entry_level = {0, 1, 7, 8}  # one bad entry: a recorded skip, the rest is read; the others stop the read
    for i, (change, message) in enumerate(cases):
        root = write_urfunny(tmp_path / str(i), change.get("folds"), change.get("language"), change.get("labels"))
        if i in entry_level:
            data = read_corpus("urfunny", root)
            skips = [str(e) for e in data.report.of("skip")]
            assert any(re.search(message, s) for s in skips), skips
            assert data.records and "12" not in {r.utterance_id.split("_")[0] for r in data.records}
            continue
        with pytest.raises(CorpusError, match=message):
            read_corpus("urfunny", root)
    root = write_urfunny(tmp_path / "missing")
    (root / "language_sdk.pkl").unlink()
    with pytest.raises(CorpusError, match=r"language_sdk\.pkl: file not found"):
        read_corpus("urfunny", root)


class _Evil:
    """Unpickling this runs ``touch <marker>`` -- unless the unpickler refuses ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_urfunny_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = write_urfunny(tmp_path / "root", folds={"train": [3], "dev": [_Evil(marker)], "test": [12]})
    with pytest.raises(CorpusError, match=r"refused to load \w+\.system from .*data_folds\.pkl: only built-in"):
        read_corpus("urfunny", root)
    assert not marker.exists()


# =========================================================================== safe_pickle


def test_safe_load_builtins_every_protocol(tmp_path: Path) -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    obj = {"d": {1: "a", "b": [1.5, None, True]}, "t": (1, (2, 3)), "s": {1, 2}, "f": frozenset({"x"}),
           "b": b"\x00\xffbytes", "ba": bytearray(b"ab"), "c": 1 + 2j, "big": 10 ** 30, "u": "caf\u00e9",
           "o": collections.OrderedDict([("z", 1), ("a", 2)]), "cyc": cyclic}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        out = safe_load(path)
        assert {k: v for k, v in out.items() if k != "cyc"} == {k: v for k, v in obj.items() if k != "cyc"}
        assert type(out["o"]) is collections.OrderedDict and list(out["o"]) == ["z", "a"]
        assert out["cyc"][1] is out["cyc"]


def test_safe_load_numpy_every_protocol(tmp_path: Path) -> None:
    arrays = {"f32": np.arange(5, dtype=np.float32), "fortran": np.arange(6.0).reshape(2, 3).T,
              "big_endian": np.arange(3, dtype=">i4"), "unicode": np.array(["ab", "c"]), "bytes": np.array([b"x"]),
              "empty": np.zeros((0, 3)), "bool": np.array([True, False])}
    objects = np.array([[1, 2], "x", {"k": np.arange(2)}], dtype=object)
    scalars = {"i": np.int64(7), "f": np.float64(0.5), "b": np.bool_(True), "u8": np.uint8(3)}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"np{protocol}.pkl"
        path.write_bytes(pickle.dumps({**arrays, **scalars, "objects": objects}, protocol=protocol))
        out = safe_load(path)
        for key, value in arrays.items():
            assert out[key].dtype == value.dtype and out[key].shape == value.shape
            assert np.array_equal(out[key], value), (protocol, key)
        assert out["fortran"].flags["F_CONTIGUOUS"]
        for key, value in scalars.items():
            assert type(out[key]) is type(value) and out[key] == value
        assert out["objects"].dtype == object and out["objects"][0] == [1, 2] and out["objects"][1] == "x"
        assert np.array_equal(out["objects"][2]["k"], np.arange(2))
    path = tmp_path / "np_refused.pkl"
    path.write_bytes(pickle.dumps(arrays["f32"]))
    with pytest.raises(CorpusError, match="refused to load numpy"):
        safe_load(path, allow_numpy=False)
    assert "collections.OrderedDict" in allowed_globals() and not any("load" in g for g in allowed_globals())


class _Reduce:
    """Pickles as ``func(*args)`` (with an optional BUILD state)."""

    def __init__(self, *reduce: Any) -> None:
        self.reduce = reduce

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduce


@pytest.mark.parametrize("payload,message", [
    (_Reduce(eval, ("1 + 1",)), r"refused to load \w+\.eval from .*bad\.pkl"),
    (_Reduce(getattr, (1, "real")), r"refused to load \w+\.getattr"),
    (np.load, r"refused to load numpy\.load .*NumPy: plain arrays and scalars only"),
    (_Reduce(__import__("codecs").encode, ("x", "rot13")), "_codecs.encode is only allowed as encode"),
    # calling ndarray with a buffer would turn raw bytes into object pointers
    (_Reduce(np.ndarray, ((1,), np.dtype("O"), b"A" * 8)), r"numpy\.ndarray\(\.\.\.\) may not be called"),
    # a dtype state that declares an object field over raw bytes (crashes NumPy's own unpickling)
    (_Reduce(np.dtype, ("f8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 16)),
     "structured / sub-array dtypes are not allowed"),
    (np.array([(1,)], dtype=[("a", "i8")]), "dtype 'V8'"),
    (np.array(["2020-01-01"], dtype="M8[D]"), "unsupported dtype state"),
])
def test_safe_load_refuses(tmp_path: Path, payload: Any, message: str) -> None:
    path = tmp_path / "bad.pkl"
    for protocol in (2, 5):
        path.write_bytes(pickle.dumps({"x": [payload]}, protocol=protocol))
        with pytest.raises(CorpusError, match=message):
            safe_load(path)


def test_safe_load_malicious_and_broken_files(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    for protocol in (0, 2, 5):
        path.write_bytes(pickle.dumps({"train": [_Evil(marker)]}, protocol=protocol))
        with pytest.raises(CorpusError, match=r"refused to load \w+\.system from .*evil\.pkl: only built-in "
                                              r"containers, strings and numbers are allowed"):
            safe_load(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"a": list(range(50))})[:-7])
    with pytest.raises(CorpusError, match=r"evil\.pkl: not a readable pickle"):
        safe_load(path)
    path.write_text("just text\n")
    with pytest.raises(CorpusError, match=r"evil\.pkl: not a readable pickle"):
        safe_load(path)
    with pytest.raises(CorpusError, match=r"nothing\.pkl: file not found"):
        safe_load(tmp_path / "nothing.pkl")


# =========================================================================== demo layouts

SMALL = {"frame_size": 32, "fps": 5}


def _phrase_classes(text: str, phrases: dict[str, tuple[str, ...]]) -> set[str]:
    low = text.lower()
    return {label for label, options in phrases.items() if any(p.lower() in low for p in options)}


def test_demo_mustard_parses(tmp_path: Path) -> None:
    sizes = {"BBT": 4, "FRIENDS": 3, "GOLDENGIRLS": 2, "SARCASMOHOLICS": 2}
    root = generate_demo(tmp_path, "mustard", seed=4, n_dialogues=sizes, **SMALL)
    cues = read_cues(root)
    assert len(cues) == sum(sizes.values()) and Counter(c.split for c in cues) == sizes
    data = read_corpus("mustard", root)
    targets = {r.utterance_id: r for r in data.records if r.label is not None}
    assert set(targets) == {c.key for c in cues}
    assert {c.key: c.label for c in cues} == {k: r.label_name for k, r in targets.items()}
    assert {r.dialogue_id for r in data.split("test")} == {c.key for c in cues if c.split == "FRIENDS"}
    assert all(r.video_path and Path(r.video_path).is_file() for r in targets.values())
    assert all(r.video_path is None for r in data.records if r.label is None)
    for c in cues:  # the text cue is there exactly when the cue mode covers text
        found = _phrase_classes(targets[c.key].text, SARCASM_PHRASES)
        assert found == ({c.label} if c.cue in ("all", "text") else set()), (c, targets[c.key].text)
        has_context = any(r.dialogue_id == c.key and r.label is None for r in data.records)
        assert (root / f"videos/context_final/{c.key}_c.mp4").is_file() == has_context
    assert {"mustard", "urfunny", "meld", "iemocap", "mosi"} <= set(LAYOUTS.names())


def test_demo_urfunny_parses_and_is_deterministic(tmp_path: Path) -> None:
    sizes = {"train": 4, "dev": 2, "test": 2}
    root = generate_demo(tmp_path / "a", "urfunny", seed=4, n_dialogues=sizes, **SMALL)
    folds = safe_load(root / "data_folds.pkl")
    assert {k: len(v) for k, v in folds.items()} == sizes and all(isinstance(i, int) for v in folds.values() for i in v)
    cues = read_cues(root)
    data = read_corpus("urfunny", root)
    targets = {r.utterance_id: r for r in data.records if r.label is not None}
    assert {c.key: (c.split, c.label) for c in cues} == {k: (r.split, r.label_name) for k, r in targets.items()}
    assert all(r.video_path and Path(r.video_path).is_file() for r in targets.values())
    for c in cues:
        assert _phrase_classes(targets[c.key].text, HUMOR_PHRASES) == ({c.label} if c.cue in ("all", "text") else set())
    assert all(not _phrase_classes(r.text, HUMOR_PHRASES) for r in data.records if r.label is None)
    same = generate_demo(tmp_path / "b", "urfunny", seed=4, n_dialogues=sizes, **SMALL)
    other = generate_demo(tmp_path / "c", "urfunny", seed=5, n_dialogues=sizes, **SMALL)
    for name in ("data_folds.pkl", "language_sdk.pkl", "humor_label_sdk.pkl", "demo_cues.csv"):
        assert (root / name).read_bytes() == (same / name).read_bytes() != (other / name).read_bytes()


def test_demo_cli_mustard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.corpora import demo

    out = tmp_path / "m"
    assert demo.cli(["--out", str(out), "--layout", "mustard", "--dialogues", "BBT=1", "--dialogues", "FRIENDS=1",
                     "--dialogues", "GOLDENGIRLS=1", "--dialogues", "SARCASMOHOLICS=1", "--noise", "0"]) == 0
    assert "sarcasm_data.json" in capsys.readouterr().out
    with (out / "demo_cues.csv").open(encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4 == len(json.loads((out / "sarcasm_data.json").read_text()))
