"""Emotions of a new clip or dialogue: ``python -m pipeline predict RUN_DIR INPUT... [--text T]``.

INPUT is one of

* a media file (``.mp4``/``.avi``/``.mkv``/``.mov``/``.webm`` video with its sound track, or a
  ``.wav``/``.flac``/``.ogg``/``.mp3``/``.m4a`` sound file): one utterance; its transcript comes from
  ``--text`` or from a sidecar ``<file stem>.txt``;
* a dialogue: a folder holding clips and one ``.csv`` (or the ``.csv`` itself) with one row per utterance
  in dialogue order and the columns ``file`` (relative to the CSV's folder), ``text`` and optionally
  ``speaker``, ``start``, ``end`` (seconds inside the file).

Every INPUT is one dialogue. Output per utterance: the label, the class probabilities and, for a
regression run, the score; printed as a table, and as JSON / CSV with ``--json`` / ``--csv``.
``--explain`` adds the per-modality numbers the model computes anyway (``MethodOutput.extras``:
TelME's gate and lambda, DMD's graph edge weights, SUMMER's expert gates, ...) and each unimodal
stage head's label, printed and drawn as a PNG.

One code path with the cache. The utterances become ``Utterance`` records of a ``CorpusData`` (split
``test``, no labels) that :func:`pipeline.extract.extract` turns into a temporary features cache, with
encoders rebuilt from the run's ``features.json`` (encoder name + constructor kwargs, saved by the
extract stage and copied into the run dir by the trainer). Each rebuilt encoder must give the run's
fingerprint, else predict refuses and names the column. The model then scores that cache with the
trainer's collate code and ``head_output``; the only difference from evaluation is that unlabelled
rows are kept (:func:`keep_every_row`) and batches carry no targets.

Safety: the run dir is data, never code. Weights are read only as safetensors (a pickle is refused
before anything is unpickled), config / JSON files are parsed with safe loaders, and the plugins a
``run.json`` lists are not imported unless given with ``--plugin``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.corpora.base import CorpusData, CorpusError, ReadReport, Utterance
from pipeline.errors import UserValueError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a"})
TARGET_KEYS = ("label", "score", "label_mask")
EXIT_DEGRADED = 3  # predict --strict: some row had a missing modality or a cut input (2 = bad input, no output)  # batch entries predict never passes to the model
DEFAULT_SPEAKER = "Speaker"
CSV_FILE_COLUMNS = ("file", "clip", "path", "video")
CSV_TEXT_COLUMNS = ("text", "transcript", "utterance")


class PredictError(UserValueError):
    """A clear stop: the run dir or the input cannot be used here. The message says which file and why."""


class WeightsError(PredictError):
    """A weights file that is not safetensors (or not inside the run dir): refused, never unpickled."""


# ------------------------------------------------------------------------------------------ the run
@dataclass
class TrainedRun:
    """A finished single-seed run dir, loaded for inference (weights in, eval mode)."""

    run_dir: Path
    config: dict[str, Any]
    features: dict[str, Any]  # features.json (see pipeline/report.py: run_features)
    saved: dict[str, Any]  # metrics.json
    method: Any  # models.base.Method
    stage: Any  # models.base.Stage: the final stage, whose head is the prediction
    input_encoders: dict[str, Any] = field(default_factory=dict)  # role -> encoder the run trained (its weights)

    @property
    def task(self) -> str:
        return str(self.features["task"])

    @property
    def label_names(self) -> list[str]:
        return label_names_of(self.features)


def label_names_of(features: dict[str, Any]) -> list[str]:
    """Class names of a run's label set (none for regression)."""
    if features["task"] == "regression":
        return []
    return list(features["label_sets"][features.get("label_set", "primary")])


def _not_safetensors(path: Path) -> str | None:
    """Why ``path`` is not a safetensors file (None when its layout is right). A safetensors file is an
    8-byte little-endian header length, a JSON header starting with ``{``, then raw tensor bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and 8 + int.from_bytes(head[:8], "little") <= size and head[8:9] == b"{":
        return None
    if head[:1] == b"\x80":  # PROTO opcode: pickle protocol 2 and later
        return "it is a Python pickle (unpickling can run code)"
    if head.startswith(b"PK\x03\x04"):
        return "it is a torch.save zip checkpoint (its pickle can run code)"
    return "it has no safetensors header"


def check_weights(path: str | Path, run_dir: str | Path) -> Path:
    """The resolved path of a safetensors weights file inside ``run_dir``; anything else is refused with
    :class:`WeightsError` before any deserialiser opens it: a path outside the run dir, another suffix, a
    missing file, or a file not laid out as safetensors (a pickle or ``torch.save`` file is named)."""
    run_dir = Path(run_dir).resolve()
    resolved = (run_dir / Path(path)).resolve()
    if run_dir not in resolved.parents:
        raise WeightsError(f"{path}: weights must be a file inside the run dir {run_dir}; refused")
    if resolved.suffix != ".safetensors":
        raise WeightsError(f"{resolved}: weights are loaded only from .safetensors files; refused "
                           f"{resolved.suffix or 'a name without suffix'} (a pickled checkpoint could run code)")
    if not resolved.is_file():
        raise WeightsError(f"{resolved}: weights file not found; the run dir is incomplete (re-run the training)")
    why = _not_safetensors(resolved)
    if why:
        raise WeightsError(f"{resolved}: not a safetensors file: {why}; refused without loading it. "
                           f"Run dirs carry safetensors weights only (the trainer writes them).")
    return resolved


def load_weights(path: str | Path, run_dir: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a safetensors file inside ``run_dir`` (checked first by :func:`check_weights`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    resolved = check_weights(path, run_dir)
    try:
        return load_file(str(resolved))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{resolved}: not a valid safetensors file ({e}); refused") from None


def _features_from_cache(run_dir: Path, config: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """For run dirs written before ``features.json`` existed: the same facts from the run's cache."""
    from pipeline.cache import load_cache
    from pipeline.report import run_features

    cache_path = saved.get("cache")
    if not cache_path or not (Path(cache_path) / "meta.json").exists():
        raise PredictError(f"{run_dir / 'features.json'} not found and the run's cache ({cache_path}) is not "
                           f"here: the run dir does not say which encoders made its features")
    return run_features(config, load_cache(cache_path))


