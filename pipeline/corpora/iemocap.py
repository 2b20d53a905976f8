"""IEMOCAP reader (the full release).

Layout, for each ``Session{1..5}``::

    dialog/EmoEvaluation/<dialog>.txt        "[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5, 2.5, 2.5]"
    dialog/transcriptions/<dialog>.txt       "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
    sentences/wav/<dialog>/<turn>.wav        one file per turn
    dialog/avi/DivX/<dialog>.avi             one video per dialogue, both actors side by side

Records: ``dialogue_id`` = dialog name, ``position`` by start time, ``speaker`` = ``Ses01_F``
(session + gender letter of the turn), ``audio_path`` = the turn's sentence wav (the whole file is
the utterance), ``video_path`` = the dialog avi with ``start``/``end`` = the EmoEvaluation span.
Note for the extract stage: ``start``/``end`` are positions inside the *avi*; the sentence wav is
already cut (IEMOCAP is the only corpus here whose audio and video files differ, which an encoder
can see as ``audio_path != video_path``).

Splits: Session5 = test; ``dev_fraction`` of the session 1-4 dialogues, drawn with ``seed``, = dev;
the rest = train. Deterministic for a given set of dialogues, seed and fraction, and independent
of ``label_set``.

``video_side``: each session was recorded as one female and one male actor; the actor whose gender
letter equals the session's letter (the ``F`` of ``Ses01F``, i.e. the one wearing motion-capture
markers in that recording) is placed on ``marker_side`` and the other on the opposite half. This is
a setting to verify against the release's videos before relying on it (``marker_side="right"``
flips it).
"""
from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

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
    load_known_issues,
    media_problem,
    present_modalities,
    read_text,
    repair_text,
    report_known_issue,
    require_root,
    skip_bad_row,
    split_counts,
)

CODES = ("neu", "fru", "ang", "sad", "hap", "exc", "sur", "fea", "dis", "oth", "xxx")
LABEL_SETS: dict[str, dict[str, str]] = {
    # code -> class name; codes not listed are dropped from that setting
    "6class": {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"},
    "4class": {"hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral", "ang": "angry"},
}
CLASS_NAMES: dict[str, list[str]] = {
    "6class": ["happy", "sad", "neutral", "angry", "excited", "frustrated"],
    "4class": ["happy", "sad", "neutral", "angry"],
}
TURN_ID = re.compile(r"^Ses(\d\d)([FM])_\S+_([FM])[A-Z0-9]*$")
_EVAL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[[^\]]*\]\s*$")
_TRANS_LINE = re.compile(r"^(\S+)\s+\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s*:\s?(.*)$")
_IGNORED_PREFIXES = ("%", "C-", "A-")


@dataclass
class _Turn:
    turn_id: str
    start: float
    end: float
    code: str
    line: int


def _parse_evaluation_line(path: Path, n: int, raw: str, line: str, seen: dict[str, int]) -> _Turn:
    """One turn line of an EmoEvaluation file; ``CorpusError`` naming file:line for a bad one."""
    m = _EVAL_LINE.match(line)
    if not m:
        raise CorpusError(f"{path}:{n}: unrecognised line {raw!r} "
                          f"(expected '[start - end]<TAB>turn id<TAB>code<TAB>[v, a, d]')")
    start_s, end_s, turn_id, code = m.groups()
    if not TURN_ID.match(turn_id):
        raise CorpusError(f"{path}:{n}: bad turn id {turn_id!r}")
    if turn_id.rsplit("_", 1)[0] != path.stem:
        raise CorpusError(f"{path}:{n}: turn {turn_id!r} does not belong to dialog {path.stem!r}")
    if code not in CODES:
        raise CorpusError(f"{path}:{n}: unknown emotion code {code!r}; expected one of {', '.join(CODES)}")
    if turn_id in seen:
        raise CorpusError(f"{path}:{n}: duplicate turn id {turn_id!r} (first on line {seen[turn_id]})")
    seen[turn_id] = n
    try:
        start, end = float(start_s), float(end_s)
    except ValueError:
        raise CorpusError(f"{path}:{n}: bad time span [{start_s} - {end_s}]") from None
    if end < start:
        raise CorpusError(f"{path}:{n}: span ends before it starts [{start_s} - {end_s}]")
    return _Turn(turn_id, start, end, code, n)


