"""MELD reader (the MELD.Raw release).

Layout::

    <root>/{train,dev,test}_sent_emo.csv        (or <root>/<split>/<split>_sent_emo.csv)
    <root>/train_splits/dia{D}_utt{U}.mp4         (or <root>/train/train_splits/...)
    <root>/dev_splits_complete/dia{D}_utt{U}.mp4  (or <root>/dev/dev_splits_complete/...)
    <root>/output_repeated_splits_test/...        (or <root>/test/output_repeated_splits_test/...)

A CSV row is joined to its clip by ``(Dialogue_ID, Utterance_ID)`` only. The clip folder is listed
only to report clips that have no row. Rows without a usable clip stay as text-only records
(``video_path``/``audio_path`` ``None``) unless ``require_media=True``. Audio is the mp4's own
track (``audio_path`` is the mp4). ``start``/``end`` are ``None`` (whole clip) except for
utterances longer than ``max_duration`` by their CSV times, which get ``(0, max_duration)``.

Ids are made unique across splits: ``dialogue_id = "<split>_dia<D>"``,
``utterance_id = "<split>_dia<D>_utt<U>"`` (MELD reuses dialogue numbers in every split).
"""
from __future__ import annotations

import re
from collections import defaultdict
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
    CsvRow,
    KnownIssue,
    cap_span,
    load_known_issues,
    media_problem,
    present_modalities,
    read_csv,
    report_known_issue,
    require_root,
    skip_bad_row,
    split_counts,
)

EMOTIONS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SENTIMENTS = ["neutral", "positive", "negative"]
COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "Season", "Episode", "StartTime", "EndTime")
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
_CLIP_NAME = re.compile(r"^dia(\d+)_utt(\d+)\.mp4$")
_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d+))?\s*$")


def parse_time(value: str, where: str) -> float:
    """``00:16:16,059`` -> 976.059 seconds. ``where`` (``file:line``) names a bad value."""
    m = _TIME.match(value)
    if not m:
        raise CorpusError(f"{where}: bad time {value!r} (expected HH:MM:SS,mmm)")
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (float(f"0.{frac}") if frac else 0.0)


def _int_field(row: CsvRow, column: str, where: str) -> int:
    try:
        return int(row[column].strip())
    except ValueError:
        raise CorpusError(f"{where}: column {column!r} is {row[column]!r}, expected an integer") from None


