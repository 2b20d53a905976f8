"""A tiny two-stage test-only method ("probe") and a builder for small caches with a planted signal.

Stage "unimodal" trains a text head; stage "fusion" trains a fusion head over the (frozen) text
head's hidden layer plus audio. "probe-dialogue" is the same per utterance on dialogue batches, with
a masked dialogue-mean context. Not registered in ``models/``: tests import this file (or pass it
as ``--plugin tests/_probe_method.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.base import Method, MethodOutput, Stage, register_method

LABELS = ["neutral", "joy", "anger"]
# (stage, text encoder in train mode, fusion head in train mode) of every training forward pass
MODES: list[tuple[str, bool, bool]] = []


@register_method("probe")
class ProbeMethod(Method):
    """Text MLP head (stage "unimodal"), then a linear fusion head over text hidden + audio ("fusion")."""

    ROLES = ("text", "audio")
    GRANULARITY = "utterance"
    TASKS = ("classification", "regression")

    def __init__(self, *, input_dims: dict[str, int], num_classes: int, hidden: int = 16,
                 dropout: float = 0.1, align_weight: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.align_weight = align_weight
        self.text_encoder = nn.Sequential(nn.Linear(input_dims["text"], hidden), nn.ReLU(), nn.Dropout(dropout))
        self.text_out = nn.Linear(hidden, num_classes)
        self.fusion = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + input_dims.get("audio", 0), num_classes))

    def param_groups_all(self) -> dict[str, nn.Module]:
        return {"text": nn.ModuleList([self.text_encoder, self.text_out]), "fusion": self.fusion}

    def stages(self) -> list[Stage]:
        return [Stage("unimodal", ("text",)), Stage("fusion", ("fusion",))]

    def _task_loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.num_classes == 1:
            mask = batch["label_mask"]
            return F.mse_loss(out.squeeze(-1)[mask], batch["score"][mask])
        return F.cross_entropy(out.reshape(-1, self.num_classes), batch["label"].reshape(-1), ignore_index=-100)

    def _features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(batch["text"]), batch.get("audio", batch["text"][..., :0])

    def forward(self, batch: dict[str, torch.Tensor], stage: str) -> MethodOutput:
        if torch.is_grad_enabled():
            MODES.append((stage, self.text_encoder.training, self.fusion.training))
        hidden, audio = self._features(batch)
        text_out = self.text_out(hidden)
        if stage == "unimodal":
            out, losses = text_out, {"ce": self._task_loss(text_out, batch)}
        else:
            out = self.fusion(torch.cat([hidden, audio], dim=-1))
            align = F.mse_loss(out, text_out.detach())
            losses = {"ce": self._task_loss(out, batch), "align": self.align_weight * align}
        if self.num_classes == 1:
            return MethodOutput(preds=out.squeeze(-1), losses=losses, extras={"text_logits": text_out.squeeze(-1)})
        return MethodOutput(logits=out, losses=losses, extras={"text_logits": text_out})


@register_method("probe-dialogue")
class ProbeDialogueMethod(ProbeMethod):
    """The probe on dialogue batches: each turn's text hidden plus the masked mean of its dialogue."""

    GRANULARITY = "dialogue"

    def _features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, audio = super()._features(batch)
        mask = batch["mask"].unsqueeze(-1).float()
        context = (hidden * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        return hidden + 0.1 * context, audio


def make_probe_cache(path: str | Path, *, task: str = "classification", sizes: tuple[int, int, int] = (96, 48, 48),
                     text_dim: int = 8, audio_dim: int = 4, dialogue_len: int = 4, seed: int = 0,
                     seq: bool = False) -> Any:
    """Write a small cache whose text features carry the label (class mean + noise; regression:
    the score along one direction) and whose audio features carry a weaker copy. Row 1 of every
    split has its audio marked missing; row 2 of train is unlabelled."""
    import datasets

    from pipeline.cache import save_cache

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, size=(len(LABELS), text_dim))
    splits = {}
    for split, n in zip(("train", "dev", "test"), sizes):
        if task == "regression":
            score = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
            text = np.outer(score, np.ones(text_dim) / 2) + rng.normal(0, 0.3, size=(n, text_dim))
            label = np.full(n, -1)
        else:
            label = rng.integers(0, len(LABELS), size=n)
            score = np.full(n, np.nan, dtype=np.float32)
            text = centers[label] + rng.normal(0, 0.7, size=(n, text_dim))
        audio = 0.5 * text[:, :audio_dim] + rng.normal(0, 1.0, size=(n, audio_dim))
        missing = np.zeros(n, dtype=bool)
        missing[1] = True
        audio[missing] = 0.0
        if split == "train" and task != "regression":
            label[2] = -1
        cols: dict[str, Any] = {
            "utterance_id": [f"{split}_{i}" for i in range(n)],
            "dialogue_id": [f"{split}_d{i // dialogue_len}" for i in range(n)],
            "position": [i % dialogue_len for i in range(n)],
            "speaker": [["A", "B", "A", "C"][i % 4] for i in range(n)],
            "text": [f"utterance {i}" for i in range(n)],
            "split": [split] * n,
            "label": label.astype(np.int64).tolist(),
            "label_name": [LABELS[x] if x >= 0 else "" for x in label],
            "score": score.tolist(),
            "label.binary": [int(x > 0) if x >= 0 else -1 for x in label],
            "text.probe": text.astype(np.float32).tolist(),
            "audio.probe": audio.astype(np.float32).tolist(),
            "audio.probe.missing": missing.tolist(),
        }
        if seq:
            lengths = rng.integers(1, 6, size=n)
            cols["text.probe.seq"] = [np.repeat(text[i:i + 1], lengths[i], 0).astype(np.float32).tolist()
                                      for i in range(n)]
            cols["text.probe.seq_len"] = lengths.astype(np.int32).tolist()
        splits[split] = datasets.Dataset.from_dict(cols)
    meta = {
        "corpus": "probe-corpus",
        "task": task,
        "label_sets": {"primary": LABELS if task == "classification" else [], "binary": ["no", "yes"]},
        "modalities": ["text", "audio"],
        "records_fingerprint": f"probe-{task}-{seed}",
        "columns": {
            "text.probe": {"dim": text_dim, "fingerprint": "t0", "random_weights": False, "seq_dim": text_dim},
            "audio.probe": {"dim": audio_dim, "fingerprint": "a0", "random_weights": True},
        },
    }
    return save_cache(path, datasets.DatasetDict(splits), meta)


def probe_config(**train: Any) -> dict[str, Any]:
    """A small config for the probe (a dict, as `load_config` would return it)."""
    return {
        "method": "probe",
        "features": {"text": "text.probe", "audio": "audio.probe"},
        "label_set": "primary",
        "model": {"hidden": 16, "dropout": 0.1},
        "stages": {"unimodal": {"epochs": 3, "lr": 0.02, "batch_size": 16},
                   "fusion": {"epochs": 3, "lr": 0.05, "batch_size": 16}},
        "train": {"seed": 0, "eval_batch_size": 16, "warmup": 0.1, **train},
    }
