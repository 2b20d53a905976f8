"""MUStARD reader (multimodal sarcasm detection, Castro et al., ACL 2019).

Layout::

    <root>/sarcasm_data.json                     (or <root>/data/sarcasm_data.json, as in the repo)
    <root>/videos/utterances_final/<id>.mp4      (or <root>/utterances_final/<id>.mp4)
    <root>/videos/context_final/<id>_c.mp4       (or <root>/context_final/<id>_c.mp4)

``sarcasm_data.json`` maps an id (``"1_60"``) to ``{"utterance", "speaker", "context": [...],
"context_speakers": [...], "show", "sarcasm": true/false}``.

Records. One dialogue per id (``dialogue_id = id``): the context sentences are its first turns
(positions ``0..k-1``, ``utterance_id = "<id>_c<j>"``, speakers from ``context_speakers``) with
``label=None`` -- they are never scored (the cache stores -1; dialogue batches keep them as
context with label -100, utterance batches drop them) -- and the target utterance is the last
turn (position ``k``, ``utterance_id = id``) with the primary label ``not_sarcastic`` /
``sarcastic``. Only the target carries media (its clip as video and audio track). Context turns
carry none: the release has one context clip per id, ``<id>_c.mp4``, covering *all* context
turns with no per-turn times, so it belongs to no single turn; it is not attached to any record
(the report counts the context clips found).

Splits. The json has no split. ``split="speaker_independent"`` (default) is the release's own
speaker-independent setting (``data/sarcasm_speaker_independent_{train,test}.jsonnet`` in the
MUStARD repo): test = every utterance of the show FRIENDS, train = the other shows (The Big Bang
Theory, The Golden Girls, Sarcasmaholics Anonymous). That setting has no dev set; ours takes a
seeded, label-stratified ``dev_fraction`` of the non-FRIENDS ids as dev (so dev shares shows and
speakers with train, test does not). ``split="random"`` is a seeded, label-stratified
train/dev/test split by id (default 70/10/20), close to one fold of the paper's
speaker-dependent 5-fold setting. Both depend only on the ids, labels, shows and ``seed``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json import JSONDecodeError
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.corpora.base import (
    CORPORA,
    CorpusData,
    CorpusError,
    CorpusReader,
    ReadReport,
    Utterance,
    check_unique_ids,
)
from pipeline.corpora.common import (
    SPLIT_ORDER,
    media_problem,
    numeric_key,
    present_modalities,
    repair_text,
    require_root,
    skip_bad_row,
    split_counts,
)
from pipeline.registry import Registry

SARCASM = ["not_sarcastic", "sarcastic"]
JSON_CANDIDATES = ("sarcasm_data.json", "data/sarcasm_data.json")
CLIP_DIRS = ("videos/utterances_final", "utterances_final")
CONTEXT_DIRS = ("videos/context_final", "context_final")
FIELDS = ("utterance", "speaker", "context", "context_speakers", "show", "sarcasm")
TEST_SHOW = "FRIENDS"  # the speaker-independent test show of the release

# =========================================================================== JSON with line numbers


@dataclass
class JsonEntry:
    """One top-level ``"key": value`` pair of a JSON object and the line its key is on."""

    key: str
    value: Any
    line: int


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_json_entries(path: Path) -> list[JsonEntry]:
    """The top-level entries of a JSON object file, each with its line number.

    Raises ``CorpusError`` naming ``file:line`` for a missing or undecodable file, malformed JSON, a
    top level that is not an object, and duplicate keys (top level or inside an entry) -- which
    ``json.load`` would silently collapse to the last one.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 (byte offset {e.start})") from None

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def fail(pos: int, what: str) -> CorpusError:
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return CorpusError(f"{path}:{line_of(pos)}: malformed JSON: {what} (column {col})")

    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
    space = re.compile(r"\s*")
    pos = space.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] != "{":
        raise fail(pos, "expected a JSON object ('{') at the top level")
    pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
    entries: list[JsonEntry] = []
    first_line: dict[str, int] = {}
    if text[pos:pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos:pos + 1] != '"':
                raise fail(pos, "expected a string key")
            key_pos = pos
            try:
                key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            except JSONDecodeError as e:
                raise fail(e.pos, e.msg) from None
            line = line_of(key_pos)
            if key in first_line:
                raise CorpusError(f"{path}:{line}: duplicate id {key!r} (first on line {first_line[key]})")
            first_line[key] = line
            pos = space.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] != ":":
                raise fail(pos, "expected ':' after a key")
            pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
            try:
                value, pos = decoder.raw_decode(text, pos)
            except JSONDecodeError as e:
                raise fail(e.pos, e.msg) from None
            except ValueError as e:  # a duplicate key inside the entry
                raise CorpusError(f"{path}:{line}: entry {key!r}: {e}") from None
            entries.append(JsonEntry(key, value, line))
            pos = space.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] == ",":
                pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if text[pos:pos + 1] == "}":
                pos += 1
                break
            raise fail(pos, "expected ',' or '}' after an entry")
    pos = space.match(text, pos).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise fail(pos, "extra data after the top-level object")
    return entries


