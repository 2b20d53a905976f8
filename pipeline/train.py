"""The one trainer: any registered method, any features cache, under one Hugging Face ``Accelerator``.

``python -m pipeline train --method M --corpus C [--set k=v ...] [--seeds 0 1 2]``, also under
``accelerate launch --num_processes N -m pipeline train ...`` (GPUs). Two CPU processes (gloo):
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m pipeline train ...`` --
Accelerate 1.15 runs ``--cpu --num_processes 2`` as one process unless MPI is set up. A stage's
``batch_size`` is per process. The trainer knows only the ``Method`` contract (``models/base.py``):

1. build the method from the config (``model:``) plus the cache's input dims and class count;
2. for each ``method.stages()``: freeze everything, unfreeze the stage's parameter groups (frozen
   groups run in eval mode), optimise ``sum(MethodOutput.losses)`` for the stage's epochs, score dev
   after every epoch and keep the best state by ``train.select_metric`` (dev only; test is never
   looked at), then restore the best weights -- the next stage starts from them -- and save them as
   ``stage-<name>.safetensors``;
3. score dev and test with the final model and write the reports (``pipeline/report.py``).

Every epoch ends with a checkpoint (``accelerator.save_state`` + the best weights so far +
``progress.json``); ``--resume RUN_DIR`` continues from it. Shuffling and dropout are reseeded from
(seed, stage, epoch) at the start of every epoch, so a resumed run retraces an uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from models.base import Method, MethodOutput, Stage, build_method
from pipeline.cache import Cache, load_cache
from pipeline.collate import IGNORE_INDEX, RunData, make_loader, prepare_data
from pipeline.config import (STAGE_OVERRIDABLE, STAGE_REQUIRED, ConfigError, config_files, corpus_config_name,
                             load_config, load_plugins, read_yaml, save_config, validate_config, with_defaults,
                             yaml_load)
from pipeline.metrics import DEFAULT_SELECT_METRIC, compute_metrics, higher_is_better, is_better, scalar_metrics
from pipeline.registry import Registry

CRASH_ENV = "MERC_CRASH_AFTER_EPOCHS"  # test hook: raise after this many epochs of this process
CRASH_STEPS_ENV = "MERC_CRASH_AFTER_STEPS"  # test hook: raise mid-epoch, after this many batches of this process
CHECKPOINTS = "checkpoints"
PROGRESS_FILE = "progress.json"

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
SCHEDULES: Registry[Callable[[int, int], Callable[[int], float]]] = Registry("scheduler")


@SCHEDULES.register("linear_warmup")
def linear_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor: 0 -> 1 over ``warmup_steps``, then linearly down to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


@SCHEDULES.register("constant")
def constant(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


class SimulatedCrash(RuntimeError):
    """Raised by the ``MERC_CRASH_AFTER_EPOCHS`` test hook."""


@dataclass
class StageSettings:
    """Hyperparameters of one stage: the ``stages.<name>`` block over the ``train:`` defaults."""

    epochs: int
    lr: float
    batch_size: int
    optimizer: str
    weight_decay: float
    grad_clip: float
    scheduler: str
    warmup: float

    @classmethod
    def from_config(cls, config: dict[str, Any], stage: str) -> "StageSettings":
        block = config["stages"].get(stage)
        if block is None:
            raise ConfigError(f"config for method {config['method']!r} has no `stages.{stage}` block "
                              f"(the method's stages need {', '.join(STAGE_REQUIRED)} each)")
        missing = [k for k in STAGE_REQUIRED if k not in block]
        if missing:
            raise ConfigError(f"config `stages.{stage}` lacks {', '.join(missing)}")
        merged = {**{k: config["train"][k] for k in STAGE_OVERRIDABLE}, **block}
        return cls(epochs=int(merged["epochs"]), lr=float(merged["lr"]), batch_size=int(merged["batch_size"]),
                   optimizer=str(merged["optimizer"]), weight_decay=float(merged["weight_decay"]),
                   grad_clip=float(merged["grad_clip"]), scheduler=str(merged["scheduler"]),
                   warmup=float(merged["warmup"]))


def build_model(config: dict[str, Any], data: RunData) -> Method:
    for key in ("input_dims", "num_classes"):
        if key in config["model"]:
            raise ConfigError(f"config `model.{key}` is filled in from the cache; remove it")
    extra = {"encoders": dict(data.encoders)} if data.encoders else {}  # roles whose encoder the method trains
    return build_method(config["method"], input_dims=data.input_dims, num_classes=data.num_classes,
                        **config["model"], **extra)


def init_groups(method: Method, init: dict[str, str], cache: Cache | None,
                features: dict[str, str] | None = None) -> dict[str, str]:
    """Config ``init: {<param group>: <fine-tuned run dir> | auto}``: start that group from the head a
    ``finetune`` run saved (``head.safetensors``), e.g. TelME's teacher = the fine-tuned text encoder's
    head over the cached features of that same fine-tuned encoder. ``auto`` = the run that the config's
    one fine-tuned feature column was extracted from (``finetuned_from`` in the cache meta). The cache must
    hold a column extracted from that run's encoder (checked by content hash), else the head would sit on
    other features. Returns the resolved ``{group: run dir}``."""
    if not init:
        return {}
    from safetensors.torch import load_file

    groups = method.param_groups_all()
    columns = cache.meta.get("columns", {}) if cache is not None else {}
    resolved: dict[str, str] = {}
    for group, run in init.items():
        if run == "auto":
            sources = sorted({str(columns.get(c, {}).get("finetuned_from")) for c in (features or {}).values()
                              if columns.get(c, {}).get("finetuned_from")})
            if len(sources) != 1:
                raise ConfigError(f"config init.{group}=auto needs exactly one feature column extracted from a "
                                  f"fine-tuning run (features --finetuned RUN); found {sources or 'none'}: "
                                  f"give --set init.{group}=runs/<finetune run>")
            run = sources[0]
        if not run:
            raise ConfigError(f"config init.{group} is empty: give the fine-tuning run dir, "
                              f"e.g. --set init.{group}=runs/<finetune run>")
        resolved[group] = str(run)
        if group not in groups:
            raise ConfigError(f"config init.{group}: no parameter group {group!r}; the method has: {sorted(groups)}")
        run_dir = Path(str(run))
        head, info_file = run_dir / "head.safetensors", run_dir / "finetune.json"
        if not head.is_file() or not info_file.is_file():
            raise ConfigError(f"config init.{group}: {run_dir} is not a fine-tuning run dir (no head.safetensors "
                              f"+ finetune.json); run `python -m pipeline finetune` first")
        content = json.loads(info_file.read_text()).get("encoder_content")
        if cache is not None and not any((c.get("settings") or {}).get("content") == content for c in columns.values()):
            raise ConfigError(f"config init.{group}: cache {cache.path} has no column extracted from the fine-tuned "
                              f"encoder of {run_dir}; run `python -m pipeline features --finetuned {run_dir}` first")
        try:
            groups[group].load_state_dict(load_file(str(head)))
        except RuntimeError as e:
            raise ConfigError(f"config init.{group}: {head} does not fit group {group!r} (is model.hidden the "
                              f"fine-tuning run's model.head_hidden?): {e}") from None
    return resolved


def select_metric(config: dict[str, Any], task: str) -> str:
    name = config["train"]["select_metric"]
    return DEFAULT_SELECT_METRIC[task] if name == "auto" else name


def head_output(out: MethodOutput, head: str) -> torch.Tensor:
    """The output a stage is scored on: ``logits``/``preds`` or a named ``extras`` entry."""
    value = getattr(out, head) if head in ("logits", "preds") else out.extras.get(head)
    if value is None and head == "logits":
        value = out.preds
    if value is None:
        raise ValueError(f"method output has no {head!r} (the stage's eval_head)")
    return value


@torch.no_grad()
def predict(accelerator: Any, method: Method, loader: Any, stage: Stage) -> tuple[np.ndarray, np.ndarray]:
    """Outputs and targets of every labelled item, gathered over processes (padding dropped)."""
    method.eval()
    outputs, targets = [], []
    for batch in loader:
        with accelerator.autocast():
            out = method(batch, stage=stage.name)
        y = head_output(out, stage.eval_head).float()
        if "score" in batch:
            t, valid = batch["score"].float(), batch["label_mask"]
        else:
            t, valid = batch["label"], batch["label"] != IGNORE_INDEX
        valid = valid.long()
        if t.dim() == 2:  # dialogue batches: same turn count on every process before gathering
            y, t, valid = (accelerator.pad_across_processes(x, dim=1) for x in (y, t, valid))
        y, t, valid = accelerator.gather_for_metrics((y.contiguous(), t.contiguous(), valid.contiguous()))
        keep = valid.bool()
        outputs.append(y[keep].cpu())
        targets.append(t[keep].cpu())
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def snapshot(method: Method) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (no shared storage, so it saves as safetensors)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in method.state_dict().items()}


@dataclass
class Progress:
    """What a checkpoint needs besides the Accelerate state (saved as ``checkpoints/progress.json``)."""

    stage_names: list[str]
    stage_index: int = 0
    epochs_done: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    global_step: int = 0
    checkpoint: str | None = None
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stage_results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Progress":
        return cls(**json.loads(path.read_text()))


def _fresh_precision(mixed_precision: str) -> None:
    """Let one process train runs of different precision one after another (tests, notebooks).

    Accelerate keeps its first ``mixed_precision`` process-wide and refuses another; its own
    ``_reset_state`` drops that setting and keeps the process group (``PartialState``)."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") not in (None, str(mixed_precision)):
        AcceleratorState._reset_state()


