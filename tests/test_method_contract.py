"""One contract test over every registered method (``models.METHODS``), on CPU with tiny sizes.

Each method is built from the ``model:`` block of ``configs/<name>/base.yaml`` with its widths shrunk
(every integer >= 32 becomes ``TINY_WIDTH``, a number divisible by common head counts), then for every
stage it declares: forward + backward on a tiny random batch of its GRANULARITY, finite named losses,
output shape, and gradients only in the stage's parameter groups (frozen groups are put in eval mode, as
the trainer does; the method itself must keep them out of the graph).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

import models
from models.base import Method, MethodOutput, build_method

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_WIDTH = 24
NUM_CLASSES = 3
B, L = 4, 3


def _shrink(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 32:
        return TINY_WIDTH
    return value


def _input_dims(roles: tuple[str, ...]) -> dict[str, int]:
    return {role: 5 + i for i, role in enumerate(roles)}  # distinct sizes catch swapped roles


def _tiny_method(name: str) -> Method:
    cfg_file = CONFIGS / name / "base.yaml"
    assert cfg_file.exists(), f"method {name!r} is registered but has no {cfg_file}"
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    model_kwargs = {k: _shrink(v) for k, v in (cfg.get("model") or {}).items()}
    cls = models.METHODS.get(name)
    input_dims = _input_dims(cls.ROLES)
    num_classes = NUM_CLASSES if "classification" in cls.TASKS else 1
    return build_method(name, input_dims=input_dims, num_classes=num_classes, **model_kwargs)


def _utterance_batch(dims: dict[str, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    batch = {role: torch.randn(B, dim, generator=gen) for role, dim in dims.items()}
    batch["label"] = torch.tensor([0, 1, 2, 1])
    batch["score"] = torch.randn(B, generator=gen)
    batch["label_mask"] = torch.ones(B, dtype=torch.bool)
    return batch


def _dialogue_batch(dims: dict[str, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 2:] = False
    mask[3, 1:] = False
    batch = {role: torch.randn(B, L, dim, generator=gen) * mask.unsqueeze(-1)
             for role, dim in dims.items()}
    batch["mask"] = mask
    batch["speaker"] = torch.randint(0, 2, (B, L), generator=gen) * mask
    batch["label"] = torch.randint(0, NUM_CLASSES, (B, L), generator=gen).masked_fill(~mask, -100)
    batch["score"] = torch.randn(B, L, generator=gen) * mask
    batch["label_mask"] = mask.clone()
    return batch


def _sequence_batch(dims: dict[str, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    # Assumed layout (keep in step with pipeline/collate.py): <role> [B, T, D] + <role>_mask [B, T] (True = real).
    batch: dict[str, torch.Tensor] = {}
    for i, (role, dim) in enumerate(dims.items()):
        t = 4 + i
        m = torch.ones(B, t, dtype=torch.bool)
        m[0, t - 2:] = False
        batch[role] = torch.randn(B, t, dim, generator=gen) * m.unsqueeze(-1)
        batch[f"{role}_mask"] = m
    batch["label"] = torch.tensor([0, 1, 2, 1])
    batch["score"] = torch.randn(B, generator=gen)
    batch["label_mask"] = torch.ones(B, dtype=torch.bool)
    return batch


BATCH_BUILDERS: dict[str, Callable[[dict[str, int], torch.Generator], dict[str, torch.Tensor]]] = {
    "utterance": _utterance_batch, "dialogue": _dialogue_batch, "sequence": _sequence_batch}


def _expected_lead_shape(method: Method) -> tuple[int, ...]:
    return (B, L) if method.GRANULARITY == "dialogue" else (B,)


@pytest.mark.parametrize("name", models.METHODS.names())
def test_method_contract(name: str) -> None:
    torch.manual_seed(0)
    method = _tiny_method(name)
    assert method.GRANULARITY in BATCH_BUILDERS, (
        f"{name}: no test batch builder for granularity {method.GRANULARITY!r}; add one to BATCH_BUILDERS")
    batch = BATCH_BUILDERS[method.GRANULARITY](_input_dims(method.ROLES), torch.Generator().manual_seed(1))

    groups = method.param_groups_all()
    grouped = {id(p) for g in groups.values() for p in g.parameters()}
    ungrouped = [n for n, p in method.named_parameters() if id(p) not in grouped]
    assert not ungrouped, f"{name}: parameters in no group (never trained): {ungrouped[:5]}"
    stages = method.stages()
    assert stages, f"{name}: declares no stage"

    for stage in stages:
        unknown = set(stage.groups) - set(groups)
        assert not unknown, f"{name}/{stage.name}: unknown groups {unknown}"
        method.zero_grad(set_to_none=True)
        method.train()
        for g, module in groups.items():  # the trainer puts frozen groups in eval mode
            if g not in stage.groups:
                module.eval()
        out = method(batch, stage=stage.name)
        assert isinstance(out, MethodOutput)
        assert out.losses, f"{name}/{stage.name}: no loss terms"
        for term, value in out.losses.items():
            assert value.dim() == 0 and torch.isfinite(value), f"{name}/{stage.name}: loss {term!r} = {value}"
        if "classification" in method.TASKS:
            assert out.logits is not None
            assert tuple(out.logits.shape) == (*_expected_lead_shape(method), NUM_CLASSES)
            assert torch.isfinite(out.logits).all()
        else:
            assert out.preds is not None and tuple(out.preds.shape) == _expected_lead_shape(method)
        sum(out.losses.values()).backward()

        trained = {id(p) for g in stage.groups for p in groups[g].parameters()}
        for g in stage.groups:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[g].parameters()), (
                f"{name}/{stage.name}: group {g!r} got no gradient")
        for pname, p in method.named_parameters():
            if id(p) not in trained:
                assert p.grad is None or not p.grad.any(), (
                    f"{name}/{stage.name}: frozen parameter {pname} received a gradient")
            elif p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"{name}/{stage.name}: non-finite gradient in {pname}"
