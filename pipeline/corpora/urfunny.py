"""UR-FUNNY v2 reader (multimodal humor detection in TED talks, Hasan et al., EMNLP 2019).

Layout (the v2 "extracted features" folder plus the raw videos)::

    <root>/data_folds.pkl         {"train": [id, ...], "dev": [...], "test": [...]}
    <root>/language_sdk.pkl       id -> {"punchline_sentence": str, "context_sentences": [str, ...], ...}
    <root>/humor_label_sdk.pkl    id -> 0 / 1
    <root>/urfunny2_videos/<id>.mp4   (or <root>/videos/<id>.mp4)

The pickles are opened with ``pipeline.corpora.safe_pickle.safe_load`` (an allow-list unpickler:
containers, strings, numbers and plain NumPy arrays; anything else is refused with an error that
names the file), never with the standard loader. The other v2 pickles (covarep / openface
features, word embeddings) are not read.

Records, as for MUStARD: one dialogue per id (``dialogue_id = str(id)``); the context sentences
are unscored earlier turns (positions ``0..k-1``, ``utterance_id = "<id>_c<j>"``, ``label=None``,
no media) and the punchline is the scored last turn (``utterance_id = str(id)``, labels
``not_humorous`` / ``humorous``) with the clip ``<id>.mp4`` as video and audio (whole file:
where a clip also shows the context, the punchline's features see it too). Every turn's speaker
is ``"speaker"``: each id is a segment of one TED talk with a single speaker. Splits are the
release's folds. A sentence given as a list of words is joined with spaces.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    present_modalities,
    repair_text,
    require_root,
    split_counts,
)
from pipeline.corpora.mustard import Target, dialogue_records, id_key
from pipeline.corpora.safe_pickle import safe_load

HUMOR = ["not_humorous", "humorous"]
FOLDS_FILE = "data_folds.pkl"
LANGUAGE_FILE = "language_sdk.pkl"
LABEL_FILE = "humor_label_sdk.pkl"
VIDEO_DIRS = ("urfunny2_videos", "videos")
FOLDS = {"train": "train", "dev": "dev", "valid": "dev", "test": "test"}
SPEAKER = "speaker"


def normalise_id(value: Any, where: str) -> str:
    """An id of the pickles (an int, a NumPy integer or a string) as the string used everywhere."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value.strip() and "/" not in value:
        return value.strip()
    raise CorpusError(f"{where}: bad id {value!r} (expected an integer or a non-empty string)")


def humor_label(value: Any, where: str) -> int:
    """0 / 1 from a bool, an int, an integral float or a NumPy scalar; anything else stops."""
    raw = value.item() if isinstance(value, np.generic) else value
    if isinstance(raw, (bool, int, float)) and raw in (0, 1):
        return int(raw)
    raise CorpusError(f"{where}: unknown humor label {value!r}; expected 0 or 1")


