"""SUMMER (models/summer.py): routing, SDMoE, DynAttn, the IKD losses against hand computations, the frozen
teacher, masking, switched-off terms, determinism and the YAML configs. Tiny sizes, CPU only."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.base import build_method
from models.cmath import masked_kl
from models.summer import (ROUTE_RULES, SDMoE, SUMMER, DynAttn, TeacherGuide, band_rule, cosine_map, cross_kd_loss,
                           feature_loss, route_gates, smooth_label_loss)
from pipeline.config import load_config

DIMS = {"text": 7, "audio": 5, "video": 6}
C = 3


pytestmark = pytest.mark.usefixtures("single_thread_module")  # tiny tensors: one thread is faster


def make_batch(lengths: list[int], seed: int = 0, dims: dict[str, int] = DIMS) -> dict[str, torch.Tensor]:
    """Random dialogues of the given lengths, zero-padded to the longest (as the collator builds them)."""
    g = torch.Generator().manual_seed(seed)
    b, n = len(lengths), max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    batch: dict[str, torch.Tensor] = {m: torch.randn(b, n, d, generator=g) * mask[..., None] for m, d in dims.items()}
    batch["mask"] = mask
    batch["speaker"] = torch.randint(0, 3, (b, n), generator=g) * mask
    batch["label"] = torch.randint(0, C, (b, n), generator=g).masked_fill(~mask, -100)
    return batch


def repad(batch: dict[str, torch.Tensor], pad_to: int, garbage: float) -> dict[str, torch.Tensor]:
    """The same dialogues padded to ``pad_to`` with garbage features/speakers (labels -100) at padding."""
    mask = batch["mask"]
    b, n = mask.shape
    new_mask = torch.zeros(b, pad_to, dtype=torch.bool)
    new_mask[:, :n] = mask
    out: dict[str, torch.Tensor] = {"mask": new_mask}
    for k, v in batch.items():
        if k == "mask":
            continue
        fill = {"label": -100, "speaker": 7}.get(k, garbage)
        wide = torch.full((b, pad_to, *v.shape[2:]), fill, dtype=v.dtype)
        wide[:, :n] = v
        pad = ~new_mask.view(b, pad_to, *([1] * (v.dim() - 2)))
        out[k] = torch.where(pad, wide.new_full((), fill), wide)
    return out


def tiny(**kwargs: object) -> SUMMER:
    torch.manual_seed(0)
    base = dict(input_dims=DIMS, num_classes=C, d_model=8, heads=2, num_experts=8, dropout=0.0, num_speakers=3,
                input_standardize=False)
    base.update(kwargs)
    return SUMMER(**base)  # type: ignore[arg-type]


def tiny_moe(**kwargs: object) -> SDMoE:
    torch.manual_seed(0)
    base = dict(d_model=8, heads=2, num_experts=8, route_rule="band", route_k=2.0, gumbel_tau=1.0, dropout=0.0)
    base.update(kwargs)
    return SDMoE(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- routing


def test_band_rule_is_vacuous_for_few_experts_and_drops_outliers_for_eight() -> None:
    g = torch.Generator().manual_seed(0)
    for e in range(1, 6):  # |z| <= sqrt(E - 1) <= 2 with the population std
        logits = torch.randn(500, e, generator=g) * torch.rand(500, 1, generator=g) * 50
        assert band_rule(logits, 2.0).all()
    logits = torch.tensor([[10.0, 0, 0, 0, 0, 0, 0, 0]])
    z = (10 - 10 / 8) / logits.std(unbiased=False)
    assert z.item() == pytest.approx(7**0.5, rel=1e-5)  # about 2.65
    assert band_rule(logits, 2.0).tolist() == [[False] + [True] * 7]
    assert ROUTE_RULES["upper"](-logits, 2.0).tolist() == [[False] + [True] * 7]
    assert ROUTE_RULES["upper"](logits, 2.0).all()  # a high outlier stays with the "upper" rule
    assert ROUTE_RULES["dense"](logits, 2.0).all()


def test_band_rule_never_switches_every_expert_off() -> None:
    g = torch.Generator().manual_seed(1)
    for e in range(1, 11):
        logits = torch.randn(300, e, generator=g) * 10 ** torch.randint(-3, 4, (300, 1), generator=g).float()
        assert band_rule(logits, 2.0).any(-1).all()
    assert band_rule(torch.zeros(4, 8), 2.0).all()  # equal logits: std 0, everything kept


@pytest.mark.parametrize("noisy", [False, True])
def test_gates_are_normalised_and_exactly_zero_on_dropped_experts(noisy: bool) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 8)
    logits[..., 0] = 40.0  # an outlier expert for every token
    keep = band_rule(logits, 2.0)
    gates = route_gates(logits, keep, tau=0.7, noisy=noisy)
    assert (gates >= 0).all() and torch.allclose(gates.sum(-1), torch.ones(6, 5), atol=1e-6)
    assert torch.equal(gates[~keep], torch.zeros(int((~keep).sum())))
    assert not keep[..., 0].any()
    if not noisy:
        assert torch.allclose(gates, logits.masked_fill(~keep, float("-inf")).softmax(-1))


def test_sdmoe_eval_gates_are_softmax_of_masked_router_logits() -> None:
    moe = tiny_moe().eval()
    u = torch.randn(2, 4, 8)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    lengths = mask.sum(1)
    out = moe(u, mask, lengths)
    normed = moe.norm_in(u)
    a = u + moe.attention(normed, normed, normed, mask)[0]
    logits = moe.router(moe.norm_route(a))
    assert torch.allclose(out.gates, logits.masked_fill(~band_rule(logits, 2.0), float("-inf")).softmax(-1),
                          atol=1e-6)
    experts = sum(out.gates[..., e:e + 1] * moe.experts[e](a, lengths) for e in range(8))
    assert torch.allclose(out.y, moe.norm_out(a + experts), atol=1e-6)
    assert torch.equal(moe(u, mask, lengths).y, out.y)  # eval: no Gumbel noise


def test_sdmoe_dropped_expert_gets_no_gradient() -> None:
    moe = tiny_moe().train()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.bias.copy_(torch.tensor([10.0, 0, 0, 0, 0, 0, 0, 0]))
    u = torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    out = moe(u, mask, mask.sum(1))
    assert torch.equal(out.gates[..., 0], torch.zeros(2, 4))
    out.y.pow(2).sum().backward()
    assert all(not p.grad.any() for p in moe.experts[0].parameters())
    assert all(p.grad.abs().sum() > 0 for p in moe.experts[1].parameters())


def test_bigru_expert_ignores_padding() -> None:
    moe = tiny_moe().eval()
    u = torch.randn(1, 5, 8)
    mask = torch.tensor([[True, True, True, False, False]])
    dirty = u.clone()
    dirty[0, 3:] = 1e3
    a = moe(u, mask, mask.sum(1)).y[0, :3]
    b = moe(dirty, mask, mask.sum(1)).y[0, :3]
    c = moe(u[:, :3], mask[:, :3], torch.tensor([3])).y[0]
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- DynAttn


def _guide(b: int, h: int, n: int, seed: int) -> TeacherGuide:
    g = torch.Generator().manual_seed(seed)
    return TeacherGuide(logits=torch.randn(b, h, n, n, generator=g) * 3,
                        cosine=torch.rand(b, h, n, n, generator=g) * 2 - 1)


def test_cosine_map_matches_a_hand_computation() -> None:
    """c[b, h, i, j] = <q_i, k_j> / (|q_i| |k_j|) per head, written out with plain Python floats (the DynAttn
    checks below use cosine_map as their reference, so it is checked alone here first)."""
    import math

    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 2, 3, 4, generator=g), torch.randn(2, 2, 5, 4, generator=g) * 3  # scale must not matter
    k[1, 0, 2] = 2.5 * q[1, 0, 1]  # parallel: cosine 1
    k[0, 1, 4] = -0.5 * q[0, 1, 0]  # anti-parallel: cosine -1
    c = cosine_map(q, k)
    assert c.shape == (2, 2, 3, 5)
    for b in range(2):
        for h in range(2):
            for i in range(3):
                for j in range(5):
                    qi, kj = q[b, h, i].tolist(), k[b, h, j].tolist()
                    dot = sum(x * y for x, y in zip(qi, kj))
                    hand = dot / (math.sqrt(sum(x * x for x in qi)) * math.sqrt(sum(y * y for y in kj)))
                    assert float(c[b, h, i, j]) == pytest.approx(hand, abs=1e-6), (b, h, i, j)
    assert float(c[1, 0, 1, 2]) == pytest.approx(1.0, abs=1e-6)
    assert float(c[0, 1, 0, 4]) == pytest.approx(-1.0, abs=1e-6)
    # per head: head 0's keys never enter head 1's map
    k2 = k.clone()
    k2[:, 0] = torch.randn(2, 5, 4, generator=g)
    assert torch.equal(cosine_map(q, k2)[:, 1], c[:, 1]) and not torch.allclose(cosine_map(q, k2)[:, 0], c[:, 0])


def test_dynattn_matches_hand_formula_and_masks_padded_keys() -> None:
    torch.manual_seed(0)
    attn = DynAttn(d_model=8, heads=2, dropout=0.0, threshold=0.5, phi_init=0.3, guided=True).eval()
    q_in, k_in = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    guide = _guide(2, 2, 4, seed=1)
    out, info = attn(q_in, k_in, mask, guide)
    base = attn.attention
    q, k, v = (base._split(base.q_proj(q_in)), base._split(base.k_proj(k_in)), base._split(base.v_proj(k_in)))
    s = q @ k.transpose(-1, -2) / 2.0  # sqrt(d_head = 4)
    m = ((guide.cosine - cosine_map(q, k)).abs() > 0.5).float()
    assert 0 < m.mean() < 1  # the test exercises both branches
    phi = torch.sigmoid(torch.tensor(0.3))
    s_adj = s + phi * m * (guide.logits - s)
    probs = s_adj.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    assert torch.allclose(info.probs, probs, atol=1e-6)
    assert torch.equal(info.probs[1, :, :, 3], torch.zeros(2, 4))
    hand = base.out_proj((probs @ v).transpose(1, 2).reshape(2, 4, 8))
    assert torch.allclose(out, hand, atol=1e-6)
    assert info.probs.shape == (2, 2, 4, 4)


def test_dynattn_reduces_to_plain_attention() -> None:
    torch.manual_seed(0)
    attn = DynAttn(d_model=8, heads=2, dropout=0.0, threshold=0.5, phi_init=0.0, guided=True).eval()
    q_in, k_in = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    plain = attn(q_in, k_in, mask, None)[0]
    with torch.no_grad():
        attn.phi_raw.fill_(float("-inf"))  # phi = 0
    assert torch.allclose(attn(q_in, k_in, mask, _guide(2, 2, 4, seed=2))[0], plain, atol=1e-6)
    with torch.no_grad():
        attn.phi_raw.fill_(2.0)
    base = attn.attention
    q, k = base._split(base.q_proj(q_in)), base._split(base.k_proj(k_in))
    same = TeacherGuide(logits=torch.randn(2, 2, 4, 4) * 5, cosine=cosine_map(q, k))  # M = 0 everywhere
    assert torch.allclose(attn(q_in, k_in, mask, same)[0], plain, atol=1e-6)
    other = attn(q_in, k_in, mask, _guide(2, 2, 4, seed=3))[0]
    assert not torch.allclose(other, plain, atol=1e-4)  # with disagreement the teacher does move the map


# ---------------------------------------------------------------------------------------------------- losses


def test_align_kl_with_temperature_matches_hand_and_keeps_gradient_scale() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False]])
    zt, zs = torch.randn(1, 3, C), torch.randn(1, 3, C)
    for t in (1.0, 2.0, 4.0):
        p, q = (zt[0, :2] / t).softmax(-1), (zs[0, :2] / t).softmax(-1)
        hand = t**2 * (p * (p / q).log()).sum(-1).mean()
        assert masked_kl(zt, zs, mask, t).item() == pytest.approx(hand.item(), rel=1e-5)
        assert masked_kl(zt, zt.clone(), mask, t).item() == pytest.approx(0.0, abs=1e-7)
    norms = []
    for t in (1.0, 4.0):
        small = (zs * 0.05).requires_grad_(True)
        masked_kl(zt * 0.05, small, mask, t).backward()
        norms.append(small.grad.norm().item())
    assert 0.5 < norms[0] / norms[1] < 2.0  # the T^2 factor keeps gradients of the same order


def test_smooth_label_loss() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    logits, labels = torch.randn(2, 3, C), torch.tensor([[0, 2, -100], [1, -100, -100]])
    assert smooth_label_loss(logits, labels, mask, 0.0).item() == pytest.approx(
        F.cross_entropy(logits[mask], labels[mask]).item(), rel=1e-6)
    eps = 0.1
    hand = 0.0
    for b, i in [(0, 0), (0, 1), (1, 0)]:
        target = torch.full((C,), eps / C)
        target[labels[b, i]] += 1 - eps
        assert target.sum().item() == pytest.approx(1.0)
        hand -= (target * logits[b, i].log_softmax(-1)).sum().item() / 3
    assert smooth_label_loss(logits, labels, mask, eps).item() == pytest.approx(hand, rel=1e-6)
    # the minimiser is not one-hot: at log(target) the gradient vanishes, p(true) = 1 - eps + eps / C
    y = torch.tensor([[1]])
    target = torch.full((C,), eps / C)
    target[1] += 1 - eps
    z = target.log().view(1, 1, C).clone().requires_grad_(True)
    smooth_label_loss(z, y, torch.ones(1, 1, dtype=torch.bool), eps).backward()
    assert z.grad.abs().max().item() < 1e-6


def test_cross_kd_reaches_streams_but_not_the_teacher_head() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(4, C)
    mask = torch.tensor([[True, True, False]])
    zt = torch.randn(1, 3, C)
    streams = [torch.randn(1, 3, 4, requires_grad=True) for _ in range(3)]
    loss = cross_kd_loss(zt, streams, head.weight, head.bias, mask, temperature=2.0)
    hand = sum(masked_kl(zt, head(s), mask, 2.0) for s in streams) / 3
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    loss.backward()
    assert head.weight.grad is None and head.bias.grad is None
    assert all(s.grad is not None and s.grad[0, :2].abs().sum() > 0 for s in streams)
    assert all(not s.grad[0, 2].any() for s in streams)  # padded utterance: no gradient


def test_feature_loss_matches_layer_normed_mse() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[True, False], [True, True]])
    g, h = torch.randn(2, 2, 6), torch.randn(2, 2, 6)
    ln = lambda x: (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()  # noqa
    hand = ((ln(g) - ln(h))[mask] ** 2).mean()
    assert feature_loss(g, h, mask).item() == pytest.approx(hand.item(), rel=1e-5)
    assert feature_loss(h, h, mask).item() == pytest.approx(0.0, abs=1e-10)


def test_student_losses_match_hand_computation() -> None:
    model = tiny(kd_temperature=3.0, w_align=0.5, w_smooth=0.7, smooth_eps=0.2,
                 class_weights=[1.0, 2.0, 0.5]).eval()
    batch = make_batch([4, 2], seed=3)
    out = model(batch, "student")
    assert set(out.losses) == {"ce", "smooth", "cross_kd", "align", "feat"}
    mask, labels = batch["mask"], batch["label"]
    w = torch.tensor([1.0, 2.0, 0.5])
    nll = -out.logits[mask].log_softmax(-1).gather(1, labels[mask][:, None]).squeeze(1)
    ce_hand = (w[labels[mask]] * nll).sum() / w[labels[mask]].sum()
    assert out.losses["ce"].item() == pytest.approx(ce_hand.item(), rel=1e-5)
    assert out.losses["smooth"].item() == pytest.approx(
        0.7 * smooth_label_loss(out.logits, labels, mask, 0.2).item(), rel=1e-6)
    zt = out.extras["teacher_logits"]
    p, q = (zt[mask] / 3).softmax(-1), (out.logits[mask] / 3).softmax(-1)
    align_hand = 0.5 * 9 * (p * (p / q).log()).sum(-1).mean()
    assert out.losses["align"].item() == pytest.approx(align_hand.item(), rel=1e-5)
    teacher_alone = model(batch, "teacher")
    assert torch.allclose(teacher_alone.logits, zt)  # same frozen teacher in both stages (eval)


# ---------------------------------------------------------------------------------------------------- stages


def test_teacher_stage_trains_only_the_teacher_with_ce() -> None:
    model = tiny().train()
    batch = make_batch([3, 4])
    out = model(batch, "teacher")
    assert set(out.losses) == {"ce_teacher"}
    mask = batch["mask"]
    assert out.losses["ce_teacher"].item() == pytest.approx(
        F.cross_entropy(out.logits[mask], batch["label"][mask]).item(), rel=1e-6)
    out.losses["ce_teacher"].backward()
    assert all(p.grad is None for p in model.student.parameters())
    assert all(p.grad is not None for p in model.teacher.parameters() if p is not model.teacher.inputs.
               speaker_position.speaker.weight)
    assert [s.name for s in model.stages()] == ["teacher", "student"]
    with pytest.raises(KeyError, match="stage"):
        model(batch, "fusion")


def test_frozen_teacher_is_untouched_by_a_student_step() -> None:
    model = tiny(dropout=0.3).train()
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # deliberately over every parameter
    out = model(make_batch([3, 4]), "student")
    assert not model.teacher.training  # frozen teacher runs in eval mode (no dropout, no Gumbel noise)
    sum(out.losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    grads = [p.grad for p in model.student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_padding_never_leaks(stage: str) -> None:
    model = tiny().eval()
    clean = make_batch([3, 5], seed=5)
    dirty = repad(clean, pad_to=8, garbage=1e4)
    out_clean, out_dirty = model(clean, stage), model(dirty, stage)
    assert torch.allclose(out_clean.logits[clean["mask"]], out_dirty.logits[dirty["mask"]], atol=1e-5)
    for name, value in out_clean.losses.items():
        assert out_dirty.losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
    alone = model({k: v[:1, :3] for k, v in clean.items()}, stage)
    assert torch.allclose(alone.logits[0], out_clean.logits[0, :3], atol=1e-5)


def test_standardized_inputs_ignore_padding_and_the_frozen_teacher_keeps_its_statistics() -> None:
    clean = make_batch([3, 5], seed=9)
    dirty = repad(clean, pad_to=7, garbage=1e4)
    a, b = tiny(input_standardize=True), tiny(input_standardize=True)
    for model, batch in ((a, clean), (b, dirty)):
        model.train()
        model(batch, "teacher")
        teacher_stats = model.teacher.inputs.standardize["text"].running_mean.clone()
        model(batch, "student")  # the frozen teacher must not update its statistics here
        assert torch.equal(model.teacher.inputs.standardize["text"].running_mean, teacher_stats)
    for key, value in a.state_dict().items():
        if "running" in key:
            assert torch.allclose(value, b.state_dict()[key], atol=1e-4), key
    a.eval(), b.eval()
    for stage in ("teacher", "student"):
        out_a, out_b = a(clean, stage), b(dirty, stage)
        assert torch.allclose(out_a.logits[clean["mask"]], out_b.logits[dirty["mask"]], atol=1e-5)


def test_mask_must_be_a_prefix() -> None:
    batch = make_batch([3, 3])
    batch["mask"][0, 1] = False
    with pytest.raises(ValueError, match="prefix"):
        tiny()(batch, "student")


# ---------------------------------------------------------------------------------------------------- switches


def test_switched_off_kd_terms_vanish() -> None:
    batch = make_batch([3, 4])
    for weight, term in [("w_cross_kd", "cross_kd"), ("w_align", "align"), ("w_smooth", "smooth"),
                         ("w_feat", "feat"), ("w_ce", "ce")]:
        model = tiny(**{weight: 0.0})
        out = model(batch, "student")
        assert term not in out.losses and len(out.losses) == 4, weight
    no_kd = tiny(w_cross_kd=0.0, w_align=0.0, w_feat=0.0, dyn_attn=False)
    out = no_kd(batch, "student")
    assert set(out.losses) == {"ce", "smooth"} and "teacher_logits" not in out.extras  # teacher not even run


def test_without_ikd_there_is_no_teacher() -> None:
    model = tiny(use_ikd=False, input_dims={"audio": 5, "video": 6}, modalities=["audio", "video"])
    assert model.teacher is None and [s.name for s in model.stages()] == ["student"]
    assert set(model.param_groups_all()) == {"student"}
    assert not any(c.phi_raw is not None for c in model.student.cross.values())
    out = model(make_batch([3, 2], dims={"audio": 5, "video": 6}), "student")
    assert set(out.losses) == {"ce"}  # L_smooth^Label is a term of L_IKD (seed formula): it goes with it
    with pytest.raises(KeyError, match="teacher"):
        model(make_batch([3]), "teacher")


def test_switched_off_modules_are_not_built() -> None:
    batch = make_batch([3, 4])
    no_dyn = tiny(dyn_attn=False)
    assert all(c.phi_raw is None for c in no_dyn.student.cross.values()) and "phi" not in no_dyn(batch).extras
    no_global = tiny(use_global_moe=False)
    assert no_global.student.global_moe is None and "gates_global" not in no_global(batch).extras
    no_hcmf = tiny(use_hcmf=False)
    assert len(no_hcmf.student.cross) == 0 and no_hcmf.student.global_moe is None
    out = no_hcmf(batch, "student")
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for p in no_hcmf.student.context_attention.parameters())
    dense = tiny(route_rule="dense").eval()
    assert (dense(batch).extras["gates_text"] > 0).all()
    no_residual = tiny(hcmf_residual=False)
    assert torch.isfinite(no_residual(batch).logits).all()
    with pytest.raises(KeyError, match="route_rule"):
        tiny(route_rule="top2")
    with pytest.raises(ValueError, match="class_weights"):
        tiny(class_weights=[1.0])


@pytest.mark.parametrize("role", ["text", "audio", "video"])
def test_single_modality_model_reads_only_its_role_and_builds_nothing_cross_modal(role: str) -> None:
    model = tiny(input_dims={role: DIMS[role]})  # modalities / teacher_modality None: the roles of features:
    assert model.modalities == (role,) and model.teacher_modality == role
    assert [s.name for s in model.stages()] == ["teacher", "student"]
    student = model.student
    assert len(student.cross) == 0 and len(student.cross_norm) == 0
    assert student.modality_fuse is None and student.global_fuse is None and student.global_moe is not None
    others = [m for m in DIMS if m != role]
    names = [n for n, _ in model.named_parameters()]
    assert not any(o in n for n in names for o in others) and not any("fuse" in n for n in names), names
    batch = make_batch([4, 2])
    scrambled = dict(batch, **{o: torch.randn_like(batch[o]) * 100 for o in others})
    for stage in ("teacher", "student"):
        model.eval()
        out = model(batch, stage)
        assert torch.equal(model(scrambled, stage).logits, out.logits), stage  # other roles are never read
    assert "phi" not in out.extras  # no DynAttn, so no guidance
    assert set(out.losses) == {"ce", "smooth", "cross_kd", "align", "feat"}
    model.train()
    sum(model(batch, "student").losses.values()).backward()
    for name, p in model.student.named_parameters():
        if name.endswith("speaker_position.speaker.weight"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    no_hcmf = tiny(input_dims={role: DIMS[role]}, use_hcmf=False)
    assert no_hcmf.student.global_fuse is None and no_hcmf.student.context_attention is not None
    assert torch.isfinite(no_hcmf(batch, "student").logits).all()


def test_teacher_and_student_roles() -> None:
    assert tiny().teacher_modality == "text" and tiny().modalities == ("text", "audio", "video")
    audio_student = tiny(modalities=["audio"])  # the teacher is one of the student's roles unless named
    assert audio_student.teacher_modality == "audio" and audio_student.student.modalities == ("audio",)
    assert tiny(modalities=["audio", "video"], teacher_modality="text").teacher_modality == "text"
    assert tiny(modalities=["video", "text"]).teacher_modality == "text"
    assert tiny(teacher_modality="video").teacher.modality == "video"
    with pytest.raises(ValueError, match="teacher_modality"):
        tiny(teacher_modality="smell")
    with pytest.raises(KeyError, match="text"):
        tiny(input_dims={"audio": 5}, teacher_modality="text")
    with pytest.raises(KeyError, match="features"):
        tiny(input_dims={"audio": 5}, modalities=["audio", "video"])


# ---------------------------------------------------------------------------------------------------- training


def test_shapes_finite_gradients_and_every_student_parameter_trained() -> None:
    model = tiny(dropout=0.2).train()
    batch = make_batch([4, 2, 3])
    out = model(batch, "student")
    assert out.logits.shape == (3, 4, C)
    assert out.extras["gates_global"].shape == (3, 4, 8) and out.extras["phi"].shape == (6,)
    sum(out.losses.values()).backward()
    for name, p in model.student.named_parameters():
        if name.endswith("speaker_position.speaker.weight"):
            continue  # the padding row's gradient is zero by design
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_determinism_by_seed_and_gumbel_noise_in_training() -> None:
    batch = make_batch([3, 4])
    model = tiny().train()
    torch.manual_seed(1)
    a = model(batch, "student").logits
    b = model(batch, "student").logits
    assert not torch.allclose(a, b)  # Gumbel noise (dropout is 0)
    torch.manual_seed(1)
    assert torch.equal(model(batch, "student").logits, a)
    assert all(torch.equal(x, y) for x, y in zip(tiny().state_dict().values(), model.state_dict().values()))
    model.eval()
    assert torch.equal(model(batch, "student").logits, model(batch, "student").logits)


def test_two_stage_training_learns_a_planted_signal() -> None:
    batch = make_batch([5, 5, 4], seed=8)
    for m in DIMS:
        batch[m][..., 0] = batch["label"].clamp(min=0).float() * 2.0
    model = tiny(d_model=8)
    for stage in model.stages():
        opt = torch.optim.Adam(model.param_groups(stage), lr=2e-2)
        for _ in range(15):
            model.train()
            out = model(batch, stage.name)
            opt.zero_grad()
            sum(out.losses.values()).backward()
            opt.step()
        model.eval()
        pred = model(batch, stage.name).logits.argmax(-1)
        assert (pred[batch["mask"]] == batch["label"][batch["mask"]]).float().mean() > 0.9, stage.name


# ---------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("corpus", [None, "iemocap", "meld", "demo-meld", "demo-iemocap"])
def test_configs_build_the_method(corpus: str | None) -> None:
    cfg = load_config("summer", corpus)
    assert cfg["method"] == "summer" and cfg["default_corpus"] == "demo-meld"
    assert set(cfg["features"]) == set(SUMMER.ROLES)
    method = build_method("summer", input_dims=DIMS, num_classes=C, **cfg["model"])
    assert [s.name for s in method.stages()] == list(cfg["stages"]) == ["teacher", "student"]
    assert cfg["train"]["optimizer"] == "adam"
    weights = ("w_ce", "w_cross_kd", "w_align", "w_smooth", "w_feat")
    assert all(cfg["model"][w] == 1.0 for w in weights)
    assert method.modalities == ("text", "audio", "video") and method.teacher_modality == "text"
    one = load_config("summer", corpus, overrides=["features={video: video.densenet}"])  # a single-modality run
    single = build_method("summer", input_dims={"video": 6}, num_classes=C, **one["model"])
    assert single.modalities == ("video",) and single.teacher_modality == "video"
    via_model = load_config("summer", corpus, overrides=["model.modalities=[video]"])  # the make-friendly override
    single = build_method("summer", input_dims=DIMS, num_classes=C, **via_model["model"])
    assert single.modalities == ("video",) and single.teacher_modality == "video"
