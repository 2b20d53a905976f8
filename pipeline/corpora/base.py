"""The one corpus interface: a reader turns a raw on-disk layout into `Utterance` records plus a `ReadReport`.

Every reader yields the same record. Nothing downstream opens a corpus file: the extract stage
gets media paths and time spans from the records, the trainer gets labels and dialogue order
from the cache built from them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline.errors import UserValueError
from pipeline.registry import Registry

MODALITIES = ("text", "audio", "video")


class CorpusError(UserValueError):
    """A clear stop: bad input that cannot be skipped. The message names the file (and line)."""


@dataclass
class Utterance:
    """One utterance, the same shape for every corpus.

    ``label`` is the class index into the corpus' primary label set (``None`` for unlabeled input);
    ``score`` is the real-valued sentiment for MOSI/MOSEI; ``extra_labels`` holds second label
    sets (MELD sentiment, IEMOCAP 4-class) as indices. ``start``/``end`` are seconds inside
    ``video_path`` (``None`` = whole file), and inside ``audio_path`` only when the audio is that
    video's own track (the same file) or when there is no video; a separate audio file beside a video
    (IEMOCAP's sentence wavs) is already cut to the utterance. ``video_side`` says which half of a
    two-speaker frame shows the speaker (IEMOCAP: "left"/"right").
    """

    corpus: str
    split: str
    dialogue_id: str
    position: int
    utterance_id: str
    speaker: str
    text: str
    label: int | None = None
    label_name: str | None = None
    score: float | None = None
    extra_labels: dict[str, int] = field(default_factory=dict)
    video_path: str | None = None
    audio_path: str | None = None
    start: float | None = None
    end: float | None = None
    video_side: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ReportEntry:
    action: str  # "skip" | "fix" | "cap" | "known-issue" | "info"
    file: str
    reason: str
    line: int | None = None
    utterance_id: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        uid = f" [{self.utterance_id}]" if self.utterance_id else ""
        return f"{self.action:<11} {where}{uid}: {self.reason}"


@dataclass
class ReadReport:
    corpus: str
    root: str
    entries: list[ReportEntry] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # utterance id -> transcript source if not the corpus' ("asr:<model>")

    def add(self, action: str, file: str | Path, reason: str, line: int | None = None,
            utterance_id: str | None = None) -> None:
        self.entries.append(ReportEntry(action, str(file), reason, line, utterance_id))

    def of(self, action: str) -> list[ReportEntry]:
        return [e for e in self.entries if e.action == action]

    def strict_check(self) -> None:
        """``--strict``: any skip stops the run. Raises ``CorpusError`` after the caller has listed them
        (``summary()`` shows every entry with its file:line)."""
        skips = self.of("skip")
        if skips:
            raise CorpusError(f"--strict: {len(skips)} skip(s) reading {self.corpus} at {self.root} (each listed "
                              f"above with its file:line); fix them, or run without --strict to go on without "
                              f"those rows")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def summary(self) -> str:
        lines = [f"{self.corpus} at {self.root}: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())]
        by: dict[str, int] = {}
        for e in self.entries:
            by[e.action] = by.get(e.action, 0) + 1
        if by:
            lines.append("  " + ", ".join(f"{n} {a}" for a, n in sorted(by.items())))
        shown = self.entries[:50]
        shown += [e for e in self.entries[50:] if e.action == "skip"][:200]  # skips first: --strict lists them
        lines += [f"  {e}" for e in shown]
        if len(self.entries) > len(shown):
            lines.append(f"  ... {len(self.entries) - len(shown)} more (see the JSON report)")
        return "\n".join(lines)


@dataclass
class CorpusData:
    """What a reader returns."""

    name: str
    records: list[Utterance]
    report: ReadReport
    label_sets: dict[str, list[str]]  # "primary" first, then extra label sets by name
    modalities: tuple[str, ...]
    task: str = "classification"  # or "regression"

    def split(self, name: str) -> list[Utterance]:
        return [r for r in self.records if r.split == name]

    def splits(self) -> list[str]:
        order = ["train", "dev", "test"]
        present = {r.split for r in self.records}
        return [s for s in order if s in present] + sorted(present - set(order))


class CorpusReader:
    """Base for readers. Subclasses set ``name``/``modalities`` and implement ``read``.

    Constructor keyword arguments are the reader's options (e.g. ``label_set`` or
    ``max_duration``); ``read(root)`` returns ``CorpusData``.
    """

    name: str = ""
    modalities: tuple[str, ...] = MODALITIES
    # read_corpus(asr=...) sets this: rows with an empty transcript but a clip are kept for the ASR to fill
    # (readers that honour it: MELD, MOSI; the others still skip them)
    keep_untranscribed: bool = False

    def skip_untranscribed(self, text: str, clip: Any, report: ReadReport, file: str | Path, line: int | None,
                           uid: str) -> bool:
        """After the media check: True (a ``skip`` in the report) for a kept empty-transcript row without a
        clip, which the ASR cannot fill either."""
        if text or not self.keep_untranscribed or clip is not None:
            return False
        report.add("skip", file, "empty transcript and no clip for the ASR: row skipped", line=line, utterance_id=uid)
        return True

    def read(self, root: str | Path) -> CorpusData:  # pragma: no cover - interface
        raise NotImplementedError


CORPORA: Registry[type[CorpusReader]] = Registry("corpus")


def read_corpus(name: str, root: str | Path, *, asr: str | None = None, **options: Any) -> CorpusData:
    """Read a corpus by registered name: ``read_corpus("meld", "/data/MELD.Raw")``. ``asr`` (a Whisper dir
    or hub id; also ``asr:`` in a catalog entry's options) fills empty transcripts from the audio, each
    marked machine-made in the report (:func:`pipeline.asr.fill_transcripts`)."""
    import pipeline.corpora  # noqa: F401  (registers the readers)

    reader = CORPORA.create(name, **options)
    reader.keep_untranscribed = bool(asr)
    data = reader.read(root)
    if asr:
        from pipeline.asr import fill_transcripts

        fill_transcripts(data.records, data.report, asr)
    return data


def check_unique_ids(records: Iterable[Utterance], report_file: str) -> None:
    seen: dict[str, Utterance] = {}
    for r in records:
        if r.utterance_id in seen:
            raise CorpusError(f"{report_file}: duplicate utterance id {r.utterance_id!r}")
        seen[r.utterance_id] = r
