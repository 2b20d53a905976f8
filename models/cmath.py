"""CMATH: Cross-Modality Augmented Transformer with Hierarchical Variational Distillation.

Paper: X. Zhu, J. Cheng, Z. Yang, Z. Chen, Q. Wang, J. Yao, "CMATH: Cross-Modality Augmented Transformer with
Hierarchical Variational Distillation for Multimodal Emotion Recognition in Conversation", arXiv 2411.10060v1 (2024).
Equation numbers in comments are the paper's (Eq. 1-24).

Sources: the paper (full text) and the project spec ``shared/methods/cmath.md``. No official code exists; the spec
settles gaps from SDT (Ma et al., TMM 2024), CMATH's closest ancestor. This file is our own code.

What the model does, per dialogue (B dialogues padded to L utterances, ``mask`` marks real ones):

1. Modality reconstruction (Eq. 1-4): a 1-D conv along the utterance axis compresses each modality to ``d_model``;
   a second conv reconstructs the input from it (loss ``re``).
2. Speaker and sinusoidal position embeddings are added (Eq. 5-8).
3. One CMA-Transformer per central modality (Eq. 9-14): self-attention over the central modality plus
   cross-attention from each auxiliary modality; the raw attention outputs are summed for the central branch
   (Eq. 11) and the branches are gated (Eq. 12).
4. Variational fusion (Eq. 15-17): per-modality Gaussians are averaged and sampled into the fused H'_x.
5. Classifiers on H'_t, H'_a, H'_v and H'_x (Eq. 19); L = L_ce + L_re + g1 L_mse + g2 L_kl (Eq. 18-24).

Choices where the paper is silent (all from the spec, section 6):

* Convs: kernel ``kernel_size`` (default 1), "same" zero padding, no bias, no activation. Padded utterances are set to
  zero before each conv, so a kernel > 1 sees the same zeros at a dialogue's end whether or not it is padded.
* Losses are per-element means over real utterances (the paper writes Frobenius sums, which would swamp CE):
  ``re`` = mean squared error per modality (utterances flagged ``<role>_missing`` are left out: their stored zeros
  are not a signal to reconstruct), summed over modalities; ``mse`` likewise; ``kl`` = mean over utterances of
  KL(Y_x || Y_m), summed over modalities, times T^2 (T = ``kl_temperature``, 1 = the paper's formula).
* Transformer: ``heads`` heads, one block, d_ff = ``d_ff`` (default d_model), LayerNorm, GELU, dropout on attention
  weights and FFN. Separate parameters per branch and per centre. Attention is bidirectional over the dialogue with a
  key-padding mask.
* Gate (Eq. 12): SDT-style per-dimension softmax over the branches with a shared bias-free W_g ("softmax"); the
  alternative "sigmoid" gate (sigmoid of a linear map of the concatenated branches, mixing the branches) is kept
  behind ``gate``.
* Variational fusion: mu, sigma MLPs = Linear-ReLU-Linear; sigma = softplus + 1e-6. Training samples
  H'_x = mu_x + eps * sigma_x; evaluation uses mu_x. No KL-to-prior term (the paper has none). The sampled H'_x
  feeds CE_x, L_mse and L_kl alike.
* The teacher side (H'_x, Y_x) is not detached by default (``detach_teacher``), as in SDT's self-distillation.
* The fused head Y_x is the prediction (``logits``); unimodal logits are in ``extras``.
* Speakers: index by first appearance, capped at ``num_speakers - 1``; padded utterances use a zero padding row.
* ``input_standardize`` (default on; the spec's advice for raw openSMILE values, whose scales would otherwise
  dominate L_re): each modality is z-scored per dimension inside the model, BatchNorm-like (batch statistics over
  real utterances in training, running averages at evaluation). L_re then reconstructs the standardized input.
  Rows flagged ``<role>_missing`` are set to zero (= the mean) and are left out of the statistics and of L_re.

Ablations of the paper map to flags: w/o MR = ``use_reconstruction: false`` (one linear down-projection kept);
w/o CMA-T = ``use_cma: false`` (H'_m = H_m); w/o LLD / HLD = ``w_mse: 0`` / ``w_kl: 0``; modality subsets =
``modalities``. A switched-off term is not computed and its parameters are not built (or get no gradient).

Modality subsets and single-modality runs. ``modalities: null`` (the default, also in ``configs/cmath/base.yaml``)
means "every role in ``input_dims``", i.e. every role the config's ``features:`` names, so a run on one modality
only needs that one feature column::

    python -m pipeline train --method cmath --corpus demo-meld --set features='{audio: audio.opensmile}'
    make train METHOD=cmath SET="model.modalities=[audio]"     # the same model; the other columns stay unread

(``features:`` naming one role loads only that column; ``model.modalities`` has no spaces, so it passes through
``make``'s ``SET``.) With one modality nothing cross-modal is built: no cross-attention, no cross branches and no
Eq. 12 gate (a softmax over one branch is the constant 1), so the CMA-Transformer is one self-attention block;
the variational fusion then maps that one stream (Eq. 15-17 with M = 1), and L_mse / L_kl distil the fused head
into the one unimodal head. With two modalities each CMA-Transformer has one auxiliary.

Building blocks that SUMMER also uses (``MultiHeadAttention``, ``SpeakerPosition``, ``MaskedStandardize``, the masked
losses) live here for now; they should move to ``models/blocks.py`` (owned by another person).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.base import Method, MethodOutput, Stage, register_method
from models.blocks import mlp

MODALITY_ORDER = ("text", "audio", "video")


# ---------------------------------------------------------------------------------------------------------------
# Batch checks and masked losses (shared with SUMMER)
# ---------------------------------------------------------------------------------------------------------------

def resolve_modalities(modalities: list[str] | tuple[str, ...] | None, input_dims: dict[str, int],
                       method: str) -> tuple[str, ...]:
    """The roles a model uses, in ``MODALITY_ORDER``: ``modalities`` if given, else every role of ``input_dims``.

    Errors name the method and the offending roles (unknown roles, or roles ``input_dims`` has no size for).
    """
    unknown = sorted(set(input_dims) - set(MODALITY_ORDER))
    if unknown:
        raise ValueError(f"{method}: input_dims has roles {unknown} that are not in {MODALITY_ORDER}")
    wanted = tuple(input_dims) if modalities is None else tuple(modalities)
    bad = [m for m in wanted if m not in MODALITY_ORDER]
    if bad or not wanted:
        raise ValueError(f"{method}: modalities must be a non-empty subset of {MODALITY_ORDER}, got {modalities} "
                         f"(input_dims roles: {sorted(input_dims)})")
    missing = [m for m in wanted if m not in input_dims]
    if missing:
        raise KeyError(f"{method}: input_dims has no size for {missing}; got {input_dims}. Name these roles in the "
                       f"config's `features:` or drop them from `model.modalities` (null = the roles of features:)")
    return tuple(m for m in MODALITY_ORDER if m in wanted)


def check_dialogue_batch(batch: dict[str, torch.Tensor], roles: tuple[str, ...] | list[str],
                         input_dims: dict[str, int], method: str) -> torch.Tensor:
    """Validate a dialogue batch and return its ``mask`` [B, L] as bool. Errors name the key and the shapes."""
    if "mask" not in batch:
        raise KeyError(f"{method}: dialogue batch has no 'mask'; keys: {sorted(batch)}")
    mask = batch["mask"].bool()
    if mask.dim() != 2:
        raise ValueError(f"{method}: batch['mask'] must be [B, L], got {tuple(mask.shape)}")
    for role in roles:
        if role not in batch:
            raise KeyError(f"{method}: batch has no role {role!r}; keys: {sorted(batch)}")
        x = batch[role]
        if x.dim() != 3 or tuple(x.shape[:2]) != tuple(mask.shape) or x.shape[2] != input_dims[role]:
            raise ValueError(f"{method}: batch[{role!r}] has shape {tuple(x.shape)}, expected "
                             f"[{mask.shape[0]}, {mask.shape[1]}, {input_dims[role]}] (input_dims from the cache)")
    if "speaker" in batch and tuple(batch["speaker"].shape) != tuple(mask.shape):
        raise ValueError(f"{method}: batch['speaker'] has shape {tuple(batch['speaker'].shape)}, "
                         f"expected {tuple(mask.shape)}")
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, L, ...] over positions where ``mask`` [B, L] is True (and all trailing dims).

    Selection (not multiplication) is used, so NaN/inf at masked-out positions cannot leak. An empty selection
    gives a zero that stays connected to the graph.
    """
    picked = values[mask]
    if picked.numel() == 0:
        return values.sum() * 0.0
    return picked.mean()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                         class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """CE averaged over real, labelled utterances (Eq. 20-21); label -100 is ignored.

    With ``class_weights`` w the mean is weighted: sum_i w_{y_i} nll_i / sum_i w_{y_i} (torch's convention).
    """
    valid = mask & (labels != -100)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    z, y = logits[valid], labels[valid]
    return F.cross_entropy(z, y, weight=class_weights)


