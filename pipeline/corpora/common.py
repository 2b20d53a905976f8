"""Helpers shared by the corpus readers.

* ``read_text`` / ``read_csv``: decode a file robustly (UTF-8, else Windows-1252, else a
  ``CorpusError``), repair mojibake, keep the line number of every CSV row for error messages.
* ``repair_text``: undo mojibake with ``ftfy`` (``Iâ€™m`` -> ``I'm``, ``\\x92`` -> ``'``) and turn typographic
  quotes / dashes / ellipses into plain ASCII.
* ``load_known_issues``: the per-corpus YAML lists in ``pipeline/corpora/known_issues/``.
* ``media_problem``: a cheap header check of an mp4 / wav / avi file (the readers never decode media).
* ``cap_span``: the duration cap.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from pipeline.corpora.base import CorpusError, ReadReport, Utterance

KNOWN_ISSUES_DIR = Path(__file__).resolve().parent / "known_issues"
KNOWN_ISSUE_ACTIONS = ("skip", "fix", "cap", "info")
SPLIT_ORDER = ("train", "dev", "test")

# --------------------------------------------------------------------------- decoding and repair


# Mojibake repair is ftfy's job (pinned in pyproject.toml); this module only fixes its settings and adds two
# normalisations of its own: typographic punctuation to ASCII, and the one lossy sequence ftfy cannot undo.
_FTFY_CONFIG = None
# "\u201d" (closing double quote) is UTF-8 E2 80 9D; 0x9D is undefined in Windows-1252, so a cp1252 round trip
# leaves "\u00e2\u20ac" + U+FFFD. Of the code points E2 80 xx with xx undefined in cp1252 (81, 8D, 8F, 90, 9D)
# only 9D is punctuation seen in transcripts, so that one sequence is read as the closing quote before ftfy runs.
_LOST_CLOSING_QUOTE = re.compile("\u00e2\u20ac\ufffd")
_TO_ASCII = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2012": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u200b": "",
}
_TO_ASCII_RE = re.compile("|".join(re.escape(k) for k in _TO_ASCII))


def _ftfy_config():
    global _FTFY_CONFIG
    if _FTFY_CONFIG is None:
        import ftfy

        # explicit settings: a newer ftfy default must not change the cache's text silently
        _FTFY_CONFIG = ftfy.TextFixerConfig(unescape_html=False, remove_terminal_escapes=True, fix_encoding=True,
                                            restore_byte_a0=True, replace_lossy_sequences=True,
                                            decode_inconsistent_utf8=True, fix_c1_controls=True,
                                            fix_latin_ligatures=True, fix_character_width=True, uncurl_quotes=True,
                                            fix_line_breaks=True, fix_surrogates=True, remove_control_chars=True,
                                            normalization="NFC", explain=False)
    return _FTFY_CONFIG


def repair_text(text: str) -> str:
    """Repair encoding damage in one text field and return plain-ASCII punctuation. The one repair
    function of the toolkit: the corpus readers and ``predict`` (sidecar ``.txt``, dialogue CSV) use it.

    1. mojibake (double-encoded UTF-8 such as ``Iâ€™m``, ``CafÃ©``, C1 controls such as ``\\x92``) is
       undone by ``ftfy`` (``fix_text`` with the settings above); ``â€`` + U+FFFD is the closing quote;
    2. typographic quotes, dashes, ellipsis and no-break spaces become ASCII (``’`` -> ``'``).
    Real accented letters (``café``) are left alone.
    """
    import ftfy

    out = _LOST_CLOSING_QUOTE.sub("\u201d", text)
    out = ftfy.fix_text(out, _ftfy_config())
    return _TO_ASCII_RE.sub(lambda m: _TO_ASCII[m.group(0)], out)


def read_text(path: Path, report: ReadReport | None = None) -> tuple[str, str]:
    """Decode a text file: UTF-8 (BOM allowed), else Windows-1252 (reported as a "fix").

    Returns ``(text, encoding)``. Raises ``CorpusError`` naming the file (and the first bad byte's
    line) when it is neither.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e})") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as utf8_err:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as cp_err:
            line = data[: cp_err.start].count(b"\n") + 1
            raise CorpusError(
                f"{path}:{line}: undecodable text: not UTF-8 (byte 0x{data[utf8_err.start]:02x} at offset "
                f"{utf8_err.start}) and not Windows-1252 (byte 0x{data[cp_err.start]:02x} at offset {cp_err.start})"
            ) from None
        if report is not None:
            line = data[: utf8_err.start].count(b"\n") + 1
            report.add("fix", path, f"not valid UTF-8 (first bad byte 0x{data[utf8_err.start]:02x} on line {line}): "
                                    f"decoded as Windows-1252", line=line)
        return text, "cp1252"


