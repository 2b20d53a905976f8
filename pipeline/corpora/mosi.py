"""CMU-MOSI / CMU-MOSEI reader (the MMSA layout).

Layout::

    <root>/label.csv                    video_id,clip_id,text,label,annotation,mode[,label_T,...]
    <root>/Raw/<video_id>/<clip_id>.mp4

``mode`` train / valid / test -> split train / dev / test. One video = one "dialogue" with one
speaker (``speaker = dialogue_id = video_id``); ``position`` orders the clips of a video by
``clip_id`` (numerically where numeric). ``utterance_id = "<video_id>_<clip_id>"``.

The task is regression: ``score`` is the label in [-3, 3] (values outside are clipped and
reported). For classification-style reporting ``label`` is the 7-class index
``round(score) + 3`` (Python's round: half to even, like ``numpy.round``); extra label sets are
"binary" (negative < 0 <= non-negative) and "sentiment" (the ``annotation`` column).
"""
from __future__ import annotations

import math
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
    load_known_issues,
    media_problem,
    numeric_key,
    present_modalities,
    read_csv,
    report_known_issue,
    require_root,
    skip_bad_row,
    split_counts,
)

COLUMNS = ("video_id", "clip_id", "text", "label", "annotation", "mode")
MODES = {"train": "train", "valid": "dev", "dev": "dev", "test": "test"}
SEVEN = ["-3", "-2", "-1", "0", "1", "2", "3"]
BINARY = ["negative", "non-negative"]
SENTIMENT = ["negative", "neutral", "positive"]
SCORE_MIN, SCORE_MAX = -3.0, 3.0


def seven_class(score: float) -> int:
    """Index into ``SEVEN`` of a score already clipped to [-3, 3]."""
    return int(round(score)) + 3


