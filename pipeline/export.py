"""Share a trained run: ``python -m pipeline export RUN_DIR OUT`` (``make export RUN=... OUT=...``).

OUT becomes a self-contained folder in the Hugging Face model-repo layout, which ``predict`` and
``load_run`` take as they take the run dir::

    README.md          model card: YAML front matter, metrics table, data, feature recipe, selection rule,
                       training, how to use, intended use and limits
    config.json        what the model is (method, final stage, task, id2label / label2id, feature roles, dims)
    config.yaml        the run's resolved config (what ``load_run`` builds the model from)
    features.json      the feature recipe: per column the encoder, its settings and fingerprint (``predict``
                       rebuilds the encoders from it and checks the fingerprints). A column whose encoder
                       the run's profile rebuilds as it was gets no ``kwargs`` (decoded inputs too) (they only held this
                       machine's paths: the venv, ``~/.cache/merc``); ``predict`` rebuilds it from the
                       profile wherever it runs. Encoders given by hand keep their kwargs.
    labels.json        the label set
    metrics.json       dev / test metrics and the final stage; its weights are ``model.safetensors``
    model.safetensors  the final stage's weights

Nothing executable goes in: the files are written from the run's parsed contents (no file is copied
by name), weights are checked to be safetensors before and after, and the finished folder is checked
against the list above (no ``.py``, pickles, ``.bin`` / ``.pt`` checkpoints, links or executable bits)
before it is moved into place. A run whose method comes from ``--plugin`` code is refused: its model
cannot be rebuilt without that code.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Sequence

import yaml

from pipeline.errors import AlreadyExists, UserValueError

WEIGHTS_FILE = "model.safetensors"
EXPORT_FILES = ("README.md", "config.json", "config.yaml", "features.json", "labels.json", "metrics.json",
                WEIGHTS_FILE)
EXPORT_FORMAT = 1
METRICS_KEYS = ("seed", "task", "select_metric", "higher_is_better", "label_names", "dev", "test", "stages",
                "final_stage", "selection")


class ExportError(UserValueError):
    """The run cannot be shared as a self-contained folder, or the folder would hold something else."""


def _plugin_method(method: str) -> bool:
    """Whether ``method`` is registered by code outside this package (a ``--plugin``)."""
    from models.base import METHODS

    return not METHODS.get(method).__module__.startswith("models.")


def _columns_lines(features: dict[str, Any]) -> list[str]:
    lines = []
    for role, col in features["features"].items():
        tuned = col not in features["columns"]  # a role whose encoder the run fine-tuned (TelME's students)
        c = (features.get("inputs") or {}).get(col, {}) if tuned else features["columns"][col]
        weights = (c.get("kwargs") or {}).get("weights") or (c.get("settings") or {}).get("weights")
        if tuned:
            weights = f"fine-tuned in this run (in model.safetensors), from {weights or 'its profile'}"
        flag = "**yes** (offline stand-in, not a pretrained feature)" if c.get("random_weights") else "no"
        lines.append(f"| {role} | `{col}` | {c.get('encoder')} v{c.get('version')} | {c.get('profile')} | "
                     f"{weights or '-'} | {flag} | {c.get('dim')} | `{c.get('fingerprint')}` |")
    return lines


def _front_matter(run: Any, saved: dict[str, Any]) -> str:
    """YAML front matter of the model card (``yaml.safe_dump`` of plain data)."""
    from pipeline.report import TABLE_METRICS

    corpus = str(run.features.get("corpus") or "unknown")
    results = [{"type": name, "name": f"test {name}", "value": round(float(saved["test"][name]), 4)}
               for name in TABLE_METRICS[run.task] if saved["test"].get(name) is not None]
    meta = {
        "library_name": "merc-toolkit",
        "tags": ["multimodal", "emotion-recognition" if run.task == "classification" else "sentiment-analysis",
                 str(run.config["method"]), "merc-toolkit"],
        "datasets": [corpus],
        "metrics": [r["type"] for r in results],
        "model-index": [{"name": f"{run.config['method']}-{corpus}", "results": [{
            "task": {"type": "multimodal-" + ("emotion-recognition" if run.task == "classification"
                                              else "sentiment-analysis")},
            "dataset": {"name": corpus, "type": corpus, "split": "test"}, "metrics": results}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(run: Any, saved: dict[str, Any]) -> str:
    """The README.md of an exported run (see the module docstring)."""
    from pipeline.report import input_differences, metrics_table

    method, corpus = run.config["method"], run.features.get("corpus") or "unknown"
    labels = run.label_names
    random = [col for col, c in run.features["columns"].items() if c.get("random_weights")]
    differ = input_differences(run.config, run.features["columns"])
    stages = [f"- stage `{name}`: best dev epoch {s.get('best_epoch')}/{s.get('epochs')}"
              for name, s in (saved.get("stages") or {}).items()]
    lines = [
        _front_matter(run, saved),
        f"# {method} on {corpus} (merc-toolkit)", "",
        f"A {method.upper()} model for multimodal {'emotion recognition in conversation' if run.task == 'classification' else 'sentiment analysis'} "
        f"trained with merc-toolkit on `{corpus}` (seed {saved.get('seed')}). It reads "
        f"{', '.join(run.features['features'])} features made by the encoders below, never raw media itself: "
        f"`predict` rebuilds those encoders and checks their fingerprints.", "",
        "## Metrics", "", metrics_table([saved]), "",
        f"Selection: {saved.get('selection') or saved.get('select_metric')}.", "",
        "## Data", "",
        f"- Corpus: `{corpus}` (task {run.task}; cache fingerprint `{run.features.get('cache_fingerprint')}`)",
        f"- Label set `{run.features.get('label_set', 'primary')}`: " + (", ".join(labels) if labels else
                                                                     "a real-valued score (regression)"),
        f"- Modalities of the corpus: {', '.join(run.features.get('modalities') or []) or 'unknown'}", "",
        "## Feature recipe", "",
        "| role | column | encoder | profile | weights | random weights | dim | fingerprint |",
        "|---|---|---|---|---|---|---|---|", *_columns_lines(run.features), "",
        "Encoder settings are in `features.json` (`columns.<column>.settings`); the `offline` profile's tiny "
        "encoders are rebuilt from the profile on any machine, other weights must be available where you predict.",
        "", "## Training", "", f"- Method `{method}`, final stage `{saved['final_stage']}`", *stages,
        "- The full resolved config is `config.yaml`.", "",
        "## How to use", "",
        "```bash",
        "python -m pipeline predict THIS_FOLDER clip.mp4 --text \"what was said\"",
        "python -m pipeline predict THIS_FOLDER recording.wav --asr openai/whisper-small --segment",
        "```", "",
        "```python",
        "from pipeline import load_run",
        "df = load_run(\"THIS_FOLDER\").predict([\"clip.mp4\"], text=\"what was said\")",
        "```", "",
        "## Intended use", "",
        "Research on multimodal emotion / sentiment recognition: comparing methods, reproducing papers, "
        "studying which modality carries a cue. Inputs like the training corpus (short utterances of "
        "scripted or acted conversation, English, one speaker per clip).", "",
        "## Limits", "",
        "- Not for decisions about people (hiring, health, policing, grading): emotion labels of acted TV "
        "dialogue do not transfer to real people's states, and the model was not audited for bias.",
        f"- Scores are from one seed on `{corpus}`; other recordings, languages and speakers will score lower.",
        "- Features from random weights (offline stand-ins): " + (", ".join(f"`{c}`" for c in random) if random
                                                                 else "none") + ".",
        *([f"- Inputs differ from the paper: {d}" for d in differ] if differ else []),
        "- Transcripts made by ASR (`--asr`) are machine-made and marked so; their errors become the text "
        "modality's evidence.",
        "- Weights are safetensors; this folder holds no code. A method added by a plugin cannot be exported.",
    ]
    return "\n".join(lines) + "\n"


def hf_config(run: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: what the model is, in the Hugging Face spirit (labels by id, sizes)."""
    from pipeline import __version__

    labels = run.label_names
    return {"library_name": "merc-toolkit", "merc_toolkit_version": __version__, "export_format": EXPORT_FORMAT,
            "method": run.config["method"], "final_stage": saved["final_stage"], "task": run.task,
            "id2label": {str(i): n for i, n in enumerate(labels)}, "label2id": {n: i for i, n in enumerate(labels)},
            "features": run.features["features"], "input_dims": run.features.get("input_dims"),
            "num_classes": run.features.get("num_classes"), "weights": WEIGHTS_FILE}