def _sentence(value: Any, where: str) -> str:
    """A sentence given as a string, bytes, or a list / array of words."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("cp1252", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(_sentence(v, where) for v in list(value))
    raise CorpusError(f"{where}: a sentence is a {type(value).__name__}, expected a string")


def _load_mapping(path: Path) -> Mapping[Any, Any]:
    data = safe_load(path)
    if not isinstance(data, Mapping):
        raise CorpusError(f"{path}: expected a dictionary at the top level, found {type(data).__name__}")
    return data


def _by_id(data: Mapping[Any, Any], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        uid = normalise_id(key, f"{path} [key {key!r}]")
        if uid in out:
            raise CorpusError(f"{path}: duplicate id {uid!r} (keys {key!r} and another spelling of it)")
        out[uid] = value
    return out


@CORPORA.register("urfunny")
class UrFunnyReader(CorpusReader):
    """Reads UR-FUNNY v2 into ``Utterance`` records (primary labels: not_humorous, humorous).

    Args:
        require_media: drop ids without a usable clip instead of keeping them as text-only.
    """

    name = "urfunny"
    modalities = ("text", "audio", "video")

    def __init__(self, *, require_media: bool = False) -> None:
        self.require_media = require_media

    def read(self, root: str | Path) -> CorpusData:
        root_path = require_root(root)
        report = ReadReport(corpus=self.name, root=str(root_path))
        folds_path, lang_path, label_path = (root_path / f for f in (FOLDS_FILE, LANGUAGE_FILE, LABEL_FILE))
        folds = self._read_folds(folds_path, report)
        language = _by_id(_load_mapping(lang_path), lang_path)
        labels = _by_id(_load_mapping(label_path), label_path)
        video_dir = next((root_path / d for d in VIDEO_DIRS if (root_path / d).is_dir()), None)
        if video_dir is None:
            report.add("skip", root_path / VIDEO_DIRS[0], f"video folder not found (also looked at "
                       f"{root_path / VIDEO_DIRS[1]}): every punchline is text-only"
                       + (" and dropped (require_media)" if self.require_media else ""))

        records: list[Utterance] = []
        repaired = 0
        scored = {s: 0 for s in SPLIT_ORDER}
        for split in SPLIT_ORDER:
            for uid in sorted((u for u, s in folds.items() if s == split), key=id_key):
                if uid not in language:
                    report.add("skip", lang_path, f"id in {FOLDS_FILE} ({split}) has no entry: skipped",
                               utterance_id=uid)
                    continue
                if uid not in labels:
                    report.add("skip", label_path, f"id in {FOLDS_FILE} ({split}) has no label: skipped",
                               utterance_id=uid)
                    continue
                try:
                    label = humor_label(labels[uid], f"{label_path} [id {uid}]")
                    target, fixed = self._target(uid, language[uid], label, lang_path, report)
                except CorpusError as e:  # one bad entry is recorded as a skip; the rest is read
                    report.add("skip", lang_path, f"{e}: entry skipped", utterance_id=uid)
                    continue
                repaired += fixed
                if target is None:
                    continue
                if video_dir is not None:
                    candidate = video_dir / f"{uid}.mp4"
                    problem = media_problem(candidate, "mp4")
                    if problem is None:
                        target.clip = candidate
                    else:
                        report.add("skip", candidate, f"{problem}: media dropped, text kept"
                                   + (" (id dropped: require_media)" if self.require_media else ""),
                                   utterance_id=uid)
                if target.clip is None and self.require_media:
                    continue
                records += dialogue_records(self.name, split, target, HUMOR)
                scored[split] += 1
        if repaired:
            report.add("fix", lang_path, f"repaired encoding damage / typographic punctuation in {repaired} "
                                         f"sentence(s)")
        unused = sorted((set(language) | set(labels)) - set(folds), key=id_key)
        if unused:
            report.add("info", lang_path, f"{len(unused)} id(s) with a transcript or label are in no fold: ignored "
                                          f"(first: {', '.join(unused[:5])})")
        if video_dir is not None:
            for path in sorted(video_dir.glob("*.mp4")):
                if path.stem not in folds:
                    report.add("skip", path, f"clip has no id in {FOLDS_FILE}: ignored")
        if not records:
            raise CorpusError(f"{folds_path}: no usable ids")
        check_unique_ids(records, str(folds_path))
        report.counts = split_counts(records)
        report.add("info", folds_path, "scored punchlines: " + ", ".join(f"{s}={n}" for s, n in scored.items())
                   + f"; the other {len(records) - sum(scored.values())} records are unscored context turns")
        return CorpusData(name=self.name, records=records, report=report, label_sets={"primary": list(HUMOR)},
                          modalities=present_modalities(records), task="classification")

    @staticmethod
    def _read_folds(path: Path, report: ReadReport) -> dict[str, str]:
        """id -> split. Stops on a missing fold, a bad id, or an id listed twice."""
        data = _load_mapping(path)
        out: dict[str, str] = {}
        first_fold: dict[str, str] = {}
        present = set()
        for key, ids in data.items():
            fold = str(key).strip().lower()
            if fold not in FOLDS:
                report.add("info", path, f"fold {key!r} is not train/dev/test: ignored")
                continue
            present.add(FOLDS[fold])
            if isinstance(ids, np.ndarray):
                ids = ids.tolist()
            if not isinstance(ids, (list, tuple, set, frozenset)):
                raise CorpusError(f"{path}: fold {key!r} is a {type(ids).__name__}, expected a list of ids")
            for value in ids:
                uid = normalise_id(value, f"{path} [fold {key!r}]")
                if uid in out:
                    raise CorpusError(f"{path}: duplicate id {uid!r} (in fold {first_fold[uid]!r} and {key!r})")
                out[uid] = FOLDS[fold]
                first_fold[uid] = str(key)
        missing = [s for s in SPLIT_ORDER if s not in present]
        if missing:
            raise CorpusError(f"{path}: no {', '.join(missing)} fold (keys: {', '.join(map(repr, data))})")
        return out

    @staticmethod
    def _target(uid: str, entry: Any, label: int, path: Path, report: ReadReport) -> tuple[Target | None, int]:
        where = f"{path} [id {uid}]"
        if not isinstance(entry, Mapping):
            raise CorpusError(f"{where}: entry is a {type(entry).__name__}, expected a dictionary")
        missing = [k for k in ("punchline_sentence", "context_sentences") if k not in entry]
        if missing:
            raise CorpusError(f"{where}: entry lacks {', '.join(map(repr, missing))}")
        context = entry["context_sentences"]
        if isinstance(context, np.ndarray):
            context = context.tolist()
        if not isinstance(context, (list, tuple)):
            raise CorpusError(f"{where}: context_sentences is a {type(context).__name__}, expected a list")
        repaired = 0

        def clean(value: Any) -> str:
            nonlocal repaired
            raw = _sentence(value, where)
            fixed = repair_text(raw)
            repaired += fixed != raw
            return " ".join(fixed.split())

        punchline = clean(entry["punchline_sentence"])
        if not punchline:
            report.add("skip", path, "empty punchline: id skipped", utterance_id=uid)
            return None, repaired
        turns: list[tuple[str, str]] = []
        for j, sentence in enumerate(context):
            text = clean(sentence)
            if not text:
                report.add("skip", path, f"empty context sentence {j}: turn dropped", utterance_id=uid)
                continue
            turns.append((SPEAKER, text))
        return Target(id=uid, label=label, text=punchline, speaker=SPEAKER, context=turns), repaired