@CORPORA.register("meld")
class MeldReader(CorpusReader):
    """Reads MELD.Raw into ``Utterance`` records (primary labels: 7 emotions; extra: "sentiment").

    Args:
        max_duration: utterances longer than this (seconds, by the CSV's StartTime/EndTime) are cut
            to their first ``max_duration`` seconds (reported "cap"); ``None`` disables the cap.
        require_media: drop rows that have no usable clip instead of keeping them as text-only.
        known_issues: apply ``known_issues/meld.yaml``.
    """

    name = "meld"
    modalities = ("text", "audio", "video")

    def __init__(self, *, max_duration: float | None = 30.0, require_media: bool = False,
                 known_issues: bool = True) -> None:
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be positive or None, got {max_duration}")
        self.max_duration = max_duration
        self.require_media = require_media
        self.known_issues = known_issues

    # ------------------------------------------------------------------ locating files

    @staticmethod
    def _csv_path(root: Path, split: str) -> Path:
        candidates = [root / f"{split}_sent_emo.csv", root / split / f"{split}_sent_emo.csv"]
        for c in candidates:
            if c.is_file():
                return c
        raise CorpusError(f"{candidates[0]}: MELD CSV for split {split!r} not found "
                          f"(also looked at {candidates[1]})")

    @staticmethod
    def _clip_dir(root: Path, split: str) -> Path | None:
        for c in (root / CLIP_DIRS[split], root / split / CLIP_DIRS[split]):
            if c.is_dir():
                return c
        return None

    # ------------------------------------------------------------------ reading

    def read(self, root: str | Path) -> CorpusData:
        root_path = require_root(root)
        report = ReadReport(corpus=self.name, root=str(root_path))
        issues = load_known_issues("meld") if self.known_issues else []
        for issue in issues:
            if issue.id == "*":
                report_known_issue(report, issue)
        records: list[Utterance] = []
        for split in ("train", "dev", "test"):
            records += self._read_split(root_path, split, report, issues)
        check_unique_ids(records, str(root_path))
        report.counts = split_counts(records)
        return CorpusData(
            name=self.name,
            records=records,
            report=report,
            label_sets={"primary": list(EMOTIONS), "sentiment": list(SENTIMENTS)},
            modalities=present_modalities(records),
            task="classification",
        )

    def _read_split(self, root: Path, split: str, report: ReadReport, issues: list[KnownIssue]) -> list[Utterance]:
        csv_path = self._csv_path(root, split)
        table = read_csv(csv_path, COLUMNS, report, repair_columns=("Utterance", "Speaker"))
        clip_dir = self._clip_dir(root, split)
        if clip_dir is None:
            dropped = " and dropped (require_media)" if self.require_media else ""
            report.add("skip", root / CLIP_DIRS[split], f"clip folder for {split} not found (also looked under "
                                                        f"{root / split}): all {split} rows are text-only{dropped}")
        split_issues = [i for i in issues if i.split in (None, split) and i.id != "*"]
        by_id = {i.id: i for i in split_issues}

        seen: dict[tuple[int, int], int] = {}
        dialogues: dict[int, list[tuple[int, Utterance]]] = defaultdict(list)
        for row in table.rows:
            try:
                parsed = self._parse_row(row, csv_path, split, seen)
            except CorpusError as e:  # one bad row is that row's problem: recorded, the read goes on
                skip_bad_row(report, csv_path, row.line, e)
                continue
            dia, utt, key, uid, emotion, sentiment, text, duration = parsed
            if not text and not self.keep_untranscribed:
                report.add("skip", csv_path, "empty transcript: row skipped", line=row.line, utterance_id=uid)
                continue

            clip: Path | None = None
            issue = by_id.get(key)
            if issue is not None and issue.action == "skip":
                report_known_issue(report, issue, utterance_id=uid, note="media dropped, text kept")
            elif clip_dir is not None:
                candidate = clip_dir / f"{key}.mp4"
                problem = media_problem(candidate, "mp4")
                if problem is None:
                    clip = candidate
                else:
                    report.add("skip", candidate, f"{problem}: media dropped, text kept"
                               + (" (row dropped: require_media)" if self.require_media else ""),
                               line=None, utterance_id=uid)
            if clip is None and self.require_media:
                continue
            if self.skip_untranscribed(text, clip, report, csv_path, row.line, uid):
                continue

            start = end = None
            if clip is not None:
                start, end, capped = cap_span(duration, self.max_duration)
                if capped:
                    report.add("cap", csv_path, f"utterance is {duration:.1f}s long (StartTime-EndTime): "
                               f"using its first {self.max_duration:g}s", line=row.line, utterance_id=uid)
            rec = Utterance(
                corpus=self.name, split=split, dialogue_id=f"{split}_dia{dia}", position=-1,
                utterance_id=uid, speaker=" ".join(row["Speaker"].split()), text=text,
                label=EMOTIONS.index(emotion), label_name=emotion,
                extra_labels={"sentiment": SENTIMENTS.index(sentiment)},
                video_path=str(clip) if clip else None, audio_path=str(clip) if clip else None,
                start=start, end=end,
            )
            dialogues[dia].append((utt, rec))

        if clip_dir is not None:
            self._report_orphan_clips(clip_dir, split, seen, by_id, report)
        # dialogue-level notes apply when the split reaches that dialogue id (present or a gap)
        last_dialogue = max((d for d, _ in seen), default=-1)
        for issue in split_issues:
            m = re.fullmatch(r"dia(\d+)", issue.id)
            if m and int(m.group(1)) <= last_dialogue:
                report_known_issue(report, issue)

        records: list[Utterance] = []
        for dia in sorted(dialogues):
            turns = sorted(dialogues[dia], key=lambda t: t[0])
            for pos, (_, rec) in enumerate(turns):
                rec.position = pos
                records.append(rec)
            if len(turns) == 1:
                report.add("info", csv_path, "dialogue has a single utterance (kept)",
                           utterance_id=turns[0][1].utterance_id)
        return records

    @staticmethod
    def _parse_row(row: CsvRow, csv_path: Path, split: str, seen: dict[tuple[int, int], int]
                   ) -> tuple[int, int, str, str, str, str, str, float]:
        """The fields of one CSV row; ``CorpusError`` (naming file:line) for a bad one."""
        where = f"{csv_path}:{row.line}"
        dia = _int_field(row, "Dialogue_ID", where)
        utt = _int_field(row, "Utterance_ID", where)
        if (dia, utt) in seen:
            raise CorpusError(f"{where}: duplicate utterance Dialogue_ID={dia} Utterance_ID={utt} "
                              f"(first on line {seen[(dia, utt)]})")
        seen[(dia, utt)] = row.line  # its clip is this row's, even when a later field is bad
        emotion = row["Emotion"].strip().lower()
        if emotion not in EMOTIONS:
            raise CorpusError(f"{where}: unknown emotion {row['Emotion']!r}; expected one of {', '.join(EMOTIONS)}")
        sentiment = row["Sentiment"].strip().lower()
        if sentiment not in SENTIMENTS:
            raise CorpusError(f"{where}: unknown sentiment {row['Sentiment']!r}; "
                              f"expected one of {', '.join(SENTIMENTS)}")
        text = " ".join(row["Utterance"].split())
        duration = parse_time(row["EndTime"], where) - parse_time(row["StartTime"], where)
        key = f"dia{dia}_utt{utt}"
        return dia, utt, key, f"{split}_{key}", emotion, sentiment, text, duration

    @staticmethod
    def _report_orphan_clips(clip_dir: Path, split: str, rows: dict[tuple[int, int], int],
                             by_id: dict[str, KnownIssue], report: ReadReport) -> None:
        """Clips on disk with no CSV row are never used; each is reported (known issue or "skip")."""
        for path in sorted(clip_dir.iterdir()):
            m = _CLIP_NAME.match(path.name)
            if not m or (int(m.group(1)), int(m.group(2))) in rows:
                continue
            key = f"dia{int(m.group(1))}_utt{int(m.group(2))}"
            issue = by_id.get(key)
            if issue is not None:
                report_known_issue(report, issue, utterance_id=f"{split}_{key}", note=str(path))
            else:
                report.add("skip", path, "clip has no row in the CSV: ignored", utterance_id=f"{split}_{key}")
