"""All methods on one cache, nothing else different: ``python -m pipeline compare --corpus C --seeds 0 1 2``.

Every registered method whose ``TASKS`` include the cache's task and whose configured feature columns
(``configs/<method>/{base,<corpus>}.yaml``) are in the cache is trained once per seed through the
trainer's command line (``pipeline.train.cli``: the same config resolution and run dirs as ``make
train``); every other method is skipped with the reason printed. Then one table:

* per method the headline metrics of the test split (``pipeline.report.TABLE_METRICS``) as mean ±
  sample std over seeds, read back from each run's ``metrics.json``;
* training wall time per seed, peak resident memory of the process during the run (Linux
  ``VmHWM`` after resetting it, else the peak of a 20 ms sampler) and, on a GPU, the CUDA peak
  (``torch.cuda.max_memory_allocated``); the parameter count of the trained model;
* the paper's reported number beside ours where the corpus config carries a ``paper:`` block
  (``paper: {source: ..., test: {weighted_f1: 0.6737}}``, in the units of our metrics.json).

Written to ``--out`` (default ``runs/compare-<corpus>-<time>``): ``compare.md``, ``compare.csv``,
``compare.png``, ``compare.json`` and one run dir per method and seed (``<method>/seed-<s>/``).
``--epochs N`` sets every stage of every method to N epochs and ``--set-all k=v`` applies an
override to every method (CI and quick looks; the table says so).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RSS_SAMPLE_SECONDS = 0.02
VARIANT_FILE = "finetuned.yaml"  # configs/<method>/finetuned.yaml: the method on a fine-tuned text column
# Row suffix -> configs/<method>/<file> layered on the method's config; a variant's row appears where the cache
# holds what it reads (its feature columns; the decoded inputs of the roles it fine-tunes). A demo corpus uses
# configs/<method>/demo-<file> when there is one (settings for the tiny random encoders).
VARIANTS = {"ft": VARIANT_FILE,                     # the text features of a fine-tuned encoder (issue 11)
            "students": "students-finetune.yaml"}   # TelME's audio / video students fine-tuned (issue 12)


# ----------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of this process over a block: ``with PeakMemory() as m: ...; m.rss_mb, m.cuda_mb``.

    RSS: on Linux the kernel's high-water mark ``VmHWM`` is reset at the start (``/proc/self/clear_refs``
    = 5) and read at the end; a sampler thread (every 20 ms) covers systems where that is refused. CUDA:
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (None without a GPU)."""

    def __init__(self) -> None:
        self.rss_mb: float | None = None
        self.cuda_mb: float | None = None
        self._sampled = 0
        self._stop = threading.Event()
        self._hwm_reset = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def _status_kb(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, self._status_kb("VmRSS") or 0)
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> "PeakMemory":
        import torch

        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        kb = max(self._sampled, self._status_kb("VmRSS") or 0)
        if self._hwm_reset:
            kb = max(kb, self._status_kb("VmHWM") or 0)
        if not kb:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # lifetime peak: the best there is
        self.rss_mb = kb / 1024.0
        if torch.cuda.is_available():
            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20


# ------------------------------------------------------------------------------------------ plans
@dataclass
class MethodPlan:
    """One method on the cache: its resolved config and the overrides compare adds, or why it is skipped."""

    method: str
    corpus_config: str | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None
    variant: str | None = None  # a VARIANTS key: that configs/<method>/<file> layered on top
    config_path: str | None = None

    @property
    def label(self) -> str:
        """The row name: ``<method>`` or ``<method>+<variant>`` (``+ft``: text features of a fine-tuned encoder;
        ``+students``: TelME's students fine-tuned on the decoded inputs)."""
        return self.method + (f"+{self.variant}" if self.variant else "")


def stage_epochs(stages: dict[str, Any], epochs: int) -> list[str]:
    """``stages.<stage>.epochs=N`` overrides for every stage that trains (a stage with 0 epochs stays off)."""
    return [f"stages.{s}.epochs={int(epochs)}" for s in stages if stages[s].get("epochs") != 0]


