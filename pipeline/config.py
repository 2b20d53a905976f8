"""Run configs: ``configs/<method>/base.yaml`` deep-merged with ``configs/<method>/<corpus>.yaml``.

Layers, later ones winning (see ``configs/README.md``)::

    trainer defaults (TRAIN_DEFAULTS)  <  base.yaml  <  <corpus>.yaml  <  --config PATH  <  --set a.b=c

``--set`` values are parsed as YAML (``--set model.theta=0.2``, ``--set stages.fusion.lr=1e-4``; a
number written without a dot such as ``1e-4`` is read as a float too). Unknown top-level keys,
unknown ``train:`` keys and unknown stage keys are errors that name the key and, for a key read
from a file, the file and line. The configs folder is ``<repo>/configs`` unless ``$MERC_CONFIGS``
points elsewhere.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from pipeline.errors import UserValueError

# ``paper:`` holds the paper's reported numbers for that corpus (``make compare`` shows them beside ours);
# the trainer ignores it.
# ``init:`` starts parameter groups from fine-tuning runs (``{group: run dir}``, see ``pipeline.train.init_groups``);
# ``encoder:`` is the fine-tuning stage's encoder block (``pipeline/finetune.py``).
TOP_LEVEL_KEYS = ("method", "default_corpus", "features", "label_set", "model", "stages", "train", "paper", "init",
                  "encoder")

TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 42,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "grad_clip": 10.0,
    "scheduler": "linear_warmup",
    "warmup": 0.0,
    "mixed_precision": "no",
    "eval_batch_size": 32,
    "select_metric": "auto",  # auto = weighted_f1 (classification) / mae (regression)
    "max_len": 50,
    # sequence methods: how a cached frame sequence becomes <= max_len steps (pipeline.collate.SEQ_POLICIES):
    # uniform (pool the whole utterance), words (word timings), truncate (first max_len frames); or {role: name}
    "seq_policy": "uniform",
    "find_unused_parameters": False,  # multi-GPU (DDP) only: set true if a stage leaves trainable params unused
    "grad_accum_steps": 1,  # optimizer step every N batches (effective batch = N x batch_size x processes)
    # torch intra-op threads on a CPU run: "auto" = 1 for a small model (pipeline.train.cpu_threads), else
    # torch's default; or a number. No effect on a GPU run.
    "threads": "auto",
}
STAGE_REQUIRED = ("epochs", "lr", "batch_size")
STAGE_OVERRIDABLE = ("weight_decay", "grad_clip", "warmup", "scheduler", "optimizer")


class ConfigError(UserValueError):
    """A bad config: the message names the key and, where known, the file and line."""


def configs_dir() -> Path:
    """``$MERC_CONFIGS`` or the ``configs/`` folder of this repository."""
    env = os.environ.get("MERC_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``over`` merged into ``base``; nested dicts merge, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every top-level key of a YAML mapping document."""
    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one config file; a syntax error or an unknown top-level key names the file and line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a config must be a mapping, got {type(data).__name__}")
    lines = _key_lines(text)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}:{lines.get(key, 1)}: unknown top-level key {key!r}; "
                              f"known: {', '.join(TOP_LEVEL_KEYS)}")
    return data


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def apply_override(config: dict[str, Any], override: str) -> dict[str, Any]:
    """Apply one ``a.b.c=value`` override in place (value parsed as YAML) and return the config."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key.path=value")
    dotted, text = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {override!r}: empty key in {dotted!r}")
    if keys[0] not in TOP_LEVEL_KEYS:
        raise ConfigError(f"--set {override!r}: unknown top-level key {keys[0]!r}; known: {', '.join(TOP_LEVEL_KEYS)}")
    node = config
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(keys[:i + 1])} is a value, not a mapping")
        node = child
    node[keys[-1]] = _parse_value(text)
    return config


def config_files(method: str | None, corpus: str | None = None,
                 config_path: str | Path | None = None) -> list[Path]:
    """The files that make up a config, in merge order (only those that exist)."""
    files: list[Path] = []
    if method:
        base = configs_dir() / method / "base.yaml"
        if base.exists():
            files.append(base)
        if corpus and (configs_dir() / method / f"{corpus}.yaml").exists():
            files.append(configs_dir() / method / f"{corpus}.yaml")
    if config_path is not None:
        files.append(Path(config_path))
    return files


def corpus_config_name(method: str, candidates: Iterable[str | None]) -> str | None:
    """The first candidate corpus name that has a ``configs/<method>/<name>.yaml`` (or None)."""
    for name in candidates:
        if name and (configs_dir() / method / f"{name}.yaml").exists():
            return name
    return None


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every ``train:`` default filled in (idempotent)."""
    out = copy.deepcopy(config)
    train = {**TRAIN_DEFAULTS, **(out.get("train") or {})}
    if train["mixed_precision"] is False:  # YAML reads a bare `no` as false
        train["mixed_precision"] = "no"
    out["train"] = train
    out.setdefault("label_set", "primary")
    out.setdefault("model", {})
    out.setdefault("features", {})
    out.setdefault("stages", {})
    return out