def _parse_evaluation(path: Path, report: ReadReport) -> list[_Turn]:
    """Turns of one EmoEvaluation file; other lines (``%``, ``C-``, ``A-``, blank) are ignored."""
    text, _ = read_text(path, report)
    turns: list[_Turn] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(_IGNORED_PREFIXES):
            continue
        try:
            turns.append(_parse_evaluation_line(path, n, raw, line, seen))
        except CorpusError as e:  # a bad line is recorded as a skip; the rest of the corpus is read
            skip_bad_row(report, path, n, e, what="line")
    return turns


def _parse_transcription(path: Path, report: ReadReport) -> dict[str, tuple[str, int]]:
    """``turn id -> (text, line)``; lines whose first field is not a turn id are ignored."""
    text, _ = read_text(path, report)
    out: dict[str, tuple[str, int]] = {}
    repaired = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        first = line.split(None, 1)[0]
        if not TURN_ID.match(first):
            continue  # e.g. "M: breathing"
        m = _TRANS_LINE.match(line)
        if not m:
            skip_bad_row(report, path, n, CorpusError(f"unrecognised transcription line {raw!r} "
                                                      f"(expected 'turn id [start-end]: text')"), what="line")
            continue
        if first in out:
            skip_bad_row(report, path, n, CorpusError(f"duplicate turn id {first!r} (first on line "
                                                      f"{out[first][1]})"), what="line")
            continue
        utterance = m.group(4)
        fixed = repair_text(utterance)
        repaired += fixed != utterance
        out[first] = (" ".join(fixed.split()), n)
    if repaired:
        report.add("fix", path, f"repaired encoding damage / typographic punctuation in {repaired} line(s)")
    return out