def plan_methods(cache: Any, corpus_names: Sequence[str | None], *, methods: Sequence[str] | None = None,
                 set_all: Sequence[str] = (), epochs: int | None = None) -> list[MethodPlan]:
    """Which registered methods can train on ``cache`` with their config, and with which overrides."""
    import models  # noqa: F401  (registers the methods)
    from models.base import METHODS
    from pipeline.config import configs_dir, corpus_config_name, load_config

    names = list(methods) if methods else METHODS.names()
    columns = cache.meta.get("columns", {})
    inputs = cache.meta.get("inputs") or {}
    plans: list[MethodPlan] = []
    wanted: list[MethodPlan] = []
    for name in names:  # each method, then each variant it has a config file for
        wanted.append(MethodPlan(method=name))
        demo = any(str(c or "").startswith("demo-") for c in corpus_names)
        for suffix, file in VARIANTS.items():
            path = next((f for f in ([configs_dir() / name / f"demo-{file}"] if demo else []) +
                         [configs_dir() / name / file] if f.exists()), None)
            if path is not None:
                wanted.append(MethodPlan(method=name, variant=suffix, config_path=str(path)))

    def absent(name: str, config: dict[str, Any]) -> list[str]:
        """What ``config`` reads that the cache lacks: feature columns, decoded inputs of fine-tuned roles."""
        from pipeline.collate import used_features

        decoded = METHODS.get(name).input_roles(dict(config.get("model") or {}))
        feats = used_features(config)  # a subset run needs only its own columns
        return ([c for r, c in feats.items() if r not in decoded and c not in columns]
                + [f"{c} (decoded inputs)" for r, c in feats.items() if r in decoded and c not in inputs])

    for plan in wanted:
        name = plan.method
        if plan.variant is not None:  # shown only where the cache holds what the variant reads
            try:
                if absent(name, load_config(name, corpus_config_name(name, corpus_names), plan.config_path)):
                    continue
            except Exception:  # noqa: BLE001 - a config that does not load is said in its row below
                pass
        plans.append(plan)
        if name not in METHODS:
            plan.skip = f"not a registered method (known: {', '.join(METHODS.names())})"
            continue
        cls = METHODS.get(name)
        if cache.task not in cls.TASKS:
            plan.skip = f"does {', '.join(cls.TASKS)}, the cache is {cache.task}"
            continue
        if not (configs_dir() / name / "base.yaml").exists():
            plan.skip = f"no {configs_dir() / name / 'base.yaml'}"
            continue
        plan.corpus_config = corpus_config_name(name, corpus_names)
        try:
            base = load_config(name, plan.corpus_config, plan.config_path)
            plan.overrides = stage_epochs(base["stages"], epochs) if epochs else []
            plan.overrides += list(set_all)
            plan.config = load_config(name, plan.corpus_config, plan.config_path, overrides=plan.overrides)
            missing = absent(name, plan.config)
        except Exception as e:  # a config that does not load is that method's problem, said in the table
            plan.skip = f"config does not load: {e}"
            continue
        if missing:
            plan.skip = f"feature columns {', '.join(missing)} are not in the cache"
            continue
        from pipeline.collate import used_features

        used = list(used_features(plan.config).values())
        if cls.GRANULARITY == "sequence":
            flat = [c for c in used if not columns[c].get("sequence")]
            if flat:
                plan.skip = (f"needs per-step sequences of {', '.join(flat)}; the cache has vectors only "
                             f"(extract with --sequence)")
                continue
        label_set = plan.config.get("label_set", "primary")
        if cache.task == "classification" and label_set not in cache.meta.get("label_sets", {}):
            plan.skip = f"label_set {label_set!r} is not in the cache"
    return plans


# ------------------------------------------------------------------------------------------- runs
def count_parameters(run_dir: Path) -> int:
    """Parameters of the trained model of a run dir (built from its config and features.json)."""
    from pipeline.predict import load_run

    return int(sum(p.numel() for p in load_run(run_dir).method.parameters()))