# =========================================================================== dialogues


@dataclass
class Target:
    """One scored utterance with the context turns before it (both readers build these)."""

    id: str
    label: int
    text: str
    speaker: str
    context: list[tuple[str, str]]  # (speaker, text), oldest first
    group: str = ""  # MUStARD: the show
    clip: Path | None = None
    line: int | None = None


def dialogue_records(corpus: str, split: str, target: Target, label_names: Sequence[str]) -> list[Utterance]:
    """The records of one target: unscored context turns (no media) then the scored target."""
    records = [Utterance(corpus=corpus, split=split, dialogue_id=target.id, position=j,
                         utterance_id=f"{target.id}_c{j}", speaker=speaker, text=text)
               for j, (speaker, text) in enumerate(target.context)]
    clip = str(target.clip) if target.clip else None
    records.append(Utterance(corpus=corpus, split=split, dialogue_id=target.id, position=len(target.context),
                             utterance_id=target.id, speaker=target.speaker, text=target.text,
                             label=target.label, label_name=label_names[target.label],
                             video_path=clip, audio_path=clip))
    return records


def id_key(value: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key of an id like ``"1_60"``: its ``_``-separated parts, numbers numerically."""
    return tuple(numeric_key(p) for p in value.split("_"))


# =========================================================================== splits


def stratified_assign(ids_by_label: dict[int, list[str]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign ids to splits with ``fractions`` inside every label (largest remainder per label).

    Ids are sorted before a ``numpy.random.default_rng(seed)`` permutation, so the result depends
    only on the ids, their labels and the seed. A split with a positive fraction gets at least
    one id of a label that has at least as many ids as there are splits.
    """
    rng = np.random.default_rng(seed)
    names = list(fractions)
    weights = np.array([fractions[n] for n in names], dtype=float)
    out: dict[str, str] = {}
    for label in sorted(ids_by_label):
        ids = sorted(ids_by_label[label], key=id_key)
        order = [ids[int(i)] for i in rng.permutation(len(ids))]
        exact = len(ids) * weights / weights.sum()
        counts = np.floor(exact).astype(int)
        for i in sorted(range(len(names)), key=lambda i: -(exact[i] - counts[i]))[:len(ids) - int(counts.sum())]:
            counts[i] += 1
        if len(ids) >= len(names):
            for i in range(len(names)):
                if counts[i] == 0 and weights[i] > 0:
                    counts[i] += 1
                    counts[int(np.argmax(counts))] -= 1
        start = 0
        for name, n in zip(names, counts):
            for uid in order[start:start + int(n)]:
                out[uid] = name
            start += int(n)
    return out


SplitRule = Callable[[list[Target], "MustardReader", Path, ReadReport], dict[str, str]]
SPLIT_RULES: Registry[SplitRule] = Registry("MUStARD split")


@SPLIT_RULES.register("speaker_independent")
def _speaker_independent(targets: list[Target], reader: "MustardReader", json_path: Path,
                         report: ReadReport) -> dict[str, str]:
    test = [t for t in targets if t.group.strip().upper() == TEST_SHOW]
    test_ids = {t.id for t in test}
    if not test:
        shows = sorted({t.group for t in targets})
        raise CorpusError(f"{json_path}: no utterance of the show {TEST_SHOW!r} (shows: {', '.join(shows)}): "
                          f"the speaker-independent split has no test set; use split: random")
    rest: dict[int, list[str]] = {}
    for t in targets:
        if t.id not in test_ids:
            rest.setdefault(t.label, []).append(t.id)
    dev_share = reader.dev_fraction
    out = stratified_assign(rest, {"train": 1.0 - dev_share, "dev": dev_share}, reader.seed)
    out.update({t.id: "test" for t in test})
    shared = ({t.speaker for t in targets if out[t.id] == "test"}
              & {t.speaker for t in targets if out[t.id] != "test"})
    report.add("info", json_path, f"speaker-independent split: test = the {len(test)} {TEST_SHOW} utterances; "
                                  f"dev = a label-stratified {dev_share:g} of the other shows (seed {reader.seed})"
               + (f"; speaker names in test and train/dev: {', '.join(sorted(shared))}" if shared else ""))
    return out


@SPLIT_RULES.register("random")
def _random(targets: list[Target], reader: "MustardReader", json_path: Path, report: ReadReport) -> dict[str, str]:
    by_label: dict[int, list[str]] = {}
    for t in targets:
        by_label.setdefault(t.label, []).append(t.id)
    fractions = {"train": 1.0 - reader.dev_fraction - reader.test_fraction, "dev": reader.dev_fraction,
                 "test": reader.test_fraction}
    report.add("info", json_path, "random split: label-stratified "
               + "/".join(f"{v:g}" for v in fractions.values()) + f" by id (seed {reader.seed})")
    return stratified_assign(by_label, fractions, reader.seed)


# =========================================================================== the reader


def _field(value: dict[str, Any], name: str, kind: type, where: str, uid: str) -> Any:
    got = value[name]
    if not isinstance(got, kind):
        raise CorpusError(f"{where}: entry {uid!r}: {name!r} is {type(got).__name__}, expected {kind.__name__}")
    return got


def _sarcasm_label(value: Any, where: str, uid: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise CorpusError(f"{where}: entry {uid!r}: unknown sarcasm label {value!r}; expected true or false")


@CORPORA.register("mustard")
class MustardReader(CorpusReader):
    """Reads MUStARD into ``Utterance`` records (primary labels: not_sarcastic, sarcastic).

    Args:
        split: a rule of ``SPLIT_RULES``: ``"speaker_independent"`` (test = FRIENDS) or
            ``"random"``; see the module docstring.
        seed: seeds the stratified dev (and for ``random`` test) draw.
        dev_fraction: share of dev ids (of the non-FRIENDS ids for ``speaker_independent``).
        test_fraction: share of test ids for ``random``.
        require_media: drop targets (with their context) without a usable clip instead of keeping
            them as text-only.
    """

    name = "mustard"
    modalities = ("text", "audio", "video")

    def __init__(self, *, split: str = "speaker_independent", seed: int = 0, dev_fraction: float = 0.1,
                 test_fraction: float = 0.2, require_media: bool = False) -> None:
        self.split_rule = SPLIT_RULES.get(split)
        if not 0.0 < dev_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or dev_fraction + test_fraction >= 1.0:
            raise ValueError(f"dev_fraction and test_fraction must be in (0, 1) with a sum below 1, "
                             f"got {dev_fraction} and {test_fraction}")
        self.split = split
        self.seed = seed
        self.dev_fraction = dev_fraction
        self.test_fraction = test_fraction
        self.require_media = require_media

    @staticmethod
    def _first_dir(root: Path, candidates: Sequence[str]) -> Path | None:
        for c in candidates:
            if (root / c).is_dir():
                return root / c
        return None

    def read(self, root: str | Path) -> CorpusData:
        root_path = require_root(root)
        report = ReadReport(corpus=self.name, root=str(root_path))
        json_path = next((root_path / c for c in JSON_CANDIDATES if (root_path / c).is_file()), None)
        if json_path is None:
            raise CorpusError(f"{root_path / JSON_CANDIDATES[0]}: MUStARD annotations not found "
                              f"(also looked at {root_path / JSON_CANDIDATES[1]})")
        entries = read_json_entries(json_path)
        if not entries:
            raise CorpusError(f"{json_path}:1: no entries")
        clip_dir = self._first_dir(root_path, CLIP_DIRS)
        if clip_dir is None:
            report.add("skip", root_path / CLIP_DIRS[0], f"clip folder not found (also looked at "
                       f"{root_path / CLIP_DIRS[1]}): every target is text-only"
                       + (" and dropped (require_media)" if self.require_media else ""))

        targets: list[Target] = []
        repaired = 0
        for entry in entries:
            try:
                target, fixed = self._parse(entry, json_path, report)
            except CorpusError as e:  # one bad entry is recorded as a skip (file:line); the rest is read
                skip_bad_row(report, json_path, entry.line, e, what="entry")
                continue
            repaired += fixed
            if target is None:
                continue
            if clip_dir is not None:
                candidate = clip_dir / f"{target.id}.mp4"
                problem = media_problem(candidate, "mp4")
                if problem is None:
                    target.clip = candidate
                else:
                    report.add("skip", candidate, f"{problem}: media dropped, text kept"
                               + (" (target dropped: require_media)" if self.require_media else ""),
                               utterance_id=target.id)
            if target.clip is None and self.require_media:
                continue
            targets.append(target)
        if repaired:
            report.add("fix", json_path, f"repaired encoding damage / typographic punctuation in {repaired} "
                                         f"sentence(s)")
        if not targets:
            raise CorpusError(f"{json_path}: no usable entries")
        if clip_dir is not None:
            self._report_orphans(clip_dir, {e.key for e in entries}, report)
        context_dir = self._first_dir(root_path, CONTEXT_DIRS)
        if context_dir is not None:
            n = sum(1 for p in context_dir.glob("*_c.mp4"))
            report.add("info", context_dir, f"{n} context clip(s) found: not attached to any record (one clip "
                                            f"covers all context turns of an id, with no per-turn times)")

        assignment = self.split_rule(targets, self, json_path, report)
        records: list[Utterance] = []
        for split in SPLIT_ORDER:
            for target in sorted((t for t in targets if assignment[t.id] == split), key=lambda t: id_key(t.id)):
                records += dialogue_records(self.name, split, target, SARCASM)
        check_unique_ids(records, str(json_path))
        report.counts = split_counts(records)
        scored = {s: sum(1 for t in targets if assignment[t.id] == s) for s in SPLIT_ORDER}
        report.add("info", json_path, "scored targets: " + ", ".join(f"{s}={n}" for s, n in scored.items())
                   + f"; the other {len(records) - len(targets)} records are unscored context turns")
        return CorpusData(name=self.name, records=records, report=report, label_sets={"primary": list(SARCASM)},
                          modalities=present_modalities(records), task="classification")

    def _parse(self, entry: JsonEntry, json_path: Path, report: ReadReport) -> tuple[Target | None, int]:
        """One json entry -> a ``Target`` (``None``: skipped and reported) and the number of repaired sentences."""
        where = f"{json_path}:{entry.line}"
        uid, value = entry.key, entry.value
        if not uid.strip() or uid != uid.strip() or "/" in uid:
            raise CorpusError(f"{where}: bad id {uid!r} (empty, padded or containing '/')")
        if not isinstance(value, dict):
            raise CorpusError(f"{where}: entry {uid!r} is a {type(value).__name__}, expected an object")
        missing = [f for f in FIELDS if f not in value]
        if missing:
            raise CorpusError(f"{where}: entry {uid!r} lacks {', '.join(map(repr, missing))}")
        label = _sarcasm_label(value["sarcasm"], where, uid)
        utterance = _field(value, "utterance", str, where, uid)
        speaker = _field(value, "speaker", str, where, uid)
        show = _field(value, "show", str, where, uid)
        context = _field(value, "context", list, where, uid)
        speakers = _field(value, "context_speakers", list, where, uid)
        if len(context) != len(speakers):
            raise CorpusError(f"{where}: entry {uid!r} has {len(context)} context sentence(s) but "
                              f"{len(speakers)} context speaker(s)")
        if not all(isinstance(x, str) for x in context + speakers):
            raise CorpusError(f"{where}: entry {uid!r}: context and context_speakers must be lists of strings")

        repaired = 0

        def clean(text: str) -> str:
            nonlocal repaired
            fixed = repair_text(text)
            repaired += fixed != text
            return " ".join(fixed.split())

        text = clean(utterance)
        if not text:
            report.add("skip", json_path, "empty target utterance: entry skipped", line=entry.line, utterance_id=uid)
            return None, repaired
        turns: list[tuple[str, str]] = []
        for j, (who, said) in enumerate(zip(speakers, context)):
            said = clean(said)
            if not said:
                report.add("skip", json_path, f"empty context sentence {j}: turn dropped", line=entry.line,
                           utterance_id=uid)
                continue
            turns.append((" ".join(who.split()), said))
        return Target(id=uid, label=label, text=text, speaker=" ".join(speaker.split()), context=turns,
                      group=show.strip(), line=entry.line), repaired

    @staticmethod
    def _report_orphans(clip_dir: Path, ids: set[str], report: ReadReport) -> None:
        for path in sorted(clip_dir.glob("*.mp4")):
            if path.stem not in ids:
                report.add("skip", path, "clip has no entry in sarcasm_data.json: ignored")
