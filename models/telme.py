"""TelME: Teacher-leading Multimodal fusion network for Emotion recognition in conversation.

Paper: T. Yun, H. Lim, J. Lee, M. Song, NAACL 2024 (arXiv 2401.12987); authors' code yuntaeyang/TelME.
Spec: ``shared/methods/telme.md``. Two modes, one switch (``model.students``):

* ``cached`` (spec 2.6 A): the encoders are frozen and their features come from the cache, so every stage
  trains small heads only (the students are projection MLPs over cached audio / video vectors).
* ``finetune`` (spec 2.6 B, the paper): the students ARE the audio and video encoders (data2vec-audio,
  TimeSformer) + a linear head, fine-tuned end to end by distillation from the frozen teacher on the
  cache's decoded inputs (``features --inputs data2vec timesformer``, ``pipeline/inputs.py``); the fusion
  stage then runs the frozen fine-tuned students. Their weights live in the run's stage safetensors.

Stages, in the paper's order (spec 2.5):

1. ``teacher``: h_T = Linear(Dropout(F_T)), z_T = Linear(h_T); CE(z_T, y).
2. ``student_audio`` then ``student_video``: h_m = P_m(x_m) (projection MLP), z_m = Linear(h_m);
   CE + alpha * L_response + beta * L_feature against the frozen teacher (eq. (4)).
3. ``fusion``: Attention-based modality Shifting Fusion (ASF, eq. (5) and spec 2.4) over the frozen
   h_T, h_a, h_v; CE on its logits. Inference uses these logits.

Choices where the paper is silent or cached mode differs (marked [Ch] in the spec):

* ``teacher_mlp`` adds a GELU after the teacher projection (off by default, faithful).
* ``asf_attention="batch"`` (faithful): the MHA attends over the utterances of the mini-batch, read as one
  sequence of length B (the code's behaviour). ``"none"``: each sample is its own length-1 sequence for the
  same MHA, so the attention reduces to out_proj(v_proj(c)) per sample and no sample sees another (same
  parameters, so checkpoints are interchangeable).
* Missing inputs (``batch["<role>_missing"]``, zeros are stored): in a student stage the rows whose input
  of that student's modality is missing are left out of all its loss terms (CE and both KD terms; zeros
  carry nothing to learn). In the fusion stage those rows pass through unchanged: the frozen student maps
  the zero vector to a fixed feature, as the code does for MELD clips over 30 s (zero audio/video).
* Frozen parts run under ``torch.no_grad()`` and in eval mode inside ``forward`` whatever the caller set,
  so the teacher targets are deterministic; their previous mode is restored afterwards.
* Finetune mode, fusion stage (``fusion_memo``, default on): the frozen students' h_a, h_v of a row are
  computed once and remembered by the batch's ``row_uid`` (eval mode, no gradient: the same values every
  epoch), so later fusion epochs and dev scoring skip both encoders. The memory is emptied whenever a
  student could change (another stage's forward, ``load_state_dict``); loaded runs scoring new data
  (``pipeline.predict``) send no ``row_uid`` and never use it.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ROW_UID, Method, MethodOutput, Stage, register_method
from models.blocks import ProjectionHead, dist_response_loss, mlp, similarity_kl_loss

__all__ = ["ASF", "ASFOutput", "TelME", "dist_response_loss", "similarity_kl_loss", "shift_weight"]

IGNORE_INDEX = -100
NORM_EPS = 1e-6  # lambda = min(theta ||h_T|| / (||H|| + 1e-6), 1)
ATTENTION_MODES = ("batch", "none")
STUDENT_MODES = ("cached", "finetune")
STUDENT_ROLES = ("audio", "video")


# ----------------------------------------------------------------------------------------------- blocks
def shift_weight(h_text: torch.Tensor, shift: torch.Tensor, theta: float) -> torch.Tensor:
    """lambda = min(theta * ||h_T|| / (||H|| + 1e-6), 1) per sample, ||H|| = 0 replaced by 1 (eq. (5), spec 2.4).

    Guarantees ||lambda H|| <= theta ||h_T||. Not detached: gradients flow through ||H|| when lambda < 1
    (spec 6.8).
    """
    h_norm = h_text.norm(p=2, dim=-1)
    s_norm = shift.norm(p=2, dim=-1)
    s_norm = torch.where(s_norm == 0, torch.ones_like(s_norm), s_norm)
    return torch.clamp(theta * h_norm / (s_norm + NORM_EPS), max=1.0)


@dataclass
class ASFOutput:
    logits: torch.Tensor  # [B, C]
    fused: torch.Tensor  # Z, [B, hidden]
    gate: torch.Tensor  # g_AV, [B, hidden]
    shift: torch.Tensor  # H, [B, hidden]
    lam: torch.Tensor  # lambda, [B]


class ASF(nn.Module):
    """Attention-based modality Shifting Fusion (slides eq. (5), spec 2.4).

    c = [h_a; h_v]; c_hat = MHA(c, c, c) + c; F_att = Dropout(LN(c_hat)); g = ReLU(W_1 [F_att; h_T] + b_1);
    H = g * (W_2 F_att + b_2); Z = Dropout(LN(h_T + lambda H)); logits = W_o Z + b_o.
    """

    def __init__(self, *, hidden: int, num_classes: int, theta: float, heads: int, dropout: float,
                 attention: str) -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"asf_attention must be one of {ATTENTION_MODES}, got {attention!r}")
        width = 2 * hidden
        if width % heads:
            raise ValueError(f"ASF attention width 2*hidden = {width} is not divisible by asf_heads = {heads}")
        self.theta = theta
        self.attention = attention
        self.mha = nn.MultiheadAttention(width, heads, dropout=0.0)  # sequence-first, no attention dropout
        self.att_norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width + hidden, hidden)  # W_1
        self.shift = nn.Linear(width, hidden)  # W_2
        self.out_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)  # W_o

    def forward(self, h_text: torch.Tensor, h_audio: torch.Tensor, h_video: torch.Tensor) -> ASFOutput:
        c = torch.cat([h_audio, h_video], dim=-1)  # [B, 2h]; order audio, video as fusion.py (spec 6.6)
        # "batch": one sequence of length B (L=B, N=1); "none": B sequences of length 1 (L=1, N=B).
        seq = c.unsqueeze(1) if self.attention == "batch" else c.unsqueeze(0)
        att, _ = self.mha(seq, seq, seq, need_weights=False)
        c_hat = att.squeeze(1) if self.attention == "batch" else att.squeeze(0)
        f_att = self.dropout(self.att_norm(c_hat + c))
        g = torch.relu(self.gate(torch.cat([f_att, h_text], dim=-1)))  # gate g_AV, eq. (5)
        shift = g * self.shift(f_att)  # H, eq. (5)
        lam = shift_weight(h_text, shift, self.theta)  # lambda, eq. (5)
        fused = self.dropout(self.out_norm(h_text + lam.unsqueeze(-1) * shift))  # Z, eq. (5) + LN/dropout [C]
        return ASFOutput(self.classifier(fused), fused, g, shift, lam)


class TeacherHead(ProjectionHead):
    """Cached-mode teacher (spec 2.6 A): h_T = Linear(Dropout(F_T)) [optionally GELU], z_T = Linear(h_T).
    With ``init: {teacher: <finetune run>}`` it starts from the fine-tuned encoder's head (paper stage 1)."""