def load_run(run_dir: str | Path, plugins: Sequence[str] = ()) -> TrainedRun:
    """Config, features, final weights and final stage of a single-seed run dir (needs no cache)."""
    from models.base import METHODS
    from pipeline.collate import RunData
    from pipeline.config import load_plugins, with_defaults, yaml_load
    from pipeline.report import FEATURES_FILE
    from pipeline.train import build_model

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise PredictError(f"{run_dir / 'metrics.json'} not found: {run_dir} is not a finished run dir")
    saved = json.loads((run_dir / "metrics.json").read_text())
    if "final_weights" not in saved:
        seeds = saved.get("runs") or sorted(p.name for p in run_dir.glob("seed-*"))
        raise PredictError(f"{run_dir} holds several seeds ({', '.join(seeds) or 'none found'}); "
                           f"pass one of them, e.g. {run_dir / (seeds[0] if seeds else 'seed-0')}")
    if not (run_dir / "config.yaml").exists():
        raise PredictError(f"{run_dir / 'config.yaml'} not found: {run_dir} is not a finished run dir")
    load_plugins(list(plugins))
    config = with_defaults(yaml_load(run_dir / "config.yaml"))
    import models  # noqa: F401  (registers the methods)

    if config["method"] not in METHODS:
        listed = []
        for d in (run_dir, run_dir.parent):
            if (d / "run.json").exists():
                listed = json.loads((d / "run.json").read_text()).get("plugins", [])
                break
        hint = (f"; the run was trained with --plugin {' '.join(listed)}: pass them with --plugin "
                f"(they are code, so predict never imports them on its own)") if listed else ""
        raise PredictError(f"{run_dir / 'config.yaml'}: method {config['method']!r} is not registered here{hint}")
    features_file = run_dir / FEATURES_FILE
    features = (json.loads(features_file.read_text()) if features_file.exists()
                else _features_from_cache(run_dir, config, saved))
    dims = features.get("input_dims")
    if not dims:
        dims = {role: int(features["columns"][col]["dim"]) for role, col in features["features"].items()}
    label_names = label_names_of(features)
    encoders = trained_encoders(features)
    shape = RunData(splits={}, input_dims={r: int(d) for r, d in dims.items()},
                    num_classes=int(features.get("num_classes") or max(1, len(label_names))),
                    label_names=label_names, task=features["task"], encoders=encoders)
    method = build_model(config, shape)
    state = load_weights(saved["final_weights"], run_dir)
    try:
        method.load_state_dict(state)
    except RuntimeError as e:
        raise PredictError(f"{run_dir / saved['final_weights']}: weights do not fit method "
                           f"{config['method']!r} built from {run_dir / 'config.yaml'}: {e}") from None
    method.eval()
    stage = next((s for s in method.stages() if s.name == saved["final_stage"]), None)
    if stage is None:
        raise PredictError(f"{run_dir / 'metrics.json'}: final stage {saved['final_stage']!r} is not a stage of "
                           f"method {config['method']!r}")
    return TrainedRun(run_dir=run_dir, config=config, features=features, saved=saved, method=method, stage=stage,
                      input_encoders=encoders)


def trained_encoders(features: dict[str, Any]) -> dict[str, Any]:
    """role -> encoder for the roles whose encoder the run fine-tuned (``features.json`` ``inputs``), rebuilt
    from the decoded-inputs settings (so ``load`` decodes as the cache did; fingerprint checked). The weights
    they start with are replaced by the run's fine-tuned ones when the method loads its state."""
    from pipeline.config import ConfigError
    from pipeline.inputs import build_input_encoder

    out = {}
    for role, col in (features.get("features") or {}).items():
        info = (features.get("inputs") or {}).get(col)
        if info is None:
            continue
        try:
            out[role] = build_input_encoder(col, info)
        except ConfigError as e:
            raise PredictError(f"features.json: {e}") from None
    return out