@CORPORA.register("mosi")
class MosiReader(CorpusReader):
    """Reads CMU-MOSI (MMSA layout) into ``Utterance`` records (task "regression").

    Args:
        require_media: drop clips without a usable mp4 instead of keeping them as text-only.
        known_issues: apply ``known_issues/<name>.yaml`` (MOSI has none; MOSEI lists clipped scores).
    """

    name = "mosi"
    modalities = ("text", "audio", "video")

    def __init__(self, *, require_media: bool = False, known_issues: bool = True) -> None:
        self.require_media = require_media
        self.known_issues = known_issues

    @staticmethod
    def _parse_row(row: CsvRow, csv_path: Path, seen: dict[str, int]) -> tuple[str, str, float, str]:
        """(utterance id, split, score, annotation) of one label.csv row; ``CorpusError`` for a bad one."""
        where = f"{csv_path}:{row.line}"
        video, clip_id = row["video_id"].strip(), row["clip_id"].strip()
        if not video or not clip_id:
            raise CorpusError(f"{where}: empty video_id or clip_id")
        uid = f"{video}_{clip_id}"
        if uid in seen:
            raise CorpusError(f"{where}: duplicate clip {uid!r} (first on line {seen[uid]})")
        seen[uid] = row.line
        mode = row["mode"].strip().lower()
        if mode not in MODES:
            raise CorpusError(f"{where}: unknown mode {row['mode']!r}; expected train, valid or test")
        try:
            score = float(row["label"])
        except ValueError:
            raise CorpusError(f"{where}: label {row['label']!r} is not a number") from None
        if not math.isfinite(score):
            raise CorpusError(f"{where}: label {row['label']!r} is not finite")
        annotation = row["annotation"].strip().lower()
        if annotation not in SENTIMENT:
            raise CorpusError(f"{where}: unknown annotation {row['annotation']!r}; "
                              f"expected Negative, Neutral or Positive")
        return uid, MODES[mode], score, annotation

    def read(self, root: str | Path) -> CorpusData:
        root_path = require_root(root)
        report = ReadReport(corpus=self.name, root=str(root_path))
        issues = {i.id: i for i in load_known_issues(self.name)} if self.known_issues else {}
        csv_path = root_path / "label.csv"
        table = read_csv(csv_path, COLUMNS, report, repair_columns=("text",))
        raw_dir = root_path / "Raw"
        if not raw_dir.is_dir():
            report.add("skip", raw_dir, "media folder not found: every clip is text-only"
                       + (" and dropped (require_media)" if self.require_media else ""))

        seen: dict[str, int] = {}
        videos: dict[tuple[str, str], list[tuple[str, Utterance]]] = defaultdict(list)
        splits_of_video: dict[str, set[str]] = defaultdict(set)
        for row in table.rows:
            try:
                uid, split, score, annotation = self._parse_row(row, csv_path, seen)
            except CorpusError as e:  # one bad row is recorded as a skip; the rest is read
                skip_bad_row(report, csv_path, row.line, e)
                continue
            video, clip_id = row["video_id"].strip(), row["clip_id"].strip()
            text = " ".join(row["text"].split())
            if not text and not self.keep_untranscribed:
                report.add("skip", csv_path, "empty transcript: row skipped", line=row.line, utterance_id=uid)
                continue

            clipped = min(max(score, SCORE_MIN), SCORE_MAX)
            issue = issues.get(uid)
            if issue is not None and issue.action == "fix":
                report_known_issue(report, issue, utterance_id=uid, note=f"score {score:g} -> {clipped:g}")
            elif clipped != score:
                report.add("fix", csv_path, f"score {score:g} outside [-3, 3]: clipped to {clipped:g}",
                           line=row.line, utterance_id=uid)

            clip: Path | None = None
            if raw_dir.is_dir():
                candidate = raw_dir / video / f"{clip_id}.mp4"
                problem = media_problem(candidate, "mp4")
                if problem is None:
                    clip = candidate
                else:
                    report.add("skip", candidate, f"{problem}: media dropped, text kept"
                               + (" (row dropped: require_media)" if self.require_media else ""),
                               utterance_id=uid)
            if clip is None and self.require_media:
                continue
            if self.skip_untranscribed(text, clip, report, csv_path, row.line, uid):
                continue
            rec = Utterance(
                corpus=self.name, split=split, dialogue_id=video, position=-1, utterance_id=uid,
                speaker=video, text=text, label=seven_class(clipped), label_name=SEVEN[seven_class(clipped)],
                score=clipped,
                extra_labels={"binary": 0 if clipped < 0 else 1, "sentiment": SENTIMENT.index(annotation)},
                video_path=str(clip) if clip else None, audio_path=str(clip) if clip else None,
            )
            videos[(split, video)].append((clip_id, rec))
            splits_of_video[video].add(split)

        for video, splits in sorted(splits_of_video.items()):
            if len(splits) > 1:
                report.add("info", csv_path, f"video {video!r} has clips in several splits: "
                                             f"{', '.join(sorted(splits))}")
        records: list[Utterance] = []
        singles: dict[str, int] = defaultdict(int)
        for split in ("train", "dev", "test"):
            for (s, video) in sorted(k for k in videos if k[0] == split):
                clips = sorted(videos[(s, video)], key=lambda c: numeric_key(c[0]))
                for pos, (_, rec) in enumerate(clips):
                    rec.position = pos
                    records.append(rec)
                singles[split] += len(clips) == 1
        for split, n in singles.items():
            if n:
                report.add("info", csv_path, f"{n} video(s) in {split} have a single clip (kept)")
        check_unique_ids(records, str(csv_path))
        report.counts = split_counts(records)
        return CorpusData(
            name=self.name,
            records=records,
            report=report,
            label_sets={"primary": list(SEVEN), "binary": list(BINARY), "sentiment": list(SENTIMENT)},
            modalities=present_modalities(records),
            task="regression",
        )


@CORPORA.register("mosei")
class MoseiReader(MosiReader):
    """CMU-MOSEI: the same layout and reader as MOSI, with ``known_issues/mosei.yaml``."""

    name = "mosei"