@dataclass
class CsvRow:
    """One data row of a CSV file: its first physical line number and its fields by column name."""

    line: int
    values: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.values[column]


@dataclass
class CsvTable:
    path: Path
    encoding: str
    header: list[str]
    rows: list[CsvRow]
    repaired_rows: int


def read_csv(path: Path, required: Sequence[str], report: ReadReport,
             repair_columns: Iterable[str] = ()) -> CsvTable:
    """Read a CSV with a header row.

    Raises ``CorpusError`` for a missing file, an undecodable file or a missing required column
    (naming it); a row with fewer fields than the header is a "skip" naming the line. Fields in
    ``repair_columns`` go through ``repair_text``; the number of rows that changed is reported
    once per file as a "fix". Blank lines are ignored.
    """
    if not path.is_file():
        raise CorpusError(f"{path}: CSV file not found")
    text, encoding = read_text(path, report)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CorpusError(f"{path}:1: empty CSV file (no header row)") from None
    except csv.Error as e:
        raise CorpusError(f"{path}:1: malformed CSV header ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(f"{path}:1: missing required column(s) {', '.join(map(repr, missing))}; "
                          f"the header has: {', '.join(header)}")
    repair = [c for c in repair_columns if c in header]
    rows: list[CsvRow] = []
    repaired = 0
    next_line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise CorpusError(f"{path}:{next_line}: malformed CSV row ({e})") from None
        line = next_line
        next_line = reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < len(header):  # a bad row is recorded and skipped; the other rows are read
            report.add("skip", path, f"expected {len(header)} fields, found {len(fields)}: row skipped", line=line)
            continue
        values = dict(zip(header, fields))
        changed = False
        for col in repair:
            fixed = repair_text(values[col])
            if fixed != values[col]:
                values[col] = fixed
                changed = True
        repaired += changed
        rows.append(CsvRow(line, values))
    if repaired:
        report.add("fix", path, f"repaired encoding damage / typographic punctuation in {repaired} row(s) "
                                f"(columns {', '.join(repair)})")
    return CsvTable(path, encoding, header, rows, repaired)


# --------------------------------------------------------------------------- known issues


@dataclass(frozen=True)
class KnownIssue:
    """One entry of a known-issues YAML file. ``split`` is ``None`` for corpus-wide entries."""

    id: str
    split: str | None
    action: str
    reason: str
    file: str
    line: int

    def matches(self, split: str, ident: str) -> bool:
        return self.id == ident and (self.split is None or self.split == split)


def load_known_issues(name: str, directory: Path = KNOWN_ISSUES_DIR) -> list[KnownIssue]:
    """Load ``<directory>/<name>.yaml``: a list of ``{id, split, action, reason}`` mappings.

    ``split`` may be omitted (or ``"*"``) for an entry about every split; ``id: "*"`` is a note about
    the whole corpus. A missing file means "no known issues". Bad entries raise ``CorpusError``
    naming the file and line.
    """
    path = directory / f"{name}.yaml"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CorpusError(f"{path}: invalid YAML ({e})") from None
    if data is None:
        return []
    if not isinstance(data, list) or node is None or not isinstance(node, yaml.SequenceNode):
        raise CorpusError(f"{path}:1: expected a list of known-issue entries")
    issues: list[KnownIssue] = []
    for item, item_node in zip(data, node.value):
        line = item_node.start_mark.line + 1
        if not isinstance(item, dict):
            raise CorpusError(f"{path}:{line}: a known-issue entry must be a mapping")
        for key in ("id", "action", "reason"):
            if key not in item or item[key] in (None, ""):
                raise CorpusError(f"{path}:{line}: known-issue entry lacks {key!r}")
        unknown = set(item) - {"id", "split", "action", "reason"}
        if unknown:
            raise CorpusError(f"{path}:{line}: unknown key(s) {sorted(unknown)} in known-issue entry")
        action = str(item["action"])
        if action not in KNOWN_ISSUE_ACTIONS:
            raise CorpusError(f"{path}:{line}: action {action!r} is not one of {', '.join(KNOWN_ISSUE_ACTIONS)}")
        split = item.get("split")
        split = None if split in (None, "*") else str(split)
        if split is not None and split not in SPLIT_ORDER:
            raise CorpusError(f"{path}:{line}: split {split!r} is not one of {', '.join(SPLIT_ORDER)}")
        issues.append(KnownIssue(str(item["id"]), split, action, str(item["reason"]).strip(), str(path), line))
    return issues