# --------------------------------------------------------------------------------------- encoders
def _settings_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    diff = [f"{k}: run={a.get(k)!r}, here={b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diff[:6]) or "same settings: another encoder version, or an edited features.json"


def _kwargs_attempts(info: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    """Ways to rebuild a column's encoder, in order: its saved constructor kwargs, then its profile's
    (built lazily: the offline profile may first have to write its tiny models)."""
    from extractors.profiles import encoder_kwargs

    attempts: list[tuple[str, Any]] = []
    if info.get("kwargs") is not None:
        attempts.append(("its saved settings", lambda: dict(info["kwargs"])))
    if info.get("profile"):
        def from_profile() -> dict[str, Any]:
            kw = encoder_kwargs(str(info["profile"]), name)
            if info.get("sequence"):
                kw["sequence"] = True
            return kw
        attempts.append((f"profile {info['profile']!r}", from_profile))
    return attempts


def rebuild_encoders(features: dict[str, Any]) -> dict[str, Any]:
    """One encoder per feature column of the run, built the way the extract stage built it: from the
    saved constructor kwargs or, when those cannot be loaded here (weights moved, another machine),
    from the column's profile. The encoder must reproduce the run's fingerprint; otherwise this
    raises :class:`PredictError` naming the column and what differs."""
    from extractors.base import create_encoder

    encoders: dict[str, Any] = {}
    for col, info in features["columns"].items():
        name, want = info.get("encoder"), info.get("fingerprint")
        if not name or not want:
            raise PredictError(f"features.json: column {col!r} names no encoder or fingerprint")
        errors: list[str] = []
        for how, make_kwargs in _kwargs_attempts(info, name):
            try:
                kwargs = make_kwargs()
                encoder = create_encoder(name, **kwargs)
            except Exception as e:  # missing weights or package, unknown encoder, bad kwargs: try the next way
                errors.append(f"{how}: {type(e).__name__}: {e}")
                continue
            got = encoder.fingerprint()
            if got == want:
                encoder.init_kwargs = kwargs  # type: ignore[attr-defined]
                encoders[col] = encoder
                break
            errors.append(f"{how}: fingerprint {got} != the run's {want} "
                          f"({_settings_diff(info.get('settings') or {}, encoder.settings())})")
        else:
            raise PredictError(f"cannot load the encoder of feature column {col!r} ({name}) here as the run "
                               f"used it: " + (" | ".join(errors) or "the run saved no settings for it"))
    return encoders


# ------------------------------------------------------------------------------------------ inputs
def _media_fields(path: Path) -> dict[str, str | None]:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return {"video_path": str(path), "audio_path": str(path)}  # the clip's own sound track
    if suffix in AUDIO_SUFFIXES:
        return {"video_path": None, "audio_path": str(path)}
    raise PredictError(f"{path}: not a media file predict reads (video: {', '.join(sorted(VIDEO_SUFFIXES))}; "
                       f"audio: {', '.join(sorted(AUDIO_SUFFIXES))}); a dialogue is a folder or a .csv")


def _float_or_none(value: str | None, where: str, column: str) -> float | None:
    if value is None or not str(value).strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise CorpusError(f"{where}: column {column!r} must be a number of seconds, got {value!r}") from None


def _clean_text(raw: str | None) -> str:
    """A transcript as the readers keep it: mojibake repaired (``repair_text``, ftfy), whitespace collapsed."""
    from pipeline.corpora.common import repair_text

    return " ".join(repair_text(raw or "").split())


def read_dialogue_csv(csv_path: Path, dialogue_id: str, report: ReadReport | None = None) -> list[Utterance]:
    """The utterances of one dialogue CSV, in file order (see the module docstring for the columns). Decoded
    as the corpus readers decode (UTF-8, else Windows-1252, said in the report) and repaired the same way."""
    from pipeline.corpora.common import read_text

    text, _ = read_text(csv_path, report)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    file_col = next((fields[c] for c in CSV_FILE_COLUMNS if c in fields), None)
    text_col = next((fields[c] for c in CSV_TEXT_COLUMNS if c in fields), None)
    if file_col is None or text_col is None:
        raise CorpusError(f"{csv_path}:1: a dialogue CSV needs the columns file and text (optional: speaker, "
                          f"start, end); it has {', '.join(reader.fieldnames or []) or 'none'}")
    records: list[Utterance] = []
    line = reader.line_num + 1
    for row in reader:
        where = f"{csv_path}:{line}"
        line = reader.line_num + 1
        name = (row.get(file_col) or "").strip()
        if not name:
            raise CorpusError(f"{where}: empty {file_col!r}")
        media = (csv_path.parent / name)
        if not media.is_file():
            raise CorpusError(f"{where}: media file {media} not found")
        try:
            fields_ = _media_fields(media)
        except PredictError as e:
            raise CorpusError(f"{where}: {e}") from None
        speaker = _clean_text(row.get(fields.get("speaker", ""), "")) or DEFAULT_SPEAKER
        records.append(Utterance(
            corpus="predict", split="test", dialogue_id=dialogue_id, position=len(records),
            utterance_id=f"{dialogue_id}_{len(records)}", speaker=speaker, text=_clean_text(row.get(text_col)),
            start=_float_or_none(row.get(fields.get("start", "")), where, "start"),
            end=_float_or_none(row.get(fields.get("end", "")), where, "end"), **fields_))
    if not records:
        raise CorpusError(f"{csv_path}: no utterances")
    return records


def read_inputs(inputs: Sequence[str | Path], text: str | None = None, speaker: str = DEFAULT_SPEAKER,
                asr: Any = None, segment: bool = False) -> tuple[list[Utterance], ReadReport]:
    """``Utterance`` records of the inputs: each media file is a one-utterance dialogue, each folder or
    CSV a dialogue. ``text`` is the transcript of a single media file (else its sidecar ``.txt``).
    ``asr`` (a Whisper dir / hub id, :mod:`pipeline.asr`) transcribes every input left without a
    transcript; with ``segment`` each media file is split into utterances at the ASR's timestamps (a
    dialogue). ``report.sources`` says where each transcript came from (``asr:<model>`` = machine-made)."""
    if segment and asr is None:
        raise PredictError("--segment splits a recording into utterances at the timestamps of an ASR: "
                           "give --asr MODEL (a Whisper dir or hub id)")
    if segment and text is not None:
        raise PredictError("--segment takes the transcript from the ASR; drop --text")
    if asr is not None:
        from pipeline.asr import as_transcriber

        asr = as_transcriber(asr)  # one model load for every input
    if not inputs:
        raise PredictError("give at least one INPUT (a media file, a folder with a dialogue CSV, or the CSV)")
    report = ReadReport(corpus="predict", root=", ".join(str(i) for i in inputs))
    for raw in inputs:
        if not Path(raw).exists():
            raise PredictError(f"{raw}: not found")
    single = Path(inputs[0])
    if text is not None and (len(inputs) != 1 or not single.is_file() or single.suffix.lower() == ".csv"):
        raise PredictError("--text is the transcript of ONE media file; give dialogues a CSV and several "
                           "clips sidecar .txt files")
    records: list[Utterance] = []
    for n, raw in enumerate(inputs):
        path = Path(raw)
        dialogue = f"input{n}"
        if path.is_dir():
            csvs = sorted(path.glob("*.csv"))
            if len(csvs) != 1:
                raise PredictError(f"{path}: a dialogue folder holds exactly one .csv (file,speaker,text per "
                                   f"utterance, in order); found {len(csvs)}")
            turns = read_dialogue_csv(csvs[0], dialogue, report)
            report.add("info", csvs[0], f"dialogue {dialogue}: {len(turns)} utterance(s)")
            records += turns
        elif path.is_file() and path.suffix.lower() == ".csv":
            turns = read_dialogue_csv(path, dialogue, report)
            report.add("info", path, f"dialogue {dialogue}: {len(turns)} utterance(s)")
            records += turns
        elif path.is_file() and segment:
            from pipeline.asr import split_recording

            fields_ = _media_fields(path)
            turns = [Utterance(corpus="predict", split="test", dialogue_id=dialogue, position=k,
                               utterance_id=f"{dialogue}_{k}", speaker=speaker, text=_clean_text(c.text),
                               start=round(c.start, 3), end=round(c.end, 3), **fields_)
                     for k, c in enumerate(split_recording(path, asr))]
            report.sources.update({t.utterance_id: asr.source for t in turns})
            report.add("info", path, f"dialogue {dialogue}: {len(turns)} utterance(s) split at the ASR's timestamps")
            records += turns
        elif path.is_file():
            fields_ = _media_fields(path)
            transcript, source = text, "text"
            if transcript is None:
                sidecar = path.with_suffix(".txt")
                if sidecar.is_file():
                    from pipeline.corpora.common import read_text

                    transcript, source = read_text(sidecar, report)[0], "sidecar"  # UTF-8, else Windows-1252
                elif asr is not None:
                    transcript, source = "", "none"  # the ASR fills it below
                else:
                    raise PredictError(f"{path}: no transcript; pass --text, write it into {sidecar}, or let an "
                                       f"ASR make one with --asr MODEL")
            transcript = _clean_text(transcript)  # empty = missing text, as the readers treat it
            records.append(Utterance(corpus="predict", split="test", dialogue_id=dialogue, position=0,
                                     utterance_id=f"{dialogue}_0", speaker=speaker, text=transcript, **fields_))
            report.sources[records[-1].utterance_id] = source
        else:
            raise PredictError(f"{path}: neither a file nor a folder")
    if asr is not None:
        from pipeline.asr import fill_transcripts

        fill_transcripts(records, report, asr)  # every empty transcript: single files and CSV rows
    report.counts = {"utterances": len(records), "dialogues": len({r.dialogue_id for r in records}),
                     **({"asr_filled": report.counts.get("asr_filled", 0)} if asr is not None else {})}
    return records, report


def input_corpus(records: list[Utterance], report: ReadReport, features: dict[str, Any]) -> CorpusData:
    """The inputs as a one-split, unlabelled corpus with the run's label sets and task."""
    return CorpusData(name="predict", records=records, report=report,
                      label_sets={k: list(v) for k, v in features.get("label_sets", {}).items()},
                      modalities=tuple(features.get("modalities") or ("text", "audio", "video")),
                      task=str(features["task"]))


def extract_inputs(data: CorpusData, features: dict[str, Any], cache_dir: Path,
                   encoders: dict[str, Any] | None = None, decoded: Sequence[Any] = ()) -> dict[str, Any]:
    """Run :func:`pipeline.extract.extract` on the inputs with the run's encoders (grouped by the dtype
    their column was stored in, so the features are rounded as the cache rounded them), and store the
    decoded inputs of the encoders the run fine-tuned (``decoded``: ``pipeline.inputs.DecodedInputs``)."""
    from pipeline.extract import ExtractSettings, extract

    encoders = encoders if encoders is not None else rebuild_encoders(features)
    if decoded:
        part = extract(data, cache_dir, ExtractSettings(encoders=[], inputs=list(decoded), num_workers=0,
                                                        progress=False))
        skipped_inputs = {k.removesuffix(" (inputs)"): v for k, v in part.get("skipped", {}).items()
                          if k.endswith(" (inputs)")}
    else:
        skipped_inputs = {}
    groups: dict[str, list[str]] = {}
    for col in encoders:
        groups.setdefault(str(features["columns"][col].get("dtype") or "float32"), []).append(col)
    report: dict[str, Any] = {"skipped": {}}
    for dtype, cols in groups.items():
        seq = tuple(encoders[c].name for c in cols if features["columns"][c].get("sequence"))
        settings = ExtractSettings(encoders=[encoders[c] for c in cols], profile=str(features.get("profile")),
                                   dtype=dtype, num_workers=0, sequence=seq, progress=False)
        part = extract(data, cache_dir, settings)
        report["skipped"].update({c: part.get("skipped", {}).get(c, []) for c in cols})
    report["skipped"].update(skipped_inputs)
    return report


# ----------------------------------------------------------------------------------------- scoring
def keep_every_row(dataset: Any) -> Any:
    """Make a split dataset serve every row, labelled or not (the collator's utterance and sequence
    datasets keep only labelled rows for training and evaluation; dialogue datasets keep all anyway)."""
    n = len(dataset.dialogue_id)
    if hasattr(dataset, "rows"):
        dataset.rows = torch.arange(n)
    served = sum(len(item) if torch.is_tensor(item) and item.dim() == 1 else 1 for item in dataset.items)
    if served != n:
        raise RuntimeError(f"{type(dataset).__name__} serves {served} of {n} rows after keep_every_row")
    return dataset


@dataclass
class Scored:
    """Per row of a split (in the dataset's item order): the final head's output and the extras."""

    rows: list[int]
    outputs: np.ndarray  # [N, C] logits or [N] regression scores
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, ...] per utterance
    shared: dict[str, np.ndarray] = field(default_factory=dict)  # name -> value that is not per utterance
    heads: dict[str, np.ndarray] = field(default_factory=dict)  # unimodal stage name -> [N, C] / [N]


def _per_row(value: torch.Tensor, batch: dict[str, torch.Tensor], sizes: list[int]) -> torch.Tensor | None:
    """An extras tensor as one entry per real utterance of the batch, or None if it is not per item."""
    mask = batch.get("mask")
    if mask is not None and value.dim() >= 2 and tuple(value.shape[:2]) == tuple(mask.shape):
        return value[mask]
    if value.dim() >= 1 and value.shape[0] == len(sizes):
        return torch.repeat_interleave(value, torch.tensor(sizes, device=value.device), dim=0)
    return None


@torch.no_grad()
def score_dataset(method: Any, stage: Any, dataset: Any, *, batch_size: int, unimodal_heads: bool = False) -> Scored:
    """Run the model over a split dataset in the trainer's batches (``make_loader``, ``head_output``),
    without targets in the batch, and return every row's output in item order."""
    from pipeline.collate import ROW_UID, make_loader
    from pipeline.train import head_output

    method.eval()
    device = next(method.parameters()).device
    loader = make_loader(dataset, batch_size=batch_size)
    extra_stages = [s for s in method.stages() if s.modality is not None and s.name != stage.name] \
        if unimodal_heads else []
    rows: list[int] = []
    outputs: list[torch.Tensor] = []
    extras: dict[str, list[torch.Tensor]] = {}
    shared: dict[str, torch.Tensor] = {}
    heads: dict[str, list[torch.Tensor]] = {s.name: [] for s in extra_stages}
    offset = 0
    for batch in loader:
        items = [dataset.items[i] for i in range(offset, offset + _batch_len(batch))]
        offset += len(items)
        sizes = [len(it) if torch.is_tensor(it) and it.dim() == 1 else 1 for it in items]
        for it in items:
            rows += it.tolist() if torch.is_tensor(it) and it.dim() == 1 else [int(it)]
        # no ROW_UID: a loaded run scores new datasets; nothing is remembered between calls
        inputs = {k: v.to(device) for k, v in batch.items() if k not in TARGET_KEYS and k != ROW_UID}
        out = method(inputs, stage=stage.name)
        y = head_output(out, stage.eval_head).float()
        mask = inputs.get("mask")
        outputs.append((y[mask] if mask is not None else y).cpu())
        for name, value in out.extras.items():
            if not torch.is_tensor(value) or not (value.is_floating_point() or value.dtype == torch.bool):
                continue
            per = _per_row(value.detach().float(), inputs, sizes)
            if per is None:
                shared.setdefault(name, value.detach().float().cpu())
            else:
                extras.setdefault(name, []).append(per.cpu())
        for s in extra_stages:
            h = head_output(method(inputs, stage=s.name), s.eval_head).float()
            heads[s.name].append((h[mask] if mask is not None else h).cpu())
    return Scored(rows=rows, outputs=torch.cat(outputs).numpy(),
                  extras={k: torch.cat(v).numpy() for k, v in extras.items()},
                  shared={k: v.numpy() for k, v in shared.items()},
                  heads={k: torch.cat(v).numpy() for k, v in heads.items()})


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    if "mask" in batch:
        return int(batch["mask"].shape[0])
    return int(next(v for v in batch.values() if torch.is_tensor(v)).shape[0])


def score_cache(run: TrainedRun, cache: Any, split: str = "test", *, unimodal_heads: bool = False,
                all_rows: bool = True) -> tuple[Any, Scored]:
    """Score one split of a features cache with the run's model: (split dataset, outputs per row)."""
    from pipeline.collate import prepare_data

    data = prepare_data(run.config, cache, splits=(split,), encoders=run.input_encoders)
    ds = data.splits[split]
    want = run.features.get("input_dims") or {}
    for role, dim in data.input_dims.items():
        trained = want.get(role)
        if trained is not None and dim and dim != trained:
            raise PredictError(f"feature role {role!r}: the run was trained on {trained}-d inputs, "
                               f"{cache.path} holds {dim}-d")
    if all_rows:
        keep_every_row(ds)
    scored = score_dataset(run.method, run.stage, ds, batch_size=int(run.config["train"]["eval_batch_size"]),
                           unimodal_heads=unimodal_heads)
    return ds, scored


# ------------------------------------------------------------------------------------------ predict
@dataclass
class Prediction:
    """What predict returns: one dict per utterance, the run's label names, and the explain numbers."""

    run_dir: str
    method: str
    task: str
    label_names: list[str]
    utterances: list[dict[str, Any]]
    shared: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # what the media decoders printed (kept off the terminal)

    @property
    def degraded(self) -> list[dict[str, Any]]:
        return [u for u in self.utterances if u.get("degraded")]

    def to_json(self) -> dict[str, Any]:
        from pipeline.report import clean_json

        return clean_json({"run_dir": self.run_dir, "method": self.method, "task": self.task,
                           "label_names": self.label_names, "utterances": self.utterances,
                           "degraded_rows": len(self.degraded), "shared_extras": self.shared,
                           "skipped_inputs": self.skipped, "decoder_log": self.log})


LOG = logging.getLogger("pipeline.predict")


@contextlib.contextmanager
def decoder_noise_to_log(lines: list[str]):
    """Send what native decoders write to file descriptor 2 (``moov atom not found``, ...) to ``lines`` and the
    ``pipeline.predict`` logger instead of the terminal. The reason a file is unusable is said anyway, per row."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    lines.append(line.rstrip())
                    LOG.info("decoder: %s", line.rstrip())


def input_quality(records: Sequence[Utterance], encoders: dict[str, Any],
                  skipped: dict[str, list[dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per utterance: which modalities the run could not read and why (``missing``: modality -> reason; an
    empty transcript is missing text, as in the readers), which inputs its encoders cut and by how much
    (``truncated``: column -> "lost N of M unit"), and ``degraded`` = either."""
    from pipeline.extract import encoder_inputs

    out: dict[str, dict[str, Any]] = {r.utterance_id: {"missing": {}, "truncated": {}} for r in records}
    for col, entries in skipped.items():
        for e in entries:
            out[e["utterance_id"]]["missing"][col.split(".", 1)[0]] = e["reason"]
    for item in encoder_inputs(list(records)):
        q = out[item.utterance_id]
        for col, enc in encoders.items():
            if col.split(".", 1)[0] in q["missing"]:
                continue
            loss = enc.input_loss(item)
            if loss:
                lost, total, unit = loss
                q["truncated"][col] = {"lost": round(lost, 2), "of": round(total, 2), "unit": unit}
    for q in out.values():
        q["degraded"] = bool(q["missing"] or q["truncated"])
    return out


def refuse_unusable(records: Sequence[Utterance], quality: dict[str, dict[str, Any]], modalities: set[str]) -> None:
    """An utterance of which the run can read none of its ``modalities`` gets no label: predict stops, names it."""
    bad = []
    for r in records:
        q = quality[r.utterance_id]
        if modalities <= set(q["missing"]):
            where = r.video_path or r.audio_path or r.utterance_id
            bad.append(f"{where} ({'; '.join(f'{m}: {why}' for m, why in sorted(q['missing'].items()))})")
    if bad:
        raise PredictError(f"no usable modality in {len(bad)} input(s), refusing to guess a label: {' | '.join(bad)}. "
                           f"Give a readable clip (or audio file) and/or a non-empty transcript")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _head_label(value: np.ndarray, labels: Sequence[str]) -> Any:
    if value.ndim == 0 or not labels:
        return round(float(value), 4)
    return labels[int(np.argmax(value))]


def predict_records(run: TrainedRun, records: list[Utterance], report: ReadReport, *, explain: bool = False,
                    work_dir: str | Path | None = None) -> Prediction:
    """Extract the records' features with the run's encoders into a temporary cache and score them."""
    from pipeline.cache import load_cache

    from pipeline.inputs import DecodedInputs

    data = input_corpus(records, report, run.features)
    encoders = rebuild_encoders(run.features)
    # roles whose encoder the run fine-tuned: their decoded inputs, run through the fine-tuned encoder
    decoded = {run.features["features"][role]: DecodedInputs(enc) for role, enc in run.input_encoders.items()}
    decoder_log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="merc-predict-", dir=work_dir) as tmp:
        with decoder_noise_to_log(decoder_log):  # libav's "moov atom not found" & co: the log, not the terminal
            ext = extract_inputs(data, run.features, Path(tmp) / "cache", encoders, list(decoded.values()))
        quality = input_quality(records, {**encoders, **decoded}, ext.get("skipped", {}))
        refuse_unusable(records, quality, {col.split(".", 1)[0] for col in [*encoders, *decoded]})
        cache = load_cache(Path(tmp) / "cache")
        ds, scored = score_cache(run, cache, "test", unimodal_heads=explain)
        split = cache.dataset["test"]
        ids = list(split["utterance_id"])
    by_id = {r.utterance_id: r for r in records}
    labels = run.label_names
    regression = run.task == "regression"
    utterances = []
    for i, row in enumerate(scored.rows):
        rec = by_id[ids[row]]
        entry: dict[str, Any] = {"utterance_id": rec.utterance_id, "dialogue": rec.dialogue_id,
                                 "position": rec.position, "file": rec.video_path or rec.audio_path,
                                 "speaker": rec.speaker, "text": rec.text,
                                 "transcript_source": report.sources.get(rec.utterance_id, "csv"),
                                 "start": rec.start, "end": rec.end, **quality[rec.utterance_id]}
        out = scored.outputs[i]
        if regression:
            score = float(np.asarray(out).reshape(-1)[0])
            entry.update(score=score, label="negative" if score < 0 else "non-negative", probabilities=None)
        else:
            p = _softmax(np.asarray(out, dtype=np.float64))
            entry.update(label=labels[int(np.argmax(p))], probabilities={n: float(v) for n, v in zip(labels, p)})
        if explain:
            entry["extras"] = {k: np.asarray(v[i]).tolist() for k, v in scored.extras.items()}
            entry["heads"] = {k: _head_label(np.asarray(v[i]), labels) for k, v in scored.heads.items()}
        utterances.append(entry)
    order = {r.utterance_id: i for i, r in enumerate(records)}
    utterances.sort(key=lambda u: order[u["utterance_id"]])
    skipped = {c: v for c, v in ext.get("skipped", {}).items() if v}
    shared = {k: v.tolist() for k, v in scored.shared.items()} if explain else {}
    return Prediction(run_dir=str(run.run_dir), method=str(run.config["method"]), task=run.task, label_names=labels,
                      utterances=utterances, shared=shared, skipped=skipped, log=decoder_log)


