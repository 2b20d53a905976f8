"""SUMMER: unimodal-driven distillation with a sparse dynamic MoE and hierarchical cross-modal fusion.

Paper: J. Li, R. Yu, H. Huang, H. Yan, "Unimodal-driven Distillation in Multimodal Emotion Recognition with Dynamic
Fusion", arXiv 2503.23721v1 (ICME 2025).

Sources: only the abstract, a third-party summary with figure captions and the IKD loss formula (seed 000) were
available; no code. The design follows the project spec ``shared/methods/summer.md``, which rebuilds the method from
those texts and from secondary reviews; almost every detail below is a *choice, not in the paper*. The only formula
from the paper text is L_IKD = k1 L_cross^KD + k2 L_align^Label + k3 L_smooth^Label. The paper's equation numbers are
unknown, so comments cite the spec's sections (S2.x, S3). This file is our own code.

Model (per dialogue; B dialogues padded to L utterances, ``mask`` marks real ones):

* Input layer (S2.1): per modality a bias-free linear map (= Conv1d kernel 1) to ``d_model``, plus a speaker
  embedding (zero padding row) and sinusoidal positions, then dropout.
* SDMoE block (S2.2): A = U + Drop(MHSA(LN(U))); router logits W_g = Linear(LN(A)) over E experts; experts whose
  logit lies outside mu +- k*sigma (per utterance, over experts, population std) are switched off (-inf); gates are
  a Gumbel-softmax in training and a softmax at evaluation; each expert is a BiGRU over the dialogue (packed by
  length); Y = LN(A + Drop(sum_e g_e O_e)). E <= 5 makes the band rule vacuous, hence E = 8 by default.
* HCMF (S2.3): level 1 = one SDMoE per modality (Z^m); level 2 = for each target m and source n != m a teacher-guided
  cross-attention C^{m<-n} = LN(Z^m + Drop(DynAttn(Z^m, Z^n))) and F^m = Linear([Z^m; C^{m<-n}...]); level 3 =
  F = Linear([F^t; F^a; F^v]), G = SDMoE_global(F), logits = Linear(Drop(G)).
* DynAttn (S2.3): student logits S = QK^T/sqrt(d_h); M = 1[|cos_T - cos_S| > threshold] where cos are per-head
  query/key cosine maps of teacher (text self-attention) and student; S' = S + phi * M * (S_T - S) with
  phi = sigmoid(phi_raw) learnable. All teacher tensors are detached. All maps are utterance x utterance, so the text
  teacher's map can guide every cross-modal pair.
* Teacher (S2.4): ``teacher_modality`` (text) input layer -> SDMoE -> h_T -> Linear classifier C_T. Stage "teacher"
  trains it with CE alone; in stage "student" it runs frozen (eval mode, no grad) beside the student, also at
  evaluation (DynAttn needs it).

Losses in stage "student" (S3; every term has a weight, a zero weight removes the term from the graph):
``ce`` = CE(logits, y) (optional class weights); ``cross_kd`` (k1) = mean_m T^2 KL(p_T || softmax(C_T(F^m)/T)), C_T
frozen (its weights are detached, so gradients reach only F^m); ``align`` (k2) = T^2 KL(p_T || softmax(logits/T));
``smooth`` (k3) = CE against (1-eps) onehot(y) + eps/C; ``feat`` (k4) = MSE(LN(G), LN(h_T)). Means run over real
utterances (CE-like terms over labelled ones). Stage "teacher": ``ce_teacher``.

Further choices: eval-time gates are softmax(masked logits) without 1/tau (spec S2.2); the "w/o IKD"
ablation is ``use_ikd: false`` (no teacher, no teacher stage, no DynAttn guidance, and none of the L_IKD terms:
k1..k3 and k4 = 0, so the label-smoothing term, which the seed's formula puts inside L_IKD, goes too); "replace HCMF with
self-attention" is ``use_hcmf: false`` (F^m = Z^m, then one masked self-attention block instead of level 2-3);
"standard MoE" is ``route_rule: dense``. Class weights are a config list (``class_weights``), not computed here:
the constructor never sees the data, and the label order depends on the cache, so the IEMOCAP inverse-frequency
weights of SDT are not hard-coded. ``input_standardize`` (default on) z-scores each input dimension inside the
model, as CMATH does, because raw openSMILE functionals have very unequal scales; rows flagged ``<role>_missing``
are set to zero (= the mean after standardizing) and left out of the statistics.

Modality subsets and single-modality runs. ``modalities: null`` (the default, also in ``configs/summer/base.yaml``)
means "every role in ``input_dims``", i.e. every role the config's ``features:`` names; ``teacher_modality: null``
means text when the student reads text, else the student's first modality. So a single-modality run is one override,
and its teacher is a teacher of that same modality (no other modality is ever read)::

    python -m pipeline train --method summer --corpus demo-meld --set features='{video: video.densenet}'
    make train METHOD=summer SET="model.modalities=[video]"     # the same model; the other columns stay unread

(``features:`` naming one role loads only that column; ``model.modalities`` has no spaces, so it passes through
``make``'s ``SET``.) An explicit ``teacher_modality`` may be any role of ``input_dims`` (e.g. a text teacher for an
audio-visual student).

With one student modality nothing cross-modal is built: HCMF level 2 (DynAttn cross-attentions, their norms and
the F^m projections) and the level-3 concatenation projection vanish, F^m = Z^m and F = F^m; the level-3 global
SDMoE (or, with ``use_hcmf: false``, the self-attention block) still runs over the one stream. No DynAttn means no
teacher guidance (and no ``phi``); the teacher is still trained and distils through the KD terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.base import Method, MethodOutput, Stage, register_method
from models.cmath import (MODALITY_ORDER, AttentionInfo, MaskedStandardize, MultiHeadAttention, SpeakerPosition,
                          check_dialogue_batch, feature_rows, masked_cross_entropy, masked_kl, masked_mean,
                          resolve_modalities)

# ---------------------------------------------------------------------------------------------------------------
# Routing rules and gates (S2.2)
# ---------------------------------------------------------------------------------------------------------------

RouteRule = Callable[[torch.Tensor, float], torch.Tensor]
ROUTE_RULES: dict[str, RouteRule] = {}


def register_route_rule(name: str) -> Callable[[RouteRule], RouteRule]:
    def deco(fn: RouteRule) -> RouteRule:
        ROUTE_RULES[name] = fn
        return fn

    return deco


def _router_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = logits.mean(-1, keepdim=True)
    sigma = logits.std(-1, unbiased=False, keepdim=True) + 1e-6
    return mu, sigma


@register_route_rule("band")
def band_rule(logits: torch.Tensor, k: float) -> torch.Tensor:
    """Keep experts whose logit lies inside (mu - k sigma, mu + k sigma) over the experts of one utterance."""
    mu, sigma = _router_stats(logits)
    return (logits - mu).abs() < k * sigma


@register_route_rule("upper")
def upper_rule(logits: torch.Tensor, k: float) -> torch.Tensor:
    """Keep experts whose logit is above mu - k sigma (drops only low outliers)."""
    mu, sigma = _router_stats(logits)
    return logits - mu > -k * sigma


@register_route_rule("dense")
def dense_rule(logits: torch.Tensor, k: float) -> torch.Tensor:
    """Keep every expert: a standard soft MoE (the "replace SDMoE with a standard MoE" ablation)."""
    return torch.ones_like(logits, dtype=torch.bool)


def route_gates(logits: torch.Tensor, keep: torch.Tensor, tau: float, noisy: bool) -> torch.Tensor:
    """Gates over experts: exactly 0 where ``keep`` is False, rows sum to 1.

    ``noisy`` (training): Gumbel-softmax softmax((l + g) / tau), g = -log(-log u); otherwise softmax(l).
    """
    masked = logits.masked_fill(~keep, float("-inf"))
    if not noisy:
        return masked.softmax(-1)
    u = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
    return ((masked - torch.log(-torch.log(u))) / tau).softmax(-1)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------

def prefix_lengths(mask: torch.Tensor, method: str = "summer") -> torch.Tensor:
    """Dialogue lengths from a [B, L] mask; the mask must mark a prefix (real utterances first)."""
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if not torch.equal(prefix, mask) or bool((lengths == 0).any()):
        raise ValueError(f"{method}: batch['mask'] must mark a non-empty prefix of each row (real utterances "
                         f"first, then padding); got {mask.int().tolist()}")
    return lengths


class BiGRUExpert(nn.Module):
    """One expert: a BiGRU over the dialogue, d -> 2 x d/2, packed by length (padding never enters)."""

    def __init__(self, *, d_model: int) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"summer: d_model must be even for BiGRU experts, got {d_model}")
        self.gru = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


@dataclass
class SDMoEOutput:
    y: torch.Tensor  # [B, L, d]
    gates: torch.Tensor  # [B, L, E]
    keep: torch.Tensor  # [B, L, E] bool
    attention: AttentionInfo


class SDMoE(nn.Module):
    """Sparse dynamic MoE block (S2.2): MHSA for context, band routing + Gumbel-softmax, BiGRU experts."""

    def __init__(self, *, d_model: int, heads: int, num_experts: int, route_rule: str, route_k: float,
                 gumbel_tau: float, dropout: float) -> None:
        super().__init__()
        if route_rule not in ROUTE_RULES:
            raise KeyError(f"summer: unknown route_rule {route_rule!r}; known: {sorted(ROUTE_RULES)}")
        if route_k <= 0 or gumbel_tau <= 0 or num_experts < 1:
            raise ValueError(f"summer: need route_k > 0, gumbel_tau > 0, num_experts >= 1; got "
                             f"{route_k}, {gumbel_tau}, {num_experts}")
        self.rule, self.route_k, self.tau = ROUTE_RULES[route_rule], route_k, gumbel_tau
        self.norm_in = nn.LayerNorm(d_model)
        self.attention = MultiHeadAttention(d_model=d_model, heads=heads, dropout=dropout)
        self.norm_route = nn.LayerNorm(d_model)
        self.router = nn.Linear(d_model, num_experts)
        self.experts = nn.ModuleList(BiGRUExpert(d_model=d_model) for _ in range(num_experts))
        self.norm_out = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> SDMoEOutput:
        normed = self.norm_in(u)
        attended, info = self.attention(normed, normed, normed, mask)
        a = u + self.dropout(attended)
        logits = self.router(self.norm_route(a))
        keep = self.rule(logits, self.route_k)
        gates = route_gates(logits, keep, self.tau, noisy=self.training)
        mixed = sum(gates[..., e:e + 1] * expert(a, lengths) for e, expert in enumerate(self.experts))
        return SDMoEOutput(y=self.norm_out(a + self.dropout(mixed)), gates=gates, keep=keep, attention=info)


def cosine_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-head cosine similarity of every query with every key: [B,h,L,dh] x [B,h,L,dh] -> [B,h,L,L] in [-1, 1]."""
    return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)


