"""DMD: Decoupled Multimodal Distilling for Emotion Recognition.

Paper: Yong Li, Yuanzhi Wang, Zhen Cui, "Decoupled Multimodal Distilling for Emotion Recognition",
CVPR 2023, arXiv 2303.13802. Sources: the project spec ``shared/methods/dmd.md`` and the authors'
released code (GitHub ``mdswyz/DMD`` @ 516d4e1: ``trains/singleTask/model/dmd.py``, ``DMD.py``,
``distillnets/*``, ``HingeLoss.py``), read for understanding; this file is our own code. The paper's
full text was not reachable, so the code is the reference; equation numbers are not cited for that
reason, the spec's sections are (``spec §x``).

What the method does: each modality (order L, V, A everywhere) is projected by a temporal Conv1d,
split into a homogeneous part (one encoder shared by all modalities) and a heterogeneous part (one
private encoder per modality) that a decoder must rebuild the projection from. A graph distillation
unit (GD-Unit) in each space learns per-sample weights of the 6 directed "teacher -> student" edges
between modalities and weights an L1 imitation loss between the per-modality predictions. A fusion
head regresses / classifies from the fused homogeneous vector and the three heterogeneous vectors.

Choices (where we differ from the released code, and why):

* **Inputs are cached frozen sequence features** (``text.roberta``, ``audio.opensmile``,
  ``video.densenet``), not a fine-tuned BERT; dims come from ``input_dims``.
* **Padding.** The released code feeds zero-padded fixed-length (50) sequences without masks. Its
  heads are ``Linear(T' d -> ...)`` on the flattened sequence, so a fixed length is still needed: every
  modality is cut / zero-padded to ``seq_len`` steps inside the model (keep it equal to the trainer's
  ``max_len``). Unlike the code, padding never reaches a result: padded input steps are zeroed
  (garbage and NaN included), conv outputs whose window runs into the padding are zeroed (an item
  shorter than the kernel keeps one output, computed over zeros), attention never attends to padded
  keys, the "last step" pooled by the transformers is the last *real* step (the code takes step
  ``T'-1`` of the padded sequence), MulT's causal mask is computed from each item's real lengths (so
  that last real step still sees every real key), the positional encoding is zero on padded steps
  (the code's rule is "first channel == 0"), and every loss over time steps is a masked mean.
* **Orthogonality loss** (spec §3.1): the code's ``CosineEmbeddingLoss`` on ``(T', B, d)`` tensors takes
  the cosine across the *batch* axis under PyTorch 1.9 and is rejected by newer PyTorch. Default
  ``ort_mode="per_sample"`` does what the paper means (cosine of each sample's ``vec(s_m)`` and
  ``vec(c_m)``, hinge at 0); ``"batch_axis_legacy"`` reproduces the old numbers.
* **Classification** (UR-FUNNY, MUStARD; spec dhmd.md §2.4): every head outputs ``num_classes``
  logits, task terms are cross-entropy, GD vertex logits are C-dimensional and the GD distance is the
  L1 distance summed over the logits, and the margin loss takes the class index as label (margin
  0.15 per class of difference). ``num_classes == 1`` is regression with L1 on ``score``. Items
  without a label (``label`` -100, ``label_mask`` False or a NaN score) are left out of the task
  and margin terms; a batch without labels gets no such terms (inference).
* ``input_standardize`` (our addition, on in our configs): per-feature z-scoring of the input
  frames with running statistics over real steps. The code's MMSA features are small-scaled; raw
  openSMILE frames are not, and L_rec / L_cyc scale with the square of the input, so without it they
  swamp the task loss (tens of thousands on the demo corpus).
* The projection conv is always applied (the code skips it when the input dim equals ``d``); the
  1x1 convolutions are written as bias-free ``Linear`` layers (same maps); the unused ``proj_cosine``
  layers are left out, and so is HomoGD's repr term, which the code computes but never adds (it is
  available as ``REPR_DISTANCES["l1"]``). As in the code, W_edge's bias is shared by the 6 edges, so
  their softmax cancels it (it never gets a gradient).
* **A subset of the modalities** (our addition; the paper always has L, V and A). The modalities are the
  roles of ``input_dims``, i.e. of the config's ``features:``, or the roles listed in ``modalities``. A
  single-modality run is the same config with one role: ``--set 'features={audio: audio.opensmile}'`` (only
  that column is loaded) or ``--set model.modalities=[audio]`` (``make train METHOD=dmd
  SET="model.modalities=[audio]"``). Every per-modality module exists for those roles only, in the order
  L, V, A. The heterogeneous branch of m attends to the other present modalities
  (width d per source: 2d with three, d with two); a lone modality has no source, so its memory
  transformer reads s_m itself (width d). The common vector g is M d wide and the fusion input F has one
  f_m per present modality (9d with three). The GD-Units keep the edges among the present modalities
  (two with two modalities; the softmax and the prior, the softmax of those edges' prior logits, run over
  them); with one modality there is no graph: no GD-Unit, no GD term, no ``edges_*`` extras, and the stage
  is marked as that modality's (``Stage.modality``), and the margin loss finds positives only among other
  samples with an equal label. With all three roles the model is exactly the three-modality one (same
  modules, same initialisation order, same outputs; tested against the previous implementation).
* Not in the model (trainer / config matters): the code's 10-batch summed gradient accumulation,
  per-element gradient clamping at 0.6 and ReduceLROnPlateau; see ``configs/dmd/base.yaml``.

Loss terms (``MethodOutput.losses``, already weighted; the trainer sums them), spec §3:
``task`` (fusion head), ``task_common`` (fused homogeneous head), ``task_homo`` / ``task_hetero`` (sum
of the 3 per-modality heads), ``rec`` / ``cyc`` (lambda_dec), ``mar`` / ``ort`` (lambda_dec * gamma_dec),
``gd_homo_logit``, ``gd_homo_reg``, ``gd_hetero_logit``, ``gd_hetero_repr``, ``gd_hetero_reg``
(lambda_gd). ``extras``: ``edges_homo`` / ``edges_hetero`` [B, 6] (softmax edge weights, order
``EDGE_NAMES``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Method, MethodOutput, Stage, register_method
from pipeline.registry import Registry

MODALITIES: tuple[str, ...] = ("text", "video", "audio")  # the code's order L, V, A (indices 0, 1, 2)
# Directed edges as (teacher i, student j); student outer, teacher inner (spec §2.7).
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2))
EDGE_NAMES: tuple[str, ...] = tuple(f"{'LVA'[i]}->{'LVA'[j]}" for i, j in EDGES)
# Key/value sources of the cross-modal transformers of each target, in the code's concat order.
CROSS_SOURCES: dict[str, tuple[str, str]] = {"text": ("audio", "video"), "audio": ("text", "video"),
                                             "video": ("text", "audio")}


def present_modalities(roles: Sequence[str]) -> tuple[str, ...]:
    """The roles of ``roles`` in the code's order L, V, A (a model on a subset keeps that order)."""
    unknown = sorted(set(roles) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; DMD/DHMD read a subset of {MODALITIES}")
    return tuple(m for m in MODALITIES if m in roles)


def subset_edges(modalities: Sequence[str]) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """The directed edges among ``modalities`` (a subset of ``MODALITIES`` in that order).

    Returns (ids, pairs): ``ids`` index ``EDGES`` / ``EDGE_NAMES`` (to pick prior logits), ``pairs`` are the
    same edges as (teacher, student) positions into the stacked per-modality tensors [M, ...]. All three
    modalities give ``range(6)`` and ``EDGES`` itself; one modality gives no edge."""
    index = {MODALITIES.index(m): k for k, m in enumerate(modalities)}
    kept = [(x, (index[i], index[j])) for x, (i, j) in enumerate(EDGES) if i in index and j in index]
    return tuple(x for x, _ in kept), tuple(pair for _, pair in kept)


# ----------------------------------------------------------------------------------------------
# Building blocks: masks and inputs
# ----------------------------------------------------------------------------------------------

def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[B] lengths -> [B, steps] bool, True on the first ``length`` steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, T, ...] over the steps where ``mask`` [B, T] is True (0 if none)."""
    m = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - mask.dim())))
    count = m.sum() * (values[0, 0].numel() if values.dim() > 2 else 1)
    return (values * m).sum() / count.clamp_min(1.0)


def masked_mean_steps(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, T, E] -> [B, E]: mean over each item's real steps."""
    m = valid[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the real steps and all channels (the code's MSE, masked)."""
    return masked_mean((pred - target).pow(2), mask)


def last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, T, E] -> [B, E]: the step ``lengths - 1`` of each item."""
    idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, x.size(-1))
    return x.gather(1, idx).squeeze(1)


def prepare_sequence(batch: dict[str, torch.Tensor], role: str, dim: int, seq_len: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``batch[role]`` [B, T, D] with its ``<role>_mask`` (or ``<role>_len``), cut or zero-pad
    it to ``seq_len`` steps and zero every padded step (so garbage or NaN there cannot leak).

    Returns the features [B, seq_len, D] and the real lengths [B] (capped at ``seq_len``)."""
    if role not in batch:
        raise KeyError(f"batch has no {role!r} features (keys: {sorted(batch)}); the model reads {role!r} "
                       f"(its input_dims name it)")
    x = batch[role]
    if x.dim() != 3 or x.size(-1) != dim:
        raise ValueError(f"batch[{role!r}] has shape {tuple(x.shape)}; expected [B, T, {dim}] (input_dims[{role!r}])")
    b, t, _ = x.shape
    if f"{role}_mask" in batch:
        mask = batch[f"{role}_mask"].bool()
        lengths = mask.sum(1)
        if not torch.equal(mask, length_mask(lengths, t)):
            raise ValueError(f"batch[{role + '_mask'!r}] is not right-padded (True steps must come first)")
    elif f"{role}_len" in batch:
        lengths = batch[f"{role}_len"].long().clamp(0, t)
    else:
        lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
    x = x[:, :seq_len].float()
    if x.size(1) < seq_len:
        x = F.pad(x, (0, 0, 0, seq_len - x.size(1)))
    lengths = lengths.clamp(max=seq_len)
    x = torch.where(length_mask(lengths, seq_len)[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x, lengths


class MaskedStandardizer(nn.Module):
    """Per-feature z-scoring of the real steps (a BatchNorm without affine parameters that skips padding).

    Training: statistics of the batch's real steps, folded into running statistics (a plain average over
    the first ``1 / momentum`` batches, then an exponential one); eval: the running statistics, so an
    item's output does not depend on its batch. Padded steps stay zero."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.training and bool(valid.any()):
            real = x[valid]  # [N, D]
            mean, var = real.mean(0), real.var(0, unbiased=False)
            with torch.no_grad():
                self.batches_seen += 1
                w = max(1.0 / float(self.batches_seen), self.momentum)
                self.running_mean.lerp_(mean, w)
                self.running_var.lerp_(var, w)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * valid[..., None].to(y.dtype)


# ----------------------------------------------------------------------------------------------
# Building blocks: MulT-style transformer (spec §2.5)
# ----------------------------------------------------------------------------------------------

def sinusoidal_positions(steps: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """[steps, dim] sinusoidal encoding of positions 1..steps: sin half, then cos half (odd dim: a zero
    column at the end), frequencies exp(-i log(10000) / (dim/2 - 1))."""
    half = dim // 2
    if half < 2:
        raise ValueError(f"positional encoding needs dim >= 4, got {dim}")
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(1, steps + 1, dtype=torch.float32, device=device)[:, None] * freq[None, :]
    pe = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        pe = F.pad(pe, (0, 1))
    return pe


def causal_allowed(q_steps: int, k_steps: int, q_len: torch.Tensor, k_len: torch.Tensor) -> torch.Tensor:
    """[B, Tq, Tk] bool: query t may attend to key t' iff t' - t < 1 + |len_k - len_q| (MulT's future mask,
    with each item's real lengths in place of the padded ones, so the last real query step sees every
    real key, as the last step does in MulT on fixed-length input)."""
    t = torch.arange(q_steps, device=q_len.device)[None, :, None]
    s = torch.arange(k_steps, device=q_len.device)[None, None, :]
    return (s - t) < 1 + (k_len - q_len).abs()[:, None, None]


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with ``num_heads`` heads, boolean masks and attention dropout."""

    def __init__(self, *, embed_dim: int, num_heads: int, attn_dropout: float) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (_xavier_linear(embed_dim, embed_dim) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """q [B, Tq, E], k/v [B, Tk, E], allowed [B, 1, Tq, Tk] (True = may attend) -> [B, Tq, E]."""
        b, tq, e = q.shape
        h = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, x.size(1), h, e // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)),
                                             attn_mask=allowed,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, tq, e))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: x += Drop(MHA(LN0 x, LN0 kv, LN0 kv)); x += Drop(FFN(LN1 x))."""

    def __init__(self, *, embed_dim: int, num_heads: int, attn_dropout: float, relu_dropout: float,
                 res_dropout: float) -> None:
        super().__init__()
        self.attn = MultiheadAttention(embed_dim=embed_dim, num_heads=num_heads, attn_dropout=attn_dropout)
        self.norm_attn = nn.LayerNorm(embed_dim)
        self.norm_ffn = nn.LayerNorm(embed_dim)
        self.fc1 = _xavier_linear(embed_dim, 4 * embed_dim)
        self.fc2 = _xavier_linear(4 * embed_dim, embed_dim)
        self.relu_dropout = nn.Dropout(relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor | None = None,
                v: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_attn(x)
        k = q if k is None else self.norm_attn(k)  # the same LN0 normalises query and key/value
        v = q if v is None else self.norm_attn(v)
        x = x + self.res_dropout(self.attn(q, k, v, allowed))
        y = self.fc2(self.relu_dropout(F.relu(self.fc1(self.norm_ffn(x)))))
        return x + self.res_dropout(y)


class MulTEncoder(nn.Module):
    """MulT transformer: self-attention (``forward(x, x_len)``) or cross-modal attention
    (``forward(x, x_len, kv, kv_len)``, the key/value sequence is embedded once and not updated).

    Inputs are scaled by sqrt(E), get positional encodings (zero on padded steps) and embedding
    dropout; key and value copies get independent dropout masks. Padded keys are never attended to;
    with ``causal`` MulT's future mask is applied too (see ``causal_allowed``). Padded output steps are
    zeroed."""

    def __init__(self, *, embed_dim: int, num_heads: int, num_layers: int, attn_dropout: float,
                 relu_dropout: float, res_dropout: float, embed_dropout: float, causal: bool) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.causal = causal
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(TransformerLayer(embed_dim=embed_dim, num_heads=num_heads,
                                                     attn_dropout=attn_dropout, relu_dropout=relu_dropout,
                                                     res_dropout=res_dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)

    def _embed(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        pe = sinusoidal_positions(x.size(1), self.embed_dim, x.device)
        return math.sqrt(self.embed_dim) * x + pe[None] * valid[..., None].to(x.dtype)

    def forward(self, x: torch.Tensor, x_len: torch.Tensor, kv: torch.Tensor | None = None,
                kv_len: torch.Tensor | None = None) -> torch.Tensor:
        x_valid = length_mask(x_len, x.size(1))
        cross = kv is not None
        if kv is None:
            kv, kv_len, kv_valid = x, x_len, x_valid
        else:
            if kv_len is None:
                raise ValueError("cross-modal attention needs the key/value lengths")
            kv_valid = length_mask(kv_len, kv.size(1))
        allowed = kv_valid[:, None, None, :]
        if self.causal:
            allowed = allowed & causal_allowed(x.size(1), kv.size(1), x_len, kv_len)[:, None]
        h = self.embed_dropout(self._embed(x, x_valid))
        if not cross:
            for layer in self.layers:
                h = layer(h, allowed)
        else:
            kv_emb = self._embed(kv, kv_valid)
            k, v = self.embed_dropout(kv_emb), self.embed_dropout(kv_emb)
            for layer in self.layers:
                h = layer(h, allowed, k, v)
        return self.norm(h) * x_valid[..., None].to(h.dtype)


# ----------------------------------------------------------------------------------------------
# Building blocks: losses (spec §3)
# ----------------------------------------------------------------------------------------------

OrtLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ORT_LOSSES: Registry[OrtLoss] = Registry("orthogonality mode")


@ORT_LOSSES.register("per_sample")
def ort_per_sample(s: torch.Tensor, c: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """mean_b max(0, cos(vec s_b, vec c_b)) for s, c [B, T, d] (padded steps are zero: no effect)."""
    cos = F.cosine_similarity(s.flatten(1), c.flatten(1), dim=1, eps=1e-8)
    return F.relu(cos).mean()


@ORT_LOSSES.register("batch_axis_legacy")
def ort_batch_axis_legacy(s: torch.Tensor, c: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The released code under PyTorch 1.9: the cosine is taken across the batch axis for every
    (step, channel), hinge at 0, mean over the steps that are real for at least one item."""
    prod = (s * c).sum(0)
    denom = ((s * s).sum(0) + 1e-12).mul((c * c).sum(0) + 1e-12).sqrt()
    hinge = F.relu(prod / denom)  # [T, d]
    step_used = valid.any(0)  # [T]
    return hinge[step_used].mean() if bool(step_used.any()) else hinge.sum() * 0.0


def margin_loss(feats: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """The code's label-adaptive triplet hinge on the homogeneous vectors (spec §3.2).

    ``feats`` [N, F] with labels [N] (all modalities of all samples). For anchor a, positives are the
    other vectors with exactly its label, negatives every vector with another label;
    l_a = mean_{p,n} max(0, scale |y_a - y_n| - cos(a, p) + cos(a, n)); the loss is the mean of l_a
    over anchors with at least one positive and one negative (0 if none)."""
    norm = (feats.pow(2).sum(1) + 1e-8).sqrt().clamp_min(1e-8)
    cos = (feats @ feats.t()) / (norm[:, None] * norm[None, :])
    n = feats.size(0)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool, device=feats.device)  # [a, p]
    neg = ~same  # [a, n]
    margin = scale * (labels[:, None] - labels[None, :]).abs()  # [a, n]
    hinge = F.relu(margin[:, None, :] - cos[:, :, None] + cos[:, None, :])  # [a, p, n]
    pair = (pos[:, :, None] & neg[:, None, :]).to(feats.dtype)
    n_pairs = pair.sum((1, 2))
    used = n_pairs > 0
    if not bool(used.any()):
        return feats.sum() * 0.0
    per_anchor = (hinge * pair).sum((1, 2))[used] / n_pairs[used]
    return per_anchor.mean()


def task_loss(out: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """L1 on [B, 1] regression outputs or cross-entropy on [B, C] logits, over labeled items."""
    if not bool(labeled.any()):
        return out.sum() * 0.0
    if out.size(-1) == 1:
        return F.l1_loss(out[labeled, 0], target[labeled].to(out.dtype))
    return F.cross_entropy(out[labeled], target[labeled].long())


# ----------------------------------------------------------------------------------------------
# Building blocks: graph distillation unit (spec §2.7)
# ----------------------------------------------------------------------------------------------

ReprDistance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
REPR_DISTANCES: Registry[ReprDistance] = Registry("GD repr distance")


@REPR_DISTANCES.register("min_cosine")
def repr_min_cosine(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The code's HeteroGD repr term for one edge: [mean_b max(0, cos(r_j, sg r_i))] * [mean_b w]
    (a de-correlation term: the student is pushed to non-positive cosine with the teacher)."""
    cos = F.cosine_similarity(student, teacher.detach(), dim=1, eps=1e-8)
    return F.relu(cos).mean() * weight.mean()


@REPR_DISTANCES.register("l1")
def repr_l1(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean_b w_b ||r_j - sg r_i||_1 (HomoGD's repr term in the code, which its trainer never adds)."""
    return ((student - teacher.detach()).abs().sum(1) * weight).mean()


def gd_prior(edge_logits: Sequence[float], temperature: float, keep: Sequence[int] | None = None) -> torch.Tensor:
    """Fixed edge prior pi = softmax(q / temperature) over the 6 edges (order ``EDGE_NAMES``), or over the
    edges ``keep`` (indices into ``EDGE_NAMES``) of a graph on fewer modalities: their logits, renormalised."""
    q = torch.tensor(list(edge_logits), dtype=torch.float32)
    if q.numel() != len(EDGES):
        raise ValueError(f"a GD prior needs {len(EDGES)} edge logits (order {EDGE_NAMES}), got {q.numel()}")
    if keep is not None:
        q = q[list(keep)]
    return torch.softmax(q / temperature, dim=0)


@dataclass
class GraphEdges:
    """Edge weights of one GD-Unit for a batch: ``eps`` softmax weights [B, 6] (rows sum to 1) and
    ``weights`` = eps + prior, the effective distillation weights."""

    eps: torch.Tensor
    weights: torch.Tensor


class GraphDistillationUnit(nn.Module):
    """A dynamic graph over the modalities (vertices L, V, A) with 6 directed, per-sample weighted edges.

    Vertex embedding z_m = [W_logit y_m ; W_repr r_m]; raw edge e_{i->j} = W_edge [z_j ; z_i];
    eps = softmax over the 6 edges of alpha * e; w = eps + pi (spec §2.7). Losses: L_logit =
    sum_x mean_b w_x |y_j - sg y_i|_1, L_reg = reg_weight * sum_x (mean_b eps_x - pi_x)^2 and an optional
    repr term ``repr_weight * sum_x repr_distance(r_j, r_i, w_x)``. Teachers are always detached.

    On two modalities (``modalities``, a subset of ``MODALITIES``) the graph has their 2 edges only: the
    softmax runs over those, and the prior is the softmax of their prior logits (our choice; the paper
    always has three modalities). A unit needs at least two vertices.

    Args:
        num_classes: size of a vertex's prediction (1 for regression).
        repr_dim: size of a vertex's representation.
        hidden: width g of the vertex embedding halves.
        prior_logits: q of the prior softmax(q / prior_temperature), 6 values in ``EDGE_NAMES`` order.
        prior_temperature: temperature of the prior softmax.
        alpha: scale of the raw edges before the softmax.
        reg_weight: weight of the prior regulariser.
        repr_distance: name in ``REPR_DISTANCES`` or None (no repr term).
        repr_weight: weight of the repr term.
        modalities: the vertices, in ``MODALITIES`` order (default all three).
    """

    def __init__(self, *, num_classes: int, repr_dim: int, hidden: int, prior_logits: Sequence[float],
                 prior_temperature: float = 0.25, alpha: float = 1 / 8, reg_weight: float = 10.0,
                 repr_distance: str | None = None, repr_weight: float = 10.0,
                 modalities: Sequence[str] = MODALITIES) -> None:
        super().__init__()
        self.modalities = present_modalities(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"a GD-Unit needs at least two modalities, got {self.modalities}")
        edge_ids, self.edges = subset_edges(self.modalities)
        self.edge_names = tuple(EDGE_NAMES[x] for x in edge_ids)
        self.w_logit = nn.Linear(num_classes, hidden)
        self.w_repr = nn.Linear(repr_dim, hidden)
        self.w_edge = nn.Linear(4 * hidden, 1)
        self.register_buffer("prior", gd_prior(prior_logits, prior_temperature, edge_ids), persistent=False)
        self.alpha = alpha
        self.reg_weight = reg_weight
        self.repr_distance = REPR_DISTANCES.get(repr_distance) if repr_distance else None
        self.repr_weight = repr_weight

    def forward(self, logits: torch.Tensor, reprs: torch.Tensor) -> GraphEdges:
        """logits [M, B, C], reprs [M, B, H] in order L, V, A -> edges [B, E] for every sample."""
        z = torch.cat([self.w_logit(logits), self.w_repr(reprs)], dim=-1)  # [M, B, 2g]
        raw = torch.cat([self.w_edge(torch.cat([z[j], z[i]], dim=-1)) for i, j in self.edges], dim=1)  # [B, E]
        eps = torch.softmax(self.alpha * raw, dim=1)
        return GraphEdges(eps=eps, weights=eps + self.prior[None, :])

    @staticmethod
    def logit_distances(logits: torch.Tensor, edges: Sequence[tuple[int, int]] = EDGES) -> torch.Tensor:
        """[B, E] L1 distances |y_j - sg y_i| summed over the logits, one column per edge i -> j."""
        return torch.stack([(logits[j] - logits[i].detach()).abs().sum(-1) for i, j in edges], dim=1)

    def losses(self, logits: torch.Tensor, reprs: torch.Tensor, edges: GraphEdges) -> dict[str, torch.Tensor]:
        """Unweighted GD terms: ``logit``, ``reg`` and (if configured) ``repr``."""
        out = {
            "logit": (edges.weights * self.logit_distances(logits, self.edges)).mean(0).sum(),
            "reg": self.reg_weight * (edges.eps.mean(0) - self.prior).pow(2).sum(),
        }
        if self.repr_distance is not None:
            out["repr"] = self.repr_weight * sum(
                self.repr_distance(reprs[j], reprs[i], edges.weights[:, x]) for x, (i, j) in enumerate(self.edges))
        return out


# ----------------------------------------------------------------------------------------------
# Building blocks: the backbone (spec §2.1-2.6)
# ----------------------------------------------------------------------------------------------

class ResidualHead(nn.Module):
    """y = w^T (W2 Drop(ReLU(W1 u)) + u) + b. ``forward`` returns (ReLU(W1 u), u', y): the code's
    in-place ReLU makes ReLU(W1 u) the vertex representation it hands to HomoGD."""

    def __init__(self, *, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj1 = nn.Linear(in_dim, hidden)
        self.proj2 = nn.Linear(hidden, in_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(in_dim, out_dim)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = F.relu(self.proj1(u))
        u2 = self.proj2(self.dropout(r)) + u
        return r, u2, self.out(u2)


class FusionHead(nn.Module):
    """f_m = sigmoid(W_m h_m), f_c = sigmoid(W_c g); F = [f_L; f_V; f_A; f_c (; extra)]; y = head(F).

    On a subset of the modalities (``modalities``) F has one f_m per present modality; h_m is
    ``hetero_dim`` wide (default 2d, the three-modality width) and g is M d wide."""

    def __init__(self, *, d_model: int, out_dim: int, dropout: float, extra_dim: int = 0,
                 modalities: Sequence[str] = MODALITIES, hetero_dim: int | None = None) -> None:
        super().__init__()
        self.modalities = present_modalities(modalities)
        h = 2 * d_model if hetero_dim is None else hetero_dim
        common = len(self.modalities) * d_model
        self.gates = nn.ModuleDict({m: nn.Linear(h, h) for m in self.modalities})
        self.gate_common = nn.Linear(common, common)
        width = len(self.modalities) * h + common + extra_dim  # 9d with three modalities
        self.head = ResidualHead(in_dim=width, hidden=width, out_dim=out_dim, dropout=dropout)

    def forward(self, hetero_last: dict[str, torch.Tensor], common: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        parts = [torch.sigmoid(self.gates[m](hetero_last[m])) for m in self.modalities]
        parts.append(torch.sigmoid(self.gate_common(common)))
        if extra is not None:
            parts.append(extra)
        return self.head(torch.cat(parts, dim=1))[2]


@dataclass
class DMDFeatures:
    """Everything the backbone computes for a batch; sequences are [B, T'_m, ...] with zeros on padding.

    Per modality m: ``proj`` X~_m, ``s`` / ``c`` heterogeneous / homogeneous parts, ``recon`` X^_m,
    ``s_cycle`` E_m(X^_m), ``lengths`` real steps of the projected sequence, ``homo_seq`` C_m (full output
    of the homogeneous self-attention transformer), ``hetero_seq`` H_m (full memory transformer output),
    ``hetero_last`` h_m, ``margin_vec`` z_m, ``valid`` [B, T'_m] (True on real steps). Head outputs
    ``logits_*`` are [B, C]."""

    proj: dict[str, torch.Tensor]
    s: dict[str, torch.Tensor]
    c: dict[str, torch.Tensor]
    recon: dict[str, torch.Tensor]
    s_cycle: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    margin_vec: dict[str, torch.Tensor]
    homo_seq: dict[str, torch.Tensor]
    hetero_seq: dict[str, torch.Tensor]
    hetero_last: dict[str, torch.Tensor]
    common: torch.Tensor  # g = [g_L; g_V; g_A] (the present modalities' g_m)
    logits_common: torch.Tensor
    logits_homo: torch.Tensor  # [M, B, C], order L, V, A (M = 3 unless the model reads fewer modalities)
    reprs_homo: torch.Tensor  # [M, B, d]
    logits_hetero: torch.Tensor  # [M, B, C]
    reprs_hetero: torch.Tensor  # [M, B, hetero_dim] (2d with three modalities)


class DMDBackbone(nn.Module):
    """Projection, decoupling, homogeneous and heterogeneous branches and the fusion head (spec §2).

    ``encode`` runs everything up to the fusion input; ``fusion`` is a separate module so that DHMD can
    widen it. See ``DMD`` for the arguments. The modalities are the roles of ``input_dims`` (in the order
    L, V, A): every per-modality module exists for those only. The heterogeneous branch of modality m
    attends to the other present modalities (``cross_sources``); its width is ``hetero_dim`` = d times
    their number (2d with three modalities, d with two). A lone modality has no source: its memory
    transformer reads s_m itself (width d)."""

    def __init__(self, *, input_dims: dict[str, int], out_dim: int, seq_len: int, d_model: int, num_heads: int,
                 num_layers: int, kernel_sizes: dict[str, int], text_dropout: float, embed_dropout: float,
                 attn_dropout: float, attn_dropout_audio: float, attn_dropout_video: float, relu_dropout: float,
                 res_dropout: float, output_dropout: float, causal_mask: bool, input_standardize: bool) -> None:
        super().__init__()
        self.modalities = present_modalities(list(input_dims))
        mods = self.modalities
        self.input_dims = {m: int(input_dims[m]) for m in mods}
        self.standardize = nn.ModuleDict({m: MaskedStandardizer(self.input_dims[m]) for m in mods}
                                         ) if input_standardize else None
        self.seq_len = seq_len
        self.d_model = d_model
        self.kernel_sizes = {m: int(kernel_sizes[m]) for m in mods}
        self.steps = {m: seq_len - self.kernel_sizes[m] + 1 for m in mods}  # T'_m
        self.cross_sources = {m: tuple(src for src in CROSS_SOURCES[m] if src in mods) for m in mods}
        self.hetero_dim = d_model * max(1, len(mods) - 1)
        self.text_dropout = nn.Dropout(text_dropout)
        d, h = d_model, self.hetero_dim
        attn_rate = {"text": attn_dropout, "audio": attn_dropout_audio, "video": attn_dropout_video}

        def encoder(dim: int, rate: float) -> MulTEncoder:
            return MulTEncoder(embed_dim=dim, num_heads=num_heads, num_layers=num_layers, attn_dropout=rate,
                               relu_dropout=relu_dropout, res_dropout=res_dropout, embed_dropout=embed_dropout,
                               causal=causal_mask)

        # §2.1-2.2: temporal projection, shared / private encoders, decoders (no biases anywhere)
        self.proj = nn.ModuleDict({m: nn.Conv1d(self.input_dims[m], d, self.kernel_sizes[m], bias=False)
                                   for m in mods})
        self.enc_private = nn.ModuleDict({m: nn.Linear(d, d, bias=False) for m in mods})
        self.enc_shared = nn.Linear(d, d, bias=False)
        self.decoder = nn.ModuleDict({m: nn.Linear(2 * d, d, bias=False) for m in mods})
        # §2.3: homogeneous branch
        self.margin_proj = nn.ModuleDict({m: nn.Linear(self.steps[m] * d, d) for m in mods})
        self.homo_head = nn.ModuleDict({m: ResidualHead(in_dim=self.steps[m] * d, hidden=d, out_dim=out_dim,
                                                        dropout=output_dropout) for m in mods})
        self.homo_self = nn.ModuleDict({m: encoder(d, attn_rate[m]) for m in mods})
        self.common_head = ResidualHead(in_dim=len(mods) * d, hidden=len(mods) * d, out_dim=out_dim,
                                        dropout=output_dropout)
        # §2.4: heterogeneous branch; the source modality sets a cross-modal block's attention dropout
        self.cross = nn.ModuleDict({f"{m}_{src}": encoder(d, attn_rate[src])
                                    for m in mods for src in self.cross_sources[m]})
        self.memory = nn.ModuleDict({m: encoder(h, attn_dropout) for m in mods})
        self.hetero_head = nn.ModuleDict({m: ResidualHead(in_dim=h, hidden=h, out_dim=out_dim,
                                                          dropout=output_dropout) for m in mods})
        # §2.6: fusion
        self.fusion = FusionHead(d_model=d, out_dim=out_dim, dropout=output_dropout, modalities=mods, hetero_dim=h)

    def encode(self, batch: dict[str, torch.Tensor]) -> DMDFeatures:
        mods = self.modalities
        proj, lengths, valid = {}, {}, {}
        for m in mods:
            x, n = prepare_sequence(batch, m, self.input_dims[m], self.seq_len)
            if self.standardize is not None:
                x = self.standardize[m](x, length_mask(n, self.seq_len))
            if m == "text":
                x = self.text_dropout(x)
            steps = self.steps[m]
            lengths[m] = (n - self.kernel_sizes[m] + 1).clamp(1, steps)  # an item shorter than k keeps one step
            valid[m] = length_mask(lengths[m], steps)
            y = self.proj[m](x.transpose(1, 2)).transpose(1, 2)  # [B, T'_m, d]
            proj[m] = y * valid[m][..., None].to(y.dtype)  # windows running into the padding are dropped

        s = {m: self.enc_private[m](proj[m]) for m in mods}
        c = {m: self.enc_shared(proj[m]) for m in mods}
        recon = {m: self.decoder[m](torch.cat([s[m], c[m]], dim=-1)) for m in mods}
        s_cycle = {m: self.enc_private[m](recon[m]) for m in mods}

        b = proj[mods[0]].size(0)
        margin_vec = {m: self.margin_proj[m](c[m].transpose(1, 2).reshape(b, -1)) for m in mods}  # channel-major
        homo = {m: self.homo_head[m](c[m].reshape(b, -1)) for m in mods}  # time-major flatten
        homo_seq = {m: self.homo_self[m](c[m], lengths[m]) for m in mods}
        common = torch.cat([last_valid(homo_seq[m], lengths[m]) for m in mods], dim=1)
        logits_common = self.common_head(common)[2]

        hetero_seq, hetero_last, hetero = {}, {}, {}
        for m in mods:
            crossed = [self.cross[f"{m}_{src}"](s[m], lengths[m], s[src], lengths[src])
                       for src in self.cross_sources[m]]
            memory_in = torch.cat(crossed, dim=-1) if crossed else s[m]  # a lone modality: s_m itself
            hetero_seq[m] = self.memory[m](memory_in, lengths[m])
            hetero_last[m] = last_valid(hetero_seq[m], lengths[m])
            hetero[m] = self.hetero_head[m](hetero_last[m])

        return DMDFeatures(
            proj=proj, s=s, c=c, recon=recon, s_cycle=s_cycle, lengths=lengths, valid=valid, margin_vec=margin_vec,
            homo_seq=homo_seq, hetero_seq=hetero_seq, hetero_last=hetero_last, common=common,
            logits_common=logits_common,
            logits_homo=torch.stack([homo[m][2] for m in mods]),
            reprs_homo=torch.stack([homo[m][0] for m in mods]),
            logits_hetero=torch.stack([hetero[m][2] for m in mods]),
            reprs_hetero=torch.stack([hetero[m][1] for m in mods]),
        )


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------

@register_method("dmd")
class DMD(Method):
    """DMD on cached, unaligned sequence features (regression or classification).

    Defaults are the code's CMU-MOSEI setting (``configs/dmd/base.yaml``; ``mosi.yaml`` holds MOSI's).

    Args:
        input_dims: feature size per role, from the cache: "text", "audio", "video" or a subset of them (a
            single- or two-modality model; see "A subset of the modalities" in the module docstring).
        num_classes: 1 = regression on ``batch["score"]`` (L1, outputs ``preds`` [B]); >= 2 =
            classification on ``batch["label"]`` (cross-entropy, outputs ``logits`` [B, C]).
        seq_len: steps every modality is cut / zero-padded to inside the model (heads are sized
            ``(seq_len - k + 1) * d_model``); keep it equal to the trainer's ``max_len``.
        d_model: width d of the projected features (MOSI 50, MOSEI 30).
        num_heads: attention heads (MOSI 10, MOSEI 6); must divide ``d_model``.
        num_layers: layers of every transformer (the code's max(nlevels, 3) = 4).
        kernel_sizes: temporal conv kernel per role (MOSI 5/5/5; MOSEI text 5, audio 1, video 3); roles
            the model does not read are ignored.
        modalities: the roles the model reads, a subset of ``input_dims``' roles (None = all of them).
        text_dropout: dropout on the text features.
        embed_dropout: embedding dropout of the transformers.
        attn_dropout: attention dropout when the key/value source is text, and in memory transformers.
        attn_dropout_audio: attention dropout when the source is audio.
        attn_dropout_video: attention dropout when the source is video.
        relu_dropout: dropout inside the transformer FFN.
        res_dropout: dropout on the transformer residual branches.
        output_dropout: dropout inside every prediction head.
        causal_mask: MulT's future mask in every transformer (the code has it on).
        input_standardize: z-score every input feature over real steps with running statistics
            (``MaskedStandardizer``) before the projection; not in the code, whose MMSA features are
            small-scaled. Our cached features are not (openSMILE frames in Hz / dB), and the
            reconstruction loss grows with the square of the input scale.
        gd_hidden_homo: width g of HomoGD's vertex embedding.
        gd_hidden_hetero: width g of HeteroGD's vertex embedding.
        gd_prior_homo: prior edge logits q of HomoGD (order ``EDGE_NAMES``: V->L, A->L, L->V, A->V, L->A, V->A).
        gd_prior_hetero: prior edge logits q of HeteroGD.
        gd_prior_temperature: temperature of the prior softmax.
        gd_alpha: scale of the raw edges before their softmax.
        gd_reg_weight: weight of the prior regulariser inside each GD-Unit.
        gd_repr_weight: weight of HeteroGD's cosine de-correlation term inside the unit.
        margin_scale: label-adaptive margin factor of the margin loss.
        ort_mode: orthogonality loss, a name in ``ORT_LOSSES`` ("per_sample" or "batch_axis_legacy").
        lambda_gd: weight of all GD terms (lambda2).
        lambda_dec: weight of the decoupling terms (lambda1).
        gamma_dec: extra factor of the margin and orthogonality terms inside the decoupling loss.
    """

    ROLES = ("text", "audio", "video")
    GRANULARITY = "sequence"
    TASKS = ("regression", "classification")

    def __init__(self, *, input_dims: dict[str, int], num_classes: int, seq_len: int = 50, d_model: int = 30,
                 num_heads: int = 6, num_layers: int = 4, kernel_sizes: dict[str, int] | None = None,
                 text_dropout: float = 0.3, embed_dropout: float = 0.0, attn_dropout: float = 0.4,
                 attn_dropout_audio: float = 0.0, attn_dropout_video: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, output_dropout: float = 0.5, causal_mask: bool = True,
                 input_standardize: bool = False, gd_hidden_homo: int = 64, gd_hidden_hetero: int = 32,
                 gd_prior_homo: Sequence[float] = (0, 0, 1, 0, 1, 0),
                 gd_prior_hetero: Sequence[float] = (0, 0, 1, 0, 1, 1), gd_prior_temperature: float = 0.25,
                 gd_alpha: float = 1 / 8, gd_reg_weight: float = 10.0, gd_repr_weight: float = 10.0,
                 margin_scale: float = 0.15, ort_mode: str = "per_sample", lambda_gd: float = 0.05,
                 lambda_dec: float = 0.1, gamma_dec: float = 0.1, modalities: Sequence[str] | None = None) -> None:
        super().__init__()
        kernel_sizes = dict(kernel_sizes or {"text": 5, "audio": 1, "video": 3})
        if modalities is not None:
            without = [m for m in modalities if m not in input_dims]
            if without:
                raise ValueError(f"modalities {list(modalities)} name roles without features {without}; "
                                 f"input_dims (the config's features:) has {sorted(input_dims)}")
            input_dims = {m: input_dims[m] for m in modalities}
        modalities = present_modalities(list(input_dims))
        if not modalities:
            raise ValueError(f"input_dims names no role; give a size for one or more of {MODALITIES}")
        missing = [m for m in modalities if m not in kernel_sizes]
        if missing:
            raise ValueError(f"kernel_sizes needs every role of input_dims {modalities}; missing {missing}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = regression), got {num_classes}")
        too_long = {m: kernel_sizes[m] for m in modalities if kernel_sizes[m] > seq_len}
        if too_long:
            raise ValueError(f"seq_len {seq_len} is shorter than the conv kernels {too_long}")
        self.modalities = modalities
        self.num_classes = num_classes
        self.margin_scale = margin_scale
        self.ort_loss = ORT_LOSSES.get(ort_mode)
        self.lambda_gd, self.lambda_dec, self.gamma_dec = lambda_gd, lambda_dec, gamma_dec
        self.backbone = DMDBackbone(
            input_dims=input_dims, out_dim=num_classes, seq_len=seq_len, d_model=d_model, num_heads=num_heads,
            num_layers=num_layers, kernel_sizes=kernel_sizes, text_dropout=text_dropout,
            embed_dropout=embed_dropout, attn_dropout=attn_dropout, attn_dropout_audio=attn_dropout_audio,
            attn_dropout_video=attn_dropout_video, relu_dropout=relu_dropout, res_dropout=res_dropout,
            output_dropout=output_dropout, causal_mask=causal_mask, input_standardize=input_standardize)
        # A graph needs two vertices: a single-modality model has no GD-Units (and no GD terms).
        self.gd_homo: GraphDistillationUnit | None = None
        self.gd_hetero: GraphDistillationUnit | None = None
        if len(modalities) >= 2:
            gd_common = dict(num_classes=num_classes, prior_temperature=gd_prior_temperature, alpha=gd_alpha,
                             reg_weight=gd_reg_weight, repr_weight=gd_repr_weight, modalities=modalities)
            self.gd_homo = GraphDistillationUnit(repr_dim=d_model, hidden=gd_hidden_homo, prior_logits=gd_prior_homo,
                                                 repr_distance=None, **gd_common)
            self.gd_hetero = GraphDistillationUnit(repr_dim=self.backbone.hetero_dim, hidden=gd_hidden_hetero,
                                                   prior_logits=gd_prior_hetero, repr_distance="min_cosine",
                                                   **gd_common)

    @property
    def is_regression(self) -> bool:
        return self.num_classes == 1

    def stages(self) -> list[Stage]:
        """One "main" stage; a model on one modality marks it as that modality's (unimodal) head."""
        lone = self.modalities[0] if len(self.modalities) == 1 else None
        return [Stage("main", tuple(self.param_groups_all()), eval_head="preds" if self.is_regression else "logits",
                      modality=lone)]

    def param_groups_all(self) -> dict[str, nn.Module]:
        groups: dict[str, nn.Module] = {"backbone": self.backbone}
        if self.gd_homo is not None and self.gd_hetero is not None:
            groups.update(gd_homo=self.gd_homo, gd_hetero=self.gd_hetero)
        return groups

    # -- hooks that DHMD overrides (DMD: no-ops) -------------------------------------------------------
    def auxiliary(self, feats: DMDFeatures) -> Any:
        """Extra computation on the backbone features, done once per forward (None in DMD)."""
        return None

    def fusion_extra(self, feats: DMDFeatures, aux: Any) -> torch.Tensor | None:
        """Extra fusion input (None in DMD)."""
        return None

    def extra_losses(self, feats: DMDFeatures, aux: Any, homo: GraphEdges | None, hetero: GraphEdges | None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Extra weighted losses and extras (none in DMD). ``homo`` / ``hetero`` are None on one modality."""
        return {}, {}

    # -- forward ---------------------------------------------------------------------------------
    def _targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(target [B], labeled [B] bool), or None when the batch carries no labels."""
        if self.is_regression:
            if "score" not in batch:
                return None
            score = batch["score"].float().view(-1)
            labeled = torch.isfinite(score)
            if "label_mask" in batch:
                labeled = labeled & batch["label_mask"].bool().view(-1)
            return torch.where(labeled, score, torch.zeros_like(score)), labeled
        if "label" not in batch:
            return None
        label = batch["label"].long().view(-1)
        labeled = label >= 0
        return torch.where(labeled, label, torch.zeros_like(label)), labeled

    def forward(self, batch: dict[str, torch.Tensor], stage: str = "main") -> MethodOutput:
        feats = self.backbone.encode(batch)
        aux = self.auxiliary(feats)
        out = self.backbone.fusion(feats.hetero_last, feats.common, self.fusion_extra(feats, aux))
        edges_homo = edges_hetero = None
        if self.gd_homo is not None and self.gd_hetero is not None:
            edges_homo = self.gd_homo(feats.logits_homo, feats.reprs_homo)
            edges_hetero = self.gd_hetero(feats.logits_hetero, feats.reprs_hetero)

        mods = self.modalities
        losses: dict[str, torch.Tensor] = {}
        targets = self._targets(batch)
        if targets is not None:
            y, labeled = targets
            losses["task"] = task_loss(out, y, labeled)
            losses["task_common"] = task_loss(feats.logits_common, y, labeled)
            losses["task_homo"] = sum(task_loss(feats.logits_homo[k], y, labeled) for k in range(len(mods)))
            losses["task_hetero"] = sum(task_loss(feats.logits_hetero[k], y, labeled) for k in range(len(mods)))
            mar_feats = torch.stack([feats.margin_vec[m][labeled] for m in mods], dim=1).flatten(0, 1)
            mar_labels = y[labeled].float().repeat_interleave(len(mods))
            losses["mar"] = self.lambda_dec * self.gamma_dec * margin_loss(mar_feats, mar_labels, self.margin_scale)
        v = feats.valid
        losses["rec"] = self.lambda_dec * sum(masked_mse(feats.recon[m], feats.proj[m], v[m]) for m in mods)
        losses["cyc"] = self.lambda_dec * sum(masked_mse(feats.s[m], feats.s_cycle[m], v[m]) for m in mods)
        losses["ort"] = self.lambda_dec * self.gamma_dec * sum(
            self.ort_loss(feats.s[m], feats.c[m], v[m]) for m in mods)
        extras: dict[str, torch.Tensor] = {}
        for name, unit, edges, logits, reprs in (
                ("homo", self.gd_homo, edges_homo, feats.logits_homo, feats.reprs_homo),
                ("hetero", self.gd_hetero, edges_hetero, feats.logits_hetero, feats.reprs_hetero)):
            if unit is None or edges is None:
                continue
            for term, value in unit.losses(logits, reprs, edges).items():
                losses[f"gd_{name}_{term}"] = self.lambda_gd * value
            extras[f"edges_{name}"] = edges.eps.detach()

        extra_losses, more_extras = self.extra_losses(feats, aux, edges_homo, edges_hetero)
        losses.update(extra_losses)
        extras.update(more_extras)
        if self.is_regression:
            return MethodOutput(preds=out[:, 0], losses=losses, extras=extras)
        return MethodOutput(logits=out, losses=losses, extras=extras)