def predict(run_dir: str | Path, inputs: Sequence[str | Path], *, text: str | None = None,
            speaker: str = DEFAULT_SPEAKER, explain: bool = False, plugins: Sequence[str] = (),
            work_dir: str | Path | None = None, asr: Any = None, segment: bool = False) -> Prediction:
    """Labels, probabilities (and scores) of the inputs under a trained run (see the module docstring)."""
    run = load_run(run_dir, plugins)
    records, report = read_inputs(inputs, text=text, speaker=speaker, asr=asr, segment=segment)
    return predict_records(run, records, report, explain=explain, work_dir=work_dir)


# ------------------------------------------------------------------------------------------- output
def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _summary(value: Any) -> str:
    """An extras entry of one utterance as a short string: the numbers, or their mean when there are many."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return f"{arr[0]:.3f}"
    if arr.size <= 8:
        return "[" + " ".join(f"{v:.2f}" for v in arr) + "]"
    return f"mean {arr.mean():.3f} (of {arr.size})"


def degraded_text(u: dict[str, Any], width: int | None = None) -> str:
    """One utterance's input problems in words ("" when none): missing modalities with the reason, cut inputs."""
    parts = [f"no {m}: {_short(why.rsplit(': ', 1)[-1], width) if width else why}"
             for m, why in sorted(u.get("missing", {}).items())]
    parts += [f"{col} cut: lost {t['lost']:g} of {t['of']:g} {t['unit']}"
              for col, t in sorted(u.get("truncated", {}).items())]
    return "; ".join(parts)