SMALL_MODEL_PARAMS = 5_000_000  # below this, a CPU step is many tiny ops: extra threads only synchronise


def cpu_threads(setting: Any, num_params: int, default: int) -> int:
    """Intra-op threads for a CPU run: ``setting`` when it is a number, else (``"auto"``) 1 for a model under
    ``SMALL_MODEL_PARAMS`` parameters and torch's ``default`` otherwise. Deterministic (never from the load
    average): the thread count may change the low bits of a sum, and a seed must give the same run."""
    if setting != "auto":
        n = int(setting)
        if n < 1:
            raise ValueError(f"train.threads must be 'auto' or >= 1, got {setting!r}")
        return n
    return 1 if num_params < SMALL_MODEL_PARAMS else max(1, int(default))


class Trainer:
    """One training run of one seed into ``out_dir``; ``run()`` returns the result dict."""

    def __init__(self, *, config: dict[str, Any], cache: Cache, out_dir: Path, seed: int, resume: bool = False,
                 run_info: dict[str, Any] | None = None, data: RunData | None = None,
                 build: Callable[[RunData], Method] | None = None) -> None:
        """``data`` / ``build`` replace the cached-features defaults (``prepare_data(config, cache)`` and the
        registered method of ``config["method"]``): the fine-tuning stage hands in tokenized text splits and
        an encoder + head that meets the same ``Method`` contract (``pipeline/finetune.py``)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from pipeline.report import collect_run_info

        self.config, self.cache, self.out_dir, self.seed = config, cache, Path(out_dir), int(seed)
        self.run_info = {**collect_run_info(config), **(run_info or {})}
        _fresh_precision(config["train"]["mixed_precision"])
        self.accelerator = Accelerator(
            mixed_precision=config["train"]["mixed_precision"], log_with="tensorboard", project_dir=str(out_dir),
            gradient_accumulation_steps=int(config["train"]["grad_accum_steps"]),
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=bool(config["train"]["find_unused_parameters"]))])
        set_seed(self.seed)
        self.data = data if data is not None else prepare_data(config, cache)
        self.method = (build(self.data) if build is not None else build_model(config, self.data))
        self.run_info["init"] = init_groups(self.method, config.get("init") or {}, cache, config.get("features"))
        self.method = self.method.to(self.accelerator.device)
        self.stages = self.method.stages()
        self.metric = select_metric(config, self.data.task)
        self.generator = torch.Generator()
        self.eval_loaders = {s: self.accelerator.prepare(make_loader(
            self.data.splits[s], batch_size=int(config["train"]["eval_batch_size"]))) for s in ("dev", "test")}
        self.progress = Progress(stage_names=[s.name for s in self.stages])
        self.resume_point: Progress | None = None  # where --resume picks up (cleared once used)
        progress_file = self.out_dir / CHECKPOINTS / PROGRESS_FILE
        if resume and progress_file.exists():  # no progress file yet: the run died in its first epoch
            self.progress, self.resume_point = Progress.load(progress_file), Progress.load(progress_file)
            if self.progress.stage_names != [s.name for s in self.stages]:
                raise ValueError(f"{progress_file}: stages {self.progress.stage_names} differ from the "
                                 f"method's {[s.name for s in self.stages]}")
        self.epochs_this_process = self.steps_this_process = 0
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out_dir / "config.yaml")
        self.accelerator.init_trackers("tensorboard")

    # -- one stage --------------------------------------------------------------------------------
    def _freeze_for(self, stage: Stage) -> list[torch.nn.Parameter]:
        """requires_grad only on the stage's groups; returns those parameters (each once)."""
        for p in self.method.parameters():
            p.requires_grad_(False)
        params = list({id(p): p for p in self.method.param_groups(stage)}.values())
        for p in params:
            p.requires_grad_(True)
        if not params:
            raise ValueError(f"stage {stage.name!r} has no parameters to train")
        return params

    def _set_modes(self, stage: Stage) -> None:
        """Train mode for the stage's groups, eval mode (no dropout, frozen norms) for the others."""
        groups = self.method.param_groups_all()
        self.method.train()
        for name, module in groups.items():
            if name not in stage.groups:
                module.eval()
        for name in stage.groups:
            groups[name].train()

    def _seed_epoch(self, index: int, epoch: int) -> None:
        from accelerate.utils import set_seed

        epoch_seed = (self.seed * 1_000_003 + index * 1_009 + epoch) % (2**31 - 1)
        set_seed(epoch_seed)
        self.generator.manual_seed(epoch_seed)

    def _train_epoch(self, model: Any, optimizer: Any, loader: Any, scheduler: Any, stage: Stage,
                     hp: StageSettings, params: list[torch.nn.Parameter]) -> dict[str, float]:
        acc = self.accelerator
        self._set_modes(stage)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for batch in loader:
            with acc.accumulate(model):  # train.grad_accum_steps: the optimizer steps every N batches
                out: MethodOutput = model(batch, stage=stage.name)
                if not out.losses:
                    raise ValueError(f"method returned no losses in stage {stage.name!r}")
                loss = sum(out.losses.values())
                acc.backward(loss)
                if hp.grad_clip > 0 and acc.sync_gradients:
                    acc.clip_grad_norm_(params, hp.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            terms = {**{k: v.detach().float() for k, v in out.losses.items()}, "total": loss.detach().float()}
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            self.progress.global_step += 1
            self.steps_this_process += 1
            if os.environ.get(CRASH_STEPS_ENV) and self.steps_this_process >= int(os.environ[CRASH_STEPS_ENV]):
                raise SimulatedCrash(f"{CRASH_STEPS_ENV}: stopping after {self.steps_this_process} batch(es)")
            values = {k: float(v) for k, v in terms.items()}
            if not np.isfinite(values["total"]):
                raise FloatingPointError(f"stage {stage.name!r}: loss is {values} at step {self.progress.global_step}")
            acc.log({f"{stage.name}/loss/{k}": v for k, v in values.items()}, step=self.progress.global_step)
        names = sorted(sums)
        means = acc.reduce(torch.stack([sums[k] / max(steps, 1) for k in names]), reduction="mean")
        return {k: float(v) for k, v in zip(names, means.tolist())}

    def _checkpoint(self, index: int, epoch: int, best: dict[str, torch.Tensor], best_changed: bool) -> None:
        """Accelerate state + best weights in ``checkpoints/s<i>-e<epoch>/``, then progress.json points to it."""
        acc, root = self.accelerator, self.out_dir / CHECKPOINTS
        name = f"s{index}-e{epoch:03d}"
        acc.save_state(str(root / name))
        previous, self.progress.checkpoint = self.progress.checkpoint, name
        if acc.is_main_process:
            from safetensors.torch import save_file

            target = root / name / "best.safetensors"
            old = root / previous / "best.safetensors" if previous else None
            if best_changed or old is None or not old.exists():
                save_file(best, str(target))
            else:  # unchanged since the last epoch: copy instead of re-serialising
                shutil.copy2(old, target)
            self.progress.save(root / PROGRESS_FILE)
            for stale in root.iterdir():
                if stale.is_dir() and stale.name != name:
                    shutil.rmtree(stale)
        acc.wait_for_everyone()

    def _run_stage(self, index: int, stage: Stage) -> None:
        from safetensors.torch import load_file, save_file
        from tqdm.auto import tqdm

        acc, hp = self.accelerator, StageSettings.from_config(self.config, stage.name)
        acc.free_memory()
        params = self._freeze_for(stage)
        optimizer = OPTIMIZERS.get(hp.optimizer)(params, lr=hp.lr, weight_decay=hp.weight_decay)
        loader = make_loader(self.data.splits["train"], batch_size=hp.batch_size, shuffle=True,
                             generator=self.generator)
        # Optimizer steps: un-sharded length (Accelerate steps the schedule once per process) / accumulation.
        total = hp.epochs * math.ceil(len(loader) / int(self.config["train"]["grad_accum_steps"]))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, SCHEDULES.get(hp.scheduler)(int(hp.warmup * total), total))
        model, optimizer, loader, scheduler = acc.prepare(self.method, optimizer, loader, scheduler)
        best: dict[str, torch.Tensor] | None = None
        start = 0
        point = self.resume_point
        if point is not None and point.stage_index == index and point.checkpoint:
            acc.load_state(str(self.out_dir / CHECKPOINTS / point.checkpoint))
            best = load_file(str(self.out_dir / CHECKPOINTS / point.checkpoint / "best.safetensors"))
            start, self.resume_point = point.epochs_done, None
        else:
            self.progress.stage_index, self.progress.epochs_done = index, 0
            self.progress.best_metric = self.progress.best_epoch = None
            self.progress.curves[stage.name] = []
        bar = tqdm(range(start, hp.epochs), desc=f"stage {stage.name}", disable=not acc.is_main_process,
                   initial=start, total=hp.epochs)
        for epoch in bar:
            self._seed_epoch(index, epoch)
            losses = self._train_epoch(model, optimizer, loader, scheduler, stage, hp, params)
            dev = scalar_metrics(self.score("dev", stage))
            if self.metric not in dev:
                raise ConfigError(f"train.select_metric {self.metric!r} is not a {self.data.task} metric; "
                                  f"choose one of {sorted(dev)}")
            self.progress.curves[stage.name].append({"epoch": epoch + 1, "loss": losses, "dev": dev,
                                                     "lr": scheduler.get_last_lr()[0]})
            improved = is_better(dev[self.metric], self.progress.best_metric, self.metric) or best is None
            if improved:
                best = snapshot(self.method)
                self.progress.best_metric, self.progress.best_epoch = dev[self.metric], epoch + 1
            self.progress.epochs_done = epoch + 1
            acc.log({f"{stage.name}/dev/{k}": v for k, v in dev.items()}, step=self.progress.global_step)
            bar.set_postfix(loss=f"{losses['total']:.4f}", **{self.metric: f"{dev[self.metric]:.4f}"})
            self._checkpoint(index, epoch + 1, best, improved)
            self.epochs_this_process += 1
            if os.environ.get(CRASH_ENV) and self.epochs_this_process >= int(os.environ[CRASH_ENV]):
                raise SimulatedCrash(f"{CRASH_ENV}: stopping after {self.epochs_this_process} epoch(s)")
        bar.close()
        if best is None:  # a stage with 0 epochs keeps the weights it started from
            best = snapshot(self.method)
        self.method.load_state_dict(best)
        curve = self.progress.curves[stage.name]
        at_best = curve[self.progress.best_epoch - 1]["dev"] if self.progress.best_epoch else {}
        self.progress.stage_results[stage.name] = {"best_epoch": self.progress.best_epoch, "epochs": hp.epochs,
                                                   "select_metric": self.metric, "best_dev": at_best}
        if acc.is_main_process:
            save_file(best, str(self.out_dir / f"stage-{stage.name}.safetensors"))
        acc.wait_for_everyone()

    # -- the run ----------------------------------------------------------------------------------
    def score(self, split: str, stage: Stage) -> dict[str, Any]:
        outputs, targets = predict(self.accelerator, self.method, self.eval_loaders[split], stage)
        return compute_metrics(self.data.task, targets, outputs, self.data.label_names)

    def run(self) -> dict[str, Any]:
        """Train every stage (on a CPU with ``train.threads`` intra-op threads, restored after), score, report."""
        before = torch.get_num_threads()
        if self.accelerator.device.type == "cpu":
            n_params = sum(p.numel() for p in self.method.parameters())
            torch.set_num_threads(cpu_threads(self.config["train"]["threads"], n_params, before))
        self.run_info["torch_threads"] = torch.get_num_threads()
        try:
            return self._run()
        finally:
            torch.set_num_threads(before)

    def _run(self) -> dict[str, Any]:
        from pipeline.report import write_run_reports

        first = self.resume_point.stage_index if self.resume_point else 0
        for index, stage in enumerate(self.stages):
            if index >= first:
                self._run_stage(index, stage)
        last = self.stages[-1]
        result = {
            "seed": self.seed, "task": self.data.task, "select_metric": self.metric,
            "higher_is_better": higher_is_better(self.metric), "label_names": self.data.label_names,
            "dev": self.score("dev", last), "test": self.score("test", last),
            "stages": self.progress.stage_results, "curves": self.progress.curves,
            "final_stage": last.name, "final_weights": f"stage-{last.name}.safetensors",
            "num_processes": self.accelerator.num_processes, "cache": str(Path(self.cache.path).resolve()),
            "input_dims": dict(self.data.input_dims), "num_classes": self.data.num_classes,  # for features.json
            "sequence_coverage": {s: d.coverage for s, d in self.data.splits.items() if hasattr(d, "coverage")},
        }
        if self.accelerator.is_main_process:
            write_run_reports(self.out_dir, result=result, config=self.config, cache=self.cache, info=self.run_info)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return result