class StudentEncoder(nn.Module):
    """Finetune-mode student (spec 2.3 [C]): the encoder itself, trained end to end. h_m = its pooled output
    (data2vec: frame 0 with ``pooling: first`` as the code, or the mean over valid frames; TimeSformer: CLS),
    z_m = Linear(h_m). No projection, as the code, when the encoder width equals ``hidden`` (768 = 768 in the
    paper); otherwise a Linear(dim -> hidden) [Ch] so that ASF gets equal widths (the tiny offline encoders).

    The batch holds the encoder's ``collate`` output as ``<role>.<key>`` tensors (``pipeline/collate.py``)."""

    def __init__(self, *, encoder: Any, role: str, hidden: int, num_classes: int,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.encoder, self.role = encoder, role  # the Encoder object (not a module): collate / pooled code
        self.backbone: nn.Module = encoder.model
        if gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        dim = int(encoder.dim)
        self.proj: nn.Module = nn.Identity() if dim == hidden else nn.Linear(dim, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters no step can reach (data2vec's mask embedding when SpecAugment is off): kept out of
        training (DDP requires a gradient for every trained parameter)."""
        cfg = getattr(self.backbone, "config", None)
        spec = getattr(self.backbone, "masked_spec_embed", None)
        active = cfg is not None and getattr(cfg, "apply_spec_augment", False) and (
            getattr(cfg, "mask_time_prob", 0) > 0 or getattr(cfg, "mask_feature_prob", 0) > 0)
        return [spec] if isinstance(spec, nn.Parameter) and not active else []

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = f"{self.role}."
        inputs = {k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)}
        if not inputs:
            raise KeyError(f"telme: finetune mode needs the {self.role} encoder's inputs ({prefix}*) in the "
                           f"batch; it has {sorted(batch)}")
        h = self.proj(self.encoder.pooled(self.backbone, inputs)[0])
        return h, self.head(h)


class StudentHead(nn.Module):
    """Cached-mode student (spec 2.6 A): h_m = Linear -> GELU -> Dropout -> Linear (x_m), z_m = Linear(h_m)."""

    def __init__(self, *, in_dim: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.proj = mlp(in_dim, hidden, hidden, dropout=dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(x)
        return h, self.head(h)


@contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` in eval mode without gradients, then restore their train/eval mode."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain CE ignoring -100; a graph-connected zero when no row has a label (instead of NaN)."""
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


# ----------------------------------------------------------------------------------------------- method
@register_method("telme")
class TelME(Method):
    """TelME in cached mode. Stages: teacher -> student_audio -> student_video -> fusion.

    Args:
        input_dims: feature size per role ("text", "audio", "video"), read from the cache.
        num_classes: number of emotion classes.
        hidden: width of h_T, h_a, h_v (768 in the paper); the ASF attention width is 2 * hidden.
        theta: ASF shift bound, ||lambda H|| <= theta ||h_T||.
        asf_heads: attention heads of the ASF MHA (must divide 2 * hidden).
        asf_dropout: dropout on F_att and on Z.
        asf_attention: "batch" (attend over the mini-batch, faithful) or "none" (per sample).
        teacher_dropout: dropout on the cached text feature F_T before the teacher projection.
        teacher_mlp: GELU after the teacher projection.
        student_dropout: dropout inside the student projection MLP (cached mode).
        students: "cached" (projection MLPs over cached vectors) or "finetune" (the encoders, trained).
        encoders: finetune mode: {"audio": Encoder, "video": Encoder}, given by the trainer from the cache's
            decoded inputs (``Method.input_roles``).
        audio_pooling: finetune mode: override the audio encoder's pooling ("first" = frame 0, the code).
        audio_mask_time_length: finetune mode: data2vec's SpecAugment mask length (the code sets 3).
        gradient_checkpointing: finetune mode: recompute the student encoders' activations (less memory).
        fusion_memo: finetune mode: remember the frozen students' embeddings per row in the fusion stage
            (see the module notes; ``hidden`` floats x 2 per row: 84 MB for MELD's 13,708 rows at 768).
        alpha, beta: weights of L_response and L_feature in the student stages.
        tau: temperature of the response loss.
        feature_temp: temperature T_f of the feature loss.
    """

    ROLES = ("text", "audio", "video")
    GRANULARITY = "utterance"
    TASKS = ("classification",)

    def __init__(self, *, input_dims: dict[str, int], num_classes: int, hidden: int = 768, theta: float = 0.1,
                 asf_heads: int = 3, asf_dropout: float = 0.2, asf_attention: str = "batch",
                 teacher_dropout: float = 0.1, teacher_mlp: bool = False, student_dropout: float = 0.1,
                 alpha: float = 1.0, beta: float = 1.0, tau: float = 4.0, feature_temp: float = 1.0,
                 students: str = "cached", encoders: dict[str, Any] | None = None, audio_pooling: str | None = None,
                 audio_mask_time_length: int | None = None, gradient_checkpointing: bool = False,
                 fusion_memo: bool = True) -> None:
        super().__init__()
        self.fusion_memo = bool(fusion_memo)
        self._memo: dict[str, dict[int, torch.Tensor]] = {}  # role -> row uid -> h of the frozen student
        if students not in STUDENT_MODES:
            raise ValueError(f"telme: model.students must be one of {STUDENT_MODES}, got {students!r}")
        encoders = dict(encoders or {})
        if students == "finetune" and sorted(encoders) != sorted(STUDENT_ROLES):
            raise ValueError(f"telme: students=finetune needs the audio and video encoders (from the cache's "
                             f"decoded inputs); got {sorted(encoders)}")
        if students == "cached" and encoders:
            raise ValueError("telme: encoders are given only in students=finetune mode")
        self.students_mode = students
        missing = [r for r in self.ROLES if r not in input_dims]
        if missing:
            raise ValueError(f"telme: input_dims lacks roles {missing}; got {sorted(input_dims)}")
        if num_classes < 2:
            raise ValueError(f"telme: num_classes must be >= 2, got {num_classes}")
        self.input_dims = {r: int(input_dims[r]) for r in self.ROLES}
        self.alpha, self.beta, self.tau, self.feature_temp = alpha, beta, tau, feature_temp
        self.teacher = TeacherHead(in_dim=self.input_dims["text"], hidden=hidden, num_classes=num_classes,
                                   dropout=teacher_dropout, use_mlp=teacher_mlp)
        if students == "finetune":
            if audio_pooling is not None:
                encoders["audio"].pooling = audio_pooling  # type: ignore[attr-defined]
            if audio_mask_time_length is not None:
                encoders["audio"].model.config.mask_time_length = int(audio_mask_time_length)
            self.students = nn.ModuleDict({
                r: StudentEncoder(encoder=encoders[r], role=r, hidden=hidden, num_classes=num_classes,
                                  gradient_checkpointing=gradient_checkpointing) for r in STUDENT_ROLES})
        else:
            self.students = nn.ModuleDict({
                r: StudentHead(in_dim=self.input_dims[r], hidden=hidden, num_classes=num_classes,
                               dropout=student_dropout) for r in STUDENT_ROLES})
        self.asf = ASF(hidden=hidden, num_classes=num_classes, theta=theta, heads=asf_heads,
                       dropout=asf_dropout, attention=asf_attention)

    @classmethod
    def input_roles(cls, model_config: dict[str, Any]) -> set[str]:
        return set(STUDENT_ROLES) if model_config.get("students", "cached") == "finetune" else set()

    def param_groups(self, stage: Stage) -> list[nn.Parameter]:
        unused = {id(p) for m in self.students.values() if isinstance(m, StudentEncoder) for p in m.unused_parameters()}
        return [p for p in super().param_groups(stage) if id(p) not in unused]

    def stages(self) -> list[Stage]:
        return [Stage("teacher", ("teacher",), modality="text"),
                Stage("student_audio", ("student_audio",), modality="audio"),
                Stage("student_video", ("student_video",), modality="video"),
                Stage("fusion", ("fusion",))]

    def param_groups_all(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher, "student_audio": self.students["audio"],
                "student_video": self.students["video"], "fusion": self.asf}

    def _input(self, batch: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        if role not in batch:
            raise KeyError(f"telme: batch has no {role!r} features; it has {sorted(batch)}")
        x = batch[role]
        if x.dim() != 2 or x.shape[-1] != self.input_dims[role]:
            raise ValueError(f"telme: {role!r} features must be [B, {self.input_dims[role]}], got {tuple(x.shape)}")
        return x.to(self.teacher.proj.weight.dtype)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._memo.clear()  # new student weights: what was remembered is stale
        return super().load_state_dict(*args, **kwargs)

    def forward(self, batch: dict[str, torch.Tensor], stage: str) -> MethodOutput:
        if stage != "fusion":
            self._memo.clear()  # the students may change from here on
        text = self._input(batch, "text")
        labels = batch.get("label")
        if stage == "teacher":
            _, z_t = self.teacher(text)
            losses = {} if labels is None else {"ce": _cross_entropy(z_t, labels)}
            return MethodOutput(logits=z_t, losses=losses)
        if stage in ("student_audio", "student_video"):
            return self._student_step(batch, stage.removeprefix("student_"), text, labels)
        if stage == "fusion":
            return self._fusion_step(batch, text, labels)
        raise KeyError(f"telme: unknown stage {stage!r}; known: {[s.name for s in self.stages()]}")

    def _student_step(self, batch: dict[str, torch.Tensor], role: str, text: torch.Tensor,
                      labels: torch.Tensor | None) -> MethodOutput:
        with _frozen(self.teacher):
            h_t, z_t = self.teacher(text)
        h_s, z_s = self._student(batch, role)
        keep = torch.ones(z_s.shape[0], dtype=torch.bool, device=z_s.device)
        if batch.get(f"{role}_missing") is not None:
            keep &= ~batch[f"{role}_missing"].to(device=z_s.device, dtype=torch.bool)
        if labels is not None:
            keep &= labels != IGNORE_INDEX
        losses: dict[str, torch.Tensor] = {}
        if labels is not None:
            losses["ce"] = _cross_entropy(z_s, torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX)))
        if bool(keep.any()):
            losses["response"] = self.alpha * dist_response_loss(z_s[keep], z_t[keep], self.tau)  # eq. (4)
            losses["feature"] = self.beta * similarity_kl_loss(h_s[keep], h_t[keep], self.feature_temp)
        else:
            losses["response"] = losses["feature"] = z_s.sum() * 0.0
        return MethodOutput(logits=z_s, losses=losses)

    def _student(self, batch: dict[str, torch.Tensor], role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_m, z_m) of one student: over the cached vector, or the fine-tuned encoder over its inputs."""
        student = self.students[role]
        if isinstance(student, StudentEncoder):
            h, z = student(batch)
            return h.to(self.teacher.proj.weight.dtype), z
        return student(self._input(batch, role))

    def _frozen_student(self, batch: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        """h_m of a frozen student (caller: ``_frozen``); a fine-tuned encoder's rows are computed once per
        ``row_uid`` and then read back (``fusion_memo``). Only the rows not seen yet run the encoder."""
        uid = batch.get(ROW_UID)
        if not (self.fusion_memo and uid is not None and isinstance(self.students[role], StudentEncoder)):
            return self._student(batch, role)[0]
        memo = self._memo.setdefault(role, {})
        keys = [int(k) for k in uid.tolist()]
        first: dict[int, int] = {}  # uid -> its first row here (Accelerate may repeat rows in a last batch)
        for i, k in enumerate(keys):
            if k not in memo:
                first.setdefault(k, i)
        if first:
            rows = list(first.values())
            prefix = f"{role}."
            sub = {k: v[torch.as_tensor(rows, device=v.device)] for k, v in batch.items() if k.startswith(prefix)}
            h, _ = self._student(sub, role)
            for k, row in zip(first, h.detach()):
                memo[k] = row
        return torch.stack([memo[k] for k in keys])

    def _fusion_step(self, batch: dict[str, torch.Tensor], text: torch.Tensor,
                     labels: torch.Tensor | None) -> MethodOutput:
        with _frozen(self.teacher, self.students):
            h_t, _ = self.teacher(text)
            h_a = self._frozen_student(batch, "audio")
            h_v = self._frozen_student(batch, "video")
        out = self.asf(h_t, h_a, h_v)
        losses = {} if labels is None else {"ce": _cross_entropy(out.logits, labels)}
        return MethodOutput(logits=out.logits, losses=losses, extras={"gate": out.gate, "lambda": out.lam})