def train_seed(plan: MethodPlan, seed: int, out: Path, cache_args: list[str]) -> dict[str, Any]:
    """One seed of one method through the trainer's CLI; returns its metrics.json plus resources."""
    from pipeline.train import cli as train_cli

    argv = ["--method", plan.method, *cache_args, "--seeds", str(seed), "--out", str(out / plan.label),
            "--name", f"seed-{seed}", *(["--config", plan.config_path] if plan.config_path else [])]
    for o in plan.overrides:
        argv += ["--set", o]
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        train_cli(argv)
    seconds = time.perf_counter() - t0
    run_dir = out / plan.label / f"seed-{seed}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    resources = {"seconds": seconds, "peak_rss_mb": mem.rss_mb, "peak_cuda_mb": mem.cuda_mb,
                 "command": "python -m pipeline train " + " ".join(argv)}
    (run_dir / "resources.json").write_text(json.dumps(resources, indent=2))
    return {"run_dir": str(run_dir), "metrics": metrics, **resources}


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan"), float("nan")
    return float(np.nanmean(arr)), float(np.nanstd(arr, ddof=1)) if arr.size > 1 else 0.0


def summarize_method(plan: MethodPlan, seeds: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """Mean ± std over seeds of the headline test metrics and of the resources."""
    from pipeline.report import TABLE_METRICS

    row: dict[str, Any] = {"method": plan.label, "status": "ok", "variant": plan.variant, "corpus_config": plan.corpus_config,
                           "overrides": plan.overrides, "seeds": [s["metrics"].get("seed") for s in seeds],
                           "runs": [s["run_dir"] for s in seeds], "metrics": {}}
    for name in TABLE_METRICS[task]:
        values = [s["metrics"]["test"].get(name) for s in seeds]
        mean, std = _mean_std(values)
        row["metrics"][name] = {"mean": mean, "std": std, "values": values}
    for key in ("seconds", "peak_rss_mb", "peak_cuda_mb"):
        row[key] = _mean_std([s[key] for s in seeds])[0] if any(s[key] is not None for s in seeds) else None
    row["params"] = count_parameters(Path(seeds[0]["run_dir"]))
    paper = plan.config.get("paper") or {}
    row["paper"] = {k: float(v) for k, v in (paper.get("test") or {}).items()}
    row["paper_source"] = paper.get("source")
    from pipeline.report import input_differences

    used = Path(seeds[0]["run_dir"]) / "features.json"
    columns = json.loads(used.read_text()).get("columns", {}) if used.exists() else {}
    row["inputs_differ"] = input_differences(plan.config, columns)
    hidden = sorted(set(row["paper"]) - set(TABLE_METRICS[task]))
    if hidden:
        print(f"compare: {plan.method}: paper numbers {', '.join(hidden)} are not headline {task} metrics "
              f"({', '.join(TABLE_METRICS[task])}); they stay in compare.json only")
    return row


# ----------------------------------------------------------------------------------------- output
def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], task: str, *, title: str, notes: Sequence[str] = ()) -> str:
    """``compare.md``: one row per trained method, then the skipped ones with their reason."""
    from pipeline.report import TABLE_METRICS

    names = TABLE_METRICS[task]
    trained = [r for r in rows if r["status"] == "ok"]
    head = ["method", "seeds"] + list(names) + ["train s / seed", "peak RSS MB", "peak CUDA MB", "params"]
    lines = [f"# {title}", "", *notes, *([""] if notes else []),
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in trained:
        cells = [r["method"] + (" †" if r.get("inputs_differ") else ""), str(len(r["seeds"]))]
        for n in names:
            m = r["metrics"][n]
            cell = _fmt(m["mean"]) + (f" ± {_fmt(m['std'])}" if len(r["seeds"]) > 1 else "")
            if n in r["paper"]:
                cell += f" (paper {_fmt(r['paper'][n])})"
            cells.append(cell)
        cells += [_fmt(r["seconds"], 1), _fmt(r["peak_rss_mb"], 0), _fmt(r["peak_cuda_mb"], 0), f"{r['params']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    sources = [f"- {r['method']}: {r['paper_source']}" for r in trained if r["paper"] and r["paper_source"]]
    if sources:
        lines += ["", "Paper numbers (same units as ours):", *sources]
    differ = [f"- {r['method']}: " + "; ".join(r["inputs_differ"]) for r in trained if r.get("inputs_differ")]
    if differ:
        lines += ["", "† inputs differ from the paper's (so its numbers are not a like-for-like target):", *differ]
    others = [r for r in rows if r["status"] != "ok"]
    if others:
        lines += ["", "Not in the table:", *[f"- {r['method']}: {r['status']}: {r['reason']}" for r in others]]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], task: str, path: Path) -> None:
    """``compare.csv``: one row per method (skipped ones too, with their reason)."""
    from pipeline.report import TABLE_METRICS

    names = TABLE_METRICS[task]
    cols = ["method", "status", "reason", "n_seeds", "seeds"]
    for n in names:
        cols += [f"{n}_mean", f"{n}_std", f"paper_{n}"]
    cols += ["train_seconds_per_seed", "peak_rss_mb", "peak_cuda_mb", "params", "corpus_config", "overrides", "runs",
             "paper_source", "inputs_differ"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            out: dict[str, Any] = {"method": r["method"], "status": r["status"], "reason": r.get("reason", "")}
            if r["status"] == "ok":
                out.update(n_seeds=len(r["seeds"]), seeds=" ".join(map(str, r["seeds"])),
                           train_seconds_per_seed=r["seconds"], peak_rss_mb=r["peak_rss_mb"],
                           peak_cuda_mb=r["peak_cuda_mb"], params=r["params"], corpus_config=r["corpus_config"],
                           overrides=" ".join(r["overrides"]), runs=" ".join(r["runs"]),
                           paper_source=r.get("paper_source") or "",
                           inputs_differ=" | ".join(r.get("inputs_differ") or []))
                for n in names:
                    out[f"{n}_mean"] = r["metrics"][n]["mean"]
                    out[f"{n}_std"] = r["metrics"][n]["std"]
                    out[f"paper_{n}"] = r["paper"].get(n, "")
            w.writerow(out)


def plot(rows: list[dict[str, Any]], task: str, path: Path, title: str) -> None:
    """``compare.png``: per headline metric the methods' mean ± std (paper values as red x), and the
    training time per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report import TABLE_METRICS

    trained = [r for r in rows if r["status"] == "ok"]
    names = list(TABLE_METRICS[task])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.6 * (len(names) + 1) + 1, 3.6), squeeze=False)
    x = np.arange(len(trained))
    labels = [r["method"] for r in trained]
    for ax, n in zip(axes[0], names):
        means = [r["metrics"][n]["mean"] for r in trained]
        stds = [r["metrics"][n]["std"] for r in trained]
        ax.bar(x, means, yerr=stds, capsize=3, color=[f"C{i}" for i in range(len(trained))])
        for i, r in enumerate(trained):
            if n in r["paper"]:
                ax.plot(i, r["paper"][n], "x", color="red", ms=9, mew=2, label="paper" if i == 0 else None)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_title(f"test {n}", fontsize=9)
    ax = axes[0][-1]
    ax.bar(x, [r["seconds"] or 0 for r in trained], color="grey")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_title("train seconds / seed", fontsize=9)
    if any(r["paper"] for r in trained):
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- main
def compare(*, cache_path: Path, out: Path, seeds: Sequence[int], corpus: str | None = None,
            cache_root: Path | None = None, methods: Sequence[str] | None = None, set_all: Sequence[str] = (),
            epochs: int | None = None) -> list[dict[str, Any]]:
    """Train the methods that fit ``cache_path`` (see the module docstring); returns one row per method."""
    from pipeline.cache import load_cache

    cache = load_cache(cache_path)
    plans = plan_methods(cache, [corpus, cache_path.name, cache.meta.get("corpus")], methods=methods,
                         set_all=set_all, epochs=epochs)
    cache_args = (["--corpus", corpus, "--cache-root", str(cache_root)] if corpus and cache_root is not None
                  else ["--cache", str(cache_path)])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for plan in plans:
        if plan.skip:
            print(f"compare: skip {plan.label}: {plan.skip}")
            rows.append({"method": plan.label, "status": "skipped", "reason": plan.skip})
            continue
        print(f"compare: {plan.label} (configs/{plan.method}/{plan.corpus_config or 'base'}.yaml"
              f"{' + ' + plan.config_path if plan.config_path else ''}"
              f"{', ' + ' '.join(plan.overrides) if plan.overrides else ''}), seeds {list(seeds)}")
        try:
            results = [train_seed(plan, int(s), out, cache_args) for s in seeds]
            rows.append(summarize_method(plan, results, cache.task))
        except Exception as e:  # one method failing must not hide the others' numbers
            traceback.print_exc()
            rows.append({"method": plan.label, "status": "failed", "reason": f"{type(e).__name__}: {e}"})
    title = f"compare on {corpus or cache.meta.get('corpus') or cache_path.name}: test split, seeds {list(seeds)}"
    notes = [f"Cache `{cache_path}` (fingerprint {cache.fingerprint()}); every method with its own config."]
    if any(p.variant == "ft" and not p.skip for p in plans):
        notes.append("`<method>+ft` rows: the same method with `configs/<method>/finetuned.yaml` on top, i.e. text "
                     "features of an encoder fine-tuned on this corpus (`features --finetuned`) instead of the "
                     "frozen one.")
    if epochs or set_all:
        notes.append(f"Shortened for a quick look: {'every stage ' + str(epochs) + ' epochs' if epochs else ''}"
                     f"{'; ' if epochs and set_all else ''}{'overrides ' + ' '.join(set_all) if set_all else ''}"
                     f" (not the configs' settings).")
    (out / "compare.md").write_text(markdown_table(rows, cache.task, title=title, notes=notes))
    write_csv(rows, cache.task, out / "compare.csv")
    if any(r["status"] == "ok" for r in rows):
        plot(rows, cache.task, out / "compare.png", title)
    from pipeline.report import write_json

    write_json(out / "compare.json", {"cache": str(cache_path), "task": cache.task, "seeds": list(seeds),
                                      "epochs": epochs, "set_all": list(set_all), "rows": rows})
    return rows


def cli(argv: Sequence[str]) -> int:
    from pipeline.config import load_plugins

    p = argparse.ArgumentParser(prog="python -m pipeline compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", help="cache name under --cache-root (default demo-meld)")
    p.add_argument("--cache", help="path of a features cache (instead of --corpus)")
    p.add_argument("--cache-root", default="cache")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", help="only these methods (default: every registered one)")
    p.add_argument("--set-all", dest="set_all", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every method's config")
    p.add_argument("--epochs", type=int, help="every stage of every method trains this many epochs (quick look)")
    p.add_argument("--out", help="output folder (default runs/compare-<corpus>-<time>)")
    p.add_argument("--plugin", action="append", default=[], help="module or .py file registering extra methods")
    a = p.parse_args(list(argv))
    load_plugins(a.plugin)
    from pipeline.api import compare_methods

    rows = compare_methods(a.corpus or (None if a.cache else "demo-meld"), a.methods, a.seeds, cache=a.cache,
                           cache_root=a.cache_root, out=a.out, epochs=a.epochs, set_all=a.set_all)
    out = Path(rows.attrs["out"])
    print("\n" + (out / "compare.md").read_text())
    print(f"wrote {out / 'compare.md'}, compare.csv, compare.png, compare.json")
    return 1 if (rows["status"] == "failed").any() else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
