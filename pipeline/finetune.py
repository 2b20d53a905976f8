"""Fine-tune a text encoder of the registry on a corpus, then cache what the fine-tuned encoder produces.

``python -m pipeline finetune --encoder roberta-context --corpus meld [--profile paper]`` (``make finetune``)
trains the encoder end to end with a head on the corpus' train split, selecting on dev only, through the
one trainer (``pipeline/train.py``): the encoder + head is a ``Method`` (``EncoderClassifier``) and the
batches are the corpus' utterances tokenized by **the extractor's own code path** -- the records go through
``extract.encoder_inputs`` (dialogue history) and ``encoder.load`` (TelME's prompt for ``roberta-context``,
the plain utterance for ``roberta``), then ``encoder.collate`` pads them. So the input an encoder is
fine-tuned on and the input it is later extracted from cannot drift (tested equal).

The run dir is a training run dir (``metrics.json``, ``curves.json``, ``confusion.png``, ``run_card.md``,
checkpoints, ``--resume``, TensorBoard) plus:

    encoder/            the fine-tuned encoder as a Hugging Face model dir (``save_pretrained``,
                        safetensors) with its tokenizer (TelME's ``<s1>``..``<s9>`` included)
    head.safetensors    the head: h = proj(Dropout(x)), z = head(h) (``models.blocks.ProjectionHead``)
    finetune.json       encoder name, its constructor settings, the profile, the content hash of
                        ``encoder/``, task and label names: what ``features --finetuned`` reads

Then ``python -m pipeline features --corpus meld --finetuned runs/<ft run>`` caches the fine-tuned
encoder's features as the column ``<modality>.<encoder>@ft`` beside the frozen ``<modality>.<encoder>``
(both coexist; the fingerprint covers the fine-tuned weights), and a method config reads it
(``configs/<method>/finetuned.yaml``; TelME's teacher also starts from ``head.safetensors`` via
``init: {teacher: <ft run>}``).

Config: ``configs/finetune/<encoder>/base.yaml`` < ``configs/finetune/<encoder>/<corpus>.yaml`` <
``--config`` < ``--set`` (the same layering and keys as method configs, plus an ``encoder:`` block:
``name``, ``settings`` = overrides of the profile's constructor arguments, ``max_samples`` = use only
the first N labelled utterances of each split, for quick looks and tests).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from extractors.base import Encoder
from models.base import Method, MethodOutput, Stage
from models.blocks import ProjectionHead
from pipeline.cache import Cache
from pipeline.collate import IGNORE_INDEX, RunData
from pipeline.config import ConfigError, config_files, configs_dir, load_config

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
INFO_FILE = "finetune.json"
DEFAULT_TAG = "ft"
REGRESSION_LOSSES = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss}


# ------------------------------------------------------------------------------------------- model
class EncoderClassifier(Method):
    """A text encoder of the registry + ``ProjectionHead``, trained end to end (one stage, ``finetune``).

    Args:
        encoder: a built text encoder (``extractors/text.py``); its model is the trainable backbone and its
            ``pooled`` gives the feature the extractor caches (``roberta``: [CLS] or mean, ``roberta-context``:
            the state at TelME's ``<mask>``).
        num_classes: classes (regression: 1 output).
        task: "classification" (CE) or "regression" (``regression_loss`` on the score).
        head_hidden: width of h (TelME: 768, spec 2.2); ``head_dropout`` before the projection.
        freeze_layers: freeze the embeddings and the lowest N transformer layers (0 = train all).
        encoder_dropout: set every dropout probability inside the encoder (None = keep its config's).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
    """

    ROLES = ("text",)
    GRANULARITY = "utterance"
    TASKS = ("classification", "regression")

    def __init__(self, *, encoder: Encoder, num_classes: int, task: str = "classification", head_hidden: int = 768,
                 head_dropout: float = 0.1, freeze_layers: int = 0, encoder_dropout: float | None = None,
                 gradient_checkpointing: bool = False, regression_loss: str = "l1") -> None:
        super().__init__()
        if task not in self.TASKS:
            raise ValueError(f"task must be one of {self.TASKS}, got {task!r}")
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression_loss must be one of {sorted(REGRESSION_LOSSES)}, got {regression_loss!r}")
        self.encoder = encoder  # not a module: its model is registered as ``backbone``
        self.backbone: nn.Module = encoder.model
        self.task, self.regression_loss = task, regression_loss
        outputs = 1 if task == "regression" else num_classes
        self.head = ProjectionHead(in_dim=int(encoder.dim), hidden=head_hidden, num_classes=outputs,
                                   dropout=head_dropout)
        if encoder_dropout is not None:
            for m in self.backbone.modules():
                if isinstance(m, nn.Dropout):
                    m.p = float(encoder_dropout)
        if gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The pooler (BERT/RoBERTa's tanh layer over [CLS]) is never used: the feature is read from the last
        # hidden states. Kept out of training (DDP requires every trained parameter to get a gradient).
        pooler = getattr(self.backbone, "pooler", None)
        unused = list(pooler.parameters()) if isinstance(pooler, nn.Module) else []
        self.frozen = frozen_parameters(self.backbone, freeze_layers) + unused

    def stages(self) -> list[Stage]:
        return [Stage("finetune", ("encoder", "head"), modality="text")]

    def param_groups_all(self) -> dict[str, nn.Module]:
        return {"encoder": self.backbone, "head": self.head}

    def param_groups(self, stage: Stage) -> list[nn.Parameter]:
        frozen = {id(p) for p in self.frozen}
        return [p for p in super().param_groups(stage) if id(p) not in frozen]

    def forward(self, batch: dict[str, torch.Tensor], stage: str) -> MethodOutput:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        feature, _, _ = self.encoder.pooled(self.backbone, inputs)
        h, z = self.head(feature)
        if self.task == "regression":
            preds = z.squeeze(-1)
            losses = {}
            if "score" in batch:
                keep = batch["label_mask"].bool()
                fn = REGRESSION_LOSSES[self.regression_loss]
                losses["loss"] = fn(preds[keep].float(), batch["score"][keep].float()) if bool(keep.any()) \
                    else preds.sum() * 0.0
            return MethodOutput(preds=preds, losses=losses, extras={"feature": h})
        losses = {}
        if "label" in batch:
            losses["ce"] = nn.functional.cross_entropy(z.float(), batch["label"], ignore_index=IGNORE_INDEX)
        return MethodOutput(logits=z, losses=losses, extras={"feature": h})


def frozen_parameters(backbone: nn.Module, freeze_layers: int) -> list[nn.Parameter]:
    """The embeddings and the lowest ``freeze_layers`` transformer layers of a BERT / RoBERTa-style model."""
    if freeze_layers <= 0:
        return []
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    embeddings = getattr(backbone, "embeddings", None)
    if layers is None or embeddings is None:
        raise ConfigError(f"model.freeze_layers: {type(backbone).__name__} has no embeddings + encoder.layer "
                          f"(BERT / RoBERTa layout); use freeze_layers: 0")
    if freeze_layers > len(layers):
        raise ConfigError(f"model.freeze_layers: {freeze_layers} > the encoder's {len(layers)} layers")
    return [*embeddings.parameters(), *(p for layer in layers[:freeze_layers] for p in layer.parameters())]


# -------------------------------------------------------------------------------------------- data
class TextSplit(torch.utils.data.Dataset):
    """One split's labelled utterances as token ids, made by the extractor's ``encoder.load``; items are
    indices and ``collate`` builds the batch (``encoder.collate`` + ``label`` or ``score``/``label_mask``)."""

    def __init__(self, encoder: Encoder, items: list[Any], targets: list[Any], task: str) -> None:
        from pipeline.extract import modality_input

        self.encoder, self.task = encoder, task
        self.ids = [encoder.load(modality_input(it, "text")) for it in items]  # what extract tokenizes
        self.utterance_ids = [it.utterance_id for it in items]
        if task == "regression":
            self.score = torch.tensor([float(t) for t in targets], dtype=torch.float32)
        else:
            self.label = torch.tensor([int(t) for t in targets], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = dict(self.encoder.collate([self.ids[i] for i in indices]))
        rows = torch.as_tensor(indices, dtype=torch.long)
        if self.task == "regression":
            batch["score"] = self.score[rows]
            batch["label_mask"] = torch.ones(len(indices), dtype=torch.bool)
        else:
            batch["label"] = self.label[rows]
        return batch


def read_records(corpus: str, root: str | Path | None) -> Any:
    """The corpus' ``CorpusData`` through its catalog entry (the same reader ``features`` uses)."""
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus

    entry = corpus_entry(corpus, root)
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = corpus
    data.root = str(entry.root)  # for the run's reports
    return data


def text_splits(data: Any, encoder: Encoder, *, label_set: str = "primary",
                max_samples: int | None = None) -> RunData:
    """Train / dev / test ``TextSplit``s of the labelled utterances with text (the readers already skip
    empty transcripts); unlabelled utterances stay in the dialogue history."""
    from pipeline.extract import encoder_inputs

    if "text" not in data.modalities:
        raise ConfigError(f"corpus {data.name!r} has no text modality (it has {list(data.modalities)}); "
                          f"nothing to fine-tune a text encoder on")
    task = data.task
    if task == "classification" and label_set not in data.label_sets:
        raise ConfigError(f"label_set {label_set!r} is not a label set of corpus {data.name!r}: "
                          f"{sorted(data.label_sets)}")
    label_names = list(data.label_sets[label_set]) if task == "classification" else []
    items = {it.utterance_id: it for it in encoder_inputs(data.records)}
    splits: dict[str, TextSplit] = {}
    for split in ("train", "dev", "test"):
        chosen, targets = [], []
        for r in data.split(split):
            if task == "regression":
                target = r.score
                ok = target is not None and np.isfinite(target)
            else:
                target = r.label if label_set == "primary" else r.extra_labels.get(label_set)
                ok = target is not None and int(target) >= 0
            if ok and (r.text or "").strip():
                chosen.append(items[r.utterance_id])
                targets.append(target)
        if max_samples:
            chosen, targets = chosen[:max_samples], targets[:max_samples]
        if not chosen:
            raise ConfigError(f"corpus {data.name!r}: split {split!r} has no labelled utterance with text")
        splits[split] = TextSplit(encoder, chosen, targets, task)
    return RunData(splits=splits, input_dims={"text": int(encoder.dim)}, num_classes=max(1, len(label_names)),
                   label_names=label_names, task=task)


def corpus_source(info: dict[str, Any], data: Any = None) -> Cache:
    """A fine-tuning run's data source in the shape the trainer's reports read (``Cache`` with no dataset):
    the corpus name, root, task, label sets and records fingerprint."""
    from pipeline.extract import records_fingerprint

    meta = {"source": "corpus", "corpus": info["corpus"], "root": info["root"], "columns": {},
            "task": info.get("task", "classification"), "label_sets": info.get("label_sets", {})}
    if data is not None:
        meta.update(task=data.task, label_sets=data.label_sets, records_fingerprint=records_fingerprint(data.records))
    else:
        meta["records_fingerprint"] = info.get("records_fingerprint")
    return Cache(path=Path(info["root"]), dataset=None, meta=meta)


# ----------------------------------------------------------------------------------------- encoder
def build_text_encoder(name: str, profile: str, settings: dict[str, Any] | None = None) -> Encoder:
    """Encoder ``name`` of ``profile`` with ``settings`` over the profile's arguments (``init_kwargs`` kept)."""
    from pipeline.extract import ExtractSettings, build_encoder

    import extractors  # noqa: F401
    from extractors.base import ENCODERS

    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    cls = ENCODERS.get(name)
    if cls.modality != "text" or not hasattr(cls, "pooled"):
        raise ConfigError(f"encoder {name!r} reads {cls.modality or 'no'} input: `finetune` trains text encoders "
                          f"(roberta, roberta-context); TelME's audio / video students are separate stages")
    return build_encoder(name, ExtractSettings(encoders=[name], profile=profile,
                                               encoder_overrides={name: dict(settings or {})}))


def finetuned_encoder_kwargs(run_dir: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(encoder name, constructor kwargs pointing at ``<run>/encoder``, finetune.json) of a fine-tuning run."""
    run_dir = Path(run_dir)
    info_file = run_dir / INFO_FILE
    if not info_file.is_file():
        seeds = sorted(p.name for p in run_dir.glob("seed-*") if (p / INFO_FILE).is_file())
        hint = f"; pick one seed: {', '.join(str(run_dir / s) for s in seeds)}" if seeds else ""
        raise ConfigError(f"{info_file} not found: {run_dir} is not a finished fine-tuning run{hint}")
    info = json.loads(info_file.read_text())
    if not (run_dir / ENCODER_DIR / "config.json").is_file():
        raise ConfigError(f"{run_dir / ENCODER_DIR}: no Hugging Face model dir (config.json) in the fine-tuning run")
    kwargs = dict(info["kwargs"])
    kwargs["weights"] = str((run_dir / ENCODER_DIR).resolve())
    return info["encoder"], kwargs, info


def export_finetuned(run_dir: Path, method: EncoderClassifier, *, encoder_name: str, profile: str,
                     kwargs: dict[str, Any], data: RunData, corpus: str) -> dict[str, Any]:
    """Write ``encoder/`` (HF model dir + tokenizer), ``head.safetensors`` and ``finetune.json``."""
    from safetensors.torch import save_file

    from extractors.profiles import dir_identity

    out = run_dir / ENCODER_DIR
    tmp = run_dir / (ENCODER_DIR + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    backbone = method.backbone
    if getattr(backbone, "is_gradient_checkpointing", False):
        backbone.gradient_checkpointing_disable()
    backbone.save_pretrained(str(tmp), safe_serialization=True)
    method.encoder.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    save_file({k: v.detach().cpu().contiguous() for k, v in method.head.state_dict().items()}, str(run_dir / HEAD_FILE))
    info = {"format": 1, "encoder": encoder_name, "modality": method.encoder.modality, "profile": profile,
            "kwargs": kwargs, "column_tag": DEFAULT_TAG, "encoder_content": dir_identity(out),
            "base_weights": kwargs.get("weights"), "task": data.task, "label_names": data.label_names,
            "corpus": corpus, "dim": int(method.encoder.dim), "head_hidden": int(method.head.proj.out_features)}
    (run_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


# --------------------------------------------------------------------------------------------- run
def finetune(config: dict[str, Any], data: Any, out_dir: str | Path, seed: int, *, profile: str = "offline",
             resume: bool = False, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``config["encoder"]`` on ``data`` (a ``CorpusData``) into ``out_dir``; returns the metrics."""
    from pipeline.config import validate_config, with_defaults
    from pipeline.train import Trainer

    config = with_defaults(config)
    validate_config(config)
    block = dict(config.get("encoder") or {})
    name = block.get("name")
    if not name:
        raise ConfigError("fine-tuning config has no `encoder.name`")
    unknown = sorted(set(block) - {"name", "settings", "max_samples"})
    if unknown:
        raise ConfigError(f"unknown key(s) encoder.{', encoder.'.join(unknown)}; known: name, settings, max_samples")
    encoder = build_text_encoder(name, profile, block.get("settings"))
    run_data = text_splits(data, encoder, label_set=config["label_set"], max_samples=block.get("max_samples"))
    info = {"corpus": data.name, "root": str(getattr(data, "root", "") or "")}
    info.update(run_info or {})
    source = corpus_source(info, data)
    model_kwargs = dict(config["model"])

    def build(rd: RunData) -> Method:
        try:
            return EncoderClassifier(encoder=encoder, num_classes=rd.num_classes, task=rd.task, **model_kwargs)
        except TypeError as e:
            raise ConfigError(f"fine-tuning config `model:`: {e}") from None

    trainer = Trainer(config=config, cache=source, out_dir=Path(out_dir), seed=seed, resume=resume,
                      run_info=info, data=run_data, build=build)
    result = trainer.run()  # ends with the process group torn down: no collective after this
    if trainer.accelerator.is_main_process:  # trainer.method holds the best-dev weights, unwrapped
        export_finetuned(Path(out_dir), trainer.method, encoder_name=name, profile=profile,
                         kwargs=dict(encoder.init_kwargs), data=run_data, corpus=data.name)
    return result


def load_finetune_config(encoder: str, corpus: str | None, config_path: str | None = None,
                         overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``configs/finetune/<encoder>/{base,<corpus>}.yaml`` < ``--config`` < ``--set``."""
    method = f"finetune/{encoder}"
    if not (configs_dir() / method / "base.yaml").exists() and config_path is None:
        known = sorted(p.name for p in (configs_dir() / "finetune").iterdir() if (p / "base.yaml").exists())
        raise ConfigError(f"no fine-tuning config for encoder {encoder!r} ({configs_dir() / method / 'base.yaml'}); "
                          f"configured: {', '.join(known)}")
    config = load_config(method, corpus, config_path, overrides)
    if (config.get("encoder") or {}).get("name") != encoder:
        raise ConfigError(f"{method}: `encoder.name` is {(config.get('encoder') or {}).get('name')!r}, "
                          f"not {encoder!r}")
    return config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline finetune",
                                description="Fine-tune a text encoder on a corpus (then: features --finetuned RUN).")
    p.add_argument("--encoder", default="roberta-context", help="text encoder of the registry (default roberta-context)")
    p.add_argument("--corpus", help="corpus from configs/corpora.yaml (default: the config's default_corpus)")
    p.add_argument("--root", help="corpus root on disk (default: the catalog's root)")
    p.add_argument("--profile", default="offline", help="encoder profile whose weights start the fine-tuning "
                                                         "(offline | paper; default offline)")
    p.add_argument("--config", help="extra YAML merged over configs/finetune/<encoder>/{base,<corpus>}.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set stages.finetune.lr=1e-5 --set encoder.settings.max_turns=8")
    p.add_argument("--seeds", type=int, nargs="+", help="one sub-run per seed (default: train.seed)")
    p.add_argument("--out", default="runs", help="parent folder of run dirs")
    p.add_argument("--name", help="run dir name (default: ft-<encoder>-<corpus>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted fine-tuning run")
    return p


def finetune_launchers() -> tuple[Any, Any]:
    """``launch_run``'s ``new_run`` and ``run_one`` for ``finetune``, sharing the corpus read once per call
    (a later call reads it again: the corpus on disk may have changed)."""
    datas: dict[tuple[str, str], Any] = {}  # (corpus, root) -> CorpusData

    def new_run(a: argparse.Namespace, argv: Sequence[str]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        from accelerate.utils import broadcast_object_list

        corpus = a.corpus or load_finetune_config(a.encoder, None, a.config).get("default_corpus")
        if not corpus:
            raise ConfigError("give --corpus (the fine-tuning config has no default_corpus)")
        yaml_corpus = corpus if (configs_dir() / f"finetune/{a.encoder}/{corpus}.yaml").exists() else None
        config = load_finetune_config(a.encoder, yaml_corpus, a.config, a.overrides)
        name = [a.name or f"ft-{a.encoder}-{corpus}-{time.strftime('%Y%m%d-%H%M%S')}"]
        broadcast_object_list(name)
        data = read_records(corpus, a.root)
        datas[(corpus, str(data.root))] = data
        info = {"command": "python -m pipeline finetune " + shlex.join(argv), "argv": list(sys.argv),
                "method": f"finetune/{a.encoder}", "encoder": a.encoder, "profile": a.profile, "corpus": corpus,
                "root": str(data.root), "task": data.task, "label_sets": data.label_sets,
                "config_files": [str(f) for f in config_files(f"finetune/{a.encoder}", yaml_corpus, a.config)],
                "overrides": list(a.overrides), "seeds": list(a.seeds or [int(config["train"]["seed"])])}
        return Path(a.out) / name[0], config, info

    def run_one(config: dict[str, Any], out: Path, seed: int, resume: bool, info: dict[str, Any]) -> dict[str, Any]:
        key = (info["corpus"], info["root"])
        if key not in datas:
            datas[key] = read_records(info["corpus"], info["root"])
        return finetune(config, datas[key], out, seed, profile=info["profile"], resume=resume, run_info=info)

    return new_run, run_one


def cli(argv: Sequence[str]) -> int:
    """``python -m pipeline finetune``: the arguments of :func:`pipeline.api.finetune_encoder`."""
    from pipeline.api import finetune_encoder

    a = _parser().parse_args(list(argv))
    finetune_encoder(a.encoder, a.corpus, root=a.root, profile=a.profile, config=a.config, overrides=a.overrides,
                     seeds=a.seeds, out=a.out, name=a.name, resume=a.resume, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
