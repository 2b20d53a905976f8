"""DMD (models/dmd.py): losses and GD-Units against hand computation (spec shared/methods/dmd.md §7),
masking / padding invariance, heads, configs. Tiny sizes, CPU only."""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.base import build_method
from models.dmd import (DMD, EDGES, EDGE_NAMES, MODALITIES, ORT_LOSSES, REPR_DISTANCES, GraphDistillationUnit,
                        MaskedStandardizer, MulTEncoder, causal_allowed, gd_prior, margin_loss, masked_mse,
                        sinusoidal_positions, subset_edges)
from pipeline.config import load_config


DIMS = {"text": 6, "audio": 3, "video": 4}
TINY = dict(seq_len=10, d_model=8, num_heads=2, num_layers=1, kernel_sizes={"text": 3, "audio": 1, "video": 2},
            gd_hidden_homo=6, gd_hidden_hetero=5, embed_dropout=0.1, attn_dropout=0.1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("single_thread_module")  # tiny tensors: one thread is faster


def tiny_model(num_classes: int = 1, seed: int = 0, **overrides: object) -> DMD:
    torch.manual_seed(seed)
    return DMD(input_dims=DIMS, num_classes=num_classes, **{**TINY, **overrides})


def random_items(n: int, gen: torch.Generator, max_len: int = 8) -> list[dict[str, torch.Tensor]]:
    """n items, each role a [L_i, D] tensor with its own length (1..max_len)."""
    return [{role: torch.randn(int(torch.randint(1, max_len + 1, (1,), generator=gen)), dim, generator=gen)
             for role, dim in DIMS.items()} for _ in range(n)]


def collate(items: list[dict[str, torch.Tensor]], steps: int, garbage: float | None = 0.0,
            gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Pad items to ``steps`` with ``garbage`` (None = random noise) like the sequence collator does."""
    batch: dict[str, torch.Tensor] = {}
    for role, dim in DIMS.items():
        if garbage is None:
            x = torch.randn(len(items), steps, dim, generator=gen) * 100.0
        else:
            x = torch.full((len(items), steps, dim), garbage)
        lengths = torch.tensor([it[role].size(0) for it in items])
        for b, it in enumerate(items):
            x[b, :it[role].size(0)] = it[role]
        batch[role] = x
        batch[f"{role}_len"] = lengths
        batch[f"{role}_mask"] = torch.arange(steps)[None, :] < lengths[:, None]
    return batch


def labelled(batch: dict[str, torch.Tensor], gen: torch.Generator, num_classes: int) -> dict[str, torch.Tensor]:
    b = batch["text"].size(0)
    batch["score"] = torch.randn(b, generator=gen)
    batch["label_mask"] = torch.ones(b, dtype=torch.bool)
    batch["label"] = torch.randint(0, max(num_classes, 2), (b,), generator=gen)
    return batch


# --------------------------------------------------------------------------------------------------
# GD-Unit (spec §7.2 - §7.5)
# --------------------------------------------------------------------------------------------------

def test_gd_priors_match_spec() -> None:
    homo = gd_prior([0, 0, 1, 0, 1, 0], 0.25)
    hetero = gd_prior([0, 0, 1, 0, 1, 1], 0.25)
    assert torch.allclose(homo, torch.tensor([0.008834, 0.008834, 0.482332, 0.008834, 0.482332, 0.008834]), atol=1e-6)
    assert torch.allclose(hetero, torch.tensor([0.005995, 0.005995, 0.327338, 0.005995, 0.327338, 0.327338]),
                          atol=1e-6)
    assert EDGE_NAMES == ("V->L", "A->L", "L->V", "A->V", "L->A", "V->A")
    with pytest.raises(ValueError, match="6 edge logits"):
        gd_prior([0, 1], 0.25)


def _unit(kind: str, num_classes: int = 1, repr_dim: int = 4) -> GraphDistillationUnit:
    prior = [0, 0, 1, 0, 1, 0] if kind == "homo" else [0, 0, 1, 0, 1, 1]
    return GraphDistillationUnit(num_classes=num_classes, repr_dim=repr_dim, hidden=3, prior_logits=prior,
                                 repr_distance=None if kind == "homo" else "min_cosine")


def test_gd_edge_weights_sum_to_one_and_are_uniform_without_edge_layer() -> None:
    torch.manual_seed(0)
    unit = _unit("hetero", num_classes=2)
    edges = unit(torch.randn(3, 5, 2) * 10, torch.randn(3, 5, 4))
    assert edges.eps.shape == (5, 6)
    assert (edges.eps >= 0).all()
    assert torch.allclose(edges.eps.sum(1), torch.ones(5))
    assert torch.allclose(edges.weights, edges.eps + unit.prior)
    assert not torch.allclose(edges.eps, torch.full_like(edges.eps, 1 / 6))  # learned edges differ per sample
    with torch.no_grad():
        unit.w_edge.weight.zero_()
        unit.w_edge.bias.zero_()
    assert torch.allclose(unit(torch.randn(3, 5, 2), torch.randn(3, 5, 4)).eps, torch.full((5, 6), 1 / 6))


@pytest.mark.parametrize("kind, reg", [("homo", 2.98933), ("hetero", 1.54892)])
def test_gd_loss_values_by_hand(kind: str, reg: float) -> None:
    unit = _unit(kind)
    with torch.no_grad():
        unit.w_edge.weight.zero_()
    logits = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1)  # L, V, A; one sample
    reprs = torch.randn(3, 1, 4)
    edges = unit(logits, reprs)
    losses = unit.losses(logits, reprs, edges)
    # distances V->L 1, A->L 3, L->V 1, A->V 2, L->A 3, V->A 2; sum(d)/6 + sum(prior * d) = 2 + 2
    assert losses["logit"].item() == pytest.approx(4.0, abs=1e-5)
    assert losses["reg"].item() == pytest.approx(reg, abs=1e-4)
    same = torch.full((3, 1, 1), 0.7)
    assert unit.losses(same, reprs, unit(same, reprs))["logit"].item() == pytest.approx(0.0, abs=1e-7)


def test_gd_teacher_gets_no_gradient_through_the_distance() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 2, requires_grad=True)
    distances = GraphDistillationUnit.logit_distances(logits)
    for x, (i, j) in enumerate(EDGES):
        (grad,) = torch.autograd.grad(distances[:, x].sum(), logits, retain_graph=True)
        assert not grad[i].any(), f"teacher {EDGE_NAMES[x]} got a gradient"
        assert grad[j].abs().sum() > 0
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 5, requires_grad=True)
    for name in REPR_DISTANCES:
        loss = REPR_DISTANCES.get(name)(student + teacher.detach() * 0.5, teacher, torch.ones(4))  # positive cos
        g_teacher, g_student = torch.autograd.grad(loss, [teacher, student], allow_unused=True)
        assert g_teacher is None
        assert g_student is not None and g_student.abs().sum() > 0


def test_gd_logit_gradient_with_constant_edges_by_hand() -> None:
    """Spec §7.5: with W_edge = 0, dL/dy_k = sum over edges with student k of w sign(y_k - y_i) / B."""
    torch.manual_seed(2)
    unit = _unit("homo")
    with torch.no_grad():
        unit.w_edge.weight.zero_()
    b = 3
    logits = torch.randn(3, b, 1, requires_grad=True)
    reprs = torch.randn(3, b, 4)
    loss = unit.losses(logits, reprs, unit(logits, reprs))["logit"]
    (grad,) = torch.autograd.grad(loss, logits)
    w = 1 / 6 + unit.prior
    y = logits.detach()[..., 0]
    expected = torch.zeros(3, b)
    for x, (i, j) in enumerate(EDGES):
        expected[j] += w[x] * torch.sign(y[j] - y[i]) / b
    assert torch.allclose(grad[..., 0], expected, atol=1e-6)


def test_gd_hetero_repr_term_by_hand() -> None:
    unit = _unit("hetero", repr_dim=2)
    with torch.no_grad():
        unit.w_edge.weight.zero_()
    # L = (1, 0), V = (1, 1), A = (0, 1); one sample; cos(V, L) = cos(V, A) = 1/sqrt(2), cos(L, A) = 0
    reprs = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]).view(3, 1, 2)
    logits = torch.zeros(3, 1, 1)
    losses = unit.losses(logits, reprs, unit(logits, reprs))
    w = 1 / 6 + unit.prior  # edges V->L, A->L, L->V, A->V, L->A, V->A
    cos = torch.tensor([1, 0, 1, 1, 0, 1]) / math.sqrt(2)
    assert losses["repr"].item() == pytest.approx(10 * float((cos * w).sum()), abs=1e-5)


# --------------------------------------------------------------------------------------------------
# Decoupling losses (spec §7.6 - §7.8)
# --------------------------------------------------------------------------------------------------

def test_margin_loss_spec_values() -> None:
    labels = torch.tensor([0.0, 0, 0, 1, 1, 1])  # 2 samples x (L, V, A)
    apart = torch.tensor([[1.0, 0]] * 3 + [[0.0, 1]] * 3)
    assert margin_loss(apart, labels, 0.15).item() == pytest.approx(0.0, abs=1e-7)
    together = torch.tensor([[1.0, 0]] * 6)
    assert margin_loss(together, labels, 0.15).item() == pytest.approx(0.15, abs=1e-6)
    assert margin_loss(torch.randn(6, 2), torch.zeros(6), 0.15).item() == 0.0  # no negatives
    torch.manual_seed(3)
    feats, labs = torch.randn(9, 4), torch.tensor([0.5, 0.5, 0.5, -1, -1, -1, 2, 2, 2])
    perm = torch.randperm(9)
    assert margin_loss(feats, labs, 0.15).item() == pytest.approx(margin_loss(feats[perm], labs[perm], 0.15).item(),
                                                                   abs=1e-6)


def test_margin_loss_matches_a_loop_over_triplets() -> None:
    torch.manual_seed(4)
    feats = torch.randn(12, 3)
    labels = torch.tensor([0.0, 0, 0, 1.2, 1.2, 1.2, 0, 0, 0, -2, -2, -2])
    cos = F.cosine_similarity(feats[:, None], feats[None], dim=-1)
    per_anchor = []
    for a in range(12):
        pos = [p for p in range(12) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(12) if labels[n] != labels[a]]
        if pos and neg:
            terms = [max(0.0, 0.15 * abs(float(labels[a] - labels[n])) - float(cos[a, p]) + float(cos[a, n]))
                     for p in pos for n in neg]
            per_anchor.append(sum(terms) / len(terms))
    assert margin_loss(feats, labels, 0.15).item() == pytest.approx(sum(per_anchor) / len(per_anchor), abs=1e-5)


def test_orthogonality_per_sample_values() -> None:
    torch.manual_seed(5)
    ort = ORT_LOSSES.get("per_sample")
    c = torch.randn(3, 4, 2)
    valid = torch.ones(3, 4, dtype=torch.bool)
    assert ort(c, c, valid).item() == pytest.approx(1.0, abs=1e-6)
    assert ort(-c, c, valid).item() == pytest.approx(0.0, abs=1e-7)
    orth = torch.stack([-c[..., 1], c[..., 0]], dim=-1)  # each step rotated by 90 degrees
    assert ort(orth, c, valid).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(3, 4, 2)
    padded_s, padded_c = F.pad(s, (0, 0, 0, 3)), F.pad(c, (0, 0, 0, 3))  # zero steps change nothing
    assert ort(padded_s, padded_c, F.pad(valid, (0, 3))).item() == pytest.approx(ort(s, c, valid).item(), abs=1e-6)


def test_orthogonality_batch_axis_legacy_by_hand() -> None:
    ort = ORT_LOSSES.get("batch_axis_legacy")
    s = torch.tensor([[[1.0], [0.0]], [[2.0], [0.0]]])  # B = 2, T = 2 (step 2 padded for both), d = 1
    c = torch.tensor([[[3.0], [0.0]], [[-1.0], [0.0]]])
    valid = torch.tensor([[True, False], [True, False]])
    # cos across the batch at step 1: (1*3 + 2*(-1)) / (sqrt(5) sqrt(10)); the all-padded step is left out
    assert ort(s, c, valid).item() == pytest.approx(1 / math.sqrt(50), abs=1e-6)


def test_masked_mse_ignores_padded_steps() -> None:
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0]], [[0.0, 0.0], [9.0, 9.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, False], [True, False]])
    assert masked_mse(pred, target, valid).item() == pytest.approx((1 + 4 + 1 + 1) / 4)


def test_reconstruction_and_cycle_vanish_for_identity_weights() -> None:
    model = tiny_model().eval()
    d = TINY["d_model"]
    eye = torch.eye(d)
    with torch.no_grad():
        model.backbone.enc_shared.weight.copy_(eye)
        for m in MODALITIES:
            model.backbone.enc_private[m].weight.copy_(eye)
            model.backbone.decoder[m].weight.copy_(torch.cat([eye, eye], dim=1) / 2)
    gen = torch.Generator().manual_seed(6)
    out = model(labelled(collate(random_items(3, gen), 8), gen, 1), "main")
    assert out.losses["rec"].item() == pytest.approx(0.0, abs=1e-10)
    assert out.losses["cyc"].item() == pytest.approx(0.0, abs=1e-10)
    assert out.losses["ort"].item() > 0  # s = c here: the orthogonality term is at its maximum


def test_input_standardizer_uses_real_steps_only() -> None:
    norm = MaskedStandardizer(2, momentum=0.5)
    x = torch.tensor([[[1.0, 10.0], [3.0, 30.0], [99.0, -99.0]], [[5.0, 20.0], [0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    y = norm(x, valid)
    # real values per feature: (1, 3, 5) and (10, 30, 20): means 3 and 20, variances 8/3 and 200/3
    assert torch.allclose(norm.running_mean, torch.tensor([3.0, 20.0]))  # first batch: taken as is
    assert torch.allclose(norm.running_var, torch.tensor([8 / 3, 200 / 3]))
    assert torch.allclose(y[valid].mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(y[valid].var(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert not y[~valid].any()
    norm(x * 2 + 1, valid)  # second batch: plain average of the two batches (weight max(1/2, 0.5))
    assert torch.allclose(norm.running_mean, torch.tensor([(3 + 7) / 2, (20 + 41) / 2]))
    norm.eval()
    z = norm(x[:1, :2], valid[:1, :2])
    assert torch.allclose(z, (x[:1, :2] - norm.running_mean) / torch.sqrt(norm.running_var + 1e-5))


# --------------------------------------------------------------------------------------------------
# Transformer blocks (spec §2.5, §7.9)
# --------------------------------------------------------------------------------------------------

def test_sinusoidal_positions_by_hand() -> None:
    pe = sinusoidal_positions(3, 7)
    assert pe.shape == (3, 7)
    assert pe[0, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)  # position 1, frequency 1
    assert pe[0, 3].item() == pytest.approx(math.cos(1.0), abs=1e-6)  # cos half starts at dim // 2
    assert pe[2, 1].item() == pytest.approx(math.sin(3 * 10000 ** (-1 / 2)), abs=1e-6)
    assert not pe[:, 6].any()  # odd width: zero last column


def test_causal_mask_by_hand() -> None:
    # item 0: 3 real query and 5 real key steps, |5 - 3| = 2: query t sees keys t' <= t + 2;
    # item 1: equal real lengths 2 and 2: plain causal mask (padding is masked separately)
    allowed = causal_allowed(3, 5, torch.tensor([3, 2]), torch.tensor([5, 2]))
    expected = torch.tensor([[[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]],
                             [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def _encoder() -> MulTEncoder:
    torch.manual_seed(7)
    return MulTEncoder(embed_dim=8, num_heads=2, num_layers=2, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0,
                       embed_dropout=0.0, causal=True).eval()


def test_transformer_is_causal_and_ignores_padding() -> None:
    enc = _encoder()
    x = torch.randn(2, 6, 8)
    full = torch.full((2,), 6)
    out = enc(x, full)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 8)
    out2 = enc(changed, full)
    assert torch.allclose(out[:, :4], out2[:, :4], atol=1e-6)  # steps <= 3 do not see steps 4, 5
    assert not torch.allclose(out[:, 4:], out2[:, 4:])
    # cross-modal: padded key/value steps are never attended to
    kv = torch.randn(2, 7, 8)
    kv_len = torch.tensor([7, 3])
    a = enc(x, full, kv, kv_len)
    kv2 = kv.clone()
    kv2[1, 3:] = torch.randn(4, 8) * 100
    b = enc(x, full, kv2, kv_len)
    assert torch.allclose(a, b, atol=1e-5)
    # the last real query step sees every real key: changing the last real key changes it
    q_len = torch.tensor([6, 2])
    kv3 = kv.clone()
    kv3[0, 6] = torch.randn(8)  # (a constant shift would vanish in the LayerNorm)
    kv3[1, 5] = torch.randn(8)  # item 1: 2 real queries, 6 real keys; the padded shapes alone would hide key 5
    before, after = enc(x, q_len, kv, torch.tensor([7, 6])), enc(x, q_len, kv3, torch.tensor([7, 6]))
    assert not torch.allclose(before[0, 5], after[0, 5]) and not torch.allclose(before[1, 1], after[1, 1])
    # padded query steps come out as zeros
    assert not enc(x, torch.tensor([6, 2]))[1, 2:].any()


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes, ort_mode, standardize", [
    (1, "per_sample", False), (3, "per_sample", True), (1, "batch_axis_legacy", True), (3, "batch_axis_legacy", False)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_never_changes_outputs_or_losses(num_classes: int, ort_mode: str, standardize: bool, mode: str) -> None:
    model = tiny_model(num_classes, ort_mode=ort_mode, input_standardize=standardize)
    gen = torch.Generator().manual_seed(8)
    items = random_items(4, gen, max_len=9)
    targets = labelled(collate(items, 9), gen, num_classes)
    model.train()(targets, "main")  # running statistics of the standardizer
    model.train(mode == "train")
    runs = []
    for steps, garbage in [(9, 0.0), (12, None), (15, float("nan")), (40, None)]:  # 40 > seq_len = 10
        batch = collate(items, steps, garbage, gen)
        batch.update({k: targets[k] for k in ("score", "label_mask", "label")})
        with torch.no_grad():
            torch.manual_seed(17)  # the same dropout masks in train mode
            runs.append(model(batch, "main"))
    ref = runs[0]
    head = ref.preds if num_classes == 1 else ref.logits
    assert head is not None and torch.isfinite(head).all()
    for out in runs[1:]:
        other = out.preds if num_classes == 1 else out.logits
        assert torch.allclose(head, other, atol=1e-5)
        assert out.losses.keys() == ref.losses.keys()
        for k, v in ref.losses.items():
            assert torch.isfinite(v) and torch.allclose(v, out.losses[k], atol=1e-5), k
        for k in ("edges_homo", "edges_hetero"):
            assert torch.allclose(ref.extras[k], out.extras[k], atol=1e-5)


def test_an_item_does_not_depend_on_its_batch() -> None:
    model = tiny_model().eval()
    gen = torch.Generator().manual_seed(9)
    items = random_items(4, gen)
    with torch.no_grad():
        together = model(collate(items, 8), "main").preds
        alone = torch.cat([model(collate([it], max(t.size(0) for t in it.values())), "main").preds for it in items])
    assert torch.allclose(together, alone, atol=1e-5)


def test_regression_head_and_l1_task_loss() -> None:
    model = tiny_model(1).eval()
    gen = torch.Generator().manual_seed(10)
    batch = labelled(collate(random_items(5, gen), 8), gen, 1)
    batch["label_mask"][1] = False  # an unlabelled item is left out of the task terms
    with torch.no_grad():
        out = model(batch, "main")
    assert out.logits is None and out.preds is not None and out.preds.shape == (5,)
    keep = batch["label_mask"]
    assert out.losses["task"].item() == pytest.approx((out.preds[keep] - batch["score"][keep]).abs().mean().item(),
                                                      abs=1e-6)
    assert model.stages()[0].eval_head == "preds"
    unlabelled = {k: v for k, v in batch.items() if k not in ("score", "label_mask", "label")}
    with torch.no_grad():
        bare = model(unlabelled, "main")
    assert "task" not in bare.losses and "mar" not in bare.losses and torch.allclose(bare.preds, out.preds)


def test_classification_head_and_cross_entropy() -> None:
    model = tiny_model(2).eval()
    gen = torch.Generator().manual_seed(11)
    batch = labelled(collate(random_items(5, gen), 8), gen, 2)
    batch["label"][2] = -100
    with torch.no_grad():
        out = model(batch, "main")
    assert out.preds is None and out.logits is not None and out.logits.shape == (5, 2)
    expected = F.cross_entropy(out.logits, batch["label"], ignore_index=-100)
    assert out.losses["task"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert model.stages()[0].eval_head == "logits"


@pytest.mark.parametrize("num_classes", [1, 2])
def test_forward_backward_finite_and_every_parameter_learns(num_classes: int) -> None:
    model = tiny_model(num_classes).train()
    gen = torch.Generator().manual_seed(12)
    # odd B: the L1 signs of a head cannot cancel out (that would zero its bias gradients)
    batch = labelled(collate(random_items(5, gen), 8, garbage=float("nan")), gen, num_classes)
    out = model(batch, "main")
    expected = {"task", "task_common", "task_homo", "task_hetero", "mar", "rec", "cyc", "ort", "gd_homo_logit",
                "gd_homo_reg", "gd_hetero_logit", "gd_hetero_repr", "gd_hetero_reg"}
    assert set(out.losses) == expected
    total = sum(out.losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("w_edge.bias"):  # one bias shared by all 6 edges: their softmax cancels it
            assert p.grad.abs().max() < 1e-6
        else:
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    for k in ("edges_homo", "edges_hetero"):
        assert out.extras[k].shape == (5, 6) and torch.allclose(out.extras[k].sum(1), torch.ones(5))


def test_loss_weights_scale_their_terms() -> None:
    gen = torch.Generator().manual_seed(13)
    batch = labelled(collate(random_items(4, gen), 8), gen, 1)
    with torch.no_grad():
        base = tiny_model().eval()(batch, "main").losses
        heavy = tiny_model(lambda_gd=0.5, lambda_dec=0.2, gamma_dec=0.3).eval()(batch, "main").losses
    for k in ("gd_homo_logit", "gd_homo_reg", "gd_hetero_logit", "gd_hetero_repr", "gd_hetero_reg"):
        assert heavy[k].item() == pytest.approx(10 * base[k].item(), rel=1e-5)
    for k in ("rec", "cyc"):
        assert heavy[k].item() == pytest.approx(2 * base[k].item(), rel=1e-5)
    for k in ("mar", "ort"):
        assert heavy[k].item() == pytest.approx(6 * base[k].item(), rel=1e-5, abs=1e-9)


def test_shapes_of_the_mosi_and_mosei_settings() -> None:
    """Spec §7.1: MOSI d = 50, T = 50, kernels 5 -> T' = 46, u = 2300, F = 450; MOSEI T' 46 / 50 / 48, F = 270."""
    dims = {"text": 768, "audio": 5, "video": 20}
    mosi = DMD(input_dims=dims, num_classes=1, seq_len=50, d_model=50, num_heads=10,
               kernel_sizes={"text": 5, "audio": 5, "video": 5}).eval()
    assert mosi.backbone.steps == {"text": 46, "audio": 46, "video": 46}
    assert mosi.backbone.homo_head["text"].proj1.in_features == 2300
    assert mosi.backbone.fusion.head.proj1.in_features == 450
    gen = torch.Generator().manual_seed(14)
    batch = {r: torch.randn(2, 50, d, generator=gen) for r, d in dims.items()}
    with torch.no_grad():
        feats = mosi.backbone.encode(batch)
        out = mosi(batch, "main")
    assert feats.proj["text"].shape == (2, 46, 50)
    assert feats.logits_homo.shape == (3, 2, 1) and feats.logits_hetero.shape == (3, 2, 1)
    assert feats.reprs_hetero.shape == (3, 2, 100) and feats.common.shape == (2, 150)
    assert out.preds.shape == (2,)
    mosei = DMD(input_dims={"text": 768, "audio": 74, "video": 35}, num_classes=1)
    assert mosei.backbone.steps == {"text": 46, "audio": 50, "video": 48}
    assert mosei.backbone.fusion.head.proj1.in_features == 270


def test_bad_inputs_fail_clearly() -> None:
    model = tiny_model()
    gen = torch.Generator().manual_seed(15)
    batch = collate(random_items(2, gen), 8)
    wrong = dict(batch, audio=torch.randn(2, 8, 9))
    with pytest.raises(ValueError, match="audio"):
        model(wrong, "main")
    with pytest.raises(KeyError, match="video"):
        model({k: v for k, v in batch.items() if not k.startswith("video")}, "main")
    left_mask = torch.zeros_like(batch["text_mask"])
    left_mask[:, -1] = True  # left padding
    with pytest.raises(ValueError, match="right-padded"):
        model(dict(batch, text_mask=left_mask), "main")
    with pytest.raises(KeyError, match="orthogonality mode"):
        tiny_model(ort_mode="sideways")
    with pytest.raises(ValueError, match="shorter than the conv kernels"):
        tiny_model(seq_len=2)
    with pytest.raises(ValueError, match="divisible"):
        tiny_model(num_heads=3)


def test_registry_stages_and_groups() -> None:
    model = build_method("dmd", input_dims=DIMS, num_classes=1, **TINY)
    assert isinstance(model, DMD) and model.GRANULARITY == "sequence"
    assert set(model.TASKS) == {"regression", "classification"}
    (stage,) = model.stages()
    assert stage.name == "main" and set(stage.groups) == {"backbone", "gd_homo", "gd_hetero"}
    grouped = sum(p.numel() for p in model.param_groups(stage))
    assert grouped == sum(p.numel() for p in model.parameters())
    with pytest.raises(TypeError, match="bad config keys"):
        build_method("dmd", input_dims=DIMS, num_classes=1, d_modle=8)


@pytest.mark.parametrize("corpus", ["demo-mosi", "demo-mustard", "mosi", "mosei", "urfunny", "mustard"])
def test_configs_bind_and_build(corpus: str) -> None:
    config = load_config("dmd", corpus)
    assert config["method"] == "dmd" and config["default_corpus"] == "demo-mosi"
    assert set(config["stages"]) == {"main"} and config["train"]["max_len"] == config["model"]["seq_len"]
    assert config["features"] == {"text": "text.roberta", "audio": "audio.opensmile", "video": "video.densenet"}
    classification = corpus in ("urfunny", "mustard", "demo-mustard")
    assert config["train"]["select_metric"] == ("accuracy" if classification else "mae")
    inspect.signature(DMD.__init__).bind(None, input_dims=DIMS, num_classes=1, **config["model"])
    if corpus == "demo-mosi":
        model = build_method("dmd", input_dims=DIMS, num_classes=1, **config["model"])
        gen = torch.Generator().manual_seed(16)
        out = model(labelled(collate(random_items(3, gen), 20), gen, 1), "main")
        assert torch.isfinite(sum(out.losses.values()))


# --------------------------------------------------------------------------------------------------
# A subset of the modalities (single-modality and two-modality runs)
# --------------------------------------------------------------------------------------------------

def subset_model(roles: tuple[str, ...], num_classes: int = 1, seed: int = 0, **overrides: object) -> DMD:
    torch.manual_seed(seed)
    return DMD(input_dims={r: DIMS[r] for r in roles}, num_classes=num_classes, **{**TINY, **overrides})


def test_subset_edges_and_prior_by_hand() -> None:
    assert subset_edges(MODALITIES) == (tuple(range(6)), EDGES)
    ids, pairs = subset_edges(("text", "audio"))  # L = position 0, A = position 1
    assert [EDGE_NAMES[x] for x in ids] == ["A->L", "L->A"] and pairs == ((1, 0), (0, 1))
    ids, pairs = subset_edges(("video", "audio"))
    assert [EDGE_NAMES[x] for x in ids] == ["A->V", "V->A"] and pairs == ((1, 0), (0, 1))
    assert subset_edges(("audio",)) == ((), ())
    # HomoGD q = [0, 0, 1, 0, 1, 0] on L, A keeps q(A->L) = 0, q(L->A) = 1: softmax([0, 4]) = (0.017986, 0.982014)
    assert torch.allclose(gd_prior([0, 0, 1, 0, 1, 0], 0.25, keep=[1, 4]), torch.tensor([0.017986, 0.982014]),
                          atol=1e-6)
    unit = GraphDistillationUnit(num_classes=1, repr_dim=4, hidden=3, prior_logits=[0, 0, 1, 0, 1, 1],
                                 modalities=("video", "audio"))
    assert unit.edge_names == ("A->V", "V->A")
    assert torch.allclose(unit.prior, torch.softmax(torch.tensor([0.0, 4.0]), 0))
    with torch.no_grad():
        unit.w_edge.weight.zero_()
    logits = torch.tensor([0.5, 2.0]).view(2, 1, 1)  # V, A
    edges = unit(logits, torch.randn(2, 1, 4))
    assert torch.allclose(edges.eps, torch.full((1, 2), 0.5))
    # both edges have distance 1.5: L_logit = 1.5 * sum(w) = 1.5 * (1 + 1)
    assert unit.losses(logits, torch.randn(2, 1, 4), edges)["logit"].item() == pytest.approx(3.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        GraphDistillationUnit(num_classes=1, repr_dim=4, hidden=3, prior_logits=[0] * 6, modalities=("text",))


@pytest.mark.parametrize("role", MODALITIES)
def test_single_modality_model_reads_only_its_role(role: str) -> None:
    model = subset_model((role,), num_classes=2).eval()
    d = TINY["d_model"]
    assert model.modalities == (role,) and set(model.backbone.proj) == {role}
    assert model.backbone.hetero_dim == d and not model.backbone.cross  # no other modality to attend to
    assert model.gd_homo is None and model.gd_hetero is None
    assert set(model.param_groups_all()) == {"backbone"}
    (stage,) = model.stages()
    assert stage.modality == role and stage.eval_head == "logits"
    assert model.backbone.fusion.head.proj1.in_features == 2 * d  # h_m (d) + g (d)
    gen = torch.Generator().manual_seed(20)
    batch = labelled(collate(random_items(5, gen), 8), gen, 2)
    only = {k: v for k, v in batch.items() if not any(k.startswith(r) for r in MODALITIES if r != role)}
    changed = dict(batch)
    for other in MODALITIES:
        if other != role:
            changed[other] = torch.randn_like(batch[other]) * 50
    with torch.no_grad():
        outs = [model(b, "main") for b in (batch, only, changed)]
    for out in outs[1:]:  # the other roles are never read
        assert torch.equal(out.logits, outs[0].logits)
    assert set(outs[0].losses) == {"task", "task_common", "task_homo", "task_hetero", "mar", "rec", "cyc", "ort"}
    assert outs[0].extras == {}


def test_single_modality_model_learns_and_ignores_padding() -> None:
    model = subset_model(("audio",), num_classes=2).train()
    gen = torch.Generator().manual_seed(21)
    items = random_items(5, gen)
    batch = labelled(collate(items, 8, garbage=float("nan")), gen, 2)
    batch["label"] = torch.tensor([0, 1, 0, 1, 1])  # positives and negatives for the margin loss
    out = model(batch, "main")
    total = sum(out.losses.values())
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        a = model(batch, "main")
        b = model(dict(batch, **{k: v for k, v in collate(items, 13, garbage=None, gen=gen).items()
                                 if k.startswith("audio")}), "main")
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    for k, v in a.losses.items():
        assert torch.allclose(v, b.losses[k], atol=1e-5), k


def test_two_modality_model_has_a_two_edge_graph() -> None:
    model = subset_model(("audio", "text"), num_classes=1)  # given order does not matter: L, A
    d = TINY["d_model"]
    assert model.modalities == ("text", "audio")
    assert set(model.backbone.cross) == {"text_audio", "audio_text"} and model.backbone.hetero_dim == d
    assert model.gd_homo.edge_names == ("A->L", "L->A") and model.gd_hetero.edges == ((1, 0), (0, 1))
    assert model.backbone.fusion.head.proj1.in_features == 2 * d + 2 * d  # f_L, f_A (d each) + f_c (2d)
    assert model.backbone.common_head.proj1.in_features == 2 * d
    gen = torch.Generator().manual_seed(22)
    batch = labelled(collate(random_items(5, gen), 8), gen, 1)
    out = model.train()(batch, "main")
    assert {"gd_homo_logit", "gd_homo_reg", "gd_hetero_logit", "gd_hetero_repr", "gd_hetero_reg"} <= set(out.losses)
    for k in ("edges_homo", "edges_hetero"):
        assert out.extras[k].shape == (5, 2) and torch.allclose(out.extras[k].sum(1), torch.ones(5))
    sum(out.losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.endswith("w_edge.bias"):
            assert p.grad.abs().sum() > 0, name
    torch.manual_seed(0)
    swapped = DMD(input_dims={"text": DIMS["text"], "audio": DIMS["audio"]}, num_classes=1, **TINY)
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in swapped.state_dict().items())  # same modules, same init


def test_modalities_argument_picks_roles_of_input_dims() -> None:
    torch.manual_seed(0)
    picked = DMD(input_dims=DIMS, num_classes=1, modalities=["video"], **TINY)
    alone = subset_model(("video",))
    assert picked.modalities == ("video",)
    a, b = picked.state_dict(), alone.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="without features"):
        DMD(input_dims={"text": 4}, num_classes=1, modalities=["audio"], **TINY)


def test_subset_inputs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="smell"):
        DMD(input_dims={"text": 4, "smell": 2}, num_classes=1, **TINY)
    with pytest.raises(ValueError, match="names no role"):
        DMD(input_dims={}, num_classes=1, **TINY)
    with pytest.raises(ValueError, match="kernel_sizes needs every role"):
        DMD(input_dims={"audio": 3}, num_classes=1, **{**TINY, "kernel_sizes": {"text": 3}})
    model = subset_model(("video",))
    with pytest.raises(KeyError, match="video"):
        model({"text": torch.randn(2, 5, DIMS["text"])}, "main")
