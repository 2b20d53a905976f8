"""Building blocks shared by several methods: distillation losses and small MLPs.

* ``dist_response_loss``: DIST-style response (logit) distillation, Pearson correlation between
  softened class distributions across classes (inter) and across the batch (intra).
  TelME slides eq. (4); DIST (Huang et al., NeurIPS 2022) introduced the loss.
* ``similarity_kl_loss``: feature distillation by matching batch similarity distributions,
  KL(softmax(T T^T / T_f) || softmax(T S^T / T_f)), rows indexed by the teacher sample
  (TelME slides, L_feature under eq. (4)).
* ``mlp``: Linear -> activation -> Dropout -> Linear.

The losses are unweighted; methods multiply them by their configured weights.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PEARSON_EPS = 1e-8


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = PEARSON_EPS) -> torch.Tensor:
    """rho(u, v) = <u - mean u, v - mean v> / (||u - mean u|| ||v - mean v|| + eps) along ``dim``."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    num = (a * b).sum(dim=dim)
    den = a.norm(dim=dim) * b.norm(dim=dim) + eps
    return num / den


def dist_response_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
                       inter_weight: float = 1.0, intra_weight: float = 1.0) -> torch.Tensor:
    """L_response = L_inter + L_intra of TelME eq. (4) for [B, C] logits.

    Y = softmax(Z / tau) row-wise; d(u, v) = 1 - rho(u, v);
    L_inter = tau^2 / B * sum_i d(Y^s_{i,:}, Y^t_{i,:}) (per-sample class profiles),
    L_intra = tau^2 / C * sum_j d(Y^s_{:,j}, Y^t_{:,j}) (per-class profiles over the batch).
    The result lies in [0, 2 tau^2 (inter_weight + intra_weight)].
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"response loss needs two [B, C] logit matrices of the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    with full_precision(student_logits):
        y_s = torch.softmax(_wide(student_logits) / tau, dim=1)
        y_t = torch.softmax(_wide(teacher_logits) / tau, dim=1)
        inter = tau ** 2 * (1.0 - pearson_correlation(y_s, y_t, dim=1)).mean()  # eq. (4), L_inter
        intra = tau ** 2 * (1.0 - pearson_correlation(y_s, y_t, dim=0)).mean()  # eq. (4), L_intra
        return inter_weight * inter + intra_weight * intra


def similarity_kl_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, temp: float = 1.0) -> torch.Tensor:
    """L_feature = 1/B sum_i KL(P_i || Q_i) (TelME, under eq. (4)).

    Rows are L2-normalised: T (teacher), S (student). M = T T^T, M' = T S^T (rows indexed by the teacher
    sample); P_i = softmax_j(M_ij / temp), Q_i = softmax_j(M'_ij / temp). Asymmetric in its arguments.
    """
    if student_feat.dim() != 2 or teacher_feat.dim() != 2 or student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"feature loss needs two [B, d] matrices with the same B, got "
                         f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
    with full_precision(student_feat):
        t = F.normalize(_wide(teacher_feat), p=2, dim=1)
        s = F.normalize(_wide(student_feat), p=2, dim=1)
        log_p = torch.log_softmax(t @ t.T / temp, dim=1)
        log_q = torch.log_softmax(t @ s.T / temp, dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def full_precision(like: torch.Tensor) -> Any:
    """Autocast off for a loss: under bf16 / fp16 mixed precision the distillation terms are computed in
    float32 (a KL of nearly equal bf16 distributions comes out negative; correlations lose digits)."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 for half / bfloat16 tensors; float32 and float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0,
        activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """Linear(in, hidden) -> activation -> Dropout -> Linear(hidden, out)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), activation(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, out_dim))


class ProjectionHead(nn.Module):
    """h = act(Linear(Dropout(x))), z = Linear(h): a feature projection and a classifier on top.

    TelME's teacher head (spec 2.2: h_T = W_T F_T + b, z_T = U_T h_T + c; ``proj`` = W_T, ``head`` = U_T) and
    the head of a fine-tuned encoder (``pipeline/finetune.py``) are this module, so a fine-tuned head's
    weights load into TelME's teacher group unchanged."""

    def __init__(self, *, in_dim: int, hidden: int, num_classes: int, dropout: float, use_mlp: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, hidden)
        self.act: nn.Module = nn.GELU() if use_mlp else nn.Identity()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.proj(self.dropout(x)))
        return h, self.head(h)
