"""Run reports: what a run dir holds once training ends (main process only).

Per run (or per seed, ``<run>/seed-<n>/``)::

    metrics.json   dev + test metrics of the final model, each stage's best dev epoch, the selection rule
    curves.json    per stage, per epoch: mean loss terms, dev metrics, learning rate
    per_class.md   per-class F1 / precision / recall / support (regression: the metric table)
    confusion.png  test (and dev) confusion matrices: colour = row-normalised, text = counts
    curves.png     loss terms and the dev selection metric per epoch, one column per stage
    config.yaml    the resolved config
    features.json  what ``predict`` needs without the cache: per feature role its column, encoder name,
                   constructor kwargs, settings and fingerprint, dims; the profile, task and label sets
    run_card.md    command, config, cache + fingerprint, git commit, seeds, metrics, selection rule,
                   Acc2 conventions, random-weight features, library versions

Several seeds add an aggregate ``metrics.json`` / ``run_card.md`` (mean +- std) in the run dir.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from pipeline.metrics import higher_is_better, scalar_metrics

TABLE_METRICS = {
    "classification": ("accuracy", "weighted_f1", "macro_f1"),
    "regression": ("mae", "corr", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"),
}
ACC2_NOTE = ("Acc2/F1 are reported in both conventions: `has0` = negative (< 0) vs non-negative (>= 0) on all "
             "items; `non0` = negative (< 0) vs positive (> 0) with zero-labelled items removed. "
             "F1 is the weighted F1 of the two classes.")
LIBRARIES = ("torch", "accelerate", "datasets", "numpy", "scikit-learn", "transformers", "safetensors")


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: nan / inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Atomically (temp name + rename): a kill leaves the old file or the new one, never half of one."""
    import os

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean_json(obj), indent=2))
    os.replace(tmp, path)


def selection_rule(metric: str) -> str:
    better = "higher" if higher_is_better(metric) else "lower"
    return (f"model selected on dev {metric} ({better} is better), test never used for selection; "
            f"each stage restores its best-dev weights and the next stage starts from them")