def validate_config(config: dict[str, Any], where: str = "config") -> None:
    """Check key names and types (not the values' meaning: the trainer checks that against the method)."""
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{where}: unknown top-level key {key!r}; known: {', '.join(TOP_LEVEL_KEYS)}")
    if not config.get("method"):
        raise ConfigError(f"{where}: no `method:` given")
    for block in ("features", "model", "stages", "train", "paper", "init", "encoder"):
        if not isinstance(config.get(block, {}), dict):
            raise ConfigError(f"{where}: `{block}:` must be a mapping")
    for key in config.get("train", {}):
        if key not in TRAIN_DEFAULTS:
            raise ConfigError(f"{where}: unknown key train.{key}; known: {', '.join(TRAIN_DEFAULTS)}")
    for stage, block in config.get("stages", {}).items():
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: stages.{stage} must be a mapping of {', '.join(STAGE_REQUIRED)}")
        for key in block:
            if key not in STAGE_REQUIRED + STAGE_OVERRIDABLE:
                raise ConfigError(f"{where}: unknown key stages.{stage}.{key}; "
                                  f"known: {', '.join(STAGE_REQUIRED + STAGE_OVERRIDABLE)}")


def load_config(method: str | None = None, corpus: str | None = None, config_path: str | Path | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Resolve a run config: defaults < base.yaml < <corpus>.yaml < ``config_path`` < ``overrides``."""
    files = config_files(method, corpus, config_path)
    if not files:
        raise ConfigError(f"no config for method {method!r}: {configs_dir() / str(method) / 'base.yaml'} "
                          f"not found and no --config given")
    config: dict[str, Any] = {}
    for f in files:
        config = deep_merge(config, read_yaml(f))
    for override in overrides:
        apply_override(config, override)
    if method and config.get("method", method) != method:
        raise ConfigError(f"{files[-1]}: method {config['method']!r} does not match --method {method!r}")
    config.setdefault("method", method)
    config = with_defaults(config)
    validate_config(config, where=" + ".join(str(f) for f in files))
    return config


def save_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write a resolved config as YAML (keys in their given order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # a kill leaves the old file
    tmp.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)
    return path


def yaml_load(path: str | Path) -> dict[str, Any]:
    """A YAML file as a dict (no schema check: for files this toolkit wrote, e.g. a run's config.yaml)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def load_plugins(specs: Sequence[str]) -> None:
    """Import extra modules that register methods: a module name or a ``.py`` file path."""
    for spec in specs:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            loaded = sys.modules.get(path.stem)
            if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
                continue
            if not path.exists():
                raise FileNotFoundError(f"--plugin {spec}: file not found")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            importlib.import_module(spec)
