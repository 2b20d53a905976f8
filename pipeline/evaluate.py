"""Re-score a saved run: ``python -m pipeline evaluate RUN_DIR [--split test] [--cache PATH]``.

Loads the run's resolved ``config.yaml``, its final weights (``stage-<last>.safetensors``, safetensors
only) and the features cache named in ``run.json``, scores one split with the same code the
trainer uses, prints the metrics and writes ``eval.json`` (``eval-<split>.json`` for other splits)
next to ``metrics.json``. On the test split it reproduces ``metrics.json``'s test numbers. A
multi-seed run dir is scored seed by seed, plus a mean +- std summary.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from pipeline.cache import load_cache
from pipeline.collate import make_loader, prepare_data
from pipeline.config import load_plugins, with_defaults, yaml_load
from pipeline.metrics import compute_metrics
from pipeline.report import metrics_table, summarize, write_json
from pipeline.train import build_model, predict


def _run_info(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of the run dir or, for a seed sub-run, of its parent."""
    for d in (run_dir, run_dir.parent):
        if (d / "run.json").exists():
            return json.loads((d / "run.json").read_text())
    return {}


def load_trained(run_dir: str | Path, splits: Sequence[str] = ("test",), cache_path: str | Path | None = None):
    """(config, cache, data, method, saved metrics) of a finished single-seed run dir, final weights
    loaded (safetensors only)."""
    from pipeline.errors import MissingFile, UnknownName, UserValueError
    from pipeline.predict import check_weights, load_weights

    run_dir = Path(run_dir)
    for name in ("config.yaml", "metrics.json"):
        if not (run_dir / name).exists():
            raise MissingFile(f"{run_dir / name} not found: {run_dir} is not a finished run dir")
    info = _run_info(run_dir)
    config = with_defaults(yaml_load(run_dir / "config.yaml"))
    import models  # noqa: F401  (registers the shipped methods)
    from models.base import METHODS

    if config["method"] not in METHODS:  # a run dir never imports code by itself: plugins are asked for
        raise UnknownName(f"{run_dir}: method {config['method']!r} is not registered here; the run was trained with "
                       f"plugin(s) {info.get('plugins') or '(none)'}: pass them with --plugin to load them")
    saved = json.loads((run_dir / "metrics.json").read_text())
    if "final_weights" not in saved:
        raise UserValueError(f"{run_dir / 'metrics.json'} names no final_weights: the run did not finish")
    check_weights(saved["final_weights"], run_dir)  # a pickle is refused before anything else is loaded
    cache_path = cache_path or info.get("cache") or saved.get("cache")
    if not cache_path:
        raise UserValueError(f"{run_dir}: no run.json or metrics.json naming the cache; pass --cache PATH")
    cache = load_cache(cache_path)
    data = prepare_data(config, cache, splits=tuple(splits))
    method = build_model(config, data)
    method.load_state_dict(load_weights(saved["final_weights"], run_dir))
    return config, cache, data, method, saved


def evaluate_run(run_dir: str | Path, split: str = "test", cache_path: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a single-seed run dir's final model on ``split``."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    config, cache, data, method, saved = load_trained(run_dir, (split,), cache_path)
    accelerator = Accelerator(mixed_precision=config["train"]["mixed_precision"])
    weights = run_dir / saved["final_weights"]
    method.to(accelerator.device)
    stage = next((s for s in method.stages() if s.name == saved["final_stage"]), None)
    if stage is None:
        raise UserValueError(f"{run_dir / 'metrics.json'}: final stage {saved['final_stage']!r} is not a stage of "
                         f"method {config['method']!r}")
    loader = accelerator.prepare(make_loader(data.splits[split], batch_size=int(config["train"]["eval_batch_size"])))
    outputs, targets = predict(accelerator, method, loader, stage)
    metrics = compute_metrics(data.task, targets, outputs, data.label_names)
    result = {"run": str(run_dir), "split": split, "seed": saved.get("seed"), "task": data.task,
              "select_metric": saved.get("select_metric"), "weights": str(weights), "cache": str(cache.path),
              "cache_fingerprint": cache.fingerprint(), split: metrics}
    if accelerator.is_main_process:
        write_json(run_dir / ("eval.json" if split == "test" else f"eval-{split}.json"), result)
    return result


def cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline evaluate", description="Re-score a saved run.")
    p.add_argument("run_dir", help="a run dir written by `python -m pipeline train`")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"))
    p.add_argument("--cache", help="score on this cache instead of the run's")
    p.add_argument("--plugin", action="append", default=[], help="module or .py file registering extra methods")
    args = p.parse_args(list(argv))
    load_plugins(args.plugin)
    run_dir = Path(args.run_dir)
    info = _run_info(run_dir)
    seeds = info.get("seeds", [])
    if not (run_dir / "config.yaml").exists() or (len(seeds) > 1 and (run_dir / f"seed-{seeds[0]}").is_dir()):
        dirs = [run_dir / f"seed-{s}" for s in seeds]
    else:
        dirs = [run_dir]
    if not dirs:
        from pipeline.errors import MissingFile

        raise MissingFile(f"{run_dir}: no run.json / config.yaml: not a run dir (give a folder under runs/)")
    results = [evaluate_run(d, split=args.split, cache_path=args.cache) for d in dirs]
    print(f"\n{run_dir}: re-scored on {args.split} (seeds {[r['seed'] for r in results]})")
    print(metrics_table(results, splits=(args.split,)))
    if len(results) > 1:
        write_json(run_dir / f"eval-{args.split}.json",
                   {"split": args.split, "seeds": [r["seed"] for r in results], **summarize(results, (args.split,))})
    return 0
