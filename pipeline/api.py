"""The Python API: one import, one call per stage (the command line is a thin layer over these).

>>> from pipeline import extract_features, train_method, load_run
>>> cache = extract_features("demo-meld", root="data/demo/meld")
>>> run = train_method("telme", "demo-meld", epochs=1)
>>> run.predict(["clip.mp4"], text="I can't believe it!")      # a pandas DataFrame, one row per utterance

* :func:`read_corpus` - a corpus (catalog name or reader) as ``CorpusData`` (records + report)
* :func:`extract_features` - its features cache (incremental, resumable) as a ``Cache``
* :func:`train_method` - train a method on a cache, one or several seeds -> :class:`Run`
* :func:`load_run` - a run dir or an exported folder -> :class:`Run`
* :meth:`Run.predict` - clips, a dialogue folder / CSV, or a dialogue given as rows -> ``DataFrame``
* :meth:`Run.export` / :func:`export_run` - a self-contained, shareable model folder
* :func:`compare_methods` - every method that fits a cache, several seeds -> ``DataFrame``
* :func:`transcribe` - timestamped ASR chunks of a recording (Whisper)

The names are not ``train`` / ``compare`` / ``predict`` because those are the stage modules
(``pipeline.train`` ...); a package attribute of the same name would hide them.
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.errors import MissingFile, UserValueError

ROW_COLUMNS = ("file", "text", "speaker", "start", "end")  # a dialogue given as rows (Run.predict)


# ------------------------------------------------------------------------------------------- corpora
def read_corpus(corpus: str, root: str | Path | None = None, *, asr: str | None = None, **options: Any):
    """Read ``corpus`` (a name in ``configs/corpora.yaml``, e.g. ``"meld"`` / ``"demo-meld"``) from ``root``
    (default: the catalog's). ``asr`` fills empty transcripts with a Whisper model, marked machine-made;
    ``options`` go to the reader over the catalog's. Returns ``CorpusData`` (``.records``, ``.report``)."""
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus as read_with

    entry = corpus_entry(corpus, root)
    data = read_with(entry.reader, entry.root, **{**entry.options, **options, **({"asr": asr} if asr else {})})
    data.name = corpus
    return data


@dataclass
class Extraction:
    """What :func:`run_extraction` did: the corpus read, the cache folder and the extract report."""

    data: Any  # CorpusData
    cache_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


def run_extraction(corpus: str, root: str | Path | None = None, *, profile: str = "offline",
                   encoders: Sequence[str] | None = None, cache_root: str | Path = "cache",
                   sequence: Sequence[str] | None = None, dtype: str = "float32", batch_size: int = 16,
                   num_workers: int = 2, shard_size: int = 256, precision: str = "no",
                   encoder_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                   finetuned: Sequence[str | Path] = (), tag: str | None = None, inputs: Sequence[str] = (),
                   threads: int | str = "auto",
                   asr: str | None = None,
                   strict: bool = False, wait: bool = True, progress: bool = True) -> Extraction:
    """Read ``corpus`` and fill its cache ``<cache_root>/<corpus>`` (``python -m pipeline features``):
    the corpus' catalog encoders (less those of absent modalities) unless ``encoders`` names them, plus
    one column per fine-tuned run in ``finetuned``, and the decoded inputs of the encoders in ``inputs``
    (for fine-tuning them, e.g. TelME's students). ``strict`` stops (``CorpusError``) when the reader
    skipped anything. Raises ``CacheLocked`` when ``wait`` is False and another writer holds the cache."""
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import CorpusError
    from pipeline.extract import ExtractSettings, _present_encoders, column_name, extract, finetuned_encoder

    entry = corpus_entry(corpus, root)
    try:
        data = read_corpus(corpus, root, asr=asr)
    except CorpusError as e:  # one line naming the file, and where the corpus should come from
        hint = " (write the demo corpora with `python -m pipeline demo-data --out DIR`, then pass --root DIR/<layout>)" \
            if corpus.startswith("demo-") else " (pass --root DIR, or set the root in configs/corpora.yaml)"
        raise CorpusError(f"{e}{hint}") from None
    if strict and data.report.of("skip"):
        print(data.report.summary())
        data.report.strict_check()
    seq = tuple(entry.sequence if sequence is None else sequence)
    tuned = [finetuned_encoder(run, tag, seq) for run in finetuned]
    if len({column_name(e) for e in tuned}) < len(tuned):
        raise UserValueError("two fine-tuned runs would write the same column; give them separately with "
                             "different tags (--tag)")
    names = _present_encoders(entry.encoders, data.modalities) if encoders is None else list(encoders)
    settings = ExtractSettings(encoders=list(names) + tuned, profile=profile, dtype=dtype, batch_size=batch_size,
                               num_workers=num_workers, shard_size=shard_size, sequence=seq, precision=precision,
                               encoder_overrides={k: dict(v) for k, v in (encoder_overrides or {}).items()},
                               progress=progress, inputs=list(inputs), threads=threads)
    cache_dir = Path(cache_root) / corpus
    return Extraction(data=data, cache_dir=cache_dir, report=extract(data, cache_dir, settings, wait=wait))


def extract_features(corpus: str, root: str | Path | None = None, **kwargs: Any):
    """The features cache of ``corpus`` (extracting what it lacks; see :func:`run_extraction` for the
    keyword arguments: ``profile``, ``encoders``, ``cache_root``, ``sequence``, ``asr``, ...). Returns a
    ``pipeline.cache.Cache`` (``.path``, ``.dataset``: a ``datasets.DatasetDict``, ``.meta``)."""
    from pipeline.cache import load_cache

    return load_cache(run_extraction(corpus, root, **kwargs).cache_dir)


# ------------------------------------------------------------------------------------------- training
def train_argv(method: str | None, corpus: str | None = None, *, cache: str | Path | None = None,
               cache_root: str | Path = "cache", config: str | Path | None = None, overrides: Sequence[str] = (),
               seeds: Sequence[int] | None = None, out: str | Path = "runs", name: str | None = None,
               plugins: Sequence[str] = ()) -> list[str]:
    """The ``python -m pipeline train`` arguments that do what :func:`train_method` is asked to do."""
    argv = [*(["--method", method] if method else []), *(["--corpus", corpus] if corpus else []), *(["--cache", str(cache)] if cache else []),
            "--cache-root", str(cache_root), *(["--config", str(config)] if config else [])]
    argv += [a for o in overrides for a in ("--set", o)]
    argv += (["--seeds", *map(str, seeds)] if seeds else []) + ["--out", str(out)] + (["--name", name] if name else [])
    return argv + [a for p in plugins for a in ("--plugin", p)]


def epoch_overrides(method: str, corpus: str | None, epochs: int, config: str | Path | None = None) -> list[str]:
    """``stages.<stage>.epochs=N`` for every stage of the method's config that trains (a quick run)."""
    from pipeline.compare import stage_epochs
    from pipeline.config import load_config

    return stage_epochs(load_config(method, corpus, config)["stages"], epochs)


def train_method(method: str | None, corpus: str | None = None, *, cache: str | Path | None = None,
                 cache_root: str | Path = "cache", config: str | Path | None = None, overrides: Sequence[str] = (),
                 seeds: Sequence[int] | None = None, epochs: int | None = None, out: str | Path = "runs",
                 name: str | None = None, resume: str | Path | None = None, plugins: Sequence[str] = (),
                 argv: Sequence[str] | None = None) -> "Run":
    """Train ``method`` on the cache of ``corpus`` (``<cache_root>/<corpus>``) or on ``cache`` (a path)
    with ``configs/<method>/{base,<corpus>}.yaml`` + ``config`` + ``overrides`` (``"key.path=value"``),
    one sub-run per seed; ``epochs`` sets every stage's epochs (a quick look). ``resume`` continues an
    interrupted run dir instead. The run dir is ``<out>/<name>`` (default ``<method>-<corpus>-<time>``).
    ``method`` may be None when ``config`` names it. This is ``python -m pipeline train``: the command
    calls it, passing its ``argv`` to be recorded in ``run.json`` (else the equivalent command line is)."""
    from pipeline.train import _new_run, launch_run, run_one

    if epochs is not None and not resume:
        from pipeline.config import corpus_config_name, read_yaml

        method = method or (read_yaml(config).get("method") if config else None)
        corpus_yaml = corpus_config_name(str(method), [corpus, Path(cache).name if cache else None])
        overrides = [*epoch_overrides(str(method), corpus_yaml, epochs, config), *overrides]
    if argv is None:
        argv = (["--resume", str(resume)] if resume else
                train_argv(method, corpus, cache=cache, cache_root=cache_root, config=config, overrides=overrides,
                           seeds=seeds, out=out, name=name, plugins=plugins))
    args = argparse.Namespace(method=method, corpus=corpus, cache=None if cache is None else str(cache),
                              cache_root=str(cache_root), config=None if config is None else str(config),
                              overrides=list(overrides), seeds=None if seeds is None else [int(s) for s in seeds],
                              out=str(out), name=name, resume=None if resume is None else str(resume),
                              plugin=list(plugins))
    run_dir, _ = launch_run(args, argv, new_run=_new_run, run_one=run_one)
    return Run(run_dir)


def finetune_argv(encoder: str, corpus: str | None = None, *, root: str | Path | None = None,
                  profile: str = "offline", config: str | Path | None = None, overrides: Sequence[str] = (),
                  seeds: Sequence[int] | None = None, out: str | Path = "runs", name: str | None = None) -> list[str]:
    """The ``python -m pipeline finetune`` arguments that do what :func:`finetune_encoder` is asked to do."""
    argv = ["--encoder", encoder, *(["--corpus", corpus] if corpus else []), *(["--root", str(root)] if root else []),
            "--profile", profile, *(["--config", str(config)] if config else [])]
    argv += [a for o in overrides for a in ("--set", o)]
    return argv + (["--seeds", *map(str, seeds)] if seeds else []) + ["--out", str(out)] + (["--name", name] if name else [])


def finetune_encoder(encoder: str = "roberta-context", corpus: str | None = None, *, root: str | Path | None = None,
                     profile: str = "offline", config: str | Path | None = None, overrides: Sequence[str] = (),
                     seeds: Sequence[int] | None = None, out: str | Path = "runs", name: str | None = None,
                     resume: str | Path | None = None, argv: Sequence[str] | None = None) -> "Run":
    """Fine-tune the text encoder ``encoder`` of the registry (starting from ``profile``'s weights) + a head
    on ``corpus``'s train split, selecting on dev, with ``configs/finetune/<encoder>/{base,<corpus>}.yaml`` +
    ``config`` + ``overrides``; one sub-run per seed. ``resume`` continues an interrupted run dir instead.
    Returns the run (``run.path / "encoder"`` is the fine-tuned Hugging Face model dir); cache its features
    with ``extract_features(corpus, finetuned=[run.path])``. This is ``python -m pipeline finetune``."""
    from pipeline.finetune import finetune_launchers
    from pipeline.train import launch_run

    if argv is None:
        argv = (["--resume", str(resume)] if resume else
                finetune_argv(encoder, corpus, root=root, profile=profile, config=config, overrides=overrides,
                              seeds=seeds, out=out, name=name))
    args = argparse.Namespace(encoder=encoder, corpus=corpus, root=None if root is None else str(root), profile=profile,
                              config=None if config is None else str(config), overrides=list(overrides),
                              seeds=None if seeds is None else [int(s) for s in seeds], out=str(out), name=name,
                              resume=None if resume is None else str(resume))
    new_run, run_one = finetune_launchers()
    run_dir, _ = launch_run(args, argv, new_run=new_run, run_one=run_one, command="finetune")
    return Run(run_dir)


# ---------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A run dir (``runs/<run>``, ``runs/<run>/seed-<n>``) or an exported folder. Single-seed runs predict;
    a multi-seed run holds one :class:`Run` per seed in :attr:`seeds`."""

    path: Path
    plugins: tuple[str, ...] = ()
    _loaded: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "metrics.json").is_file():
            raise MissingFile(f"{self.path / 'metrics.json'} not found: {self.path} is not a finished run dir "
                              f"(train one with train_method / python -m pipeline train)")

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: dev / test metrics (a multi-seed run: mean, std and values per metric)."""
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def seeds(self) -> list["Run"]:
        """One run per seed (``[self]`` for a single-seed run)."""
        runs = self.metrics.get("runs")
        return [Run(self.path / r, self.plugins) for r in runs] if runs else [self]

    @property
    def model(self) -> Any:
        """The loaded model (``pipeline.predict.TrainedRun``: config, features, method, final stage)."""
        if self._loaded is None:
            from pipeline.predict import load_run as load_trained

            self._loaded = load_trained(self.path, self.plugins)
        return self._loaded

    @property
    def method(self) -> str:
        return str(self.model.config["method"])

    @property
    def label_names(self) -> list[str]:
        return self.model.label_names

    def test_metrics(self) -> dict[str, Any]:
        """The test split's scalar metrics of a single-seed run."""
        from pipeline.metrics import scalar_metrics

        return scalar_metrics(self.metrics["test"])

    def prediction(self, inputs: Any, *, text: str | None = None, speaker: str | None = None,
                   asr: str | None = None, segment: bool = False, explain: bool = False,
                   work_dir: str | Path | None = None):
        """Predict ``inputs`` (see :meth:`predict`) and return the full ``pipeline.predict.Prediction``."""
        from pipeline.predict import DEFAULT_SPEAKER, predict_records, read_inputs

        with tempfile.TemporaryDirectory(prefix="merc-rows-") as tmp:
            paths = _input_paths(inputs, Path(tmp))
            records, report = read_inputs(paths, text=text, speaker=speaker or DEFAULT_SPEAKER, asr=asr,
                                          segment=segment)
            return predict_records(self.model, records, report, explain=explain, work_dir=work_dir)

    def predict(self, inputs: Any, **kwargs: Any):
        """Labels and class probabilities (or scores) as a ``pandas.DataFrame``, one row per utterance.

        ``inputs``: a media file or a list of them (each one utterance, its transcript from ``text`` or a
        sidecar ``.txt``), a dialogue folder / CSV, or one dialogue given as rows (a DataFrame or dicts with
        ``file``, ``text`` and optionally ``speaker``, ``start``, ``end``). ``asr="openai/whisper-small"``
        transcribes what has no transcript (``transcript_source`` says ``asr:<model>``); ``segment=True``
        splits each media file into utterances at the ASR's timestamps. ``explain`` adds ``extras`` /
        ``heads`` columns."""
        return prediction_frame(self.prediction(inputs, **kwargs))

    def evaluate(self, split: str = "test", cache: str | Path | None = None) -> dict[str, Any]:
        """Re-score the run on ``split`` of its cache (or of ``cache``): ``python -m pipeline evaluate``."""
        from pipeline.evaluate import evaluate_run

        return evaluate_run(self.path, split, cache)

    def export(self, out: str | Path) -> "Run":
        """Write this run as a self-contained model folder (:func:`export_run`); returns it as a Run."""
        return Run(export_run(self.path, out))


def load_run(path: str | Path, plugins: Sequence[str] = ()) -> Run:
    """A trained run dir, one of its ``seed-<n>`` dirs, or an exported folder (``python -m pipeline export``).
    ``plugins`` are imported (they are code: only pass your own)."""
    return Run(Path(path), tuple(plugins))


def _input_paths(inputs: Any, tmp: Path) -> list[str]:
    """Predict's INPUT list: paths as they are; a dialogue given as rows becomes one CSV under ``tmp``."""
    if isinstance(inputs, (str, Path)):
        return [str(inputs)]
    rows = inputs.to_dict("records") if hasattr(inputs, "to_dict") else list(inputs)
    if rows and all(isinstance(r, Mapping) for r in rows):
        unknown = sorted({k for r in rows for k in r} - set(ROW_COLUMNS))
        if unknown or any("file" not in r for r in rows):
            raise UserValueError(f"a dialogue given as rows has the columns {', '.join(ROW_COLUMNS)} (file needed); "
                                 f"got {', '.join(unknown) or 'a row without file'}")
        path = tmp / "dialogue.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(ROW_COLUMNS))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else str(Path(r[k]).resolve()) if k == "file" else r[k])
                            for k in ROW_COLUMNS})
        return [str(path)]
    return [str(p) for p in rows]