@CORPORA.register("iemocap")
class IemocapReader(CorpusReader):
    """Reads the IEMOCAP full release into ``Utterance`` records.

    Args:
        label_set: "6class" (happy, sad, neutral, angry, excited, frustrated) or "4class" (happy with
            excited merged in, sad, neutral, angry). Turns with other codes are dropped (counted).
        dev_fraction: share of the session 1-4 dialogues that form the dev split.
        seed: seed of the dev draw.
        marker_side: "left" or "right": where the actor whose gender matches the session letter is
            shown (see the module docstring; to verify against the release).
        sessions: which ``Session{n}`` folders to read (all must exist).
    """

    name = "iemocap"
    modalities = ("text", "audio", "video")

    def __init__(self, *, label_set: str = "6class", dev_fraction: float = 0.2, seed: int = 0,
                 marker_side: str = "left", sessions: tuple[int, ...] = (1, 2, 3, 4, 5)) -> None:
        if label_set not in LABEL_SETS:
            raise ValueError(f"label_set must be one of {', '.join(LABEL_SETS)}, got {label_set!r}")
        if not 0.0 <= dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
        if marker_side not in ("left", "right"):
            raise ValueError(f"marker_side must be 'left' or 'right', got {marker_side!r}")
        bad = [s for s in sessions if s not in (1, 2, 3, 4, 5)]
        if bad or not sessions:
            raise ValueError(f"sessions must be a non-empty subset of 1..5, got {sessions}")
        self.label_set = label_set
        self.dev_fraction = dev_fraction
        self.seed = seed
        self.marker_side = marker_side
        self.sessions = tuple(sorted(set(sessions)))

    def _split_of(self, dialogs_by_session: dict[int, list[str]]) -> dict[str, str]:
        """Session5 -> test; a seeded ``dev_fraction`` of the other dialogues -> dev; rest -> train."""
        split: dict[str, str] = {}
        pool = sorted(d for s, ds in dialogs_by_session.items() if s != 5 for d in ds)
        n_dev = round(self.dev_fraction * len(pool))
        dev = set(random.Random(self.seed).sample(pool, n_dev))
        for d in pool:
            split[d] = "dev" if d in dev else "train"
        for d in dialogs_by_session.get(5, []):
            split[d] = "test"
        return split

    def _side(self, turn_id: str) -> str:
        m = TURN_ID.match(turn_id)
        assert m is not None
        session_letter, gender = m.group(2), m.group(3)
        other = "right" if self.marker_side == "left" else "left"
        return self.marker_side if gender == session_letter else other

    def read(self, root: str | Path) -> CorpusData:
        root_path = require_root(root)
        report = ReadReport(corpus=self.name, root=str(root_path))
        for issue in load_known_issues("iemocap"):
            if issue.id == "*":
                report_known_issue(report, issue)

        evaluations: dict[str, Path] = {}
        session_of: dict[str, int] = {}
        dialogs_by_session: dict[int, list[str]] = defaultdict(list)
        for s in self.sessions:
            emo_dir = root_path / f"Session{s}" / "dialog" / "EmoEvaluation"
            if not emo_dir.is_dir():
                raise CorpusError(f"{emo_dir}: IEMOCAP EmoEvaluation folder not found")
            files = sorted(p for p in emo_dir.glob("*.txt") if not p.name.startswith("."))
            if not files:
                raise CorpusError(f"{emo_dir}: no EmoEvaluation *.txt files")
            for p in files:
                evaluations[p.stem] = p
                session_of[p.stem] = s
                dialogs_by_session[s].append(p.stem)
        split_of = self._split_of(dialogs_by_session)

        mapping = LABEL_SETS[self.label_set]
        names = CLASS_NAMES[self.label_set]
        four = LABEL_SETS["4class"]
        dropped: Counter[str] = Counter()
        all_codes: Counter[str] = Counter()
        by_split: dict[str, list[Utterance]] = defaultdict(list)
        for dialog in sorted(evaluations):
            eval_path = evaluations[dialog]
            session_dir = root_path / f"Session{session_of[dialog]}"
            turns = _parse_evaluation(eval_path, report)
            trans_path = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
            if not trans_path.is_file():
                raise CorpusError(f"{trans_path}: transcription file for dialog {dialog!r} not found "
                                  f"(needed by {eval_path})")
            transcripts = _parse_transcription(trans_path, report)
            avi = session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            avi_problem = media_problem(avi, "avi")
            if avi_problem is not None:
                report.add("skip", avi, f"{avi_problem}: video dropped for every turn of {dialog}")
            kept: list[Utterance] = []
            for t in sorted(turns, key=lambda t: (t.start, t.turn_id)):
                all_codes[t.code] += 1
                if t.code not in mapping:
                    dropped[t.code] += 1
                    continue
                text_line = transcripts.get(t.turn_id)
                if text_line is None:
                    report.add("skip", trans_path, "turn has no transcription line: skipped",
                               utterance_id=t.turn_id)
                    continue
                text, tline = text_line
                if not text:
                    report.add("skip", trans_path, "empty transcript: turn skipped", line=tline,
                               utterance_id=t.turn_id)
                    continue
                wav = session_dir / "sentences" / "wav" / dialog / f"{t.turn_id}.wav"
                wav_problem = media_problem(wav, "wav")
                if wav_problem is not None:
                    report.add("skip", wav, f"{wav_problem}: audio dropped", utterance_id=t.turn_id)
                m = TURN_ID.match(t.turn_id)
                assert m is not None
                label_name = mapping[t.code]
                extra = {"4class": CLASS_NAMES["4class"].index(four[t.code])} if t.code in four else {}
                kept.append(Utterance(
                    corpus=self.name, split=split_of[dialog], dialogue_id=dialog, position=len(kept),
                    utterance_id=t.turn_id, speaker=f"Ses{m.group(1)}_{m.group(3)}", text=text,
                    label=names.index(label_name), label_name=label_name, extra_labels=extra,
                    audio_path=None if wav_problem else str(wav),
                    video_path=None if avi_problem else str(avi),
                    start=None if avi_problem else t.start, end=None if avi_problem else t.end,
                    video_side=None if avi_problem else self._side(t.turn_id),
                ))
            if len(kept) == 1:
                report.add("info", eval_path, "dialogue has a single utterance (kept)",
                           utterance_id=kept[0].utterance_id)
            by_split[split_of[dialog]] += kept

        for code, n in sorted(dropped.items()):
            report.add("skip", root_path, f"dropped {n} turn(s) labelled {code!r} (not in {self.label_set})")
        read_codes = ", ".join(f"{c} {n}" for c, n in all_codes.most_common())
        report.add("info", root_path, f"emotion codes read: {read_codes}")
        records = [r for s in ("train", "dev", "test") for r in by_split.get(s, [])]
        check_unique_ids(records, str(root_path))
        report.counts = split_counts(records)
        return CorpusData(
            name=self.name,
            records=records,
            report=report,
            label_sets={"primary": list(names), "4class": list(CLASS_NAMES["4class"])},
            modalities=present_modalities(records),
            task="classification",
        )