def train(config: dict[str, Any], cache: Cache | str | Path, out_dir: str | Path, seed: int, resume: bool = False,
          *, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one seed of ``config`` on ``cache`` into ``out_dir``; returns the metrics (see ``Trainer.run``)."""
    config = with_defaults(config)
    validate_config(config)
    cache = cache if isinstance(cache, Cache) else load_cache(cache)
    return Trainer(config=config, cache=cache, out_dir=Path(out_dir), seed=seed, resume=resume,
                   run_info=run_info).run()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline train", description="Train a method on a features cache.")
    p.add_argument("--method", help="registered method name (default: `method:` of --config)")
    p.add_argument("--corpus", help="cache name under --cache-root (default: the config's default_corpus)")
    p.add_argument("--cache", help="path of a features cache (instead of --corpus)")
    p.add_argument("--cache-root", default="cache")
    p.add_argument("--config", help="extra YAML merged over configs/<method>/{base,<corpus>}.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, nargs="+", help="one sub-run per seed (default: train.seed)")
    p.add_argument("--out", default="runs", help="parent folder of run dirs")
    p.add_argument("--name", help="run dir name (default: <method>-<corpus>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--plugin", action="append", default=[], help="module or .py file registering extra methods")
    return p


def _new_run(args: argparse.Namespace, argv: Sequence[str]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Resolve config and cache of a new run; returns (run dir, config, run info)."""
    from accelerate.utils import broadcast_object_list

    method = args.method or (read_yaml(args.config).get("method") if args.config else None)
    if not method:
        raise ConfigError("give --method (or a --config with `method:`)")
    corpus = args.corpus
    if not corpus and not args.cache:
        corpus = load_config(method, None, args.config).get("default_corpus")
        if not corpus:
            raise ConfigError(f"give --corpus or --cache (the config of {method!r} has no default_corpus)")
    cache_path = Path(args.cache) if args.cache else Path(args.cache_root) / corpus
    cache = load_cache(cache_path)
    corpus_yaml = corpus_config_name(method, [corpus, cache_path.name, cache.meta.get("corpus")])
    config = load_config(method, corpus_yaml, args.config, args.overrides)
    name = [args.name or f"{method}-{corpus or cache_path.name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)  # every process must agree on the run dir
    info = {"command": "python -m pipeline train " + shlex.join(argv), "argv": list(sys.argv),
            "method": method, "corpus": corpus or cache.meta.get("corpus"), "cache": str(cache_path.resolve()),
            "config_files": [str(f) for f in config_files(method, corpus_yaml, args.config)],
            "overrides": list(args.overrides), "plugins": list(args.plugin),
            "seeds": list(args.seeds or [int(config["train"]["seed"])])}
    return Path(args.out) / name[0], config, info


def _claim_run_dir(run_dir: Path, info: dict[str, Any], config: dict[str, Any], *, numbered: bool) -> str | None:
    """Make ``run_dir`` this run's, atomically: run.json, written in full under a temp name, is hard-linked
    into place (``link`` fails if it exists, so of two runs started together exactly one wins). A taken
    default name gets a suffix (``-2``, ``-3``...); a taken ``--name`` returns None."""
    base = run_dir
    for k in range(1, 1000):
        run_dir = base if k == 1 else base.with_name(f"{base.name}-{k}")
        run_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{time.time_ns()}"
        tmp_info, tmp_config = run_dir / f".run.json.tmp-{tag}", run_dir / f".config.yaml.tmp-{tag}"
        tmp_info.write_text(json.dumps(info, indent=2))
        save_config(config, tmp_config)
        try:
            os.link(tmp_info, run_dir / "run.json")
        except FileExistsError:
            tmp_info.unlink()
            tmp_config.unlink()
            if not numbered:
                return None
            continue
        os.replace(tmp_config, run_dir / "config.yaml")
        tmp_info.unlink()
        return str(run_dir)
    return None


RunOne = Callable[[dict[str, Any], Path, int, bool, dict[str, Any]], dict[str, Any]]
NewRun = Callable[[argparse.Namespace, Sequence[str]], tuple[Path, dict[str, Any], dict[str, Any]]]


def launch(args: argparse.Namespace, argv: Sequence[str], *, new_run: NewRun, run_one: RunOne,
           command: str = "train") -> int:
    """:func:`launch_run` for a command line: exit code 0."""
    launch_run(args, argv, new_run=new_run, run_one=run_one, command=command)
    return 0


def launch_run(args: argparse.Namespace, argv: Sequence[str], *, new_run: NewRun, run_one: RunOne,
               command: str = "train") -> tuple[Path, list[dict[str, Any]]]:
    """The run-dir life cycle shared by ``train`` and ``finetune``: a new run dir (``run.json`` +
    ``config.yaml``, every process agreeing on the name) or ``--resume`` of an existing one, then one
    ``run_one(config, out_dir, seed, resume, info)`` per seed (finished seeds are skipped on resume),
    the multi-seed aggregate and the metrics table. Returns the run dir and each seed's metrics."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from pipeline.report import collect_run_info, print_metrics_table, write_aggregate

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator() will read it
    load_plugins(getattr(args, "plugin", []))
    if args.resume:
        if args.overrides or args.seeds:
            raise ConfigError("--resume keeps the run's config and seeds; drop --set / --seeds")
        run_dir = Path(args.resume)
        if not (run_dir / "run.json").exists():
            from pipeline.errors import MissingFile

            raise MissingFile(f"{run_dir / 'run.json'} not found: {run_dir} is not a run dir; give --resume the "
                              f"folder of an interrupted run (runs/<name>)")
        info = json.loads((run_dir / "run.json").read_text())
        if info.get("kind", "train") != command:
            raise ConfigError(f"{run_dir} is a {info.get('kind', 'train')} run; resume it with "
                              f"`python -m pipeline {info.get('kind', 'train')} --resume {run_dir}`")
        load_plugins(info.get("plugins", []))
        config = with_defaults(yaml_load(run_dir / "config.yaml"))
    else:
        run_dir, config, info = new_run(args, argv)
        info["kind"] = command
        info.update(collect_run_info(config))  # git state when the run started
        claimed = [_claim_run_dir(run_dir, info, config, numbered=not args.name) if state.is_main_process else None]
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(claimed)
        if claimed[0] is None:
            from pipeline.errors import AlreadyExists

            raise AlreadyExists(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
        run_dir = Path(claimed[0])
    seeds = info["seeds"]
    results = []
    for seed in seeds:
        out = run_dir if len(seeds) == 1 else run_dir / f"seed-{seed}"
        done = out / "metrics.json"
        if args.resume and done.exists():
            results.append(json.loads(done.read_text()))
            continue
        results.append(run_one(config, out, seed, bool(args.resume), info))
    if state.is_main_process:
        if len(seeds) > 1:
            write_aggregate(run_dir, results=results, config=config, cache=run_source(info), info=info)
        print_metrics_table(results, title=f"{run_dir}")
    return run_dir, results


def run_source(info: dict[str, Any]) -> Cache:
    """What a run trained on, for its reports: the features cache, or for a fine-tuning run the corpus."""
    if info.get("kind") == "finetune":
        from pipeline.finetune import corpus_source

        return corpus_source(info)
    return load_cache(info["cache"])


def run_one(config: dict[str, Any], out: Path, seed: int, resume: bool, info: dict[str, Any]) -> dict[str, Any]:
    """One seed of a ``train`` run (the ``run_one`` of :func:`launch_run`)."""
    return train(config, load_cache(info["cache"]), out, seed, resume=resume, run_info=info)


def cli(argv: Sequence[str]) -> int:
    """``python -m pipeline train``: the arguments of :func:`pipeline.api.train_method`."""
    from pipeline.api import train_method

    a = _parser().parse_args(list(argv))
    train_method(a.method, a.corpus, cache=a.cache, cache_root=a.cache_root, config=a.config, overrides=a.overrides,
                 seeds=a.seeds, out=a.out, name=a.name, resume=a.resume, plugins=a.plugin, argv=argv)
    return 0