def prediction_frame(pred: Any):
    """A ``Prediction`` as a DataFrame: the utterance fields, ``label``, ``p_<class>`` (or ``score``),
    ``transcript_source``, ``degraded`` and, with ``explain``, ``extras`` / ``heads``."""
    import pandas as pd

    rows = []
    for u in pred.utterances:
        row = {k: v for k, v in u.items() if k != "probabilities"}
        row.update({f"p_{c}": p for c, p in (u.get("probabilities") or {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(method=pred.method, run_dir=pred.run_dir, task=pred.task, label_names=pred.label_names)
    return frame


def predict_inputs(run: str | Path | Run, inputs: Any, **kwargs: Any):
    """``load_run(run).predict(inputs, **kwargs)``."""
    return (run if isinstance(run, Run) else load_run(run)).predict(inputs, **kwargs)


def export_run(run: str | Path | Run, out: str | Path) -> Path:
    """Write ``run`` as a self-contained model folder (Hugging Face layout, model card, safetensors, no code;
    ``python -m pipeline export``). Returns ``out``."""
    from pipeline.export import export_run as export

    return export(run.path if isinstance(run, Run) else run, out)


# -------------------------------------------------------------------------------------------- compare
def compare_methods(corpus: str | None = "demo-meld", methods: Sequence[str] | None = None,
                    seeds: Sequence[int] = (0, 1, 2), *, cache: str | Path | None = None,
                    cache_root: str | Path = "cache", out: str | Path | None = None, epochs: int | None = None,
                    set_all: Sequence[str] = ()):
    """Train every method (or ``methods``) that fits the cache, each seed; one row per method as a
    DataFrame (``method``, ``status``, ``<metric>_mean`` / ``_std``, seconds, memory, parameters). The
    table and plot are written to ``out`` (default ``runs/compare-<corpus>-<time>``)."""
    import time

    import pandas as pd

    from pipeline.compare import compare

    cache_path = Path(cache) if cache else Path(cache_root) / str(corpus)
    if not (cache_path / "meta.json").exists():
        raise MissingFile(f"{cache_path} is not a features cache; build it with extract_features / "
                          f"`make features CORPUS={corpus or '<corpus>'}`")
    name = corpus or cache_path.name
    out = Path(out) if out else Path("runs") / f"compare-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = compare(cache_path=cache_path, out=out, seeds=list(seeds), corpus=corpus if not cache else None,
                   cache_root=Path(cache_root), methods=methods, set_all=set_all, epochs=epochs)
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("metrics", "paper", "runs")}
        for metric, s in (r.get("metrics") or {}).items():
            row[f"{metric}_mean"], row[f"{metric}_std"] = s.get("mean"), s.get("std")
        flat.append(row)
    frame = pd.DataFrame(flat)
    frame.attrs["out"] = str(out)
    return frame


# ------------------------------------------------------------------------------------------------ asr
def transcribe(path: str | Path, model: str | Path, *, segment: bool = True) -> list[Any]:
    """Timestamped transcript of ``path``'s audio by a Whisper model (local dir or hub id): the utterances
    ``predict --segment`` would make (``segment=True``), or the ASR's raw chunks. Machine-made."""
    from pipeline.asr import Transcriber, split_recording

    if segment:
        return split_recording(path, model)
    return Transcriber(model).chunks(path)[0]