def masked_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """T^2 * mean over real utterances of KL(softmax(z_T/T) || softmax(z_S/T)) = sum_j p log(p/q) (Eq. 23)."""
    valid_t, valid_s = teacher_logits[mask], student_logits[mask]
    if valid_t.numel() == 0:
        return student_logits.sum() * 0.0
    log_p = F.log_softmax(valid_t / temperature, dim=-1)
    log_q = F.log_softmax(valid_s / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean() * temperature**2


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------

def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """P [length, dim] with p_i[2k] = sin(i / 10000^(2k/d)), p_i[2k+1] = cos(i / 10000^(2k/d)), i from 0 (Eq. 6-7)."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    two_k = torch.arange(0, dim, 2, dtype=torch.float32, device=device)
    angles = pos / torch.pow(10000.0, two_k / dim)
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


class SpeakerPosition(nn.Module):
    """S + P of Eq. 8: a speaker embedding table (Eq. 5, one zero padding row) plus sinusoidal positions (Eq. 6-7).

    Speaker ids at or above ``num_speakers`` share the last row (the cap); padded utterances get the zero row.
    """

    def __init__(self, *, d_model: int, num_speakers: int) -> None:
        super().__init__()
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        self.num_speakers = num_speakers
        self.d_model = d_model
        self.speaker = nn.Embedding(num_speakers + 1, d_model, padding_idx=num_speakers)

    def forward(self, speaker: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = speaker.long().clamp(0, self.num_speakers - 1).masked_fill(~mask, self.num_speakers)
        pe = sinusoidal_positions(mask.shape[1], self.d_model, device=mask.device)
        return self.speaker(ids) + pe[None]


@dataclass
class AttentionInfo:
    """What one attention call computed: per-head queries/keys [B,h,L,dh], scaled logits and probs [B,h,L,L]."""

    q: torch.Tensor
    k: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor


LogitAdjust = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a key-padding mask.

    ``adjust(q, k, logits) -> logits`` may rewrite the scaled logits before masking (SUMMER's DynAttn uses it).
    Padded keys get probability exactly 0.
    """

    def __init__(self, *, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.heads, self.d_head = heads, d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.d_head).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor,
                adjust: LogitAdjust | None = None) -> tuple[torch.Tensor, AttentionInfo]:
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if adjust is not None:
            logits = adjust(q, k, logits)
        probs = logits.masked_fill(~key_mask[:, None, None, :], float("-inf")).softmax(-1)
        out = (self.dropout(probs) @ v).transpose(1, 2).reshape(query.shape)
        return self.out_proj(out), AttentionInfo(q=q, k=k, logits=logits, probs=probs)