def report_known_issue(report: ReadReport, issue: KnownIssue, utterance_id: str | None = None,
                       note: str = "") -> None:
    """Add an applied known issue to the report (action "known-issue", with its reason)."""
    reason = f"{issue.action}: {issue.reason}" + (f" ({note})" if note else "")
    report.add("known-issue", issue.file, reason, line=issue.line, utterance_id=utterance_id)


# --------------------------------------------------------------------------- media checks

_MAGIC = {
    # kind: (offset, bytes, description) checks that must all hold
    "mp4": ((4, b"ftyp", "no 'ftyp' box at the start (not an MP4)"),),
    "wav": ((0, b"RIFF", "no RIFF header (not a WAV)"), (8, b"WAVE", "RIFF file is not WAVE")),
    "avi": ((0, b"RIFF", "no RIFF header (not an AVI)"), (8, b"AVI ", "RIFF file is not AVI")),
}


def media_problem(path: Path, kind: str) -> str | None:
    """Why a media file cannot be used, or ``None`` when it looks fine.

    Cheap: a stat and the first 12 bytes (missing file, zero length, wrong magic). Nothing is decoded.
    """
    checks = _MAGIC[kind]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot stat ({e})"
    if size == 0:
        return "zero-length file"
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"cannot read ({e})"
    for offset, magic, why in checks:
        if head[offset:offset + len(magic)] != magic:
            return why
    return None


# --------------------------------------------------------------------------- spans, ordering


def cap_span(duration: float | None, max_duration: float | None) -> tuple[float | None, float | None, bool]:
    """The (start, end) to use for a clip of ``duration`` seconds: ``(None, None)`` (whole clip)
    unless it is longer than ``max_duration``, then ``(0.0, max_duration)``. Third value: capped?"""
    if max_duration is None or duration is None or duration <= max_duration:
        return None, None, False
    return 0.0, float(max_duration), True


def numeric_key(value: str) -> tuple[int, float, str]:
    """Sort key: numbers numerically (``2`` before ``10``), then anything else by text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def split_counts(records: Sequence[Utterance]) -> dict[str, int]:
    counts = {s: 0 for s in SPLIT_ORDER}
    for r in records:
        counts[r.split] = counts.get(r.split, 0) + 1
    return {k: v for k, v in counts.items() if v or k in SPLIT_ORDER}


def present_modalities(records: Sequence[Utterance]) -> tuple[str, ...]:
    """``("text", ...)`` plus "audio" / "video" when at least one record has that media."""
    mods = ["text"]
    if any(r.audio_path for r in records):
        mods.append("audio")
    if any(r.video_path for r in records):
        mods.append("video")
    return tuple(mods)


def skip_bad_row(report: ReadReport, path: str | Path, line: int | None, error: CorpusError,
                 what: str = "row") -> None:
    """Record a bad row (unknown label, bad field, bad span, duplicate) as a "skip" with its file:line and go
    on: every problem of a corpus is listed in one read (``--strict`` then stops on them)."""
    message = str(error)
    for prefix in (f"{path}:{line}: ", f"{path}: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
            break
    report.add("skip", path, f"{message}: {what} skipped", line=line)


def require_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise CorpusError(f"{path}: corpus root not found (or not a directory)")
    return path