@dataclass
class TeacherGuide:
    """The frozen teacher's self-attention: scaled logits S_T and query/key cosine map c_T, both [B,h,L,L]."""

    logits: torch.Tensor
    cosine: torch.Tensor


class DynAttn(nn.Module):
    """Teacher-guided attention (S2.3): S' = S + phi * M * (S_T - S), M = 1[|c_T - c_S| > threshold].

    Without a guide (or ``guided=False``) it is plain masked multi-head attention.
    """

    def __init__(self, *, d_model: int, heads: int, dropout: float, threshold: float, phi_init: float,
                 guided: bool) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(d_model=d_model, heads=heads, dropout=dropout)
        self.threshold = threshold
        self.phi_raw = nn.Parameter(torch.tensor(float(phi_init))) if guided else None

    def forward(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor,
                guide: TeacherGuide | None) -> tuple[torch.Tensor, AttentionInfo]:
        if guide is None or self.phi_raw is None:
            return self.attention(query, key, key, mask)
        phi = torch.sigmoid(self.phi_raw)

        def adjust(q: torch.Tensor, k: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                disagree = ((guide.cosine - cosine_map(q, k)).abs() > self.threshold).to(logits.dtype)
            return logits + phi * disagree * (guide.logits - logits)

        return self.attention(query, key, key, mask, adjust)


class InputLayer(nn.Module):
    """S2.1: U^m = Linear_m(X^m) + S + P, then dropout. X^m is optionally z-scored first (``MaskedStandardize``);
    padded and ``<role>_missing`` rows are set to zero."""

    def __init__(self, *, input_dims: dict[str, int], d_model: int, num_speakers: int, dropout: float,
                 standardize: bool) -> None:
        super().__init__()
        self.standardize = (nn.ModuleDict({m: MaskedStandardize(dim=dim) for m, dim in input_dims.items()})
                            if standardize else None)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, d_model, bias=False) for m, dim in input_dims.items()})
        self.speaker_position = SpeakerPosition(d_model=d_model, num_speakers=num_speakers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        speaker = batch.get("speaker", torch.zeros_like(mask, dtype=torch.long))
        sp = self.speaker_position(speaker, mask)
        out = {}
        for m, proj in self.proj.items():
            rows = feature_rows(batch, m, mask)
            x = batch[m].float()
            if self.standardize is not None:
                x = self.standardize[m](x, rows)
            out[m] = self.dropout(proj(x.masked_fill(~rows[..., None], 0.0)) + sp)
        return out


@dataclass
class TeacherOutput:
    h: torch.Tensor  # [B, L, d]
    logits: torch.Tensor  # [B, L, C]
    guide: TeacherGuide
    gates: torch.Tensor


class UnimodalTeacher(nn.Module):
    """S2.4: input layer -> SDMoE -> h_T -> Drop -> C_T (Linear d -> C)."""

    def __init__(self, *, modality: str, input_dim: int, d_model: int, num_speakers: int, heads: int,
                 num_classes: int, dropout: float, moe: dict[str, float | int | str], standardize: bool) -> None:
        super().__init__()
        self.modality = modality
        self.inputs = InputLayer(input_dims={modality: input_dim}, d_model=d_model, num_speakers=num_speakers,
                                 dropout=dropout, standardize=standardize)
        self.moe = SDMoE(d_model=d_model, heads=heads, dropout=dropout, **moe)  # type: ignore[arg-type]
        self.head_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, lengths: torch.Tensor) -> TeacherOutput:
        out = self.moe(self.inputs(batch, mask)[self.modality], mask, lengths)
        guide = TeacherGuide(logits=out.attention.logits, cosine=cosine_map(out.attention.q, out.attention.k))
        return TeacherOutput(h=out.y, logits=self.classifier(self.head_dropout(out.y)), guide=guide, gates=out.gates)