def _span_text(u: dict[str, Any]) -> str:
    """`` [1.20-3.40s]`` for an utterance cut from a longer file (``--segment``, CSV start/end), else ""."""
    if u.get("start") is None and u.get("end") is None:
        return ""
    return f" [{u.get('start') or 0:.2f}-{u['end']:.2f}s]" if u.get("end") is not None else f" [{u['start']:.2f}s-]"


def format_table(pred: Prediction, explain: bool = False) -> str:
    """The printed table: one row per utterance; a degraded row says what was missing or cut."""
    regression = pred.task == "regression"
    head = ["#", "file", "speaker", "text", "label"] + (["score"] if regression else pred.label_names) + ["input"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, u in enumerate(pred.utterances):
        machine = str(u.get("transcript_source", "")).startswith("asr:")
        cells = [str(n), Path(u["file"] or "-").name + _span_text(u), u["speaker"],
                 ("[asr] " if machine else "") + (_short(u["text"], 40) or "(empty)"),
                 f"**{u['label']}**" + (" (degraded)" if u.get("degraded") else "")]
        cells += [f"{u['score']:+.3f}"] if regression else [f"{u['probabilities'][c]:.2f}" for c in pred.label_names]
        cells.append(degraded_text(u, width=40) or "ok")
        lines.append("| " + " | ".join(cells) + " |")
    if explain and pred.utterances:
        keys = list(pred.utterances[0].get("extras", {}))
        heads = list(pred.utterances[0].get("heads", {}))
        if keys or heads:
            lines += ["", "per-modality numbers the model computed (MethodOutput.extras) and unimodal heads:", ""]
            cols = ["#"] + keys + [f"head {h}" for h in heads]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for n, u in enumerate(pred.utterances):
                cells = [str(n)] + [_summary(u["extras"][k]) for k in keys] + [str(u["heads"][h]) for h in heads]
                lines.append("| " + " | ".join(cells) + " |")
        for k, v in pred.shared.items():
            lines.append(f"\n{k} (not per utterance): {_summary(v)}")
    machine = sorted({u["transcript_source"] for u in pred.utterances
                      if str(u.get("transcript_source", "")).startswith("asr:")})
    if machine:
        lines.append(f"\n[asr]: machine-made transcript ({', '.join(machine)}), not checked by a person; "
                     f"its errors become the text modality's evidence")
    if pred.degraded:
        lines.append(f"\n{len(pred.degraded)} of {len(pred.utterances)} row(s) degraded: a missing modality is encoded "
                     f"as missing (zeros, as the cache does), a cut input lost what the run's encoders do not read; "
                     f"their labels rest on less evidence (--strict makes this an error)")
    return "\n".join(lines)


def write_csv(pred: Prediction, path: str | Path) -> None:
    regression = pred.task == "regression"
    cols = ["utterance_id", "dialogue", "position", "file", "speaker", "text", "label"]
    cols += ["score"] if regression else [f"p_{c}" for c in pred.label_names]
    cols += ["degraded", "missing", "truncated", "transcript_source", "start", "end"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for u in pred.utterances:
            row = [u[c] for c in cols[:7]]
            row += [u["score"]] if regression else [u["probabilities"][c] for c in pred.label_names]
            row += [int(bool(u.get("degraded"))),
                    "; ".join(f"{m}: {why}" for m, why in sorted(u.get("missing", {}).items())),
                    "; ".join(f"{c}: lost {t['lost']:g} of {t['of']:g} {t['unit']}"
                              for c, t in sorted(u.get("truncated", {}).items())),
                    u.get("transcript_source", ""), u.get("start"), u.get("end")]
            w.writerow(row)


def plot_explain(pred: Prediction, path: str | Path) -> bool:
    """One panel per extras entry: a heatmap utterance x component (up to 16 components), else the
    per-utterance mean. Returns False when the method exposes no extras."""
    keys = list(pred.utterances[0].get("extras", {})) if pred.utterances else []
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(pred.utterances)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys) + 1, 0.35 * n + 1.8), squeeze=False)
    names = [f"{i}: {u['label']}" for i, u in enumerate(pred.utterances)]
    for ax, key in zip(axes[0], keys):
        arr = np.stack([np.asarray(u["extras"][key], dtype=np.float64).reshape(-1) for u in pred.utterances])
        if arr.shape[1] == 1 or arr.shape[1] > 16:
            values = arr.mean(axis=1)
            ax.barh(range(n), values, color="C0")
            ax.set_xlabel("value" if arr.shape[1] == 1 else f"mean of {arr.shape[1]}")
        else:
            im = ax.imshow(arr, aspect="auto", cmap="viridis")
            for i in range(n):
                for j in range(arr.shape[1]):
                    ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white")
            ax.set_xticks(range(arr.shape[1]))
            ax.set_xlabel("component")
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(key, fontsize=9)
    fig.suptitle(f"{pred.method}: per-modality numbers per utterance", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _quiet_libraries() -> None:
    """No weight-loading / dataset-saving progress bars between the command's own lines."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished single-seed run dir (python -m pipeline train)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="media file, dialogue folder, or dialogue CSV")
    p.add_argument("--text", help="transcript of a single media INPUT (default: its sidecar .txt)")
    p.add_argument("--speaker", default=DEFAULT_SPEAKER, help="speaker name of single media INPUTs")
    p.add_argument("--asr", metavar="MODEL", help="transcribe inputs without a transcript with this Whisper "
                                                  "(local dir or hub id); marked machine-made in every output")
    p.add_argument("--segment", action="store_true",
                   help="with --asr: split each media INPUT into utterances at the ASR's timestamps (a dialogue)")
    p.add_argument("--json", help="write the predictions as JSON here")
    p.add_argument("--csv", help="write the predictions as CSV here")
    p.add_argument("--explain", nargs="?", const="explain.png", metavar="PNG",
                   help="print the per-modality numbers the model computes and draw them (default explain.png)")
    p.add_argument("--plugin", action="append", default=[], help="module or .py file registering extra methods")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_DEGRADED} when any row is degraded (a modality missing or an input cut), "
                        f"after writing the outputs")
    a = p.parse_args(list(argv))
    _quiet_libraries()
    pred = predict(a.run_dir, a.inputs, text=a.text, speaker=a.speaker, explain=bool(a.explain),
                   plugins=a.plugin, asr=a.asr, segment=a.segment)  # a bad run dir / input raises a UserError: one line, exit 2 (pipeline/errors.py)
    print(f"{pred.method} run {pred.run_dir}: {len(pred.utterances)} utterance(s)\n")
    print(format_table(pred, explain=bool(a.explain)))
    if a.json:
        Path(a.json).write_text(json.dumps(pred.to_json(), indent=2))
        print(f"\nwrote {a.json}")
    if a.csv:
        write_csv(pred, a.csv)
        print(f"wrote {a.csv}")
    if a.explain:
        if plot_explain(pred, a.explain):
            print(f"wrote {a.explain}")
        else:
            print(f"({pred.method} exposes no per-modality numbers: no {a.explain})")
    if a.strict and pred.degraded:
        print(f"predict: --strict: {len(pred.degraded)} degraded row(s): "
              + " | ".join(f"{u['utterance_id']}: {degraded_text(u)}" for u in pred.degraded[:5]), file=sys.stderr)
        return EXIT_DEGRADED
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