def portable_features(features: dict[str, Any]) -> dict[str, Any]:
    """``features`` without the saved constructor kwargs of each feature column and decoded-inputs column
    that its profile rebuilds identically here (they name only this machine's paths); others keep theirs."""
    import copy

    from extractors.profiles import encoder_kwargs

    out = copy.deepcopy(features)
    for info in [*(out.get("columns") or {}).values(), *(out.get("inputs") or {}).values()]:
        kwargs, profile = info.get("kwargs"), info.get("profile")
        if kwargs is None or not profile or info.get("finetuned_from"):
            continue
        try:
            rebuilt = encoder_kwargs(str(profile), str(info["encoder"]))
        except Exception:  # noqa: BLE001 - a profile that cannot say: keep the kwargs
            continue
        if info.get("sequence"):
            rebuilt["sequence"] = True
        if json.loads(json.dumps(rebuilt)) == json.loads(json.dumps(kwargs)):
            info["kwargs"] = None
    return out


def verify_export(folder: str | Path) -> None:
    """Raise :class:`ExportError` unless ``folder`` holds exactly the export files, as plain non-executable
    files, with safetensors weights."""
    from pipeline.predict import check_weights

    folder = Path(folder)
    for p in sorted(folder.iterdir()):
        if p.is_symlink() or not p.is_file():
            raise ExportError(f"{p}: an export holds plain files only (no links, no folders); refused")
        if p.name not in EXPORT_FILES:
            raise ExportError(f"{p}: not an export file ({', '.join(EXPORT_FILES)}); an export holds no code, "
                              f"pickles or other checkpoints; refused")
        if p.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            raise ExportError(f"{p}: executable bit set; refused")
    missing = [n for n in EXPORT_FILES if not (folder / n).is_file()]
    if missing:
        raise ExportError(f"{folder}: incomplete export, missing {', '.join(missing)}")
    check_weights(WEIGHTS_FILE, folder)


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the self-contained export of the single-seed run ``run_dir`` to ``out`` (which must not exist
    or be empty); returns ``out``. See the module docstring."""
    from safetensors.torch import save_file

    from pipeline.predict import load_run, load_weights
    from pipeline.report import write_json

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlreadyExists(f"{out} already exists and is not an empty folder; give a new OUT")
    listed = []
    for d in (run_dir, run_dir.parent):
        if (d / "run.json").is_file():
            listed = json.loads((d / "run.json").read_text()).get("plugins") or []
            break
    run = load_run(run_dir)  # a pickle, a missing file, an unregistered (plugin) method: refused here
    if listed or _plugin_method(str(run.config["method"])):
        raise ExportError(f"{run_dir}: method {run.config['method']!r} was trained with plugin code "
                          f"({', '.join(listed) or 'not in models/'}); an export carries no code, so it cannot be shared")
    saved = dict(run.saved)
    metrics = {k: saved[k] for k in METRICS_KEYS if k in saved}
    metrics["final_weights"] = WEIGHTS_FILE
    features = portable_features({k: v for k, v in run.features.items() if k != "cache"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        state = load_weights(saved["final_weights"], run_dir)  # the run's own tensors, byte for byte
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "method": str(run.config["method"])})
        (tmp / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
        write_json(tmp / "features.json", features)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "config.json", hf_config(run, saved))
        write_json(tmp / "labels.json", {"task": run.task, "label_set": run.features.get("label_set", "primary"),
                                         "labels": run.label_names})
        (tmp / "README.md").write_text(model_card(run, saved))
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        verify_export(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished single-seed run dir (runs/<run> or runs/<run>/seed-<n>)")
    p.add_argument("out", help="folder to write (new or empty)")
    a = p.parse_args(list(argv))
    out = export_run(a.run_dir, a.out)
    print(f"exported {a.run_dir} -> {out}: {', '.join(EXPORT_FILES)}")
    print(f"predict with it as with the run: python -m pipeline predict {out} clip.mp4 --text \"...\"")
    return 0
