"""DHMD: Decoupled Hierarchical Distillation for Multimodal Emotion Recognition.

Paper: Yong Li, Yuanzhi Wang, Yi Ding, Shiqing Zhang, Ke Lu, Cuntai Guan, "Decoupled Hierarchical
Distillation for Multimodal Emotion Recognition", arXiv 2602.04260 (2026). Sources: the project spec
``shared/methods/dhmd.md`` and the abstract; no full text and no code were reachable. DHMD is DMD
(``models/dmd.py``, reused unchanged) plus a fine-grained distillation stage, "cross-modal dictionary
matching" (CDM), whose design here is the spec's **choice** (its §2.3 "Variant A"), not the paper's.

What is added to DMD (spec §2.3, all choices):

* One trainable dictionary per decoupled space, shared by L, V and A: D^hom [K, d] and D^het [K, 2d],
  rows N(0, 1) then L2-normalised.
* Activations of every real token of C_m (full homogeneous self-attention output) and H_m (full
  memory-transformer output): a = softmax_k(cos(x, D_k) / tau); the sample code p_m is the mean of a
  over the real steps (so modalities of different lengths are comparable).
* Matching, routed by the coarse stage: L_CDM = sum_{i->j} mean_b sg(w_{i->j,b}) KL(sg p_i || p_j), with
  w the stage-1 GD-Unit weights (eps + prior) of the same space. ``matching="contrastive"`` is the
  spec's Variant B (InfoNCE over the batch on -JS(p_i, p_j') / temperature, 1/6 per ordered pair).
  ``uniform_routing`` replaces the graph weights by 1/6.
* Atom fitting L_fit = sum_m mean_{b,t} ||sg x - sum_k a~_k D_k||^2 / dim with a~ computed from sg x:
  only D learns from it. Usage regulariser L_use = log K - H(mean_{m,b} p) against atom collapse.
* Total: L_DMD + lambda_cdm (L_CDM^hom + L_CDM^het) + lambda_fit (L_fit^hom + L_fit^het)
  + lambda_use (L_use^hom + L_use^het). Joint single-phase training (one "main" stage).
* ``dict_in_fusion`` (ablation, off by default): the fusion head also gets the mean atom reconstruction
  of both spaces for every modality (F grows from 9d to 18d).

On a subset of the modalities (DMD's ``input_dims`` rule, see ``models/dmd.py``) the dictionaries and
codes cover the present modalities ([B, M, K] codes; D^het is as wide as their heterogeneous vectors), the
matching runs over the GD-Units' edges among them (2 with two modalities, uniform routing 1/2), and a
single-modality model has no matching term (nothing to match across) but still fits its dictionaries.

Choices of ours: the activation is a softmax only (sparsemax / top-k codes would make the KL infinite;
not implemented); the spec's per-token Variant C (aligned data only) is not implemented; the optional
5-epoch warm-up without CDM is not implemented (the trainer gives the method no epoch). With
``use_dictionary=False`` no dictionary is built and DHMD computes exactly what DMD computes (tested);
the DMD modules are built first, so the same seed gives the same DMD weights either way.

Extra ``MethodOutput`` entries: losses ``cdm_homo``, ``cdm_hetero``, ``fit_homo``, ``fit_hetero``,
``use_homo``, ``use_hetero`` (weighted); extras ``codes_homo`` / ``codes_hetero`` [B, 3, K] (sample codes,
order L, V, A; [B, M, K] on M modalities).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import register_method
from models.dmd import DMD, EDGES, DMDFeatures, FusionHead, GraphEdges, masked_mean, masked_mean_steps
from pipeline.registry import Registry

SPACES: tuple[str, ...] = ("homo", "hetero")


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

class SharedDictionary(nn.Module):
    """K atoms of size ``dim`` shared by all modalities of one feature space.

    Args:
        num_atoms: K.
        dim: atom size (d for the homogeneous space, 2d for the heterogeneous one).
        temperature: tau of the soft assignment softmax(cos(x, D_k) / tau).
    """

    def __init__(self, *, num_atoms: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.atoms = nn.Parameter(F.normalize(torch.randn(num_atoms, dim), dim=1))
        self.temperature = temperature

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., dim] -> soft assignment [..., K] (every row sums to 1; invariant to scaling x or an atom)."""
        cos = F.normalize(x, dim=-1, eps=1e-8) @ F.normalize(self.atoms, dim=-1, eps=1e-8).t()
        return torch.softmax(cos / self.temperature, dim=-1)

    @staticmethod
    def codes(act: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[B, T, K] activations -> [B, K] sample code: mean over the real steps (a point of the simplex)."""
        return masked_mean_steps(act, valid)

    def reconstruct(self, act: torch.Tensor) -> torch.Tensor:
        """x^ = sum_k a_k D_k."""
        return act @ self.atoms

    def fit_loss(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """mean over real tokens of ||sg x - sum_k a~_k D_k||^2 / dim, a~ from sg x: only D gets gradient."""
        x = x.detach()
        return masked_mean((x - self.reconstruct(self.activations(x))).pow(2), valid)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis."""
    return (torch.xlogy(p, p) - p * q.clamp_min(1e-12).log()).sum(-1)


def usage_loss(codes: torch.Tensor) -> torch.Tensor:
    """log K - H(u), u = mean of the codes [M, B, K] over modalities and samples (>= 0; 0 iff u uniform)."""
    u = codes.mean((0, 1))
    return math.log(u.numel()) + torch.xlogy(u, u).sum()


Matching = Callable[..., torch.Tensor]  # (codes, edge_weights, temperature, edges=...) -> scalar
MATCHINGS: Registry[Matching] = Registry("dictionary matching")


@MATCHINGS.register("kl_routed")
def match_kl_routed(codes: torch.Tensor, edge_weights: torch.Tensor, temperature: float,
                    edges: Sequence[tuple[int, int]] = EDGES) -> torch.Tensor:
    """sum over edges i -> j of mean_b sg(w_{i->j,b}) KL(sg p_{i,b} || p_{j,b}) (codes [M, B, K], w [B, E],
    ``edges`` (teacher, student) positions into codes, in the order of w's columns; ``temperature`` unused)."""
    w = edge_weights.detach()
    total = codes.new_zeros(())
    for x, (i, j) in enumerate(edges):
        total = total + (w[:, x] * kl_divergence(codes[i].detach(), codes[j])).mean()
    return total


@MATCHINGS.register("contrastive")
def match_contrastive(codes: torch.Tensor, edge_weights: torch.Tensor, temperature: float,
                      edges: Sequence[tuple[int, int]] = EDGES) -> torch.Tensor:
    """Variant B: for every ordered pair (i, j) of ``edges`` InfoNCE over the batch with scores
    -JS(p_{i,b}, p_{j,b'}) / temperature and positives b = b'; 1 / len(edges) per ordered pair
    (``edge_weights`` unused)."""
    target = torch.arange(codes.size(1), device=codes.device)
    total = codes.new_zeros(())
    for i, j in edges:
        p, q = codes[i][:, None, :], codes[j][None, :, :]
        mid = 0.5 * (p + q)
        js = 0.5 * kl_divergence(p, mid) + 0.5 * kl_divergence(q, mid)  # [B, B]
        total = total + F.cross_entropy(-js / temperature, target) / len(edges)
    return total


@dataclass
class DictionaryOutputs:
    """Per space: ``act[m]`` activations [B, T'_m, K] and ``codes`` [M, B, K] (order L, V, A)."""

    act: dict[str, dict[str, torch.Tensor]]
    codes: dict[str, torch.Tensor]


def _merged_signature(own: Callable[..., Any], base: Callable[..., Any]) -> inspect.Signature:
    """``own``'s keyword arguments followed by ``base``'s, minus the ``**kwargs`` that forwards them; so
    ``build_method`` rejects a misspelt key for DHMD as it does for DMD."""
    own_sig, base_sig = inspect.signature(own), inspect.signature(base)
    params = [p for p in own_sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in params}
    params += [p for p in base_sig.parameters.values() if p.name not in names and p.kind == p.KEYWORD_ONLY]
    return own_sig.replace(parameters=params)


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------

@register_method("dhmd")
class DHMD(DMD):
    """DMD plus cross-modal dictionary matching (fine-grained KD routed by the GD-Unit edges).

    Args (besides every ``DMD`` argument, which are passed on unchanged):
        input_dims: feature size per role, from the cache.
        num_classes: 1 = regression, >= 2 = classification (as in DMD).
        use_dictionary: build and train the dictionary stage; False gives DMD exactly.
        num_atoms: K, atoms per dictionary.
        dict_temperature: tau of the soft assignment.
        matching: a name in ``MATCHINGS`` ("kl_routed" or "contrastive").
        uniform_routing: weight every edge 1/6 instead of the GD-Unit weights.
        contrastive_temperature: temperature of the "contrastive" matching.
        dict_in_fusion: also feed the mean atom reconstructions to the fusion head (ablation).
        lambda_cdm: weight of the matching terms.
        lambda_fit: weight of the atom-fitting terms.
        lambda_use: weight of the usage regularisers.
    """

    def __init__(self, *, input_dims: dict[str, int], num_classes: int, use_dictionary: bool = True,
                 num_atoms: int = 64, dict_temperature: float = 0.1, matching: str = "kl_routed",
                 uniform_routing: bool = False, contrastive_temperature: float = 0.1, dict_in_fusion: bool = False,
                 lambda_cdm: float = 0.05, lambda_fit: float = 0.1, lambda_use: float = 0.01,
                 **dmd_kwargs: Any) -> None:
        super().__init__(input_dims=input_dims, num_classes=num_classes, **dmd_kwargs)  # DMD modules first (same RNG)
        self.use_dictionary = use_dictionary
        if not use_dictionary:
            return
        d, h, n_mods = self.backbone.d_model, self.backbone.hetero_dim, len(self.modalities)
        self.match = MATCHINGS.get(matching)
        self.uniform_routing = uniform_routing
        self.contrastive_temperature = contrastive_temperature
        self.lambda_cdm, self.lambda_fit, self.lambda_use = lambda_cdm, lambda_fit, lambda_use
        self.dictionaries = nn.ModuleDict({
            "homo": SharedDictionary(num_atoms=num_atoms, dim=d, temperature=dict_temperature),
            "hetero": SharedDictionary(num_atoms=num_atoms, dim=h, temperature=dict_temperature)})
        self.dict_in_fusion = dict_in_fusion
        if dict_in_fusion:
            dropout = self.backbone.fusion.head.dropout.p
            self.backbone.fusion = FusionHead(d_model=d, out_dim=num_classes, dropout=dropout,
                                              extra_dim=n_mods * (d + h), modalities=self.modalities, hetero_dim=h)

    def param_groups_all(self) -> dict[str, nn.Module]:
        groups = super().param_groups_all()
        if self.use_dictionary:
            groups["dictionary"] = self.dictionaries
        return groups

    def auxiliary(self, feats: DMDFeatures) -> DictionaryOutputs | None:
        if not self.use_dictionary:
            return None
        seqs = {"homo": feats.homo_seq, "hetero": feats.hetero_seq}
        act = {s: {m: self.dictionaries[s].activations(seqs[s][m]) for m in self.modalities} for s in SPACES}
        codes = {s: torch.stack([SharedDictionary.codes(act[s][m], feats.valid[m]) for m in self.modalities])
                 for s in SPACES}
        return DictionaryOutputs(act=act, codes=codes)

    def fusion_extra(self, feats: DMDFeatures, aux: DictionaryOutputs | None) -> torch.Tensor | None:
        if aux is None or not self.dict_in_fusion:
            return None
        parts = [masked_mean_steps(self.dictionaries[s].reconstruct(aux.act[s][m]), feats.valid[m])
                 for m in self.modalities for s in SPACES]
        return torch.cat(parts, dim=1)

    def extra_losses(self, feats: DMDFeatures, aux: DictionaryOutputs | None, homo: GraphEdges | None,
                     hetero: GraphEdges | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if aux is None:
            return {}, {}
        seqs = {"homo": feats.homo_seq, "hetero": feats.hetero_seq}
        graphs = {"homo": (self.gd_homo, homo), "hetero": (self.gd_hetero, hetero)}
        losses: dict[str, torch.Tensor] = {}
        for s in SPACES:
            unit, edges = graphs[s]
            if unit is not None and edges is not None:  # one modality: nothing to match across
                w = edges.weights
                if self.uniform_routing:
                    w = torch.full_like(w, 1.0 / len(unit.edges))
                losses[f"cdm_{s}"] = self.lambda_cdm * self.match(aux.codes[s], w, self.contrastive_temperature,
                                                                  edges=unit.edges)
            losses[f"fit_{s}"] = self.lambda_fit * sum(
                self.dictionaries[s].fit_loss(seqs[s][m], feats.valid[m]) for m in self.modalities)
            losses[f"use_{s}"] = self.lambda_use * usage_loss(aux.codes[s])
        extras = {f"codes_{s}": aux.codes[s].transpose(0, 1).detach() for s in SPACES}
        return losses, extras


DHMD.__init__.__signature__ = _merged_signature(DHMD.__init__, DMD.__init__)  # type: ignore[attr-defined]