@dataclass
class StudentOutput:
    logits: torch.Tensor  # [B, L, C]
    streams: dict[str, torch.Tensor]  # F^m, [B, L, d]
    fused: torch.Tensor  # G, [B, L, d]
    gates: dict[str, torch.Tensor]  # name -> [B, L, E]


class Student(nn.Module):
    """Multimodal student: input layer, level-1 SDMoEs, level-2 DynAttn cross-modal fusion, level-3 global MoE.

    With one modality the level-2 modules and the level-3 concatenation projection are not built (F = Z^m).
    """

    def __init__(self, *, input_dims: dict[str, int], d_model: int, num_speakers: int, heads: int, num_classes: int,
                 dropout: float, moe: dict[str, float | int | str], use_hcmf: bool, use_global_moe: bool,
                 hcmf_residual: bool, dyn_attn: bool, mask_threshold: float, phi_init: float,
                 standardize: bool) -> None:
        super().__init__()
        self.modalities = tuple(input_dims)
        self.residual = hcmf_residual
        n = len(self.modalities)
        self.inputs = InputLayer(input_dims=input_dims, d_model=d_model, num_speakers=num_speakers, dropout=dropout,
                                 standardize=standardize)
        self.intra = nn.ModuleDict({m: SDMoE(d_model=d_model, heads=heads, dropout=dropout, **moe)  # type: ignore
                                    for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        self.pairs = [(m, s) for m in self.modalities for s in self.modalities if s != m] if use_hcmf else []
        crossing = bool(self.pairs)  # level 2 exists only with HCMF and two or more modalities
        self.cross = nn.ModuleDict({f"{s}_to_{m}": DynAttn(d_model=d_model, heads=heads, dropout=dropout,
                                                           threshold=mask_threshold, phi_init=phi_init,
                                                           guided=dyn_attn) for m, s in self.pairs})
        self.cross_norm = nn.ModuleDict({f"{s}_to_{m}": nn.LayerNorm(d_model) for m, s in self.pairs})
        self.modality_fuse = (nn.ModuleDict({m: nn.Linear(n * d_model, d_model) for m in self.modalities})
                              if crossing else None)
        self.global_fuse = nn.Linear(n * d_model, d_model) if n > 1 else None
        self.global_moe = (SDMoE(d_model=d_model, heads=heads, dropout=dropout, **moe)  # type: ignore[arg-type]
                           if use_hcmf and use_global_moe else None)
        self.context_attention = (None if use_hcmf else
                                  MultiHeadAttention(d_model=d_model, heads=heads, dropout=dropout))
        self.context_norm = None if use_hcmf else nn.LayerNorm(d_model)
        self.head_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor, lengths: torch.Tensor,
                guide: TeacherGuide | None) -> StudentOutput:
        u = self.inputs(batch, mask)
        gates: dict[str, torch.Tensor] = {}
        z: dict[str, torch.Tensor] = {}
        for m in self.modalities:  # level 1: intra-modal SDMoE
            out = self.intra[m](u[m], mask, lengths)
            z[m], gates[m] = out.y, out.gates
        if self.modality_fuse is not None:  # level 2: teacher-guided cross-modal attention
            crossed: dict[str, list[torch.Tensor]] = {m: [z[m]] for m in self.modalities}
            for m, s in self.pairs:
                name = f"{s}_to_{m}"
                attended = self.dropout(self.cross[name](z[m], z[s], mask, guide)[0])
                crossed[m].append(self.cross_norm[name](z[m] + attended if self.residual else attended))
            streams = {m: self.modality_fuse[m](torch.cat(crossed[m], -1)) for m in self.modalities}
        else:
            streams = z
        if self.global_fuse is not None:  # level 3
            fused = self.global_fuse(torch.cat([streams[m] for m in self.modalities], -1))
        else:  # one modality: F = F^m
            fused = streams[self.modalities[0]]
        if self.global_moe is not None:
            out = self.global_moe(fused, mask, lengths)
            fused, gates["global"] = out.y, out.gates
        elif self.context_attention is not None and self.context_norm is not None:
            attended = self.context_attention(fused, fused, fused, mask)[0]
            fused = self.context_norm(fused + self.dropout(attended))
        return StudentOutput(logits=self.classifier(self.head_dropout(fused)), streams=streams, fused=fused,
                             gates=gates)


# ---------------------------------------------------------------------------------------------------------------
# IKD losses (S3)
# ---------------------------------------------------------------------------------------------------------------

def smooth_label_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """L_smooth^Label: CE against (1 - eps) onehot(y) + eps / C, mean over real labelled utterances."""
    valid = mask & (labels != -100)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    z, y = logits[valid], labels[valid]
    target = F.one_hot(y, z.shape[-1]).to(z.dtype) * (1.0 - eps) + eps / z.shape[-1]
    return -(target * F.log_softmax(z, -1)).sum(-1).mean()


def cross_kd_loss(teacher_logits: torch.Tensor, streams: list[torch.Tensor], weight: torch.Tensor,
                  bias: torch.Tensor | None, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_cross^KD: mean over streams F^m of T^2 KL(softmax(z_T/T) || softmax(C_T(F^m)/T)); C_T is detached."""
    w, b = weight.detach(), None if bias is None else bias.detach()
    terms = [masked_kl(teacher_logits.detach(), F.linear(s, w, b), mask, temperature) for s in streams]
    return torch.stack(terms).mean()


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_feat: MSE(LN(G), LN(h_T)) (LayerNorm without affine), mean over real utterances and dims."""
    d = student.shape[-1]
    diff = F.layer_norm(student, (d,)) - F.layer_norm(teacher.detach(), (d,))
    return masked_mean(diff.pow(2), mask)


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------

@register_method("summer")
class SUMMER(Method):
    """SUMMER on cached utterance features, one dialogue per batch row; stages "teacher" then "student".

    Args:
        input_dims: feature size per role, from the cache.
        num_classes: number of emotion classes.
        modalities: student roles, a subset of text/audio/video; None = every role of ``input_dims`` (the config's
            ``features:``). One role = a single-modality run (module docstring).
        teacher_modality: the unimodal teacher's role (paper: text); None = text if the student reads text, else the
            student's first modality.
        d_model: model width d (shared by teacher and student, so C_T applies to student features).
        num_speakers: speaker embedding rows (2 IEMOCAP, 9 MELD); larger ids share the last row.
        heads: attention heads (divide d_model).
        num_experts: experts E per SDMoE (E <= 5 makes the band rule vacuous).
        route_rule: "band" (paper), "upper" or "dense" (standard MoE).
        route_k: k of the mu +- k sigma band.
        gumbel_tau: Gumbel-softmax temperature in training.
        dropout: dropout everywhere (embeddings, attention, MoE output, before classifiers).
        input_standardize: z-score each input dimension in the model (BatchNorm-like, see models/cmath.py).
        use_ikd: build the teacher, its stage, DynAttn guidance and the KD terms (False = "w/o IKD").
        use_hcmf: levels 2-3 of HCMF (False = one self-attention block after linear fusion).
        use_global_moe: level-3 global SDMoE inside HCMF.
        hcmf_residual: residual connection around each level-2 cross-attention.
        dyn_attn: teacher-guided attention in level 2 (needs the teacher).
        mask_threshold: threshold on |c_T - c_S| for the DynAttn mask.
        phi_init: initial raw value of phi (phi = sigmoid(phi_raw)).
        w_ce: weight of the hard-label CE.
        w_cross_kd: k1, teacher head on student streams.
        w_align: k2, teacher-student logit KL.
        w_smooth: k3, label-smoothed CE.
        w_feat: k4, feature MSE to the teacher.
        kd_temperature: T of the KD terms (multiplied by T^2).
        smooth_eps: label-smoothing epsilon.
        class_weights: optional CE class weights (length num_classes), for ``ce`` and ``ce_teacher``.
    """

    ROLES = MODALITY_ORDER
    GRANULARITY = "dialogue"
    TASKS = ("classification",)

    @classmethod
    def roles_needed(cls, model_config: dict[str, Any]) -> set[str] | None:
        roles = super().roles_needed(model_config)  # the students' modalities, plus an explicit IKD teacher
        teacher = model_config.get("teacher_modality")
        if roles is not None and teacher and model_config.get("use_ikd", True):
            roles.add(str(teacher))
        return roles

    def __init__(self, *, input_dims: dict[str, int], num_classes: int,
                 modalities: list[str] | tuple[str, ...] | None = None, teacher_modality: str | None = None,
                 d_model: int = 256, num_speakers: int = 9, heads: int = 8, num_experts: int = 8,
                 route_rule: str = "band", route_k: float = 2.0, gumbel_tau: float = 1.0, dropout: float = 0.5,
                 input_standardize: bool = True, use_ikd: bool = True, use_hcmf: bool = True,
                 use_global_moe: bool = True, hcmf_residual: bool = True, dyn_attn: bool = True,
                 mask_threshold: float = 0.5,
                 phi_init: float = 0.0, w_ce: float = 1.0, w_cross_kd: float = 1.0, w_align: float = 1.0,
                 w_smooth: float = 1.0, w_feat: float = 1.0, kd_temperature: float = 2.0, smooth_eps: float = 0.1,
                 class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.modalities = resolve_modalities(modalities, input_dims, "summer")
        if teacher_modality is None:
            teacher_modality = "text" if "text" in self.modalities else self.modalities[0]
        if teacher_modality not in MODALITY_ORDER:
            raise ValueError(f"summer: teacher_modality must be one of {MODALITY_ORDER}, got {teacher_modality!r}")
        self.teacher_modality = teacher_modality
        needed = set(self.modalities) | ({teacher_modality} if use_ikd else set())
        missing = sorted(m for m in needed if m not in input_dims)
        if missing:
            raise KeyError(f"summer: input_dims has no size for {missing}; got {input_dims}")
        self.input_dims = {m: int(input_dims[m]) for m in MODALITY_ORDER if m in needed}
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"summer: class_weights has {len(class_weights)} entries, num_classes is {num_classes}")
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        # "w/o IKD" drops all of L_IKD = k1 L_cross^KD + k2 L_align^Label + k3 L_smooth^Label (seed formula) and
        # k4 L_feat (spec S3: k1..k4 = 0), so the smoothing term goes too: only L_CE is left.
        self.w_ce, self.smooth_eps = w_ce, smooth_eps
        self.w_smooth = w_smooth if use_ikd else 0.0
        self.w_cross_kd, self.w_align, self.w_feat = (w_cross_kd, w_align, w_feat) if use_ikd else (0.0, 0.0, 0.0)
        self.kd_temperature = kd_temperature
        self.guided = use_ikd and dyn_attn and use_hcmf and len(self.modalities) > 1  # DynAttn needs >= 2 roles
        moe = dict(num_experts=num_experts, route_rule=route_rule, route_k=route_k, gumbel_tau=gumbel_tau)
        self.teacher = (UnimodalTeacher(modality=teacher_modality, input_dim=self.input_dims[teacher_modality],
                                        d_model=d_model, num_speakers=num_speakers, heads=heads,
                                        num_classes=num_classes, dropout=dropout, moe=moe,
                                        standardize=input_standardize) if use_ikd else None)
        self.student = Student(input_dims={m: self.input_dims[m] for m in self.modalities}, d_model=d_model,
                               num_speakers=num_speakers, heads=heads, num_classes=num_classes, dropout=dropout,
                               moe=moe, use_hcmf=use_hcmf, use_global_moe=use_global_moe,
                               hcmf_residual=hcmf_residual, dyn_attn=self.guided, mask_threshold=mask_threshold,
                               phi_init=phi_init, standardize=input_standardize)
        self._stage_forward: dict[str, Callable[[dict[str, torch.Tensor]], MethodOutput]] = {
            "student": self.forward_student}
        if self.teacher is not None:
            self._stage_forward["teacher"] = self.forward_teacher

    def stages(self) -> list[Stage]:
        teacher = [Stage("teacher", ("teacher",))] if self.teacher is not None else []
        return teacher + [Stage("student", ("student",))]

    def param_groups_all(self) -> dict[str, nn.Module]:
        groups: dict[str, nn.Module] = {"student": self.student}
        if self.teacher is not None:
            groups["teacher"] = self.teacher
        return groups

    def forward(self, batch: dict[str, torch.Tensor], stage: str = "student") -> MethodOutput:
        if stage not in self._stage_forward:
            raise KeyError(f"summer: unknown stage {stage!r}; known: {sorted(self._stage_forward)}")
        return self._stage_forward[stage](batch)

    def forward_teacher(self, batch: dict[str, torch.Tensor]) -> MethodOutput:
        """Stage "teacher": the unimodal teacher alone, trained with CE."""
        assert self.teacher is not None
        mask = check_dialogue_batch(batch, (self.teacher_modality,), self.input_dims, "summer")
        out = self.teacher(batch, mask, prefix_lengths(mask))
        losses = {}
        if "label" in batch:
            losses["ce_teacher"] = masked_cross_entropy(out.logits, batch["label"], mask, self.class_weights)
        return MethodOutput(logits=out.logits, losses=losses, extras={"gates_teacher": out.gates})

    def _needs_teacher(self) -> bool:
        return self.teacher is not None and (self.guided or bool(self.w_cross_kd or self.w_align or self.w_feat))

    def forward_student(self, batch: dict[str, torch.Tensor]) -> MethodOutput:
        """Stage "student": the frozen teacher (eval mode, no grad) guides and distils into the student."""
        roles = self.modalities + ((self.teacher_modality,) if self._needs_teacher() else ())
        mask = check_dialogue_batch(batch, tuple(dict.fromkeys(roles)), self.input_dims, "summer")
        lengths = prefix_lengths(mask)
        teacher_out = None
        if self._needs_teacher():
            assert self.teacher is not None
            self.teacher.eval()  # frozen teacher: no dropout, no Gumbel noise, whatever mode the caller set
            with torch.no_grad():
                teacher_out = self.teacher(batch, mask, lengths)
        out = self.student(batch, mask, lengths, teacher_out.guide if teacher_out is not None and self.guided
                           else None)

        losses: dict[str, torch.Tensor] = {}
        labels = batch.get("label")
        if labels is not None:
            if self.w_ce:
                losses["ce"] = self.w_ce * masked_cross_entropy(out.logits, labels, mask, self.class_weights)
            if self.w_smooth:  # k3 L_smooth^Label
                losses["smooth"] = self.w_smooth * smooth_label_loss(out.logits, labels, mask, self.smooth_eps)
        if teacher_out is not None:
            assert self.teacher is not None
            t = self.kd_temperature
            if self.w_cross_kd:  # k1 L_cross^KD
                head = self.teacher.classifier
                losses["cross_kd"] = self.w_cross_kd * cross_kd_loss(
                    teacher_out.logits, [out.streams[m] for m in self.modalities], head.weight, head.bias, mask, t)
            if self.w_align:  # k2 L_align^Label
                losses["align"] = self.w_align * masked_kl(teacher_out.logits, out.logits, mask, t)
            if self.w_feat:  # k4 latent-space MSE
                losses["feat"] = self.w_feat * feature_loss(out.fused, teacher_out.h, mask)

        extras: dict[str, torch.Tensor] = {f"gates_{k}": g for k, g in out.gates.items()}
        if teacher_out is not None:
            extras["teacher_logits"] = teacher_out.logits
        phis = [c.phi_raw for c in self.student.cross.values() if c.phi_raw is not None]
        if phis:
            extras["phi"] = torch.sigmoid(torch.stack(phis)).detach()
        return MethodOutput(logits=out.logits, losses=losses, extras=extras)