def collect_run_info(config: dict[str, Any]) -> dict[str, Any]:
    """Git commit (+ dirty flag) of the code and library versions."""
    from importlib.metadata import PackageNotFoundError, version

    repo = Path(__file__).resolve().parents[1]
    git: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                       timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        git["dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    return {"git": git, "versions": versions}


def summarize(results: Sequence[dict[str, Any]],
              splits: Sequence[str] = ("dev", "test")) -> dict[str, dict[str, dict[str, Any]]]:
    """Per split and scalar metric: mean, std (sample std, ddof=1; 0 for one seed) and the values."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        names = scalar_metrics(results[0][split]).keys()
        out[split] = {}
        for name in names:
            values = [float(r[split][name]) if r[split].get(name) is not None else float("nan") for r in results]
            arr = np.asarray(values)
            out[split][name] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                                "values": values}
    return out


def metrics_table(results: Sequence[dict[str, Any]], splits: Sequence[str] = ("dev", "test")) -> str:
    """A compact markdown table of the headline metrics, mean +- std over the given results."""
    names = TABLE_METRICS[results[0]["task"]]
    summary = summarize(results, splits)
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in splits:
        cells = []
        for name in names:
            s = summary[split].get(name, {"mean": float("nan"), "std": 0.0})
            cells.append(f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if len(results) > 1 else ""))
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def print_metrics_table(results: Sequence[dict[str, Any]], title: str = "") -> None:
    seeds = [r["seed"] for r in results]
    print(f"\n{title}  (seeds {seeds}; selected on dev {results[0]['select_metric']})")
    print(metrics_table(results))


def per_class_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Per-class results (seed {result['seed']}, final stage {result['final_stage']})", ""]
    for split in ("dev", "test"):
        m = result[split]
        lines.append(f"## {split}")
        lines.append("")
        if "per_class" not in m:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in scalar_metrics(m).items()]
        else:
            lines += ["| class | F1 | precision | recall | support |", "|---|---|---|---|---|"]
            for name, c in m["per_class"].items():
                lines.append(f"| {name} | {c['f1']:.4f} | {c['precision']:.4f} | {c['recall']:.4f} | {c['support']} |")
            lines.append(f"| **weighted** | {m['weighted_f1']:.4f} | | | {m['n']} |")
            lines.append(f"| **macro** | {m['macro_f1']:.4f} | | | |")
            lines.append(f"| **accuracy** | {m['accuracy']:.4f} | | | |")
        lines.append("")
    return "\n".join(lines)


def plot_confusion(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["label_names"]
    side = 1.5 + 0.65 * len(names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side + 0.5))
    for ax, split in zip(axes, ("test", "dev")):
        counts = np.asarray(result[split]["confusion"], dtype=float)
        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{int(counts[i, j])}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{split}: count / row share", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s, c in result["curves"].items() if c]
    metric = result["select_metric"]
    fig, axes = plt.subplots(2, max(1, len(stages)), figsize=(4 * max(1, len(stages)), 6), squeeze=False)
    for col, stage in enumerate(stages):
        curve = result["curves"][stage]
        epochs = [r["epoch"] for r in curve]
        for term in curve[0]["loss"]:
            axes[0, col].plot(epochs, [r["loss"][term] for r in curve], marker="o", label=term)
        axes[0, col].set_title(f"{stage}: train loss")
        axes[0, col].legend(fontsize=7)
        axes[1, col].plot(epochs, [r["dev"].get(metric, float("nan")) for r in curve], marker="o", color="C3")
        best = result["stages"].get(stage, {}).get("best_epoch")
        if best:
            axes[1, col].axvline(best, ls="--", color="grey", lw=1)
        axes[1, col].set_title(f"{stage}: dev {metric}")
        axes[1, col].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _feature_lines(config: dict[str, Any], cache: Any) -> list[str]:
    from pipeline.collate import used_features

    lines = []
    columns = cache.meta.get("columns", {})
    for role, col in used_features(config).items():
        c = columns.get(col, {})
        flag = " **(random weights: not a pretrained feature)**" if c.get("random_weights") else ""
        face = (c.get("settings") or {}).get("face")
        face = f", face policy {face}" if face else (", face policy frame" if c.get("encoder") in
                                                       ("densenet", "timesformer") else "")
        lines.append(f"- {role}: `{col}` (encoder {c.get('encoder', '?')}, dim {c.get('dim', '?')}{face}, "
                     f"fingerprint {c.get('fingerprint', '?')}){flag}")
    return lines


def _truncation_text(config: dict[str, Any], cache: Any) -> str:
    """What the encoders of the run's columns cut (tokens past max_length, seconds past max_seconds), from the
    extract report of the cache."""
    from pipeline.collate import used_features
    from pipeline.extract import truncation_line

    try:
        columns = json.loads((Path(cache.path) / "report.json").read_text()).get("columns", {})
    except (OSError, ValueError):
        return "unknown (the cache has no report.json)"
    out = []
    for col in used_features(config).values():
        if col not in columns or "truncated" not in columns[col]:
            return "unknown (re-run `make features` to measure them)"
        t = columns[col]["truncated"]
        if t:
            out.append(truncation_line(col, t))
    return "; ".join(out) if out else "none"
def input_differences(config: dict[str, Any], columns: dict[str, Any]) -> list[str]:
    """Why a run's inputs are not the paper's, one line per feature role: the config's
    ``paper.inputs_differ: {role: why}`` (what we feed instead, set in configs/<method>/base.yaml) for the
    roles the run uses, plus every column computed with random stand-in weights or a face policy other
    than the paper's. Empty = the same inputs as the paper (as far as the config knows)."""
    declared = (config.get("paper") or {}).get("inputs_differ") or {}
    out = []
    for role, col in config.get("features", {}).items():
        c = columns.get(col, {})
        why = [str(declared[role])] if declared.get(role) else []
        if c.get("random_weights"):
            why.append("random-weight stand-in encoder (offline profile)")
        if why:
            out.append(f"{role} (`{col}`): " + "; ".join(why))
    return out


def _sequence_lines(coverage: dict[str, dict[str, Any]]) -> list[str]:
    """Run-card lines: per split and role the step policy and how much of each utterance reached the model."""
    if not coverage:
        return []
    lines = ["", "## Sequences (steps per utterance)", ""]
    for split, roles in coverage.items():
        for role, c in roles.items():
            share = c["frames_used"] / c["frames"] if c["frames"] else 1.0
            cut = (f"; **truncated: {c['truncated_rows']} rows lost frames ({100 * (1 - share):.1f}% of all frames "
                   f"never reach the model)**" if c["truncated_rows"] else "")
            lines.append(f"- {split} {role}: policy `{c['policy']}`, at most {c['steps']} steps, "
                         f"{100 * share:.1f}% of {c['frames']} frames used{cut}")
    return lines


def _feature_card_lines(config: dict[str, Any], cache: Any, first: dict[str, Any]) -> list[str]:
    """Run-card sections of a run on cached features: columns, random weights, truncation, paper inputs."""
    from pipeline.collate import used_features

    lines = ["", "## Features", ""] + _feature_lines(config, cache)
    random = [col for col in used_features(config).values()
              if cache.meta.get("columns", {}).get(col, {}).get("random_weights")]
    lines.append(f"\nFeatures from random weights: {', '.join(random) if random else 'none'}.")
    lines.append(f"\nTruncated inputs (cache report.json): {_truncation_text(config, cache)}")
    differ = input_differences(config, cache.meta.get("columns", {}))
    lines += ["", "## Inputs vs the paper", ""]
    lines += ([f"- **differs**: {d}" for d in differ] if differ else ["- the same features as the paper's"])
    return lines + _sequence_lines(first.get("sequence_coverage") or {})


def _finetune_lines(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """Run-card section of a fine-tuning run: which encoder, from which weights, with which settings."""
    block = config.get("encoder") or {}
    return ["", "## Encoder (fine-tuned end to end)", "",
            f"- `{block.get('name')}` from profile `{info.get('profile', '?')}`, settings over the profile: "
            f"{block.get('settings') or 'none'}; head: {config.get('model')}",
            f"- Samples per split capped at {block['max_samples']} (quick look, not a full run)"
            if block.get("max_samples") else "- every labelled utterance with text of each split"]


def run_card(*, results: Sequence[dict[str, Any]], config: dict[str, Any], cache: Any, info: dict[str, Any]) -> str:
    first = results[0]
    git = info.get("git", {})
    dirty = {True: " (dirty: uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    lines = [
        f"# Run card: {config['method']} on {info.get('corpus') or cache.meta.get('corpus', '?')}", "",
        f"- Command: `{info.get('command', '(programmatic call)')}`",
        f"- Config files: {', '.join(info.get('config_files', [])) or '(given as a dict)'}; "
        f"overrides: {info.get('overrides') or 'none'}",
        (f"- Data: corpus `{cache.meta.get('corpus')}` read from `{cache.meta.get('root')}` (records fingerprint "
         f"{cache.meta.get('records_fingerprint')}, task {cache.task}); encoder `{(config.get('encoder') or {}).get('name')}` "
         f"fine-tuned end to end, saved in `encoder/` + `head.safetensors` (see finetune.json)"
         if cache.meta.get("source") == "corpus" else
         f"- Cache: `{cache.path}` (fingerprint {cache.fingerprint()}, task {cache.task})"),
        f"- Git commit: {git.get('commit') or 'unknown'}{dirty}",
        f"- Seeds: {[r['seed'] for r in results]}; processes: {first.get('num_processes', 1)} "
        f"(a stage's batch_size is per process)",
        f"- Selection: {selection_rule(first['select_metric'])}.",
    ]
    if info.get("init"):
        lines.append("- Parameter groups started from fine-tuning runs: "
                     + ", ".join(f"{g} <- `{r}/head.safetensors`" for g, r in info["init"].items()))
    if first["task"] == "regression":
        lines.append(f"- {ACC2_NOTE}")
    if cache.meta.get("source") == "corpus":  # a fine-tuning run: no cached features, the encoder is the model
        lines += _finetune_lines(config, info)
    else:
        lines += _feature_card_lines(config, cache, first)
    std = "mean ± sample std over seeds" if len(results) > 1 else "one seed"
    lines += ["", f"## Metrics ({std})", "", metrics_table(results), "", "## Per-stage best dev", ""]
    for r in results:
        for stage, s in r["stages"].items():
            value = s.get("best_dev", {}).get(first["select_metric"], float("nan"))
            lines.append(f"- seed {r['seed']}, stage {stage}: best epoch {s['best_epoch']}/{s['epochs']}, "
                         f"dev {first['select_metric']} {value:.4f}")
    versions = info.get("versions", {})
    lines += ["", "## Library versions", ""] + [f"- {k}: {v}" for k, v in versions.items()]
    lines += ["", "## Resolved config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


FEATURES_FILE = "features.json"
FEATURES_FORMAT = 1
COLUMN_KEYS = ("encoder", "version", "fingerprint", "dim", "settings", "kwargs", "profile", "dtype", "sequence",
               "uses_history", "random_weights")


def run_features(config: dict[str, Any], cache: Any, *, input_dims: dict[str, int] | None = None,
                 num_classes: int | None = None) -> dict[str, Any]:
    """The ``features.json`` of a run dir: the cache facts ``predict`` needs to rebuild the same encoders
    (name + constructor kwargs, checked against the fingerprint) and the same model, copied from the cache
    meta so the run dir stands alone."""
    meta = cache.meta
    columns = meta.get("columns", {})
    from pipeline.collate import used_features

    import models  # noqa: F401
    from models.base import METHODS
    from pipeline.inputs import inputs_meta

    # Roles whose encoder the run trained (TelME's students in finetune mode) read decoded inputs: their
    # encoders are rebuilt from "inputs" (the preprocessing), their weights come from the run's safetensors.
    roles = METHODS.get(config["method"]).input_roles(dict(config.get("model") or {})) \
        if config.get("method") in METHODS else set()
    decoded = {col for role, col in used_features(config).items() if role in roles}
    used, inputs = {}, {}
    for col in used_features(config).values():
        if col in decoded:
            c = inputs_meta(cache).get(col, {})
            inputs[col] = {k: c.get(k) for k in COLUMN_KEYS}
            continue
        c = columns.get(col, {})
        used[col] = {k: c.get(k) for k in COLUMN_KEYS}
    profiles = sorted({str(c["profile"]) for c in used.values() if c.get("profile")})
    return {"format": FEATURES_FORMAT, "corpus": meta.get("corpus"), "task": cache.task,
            "label_set": config.get("label_set", "primary"), "label_sets": meta.get("label_sets", {}),
            "modalities": meta.get("modalities", []), "profile": profiles[0] if len(profiles) == 1 else profiles,
            "features": used_features(config), "columns": used, "inputs": inputs,
            "input_dims": dict(input_dims) if input_dims is not None else None, "num_classes": num_classes,
            "cache": str(cache.path), "cache_fingerprint": cache.fingerprint()}


def write_run_reports(run_dir: Path, *, result: dict[str, Any], config: dict[str, Any], cache: Any,
                      info: dict[str, Any]) -> None:
    """All per-run files (see the module docstring)."""
    from pipeline.config import save_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {k: result[k] for k in ("seed", "task", "select_metric", "higher_is_better", "label_names", "dev",
                                      "test", "stages", "final_stage", "final_weights", "num_processes", "cache")}
    metrics["selection"] = selection_rule(result["select_metric"])
    write_json(run_dir / "curves.json", result["curves"])
    (run_dir / "per_class.md").write_text(per_class_markdown(result))
    if "confusion" in result["test"]:
        plot_confusion(result, run_dir / "confusion.png")
    plot_curves(result, run_dir / "curves.png")
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / FEATURES_FILE, run_features(config, cache, input_dims=result.get("input_dims"),
                                                     num_classes=result.get("num_classes")))
    (run_dir / "run_card.md").write_text(run_card(results=[result], config=config, cache=cache, info=info))
    write_json(run_dir / "metrics.json", metrics)  # last: `--resume` takes a seed with metrics.json as done


def write_aggregate(run_dir: Path, *, results: Sequence[dict[str, Any]], config: dict[str, Any], cache: Any,
                    info: dict[str, Any]) -> None:
    """Aggregate ``metrics.json`` (mean +- std over seeds) and ``run_card.md`` of a multi-seed run."""
    run_dir = Path(run_dir)
    summary = summarize(results)
    write_json(run_dir / "metrics.json", {
        "seeds": [r["seed"] for r in results], "task": results[0]["task"],
        "select_metric": results[0]["select_metric"], "selection": selection_rule(results[0]["select_metric"]),
        "dev": summary["dev"], "test": summary["test"], "runs": [f"seed-{r['seed']}" for r in results]})
    (run_dir / "run_card.md").write_text(run_card(results=results, config=config, cache=cache, info=info))
