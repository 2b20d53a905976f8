"""The one method contract. A method is one file in ``models/`` that registers itself.

The trainer (``pipeline/train.py``) only ever talks to this interface:

* ``build_method(name, input_dims=..., num_classes=..., **model_kwargs)`` builds it; the keyword
  arguments come from the YAML ``model:`` block and are bound to the constructor's signature.
* ``method.stages()`` lists the training stages in order (TelME: teacher -> audio/visual students ->
  fusion). Each stage names the parameter groups it trains (``method.param_groups(stage)``); all
  others are frozen and put in eval mode by the trainer.
* ``method(batch, stage=...)`` returns a ``MethodOutput``: ``logits`` (or regression ``preds``)
  aligned with ``batch["label"]`` and named loss terms; the trainer sums ``losses`` with weight 1
  (weights live inside the method, from its config), backpropagates and logs every term.

Batches (built by ``pipeline/collate.py``) are dicts of tensors keyed by feature *role*
(``"text"``, ``"audio"``, ``"video"``, the roles a method declares in ``ROLES``), plus
``"label"`` (long, -100 = padding / ignore) or for regression ``"score"`` (float, with
``"label_mask"``), and for dialogue batches ``"mask"`` [B, L] (bool, True = real utterance) and
``"speaker"`` [B, L] (long). Utterance batches are [B, D]; dialogue batches [B, L, D].
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pipeline.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")
register_method = METHODS.register
# Batch key of the decoded-input batches (``pipeline.collate``): an int64 id per row, unique to one split
# dataset object, so a method may remember what a FROZEN encoder computed for a row (TelME's fusion stage).
ROW_UID = "row_uid"


@dataclass
class Stage:
    """One training stage. ``groups`` are names from ``Method.param_groups``; hyperparameters
    (epochs, lr, batch size) come from the YAML ``stages:`` block by stage name."""

    name: str
    groups: tuple[str, ...]
    eval_head: str = "logits"  # which output the trainer scores for model selection in this stage
    modality: str | None = None  # the one role this stage's head reads (a unimodal head); None = fused


@dataclass
class MethodOutput:
    logits: torch.Tensor | None = None  # [N, C] or [B, L, C]
    preds: torch.Tensor | None = None  # regression: [N] or [B, L]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. gates, lambdas for --explain


class Method(nn.Module):
    """Base class. Subclasses set ``ROLES`` (the feature roles they read), ``GRANULARITY``
    ("utterance" | "dialogue" | "sequence") and ``TASKS`` (subset of {"classification", "regression"})."""

    ROLES: tuple[str, ...] = ("text", "audio", "video")
    GRANULARITY: str = "utterance"
    TASKS: tuple[str, ...] = ("classification",)

    @classmethod
    def roles_needed(cls, model_config: dict[str, Any]) -> set[str] | None:
        """The feature roles a run with this ``model:`` config reads; ``None`` = every role of ``features:``.
        A subset run (``model.modalities: [text]``) reads only its own columns, so a text-only corpus
        (a cache without audio / video columns) trains it."""
        modalities = model_config.get("modalities")
        return None if modalities is None else set(modalities)

    @classmethod
    def input_roles(cls, model_config: dict[str, Any]) -> set[str]:
        """Roles this ``model:`` config trains an ENCODER for: the batch then carries that encoder's inputs
        (``<role>.<key>`` tensors from the cache's decoded inputs, ``pipeline/inputs.py``) instead of a cached
        feature vector, and the constructor gets ``encoders={role: Encoder}``. Default: none (cached features)."""
        return set()

    def stages(self) -> list[Stage]:
        return [Stage("main", tuple(self.param_groups_all()))]

    def param_groups_all(self) -> dict[str, nn.Module]:
        """Named parameter groups: name -> module. Override to split a model into trainable parts."""
        return {"all": self}

    def param_groups(self, stage: Stage) -> list[nn.Parameter]:
        groups = self.param_groups_all()
        params: list[nn.Parameter] = []
        for g in stage.groups:
            if g not in groups:
                raise KeyError(f"stage {stage.name!r} names unknown parameter group {g!r}; known: {sorted(groups)}")
            params += list(groups[g].parameters())
        return params

    def forward(self, batch: dict[str, torch.Tensor], stage: str) -> MethodOutput:  # pragma: no cover
        raise NotImplementedError


def build_method(name: str, **kwargs: Any) -> Method:
    """Create a registered method, binding ``kwargs`` to its constructor (a misspelt key fails here)."""
    import models  # noqa: F401  (registers the methods)

    cls = METHODS.get(name)
    sig = inspect.signature(cls.__init__)
    try:
        sig.bind(None, **kwargs)
    except TypeError as e:
        raise TypeError(f"method {name!r}: bad config keys: {e}") from None
    return cls(**kwargs)