class MaskedStandardize(nn.Module):
    """Per-dimension z-scoring of utterance features, statistics over the given rows only (real, not missing).

    BatchNorm-like without affine parameters: batch statistics in training, and at evaluation the cumulative
    average of the training batches' statistics (buffers, saved with the weights). Before any training step it is
    the identity.
    """

    def __init__(self, *, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.training and bool(rows.any()):
            picked = x[rows]
            mean, var = picked.mean(0), picked.var(0, unbiased=False)
            with torch.no_grad():
                self.num_batches += 1
                self.running_mean += (mean - self.running_mean) / self.num_batches
                self.running_var += (var - self.running_var) / self.num_batches
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps)


def feature_rows(batch: dict[str, torch.Tensor], role: str, mask: torch.Tensor) -> torch.Tensor:
    """Utterances whose ``role`` features are real: inside the dialogue and not flagged ``<role>_missing``."""
    missing = batch.get(f"{role}_missing")
    return mask if missing is None else mask & ~missing.bool()


class SequenceConv(nn.Module):
    """Conv1D along the utterance axis of [B, L, C_in] -> [B, L, C_out]: "same" zero padding, no bias (Eq. 1-2)."""

    def __init__(self, *, in_dim: int, out_dim: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (for 'same' padding), got {kernel_size}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


GATES: dict[str, type[nn.Module]] = {}


def register_gate(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        GATES[name] = cls
        return cls

    return deco


@register_gate("softmax")
class SoftmaxGate(nn.Module):
    """Eq. 12 (spec choice, after SDT): e_k = W_g h_k; w = softmax over branches k, per dimension;
    out = sum_k w_k * h_k (elementwise)."""

    def __init__(self, *, d_model: int, branches: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, branches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.stack(branches, dim=2)  # [B, L, K, d]
        w = self.proj(h).softmax(dim=2)
        return (w * h).sum(2), w


@register_gate("sigmoid")
class SigmoidGate(nn.Module):
    """Alternative Eq. 12 gate: g = sigmoid(W [h_1; ..; h_K]), out = W_o (g * [h_1; ..; h_K])."""

    def __init__(self, *, d_model: int, branches: int) -> None:
        super().__init__()
        self.gate = nn.Linear(branches * d_model, branches * d_model)
        self.out = nn.Linear(branches * d_model, d_model)
        self.branches = branches

    def forward(self, branches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat(branches, dim=-1)
        g = torch.sigmoid(self.gate(h))
        return self.out(g * h), g.view(*g.shape[:-1], self.branches, -1)


class AttentionBranch(nn.Module):
    """X_bar = Norm(X~ + H_c), H = Norm(FFN(X_bar) + X_bar): the post-attention half of Eq. 9-11."""

    def __init__(self, *, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = mlp(d_model, d_ff, d_model, dropout=dropout, activation=nn.GELU)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, attended: torch.Tensor, central: torch.Tensor) -> torch.Tensor:
        x_bar = self.norm1(attended + central)
        return self.norm2(self.ffn(x_bar) + x_bar)


class CMATransformer(nn.Module):
    """CMA-Transformer for one central modality c with auxiliaries p, q, ... (Eq. 9-13).

    X~_{p->c} = CA(H_c, H_p, H_p); H_{p->c} = branch(X~_{p->c}, H_c)                 (Eq. 9-10)
    X~_{c->c} = SA(H_c) + sum_p X~_{p->c};  H_{c->c} = branch(X~_{c->c}, H_c)        (Eq. 11)
    H'_c = Gate(H_{c->c}, H_{p->c}, ...)                                            (Eq. 12)
    With no auxiliary modality it is one self-attention block: H'_c = H_{c->c}, no gate is built (a softmax over
    one branch is the constant 1) and ``forward`` returns ``None`` for the gate weights.
    """

    def __init__(self, *, d_model: int, num_aux: int, heads: int, d_ff: int, dropout: float, gate: str) -> None:
        super().__init__()
        if gate not in GATES:
            raise KeyError(f"unknown gate {gate!r}; known: {sorted(GATES)}")
        self.self_attn = MultiHeadAttention(d_model=d_model, heads=heads, dropout=dropout)
        self.cross_attn = nn.ModuleList(MultiHeadAttention(d_model=d_model, heads=heads, dropout=dropout)
                                        for _ in range(num_aux))
        self.self_branch = AttentionBranch(d_model=d_model, d_ff=d_ff, dropout=dropout)
        self.cross_branches = nn.ModuleList(AttentionBranch(d_model=d_model, d_ff=d_ff, dropout=dropout)
                                            for _ in range(num_aux))
        self.gate = GATES[gate](d_model=d_model, branches=1 + num_aux) if num_aux else None

    def forward(self, central: torch.Tensor, auxiliaries: list[torch.Tensor], mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        crossed = [attn(central, aux, aux, mask)[0] for attn, aux in zip(self.cross_attn, auxiliaries)]  # Eq. 9-10
        cross_h = [branch(x, central) for branch, x in zip(self.cross_branches, crossed)]
        self_x = self.self_attn(central, central, central, mask)[0] + sum(crossed, torch.zeros_like(central))  # Eq. 11
        self_h = self.self_branch(self_x, central)
        if self.gate is None:  # one modality: nothing to gate
            return self_h, None
        return self.gate([self_h, *cross_h])  # Eq. 12


class VariationalFusion(nn.Module):
    """Eq. 15-17: mu_m = MLP_mu(H'_m), sigma_m = softplus(MLP_sigma(H'_m)) + 1e-6; mu_x, sigma_x = means over m;
    H'_x = mu_x + eps * sigma_x (eps given in training, None at evaluation -> mu_x).

    With ``variational=False`` only the mu MLPs exist and H'_x = mu_x always.
    """

    def __init__(self, *, d_model: int, modalities: tuple[str, ...], variational: bool) -> None:
        super().__init__()
        def branch() -> nn.ModuleDict:
            return nn.ModuleDict({m: mlp(d_model, d_model, d_model, activation=nn.ReLU) for m in modalities})

        self.mu = branch()
        self.sigma = branch() if variational else None

    def forward(self, h: dict[str, torch.Tensor], eps: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mu_x = torch.stack([self.mu[m](h[m]) for m in self.mu]).mean(0)  # Eq. 15-16
        if self.sigma is None:
            return mu_x, mu_x, None
        sigma_x = torch.stack([F.softplus(self.sigma[m](h[m])) + 1e-6 for m in self.sigma]).mean(0)
        fused = mu_x if eps is None else mu_x + eps * sigma_x  # Eq. 17
        return fused, mu_x, sigma_x


class Classifier(nn.Module):
    def __init__(self, *, d_model: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------

@register_method("cmath")
class CMATH(Method):
    """CMATH on cached utterance features, one dialogue per batch row.

    Args:
        input_dims: feature size per role, from the cache.
        num_classes: number of emotion classes.
        modalities: roles used, a subset of text/audio/video (paper Table 5 runs subsets); None = every role of
            ``input_dims`` (the config's ``features:``). One role = a single-modality run (module docstring).
        d_model: shared size d (paper: 500 IEMOCAP, 400 MELD).
        num_speakers: speaker embedding rows m (2 IEMOCAP, 9 MELD); larger ids share the last row.
        kernel_size: kernel k_m of both reconstruction convs (odd).
        heads: attention heads (must divide d_model).
        d_ff: FFN hidden size (None = d_model).
        dropout: dropout on embeddings, attention weights, FFN and before the classifiers.
        gate: Eq. 12 gate, "softmax" (default) or "sigmoid".
        input_standardize: z-score each input dimension in the model (see the module docstring).
        use_reconstruction: build the up-sampling convs and the ``re`` term (False = paper's "w/o MR").
        use_cma: CMA-Transformers (False = "w/o CMA-T": H'_m = H_m).
        variational: sample H'_x in training (False = H'_x = mu_x, no sigma MLPs).
        w_ce_fused: weight of CE on the fused head (Eq. 21).
        w_ce_unimodal: weight of the unimodal CE terms (Eq. 20).
        w_re: weight of L_re (Eq. 3-4).
        w_mse: gamma_1, weight of L_mse (Eq. 18).
        w_kl: gamma_2, weight of L_kl (Eq. 23).
        kl_temperature: KD temperature T of L_kl (1 = paper).
        detach_teacher: stop gradients through H'_x / Y_x inside L_mse and L_kl.
    """

    ROLES = MODALITY_ORDER
    GRANULARITY = "dialogue"
    TASKS = ("classification",)

    def __init__(self, *, input_dims: dict[str, int], num_classes: int,
                 modalities: list[str] | tuple[str, ...] | None = None, d_model: int = 500, num_speakers: int = 9,
                 kernel_size: int = 1, heads: int = 4, d_ff: int | None = None, dropout: float = 0.5,
                 gate: str = "softmax", input_standardize: bool = True, use_reconstruction: bool = True,
                 use_cma: bool = True, variational: bool = True, w_ce_fused: float = 1.0,
                 w_ce_unimodal: float = 1.0, w_re: float = 1.0, w_mse: float = 1.0, w_kl: float = 1.8,
                 kl_temperature: float = 1.0, detach_teacher: bool = False) -> None:
        super().__init__()
        self.modalities = resolve_modalities(modalities, input_dims, "cmath")
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.num_classes = num_classes
        self.w_ce_fused, self.w_ce_unimodal = w_ce_fused, w_ce_unimodal
        self.w_re = w_re if use_reconstruction else 0.0
        self.w_mse, self.w_kl = w_mse, w_kl
        self.kl_temperature, self.detach_teacher = kl_temperature, detach_teacher
        self.variational = variational
        d_ff = d_ff or d_model

        self.standardize = (nn.ModuleDict({m: MaskedStandardize(dim=self.input_dims[m]) for m in self.modalities})
                            if input_standardize else None)
        self.down = nn.ModuleDict({m: SequenceConv(in_dim=self.input_dims[m], out_dim=d_model, kernel_size=kernel_size)
                                   for m in self.modalities})  # Eq. 1
        self.up = (nn.ModuleDict({m: SequenceConv(in_dim=d_model, out_dim=self.input_dims[m],
                                                  kernel_size=kernel_size) for m in self.modalities})
                   if use_reconstruction else None)  # Eq. 2
        self.speaker_position = SpeakerPosition(d_model=d_model, num_speakers=num_speakers)
        self.embed_dropout = nn.Dropout(dropout)
        self.cma = (nn.ModuleDict({c: CMATransformer(d_model=d_model, num_aux=len(self.modalities) - 1, heads=heads,
                                                     d_ff=d_ff, dropout=dropout, gate=gate)
                                   for c in self.modalities}) if use_cma else None)
        self.fusion = VariationalFusion(d_model=d_model, modalities=self.modalities, variational=variational)
        self.fused_head = Classifier(d_model=d_model, num_classes=num_classes, dropout=dropout)
        self.unimodal_heads = nn.ModuleDict({m: Classifier(d_model=d_model, num_classes=num_classes, dropout=dropout)
                                             for m in self.modalities})

    def stages(self) -> list[Stage]:
        return [Stage("main", ("all",))]

    def param_groups_all(self) -> dict[str, nn.Module]:
        return {"all": self}

    def encode(self, batch: dict[str, torch.Tensor], mask: torch.Tensor
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Inputs (standardized; padding and missing rows zeroed), reconstructions U''_m and H_m = U'_m + S + P
        (Eq. 1-2, 8)."""
        keep = mask[..., None].float()
        inputs = {}
        for m in self.modalities:
            rows = feature_rows(batch, m, mask)
            x = batch[m].float()
            if self.standardize is not None:
                x = self.standardize[m](x, rows)
            inputs[m] = x.masked_fill(~rows[..., None], 0.0)
        speaker = batch.get("speaker", torch.zeros_like(mask, dtype=torch.long))
        sp = self.speaker_position(speaker, mask)
        latent = {m: self.down[m](inputs[m]) * keep for m in self.modalities}  # U'_m, zero at padding
        recon = {m: self.up[m](latent[m]) for m in self.modalities} if self.up is not None and self.w_re else {}
        h = {m: self.embed_dropout(latent[m] + sp) for m in self.modalities}
        return inputs, recon, h

    def forward(self, batch: dict[str, torch.Tensor], stage: str = "main") -> MethodOutput:
        mask = check_dialogue_batch(batch, self.modalities, self.input_dims, "cmath")
        inputs, recon, h = self.encode(batch, mask)

        extras: dict[str, torch.Tensor] = {}
        if self.cma is not None:  # Eq. 13-14
            fine = {}
            for c in self.modalities:
                aux = [h[m] for m in self.modalities if m != c]
                fine[c], weights = self.cma[c](h[c], aux, mask)
                if weights is not None:
                    extras[f"gate_{c}"] = weights.mean(-1)  # [B, L, branches]
        else:
            fine = h
        eps = torch.randn_like(fine[self.modalities[0]]) if self.training and self.variational else None
        fused, _, sigma_x = self.fusion(fine, eps)
        logits = self.fused_head(fused)  # Eq. 19
        if sigma_x is not None:
            extras["sigma_fused"] = sigma_x.mean(-1)

        need_unimodal = self.w_ce_unimodal != 0 or self.w_kl != 0
        uni_logits = {m: self.unimodal_heads[m](fine[m]) for m in self.modalities} if need_unimodal else {}
        extras.update({f"logits_{m}": z for m, z in uni_logits.items()})

        losses: dict[str, torch.Tensor] = {}
        labels = batch.get("label")
        if labels is not None:
            if self.w_ce_fused:
                losses["ce_fused"] = self.w_ce_fused * masked_cross_entropy(logits, labels, mask)  # Eq. 21
            if self.w_ce_unimodal:
                for m in self.modalities:  # Eq. 20, 22
                    losses[f"ce_{m}"] = self.w_ce_unimodal * masked_cross_entropy(uni_logits[m], labels, mask)
        if recon:
            re_terms = []
            for m in self.modalities:  # Eq. 3-4, per-element mean over real (not missing) utterances
                rows = feature_rows(batch, m, mask)
                re_terms.append(masked_mean((inputs[m] - recon[m]).pow(2), rows))
            losses["re"] = self.w_re * torch.stack(re_terms).sum()
        teacher_h = fused.detach() if self.detach_teacher else fused
        teacher_z = logits.detach() if self.detach_teacher else logits
        if self.w_mse:  # Eq. 18
            losses["mse"] = self.w_mse * torch.stack(
                [masked_mean((teacher_h - fine[m]).pow(2), mask) for m in self.modalities]).sum()
        if self.w_kl:  # Eq. 23
            losses["kl"] = self.w_kl * torch.stack(
                [masked_kl(teacher_z, uni_logits[m], mask, self.kl_temperature) for m in self.modalities]).sum()
        return MethodOutput(logits=logits, losses=losses, extras=extras)
