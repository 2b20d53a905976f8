"""TelME (cached mode): spec shared/methods/telme.md section 7 properties, hand computations, configs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from models import build_method
from models.blocks import pearson_correlation
from models.telme import ASF, TelME, dist_response_loss, shift_weight, similarity_kl_loss

B, C, D = 4, 7, 8
DIMS = {"text": 10, "audio": 6, "video": 5}
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "telme"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _method(**kw: Any) -> TelME:
    torch.manual_seed(0)
    args: dict[str, Any] = dict(input_dims=DIMS, num_classes=C, hidden=D, asf_heads=4)
    args.update(kw)
    return TelME(**args)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    batch = {r: torch.randn(B, d, generator=g) for r, d in DIMS.items()}
    batch["label"] = torch.tensor([0, 3, 6, 2])
    return batch


def _asf(attention: str = "batch", theta: float = 0.1) -> ASF:
    torch.manual_seed(0)
    return ASF(hidden=D, num_classes=C, theta=theta, heads=4, dropout=0.2, attention=attention)


# --------------------------------------------------------------------------- numpy references
def _np_pearson(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-8))


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_response(zs: np.ndarray, zt: np.ndarray, tau: float) -> float:
    ys, yt = _np_softmax(zs / tau), _np_softmax(zt / tau)
    n, c = ys.shape
    inter = tau ** 2 / n * sum(1 - _np_pearson(ys[i], yt[i]) for i in range(n))
    intra = tau ** 2 / c * sum(1 - _np_pearson(ys[:, j], yt[:, j]) for j in range(c))
    return inter + intra


def _np_feature(hs: np.ndarray, ht: np.ndarray, temp: float) -> float:
    t = ht / np.linalg.norm(ht, axis=1, keepdims=True)
    s = hs / np.linalg.norm(hs, axis=1, keepdims=True)
    p, q = _np_softmax(t @ t.T / temp), _np_softmax(t @ s.T / temp)
    return float((p * (np.log(p) - np.log(q))).sum() / len(p))


# --------------------------------------------------------------------------- response loss (properties 1, 2)
def test_response_loss_matches_numpy_eq4() -> None:
    zs = np.array([[1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0],
                   [0.3, 0.2, -0.7, 1.5, -2.2, 0.9, 0.0],
                   [-1.0, 4.0, 2.0, -3.0, 0.1, 0.2, 1.0],
                   [2.5, -0.5, -1.5, 0.0, 1.0, 3.5, -2.0]])
    zt = np.roll(zs, 2, axis=1) * 1.5 - 0.3
    for tau in (1.0, 2.0, 4.0):
        got = dist_response_loss(torch.tensor(zs), torch.tensor(zt), tau).item()
        assert got == pytest.approx(_np_response(zs, zt, tau), rel=1e-6, abs=1e-9)


def test_pearson_is_cosine_of_centred_vectors() -> None:
    a, b = torch.randn(3, 9, generator=_gen(1)), torch.randn(3, 9, generator=_gen(2))
    ref = torch.nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1)
    assert torch.allclose(pearson_correlation(a, b, dim=1), ref, atol=1e-6)


def test_response_loss_zero_on_identical_and_bounded() -> None:
    z = torch.randn(B, C, generator=_gen(3)) * 3
    assert dist_response_loss(z, z, tau=4.0).item() == pytest.approx(0.0, abs=1e-3)
    for seed in range(20):
        g = _gen(seed)
        zs, zt = torch.randn(B, C, generator=g) * 5, torch.randn(B, C, generator=g) * 5
        for tau in (1.0, 4.0):
            value = dist_response_loss(zs, zt, tau).item()
            assert 0.0 <= value <= 4 * tau ** 2
    # perfectly anti-correlated rows and columns reach the upper part of the range
    anti = torch.tensor([[2.0, -2.0], [-2.0, 2.0]])
    assert dist_response_loss(anti, -anti, tau=1.0).item() == pytest.approx(4.0, abs=1e-4)


def test_response_loss_row_shift_invariant() -> None:
    g = _gen(4)
    zs, zt = torch.randn(B, C, generator=g), torch.randn(B, C, generator=g)
    shift = torch.randn(B, 1, generator=g) * 10
    base = dist_response_loss(zs, zt, 4.0)
    assert torch.allclose(dist_response_loss(zs + shift, zt, 4.0), base, atol=1e-5)
    assert torch.allclose(dist_response_loss(zs, zt - shift, 4.0), base, atol=1e-5)


# --------------------------------------------------------------------------- feature loss (properties 3, 4)
def test_feature_loss_matches_numpy() -> None:
    g = _gen(5)
    hs, ht = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    for temp in (0.5, 1.0):
        got = similarity_kl_loss(hs, ht, temp).item()
        assert got == pytest.approx(_np_feature(hs.numpy(), ht.numpy(), temp), rel=1e-9)


def test_feature_loss_zero_for_positive_row_rescaling_and_nonnegative() -> None:
    g = _gen(6)
    ht = torch.randn(B, D, generator=g)
    scales = torch.rand(B, 1, generator=g) * 5 + 0.1
    assert similarity_kl_loss(ht * scales, ht).item() == pytest.approx(0.0, abs=1e-6)
    for seed in range(20):
        g = _gen(100 + seed)
        assert similarity_kl_loss(torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)).item() >= -1e-7


def test_feature_loss_asymmetric() -> None:
    g = _gen(7)
    a, b = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    assert abs(similarity_kl_loss(a, b).item() - similarity_kl_loss(b, a).item()) > 1e-4


# --------------------------------------------------------------------------- ASF (properties 5-8)
def test_lambda_bounded_and_shift_within_theta() -> None:
    asf = _asf(theta=0.1).eval()
    g = _gen(8)
    for scale in (0.01, 1.0, 100.0):  # small and large teacher norms: lambda both clipped and not
        h_t = torch.randn(B, D, generator=g) * scale
        out = asf(h_t, torch.randn(B, D, generator=g), torch.randn(B, D, generator=g))
        assert (out.lam <= 1.0).all()
        shift_norm = (out.lam.unsqueeze(-1) * out.shift).norm(dim=-1)
        assert (shift_norm <= 0.1 * h_t.norm(dim=-1) + 1e-6).all()


def test_shift_weight_hand_values() -> None:
    h_t = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.3, 0.4]])  # ||h_T|| = 5, 5, 0.5
    shift = torch.tensor([[0.0, 100.0], [0.0, 0.1], [0.0, 0.0]])  # ||H|| = 100, 0.1, 0 (-> 1)
    lam = shift_weight(h_t, shift, theta=0.2)
    assert lam[0].item() == pytest.approx(0.2 * 5 / (100 + 1e-6))  # below 1: the theta bound is active
    assert lam[1].item() == 1.0  # 0.2 * 5 / 0.1 = 10 -> clipped at 1
    assert lam[2].item() == pytest.approx(0.2 * 0.5 / (1 + 1e-6))  # ||H|| = 0 replaced by 1
    assert (lam[0] * shift[0]).norm().item() <= 0.2 * 5


def test_zero_shift_gives_layernorm_of_teacher_without_nan() -> None:
    asf = _asf()
    with torch.no_grad():
        asf.shift.weight.zero_()
        asf.shift.bias.zero_()
    asf.eval()
    g = _gen(9)
    h_t = torch.randn(B, D, generator=g, requires_grad=True)
    out = asf(h_t, torch.randn(B, D, generator=g), torch.randn(B, D, generator=g))
    assert not out.shift.any()
    assert torch.allclose(out.fused, asf.out_norm(h_t), atol=1e-6)
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in asf.parameters() if p.grad is not None)
    assert torch.isfinite(h_t.grad).all()


def test_gate_nonnegative_and_shapes() -> None:
    asf = _asf()
    g = _gen(10)
    out = asf(torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randn(B, D, generator=g))
    assert (out.gate >= 0).all() and (out.gate == 0).any() and (out.gate > 0).any()
    assert out.shift.shape == (B, D) and out.gate.shape == (B, D) and out.lam.shape == (B,)
    assert out.logits.shape == (B, C)


def test_attention_none_is_per_sample() -> None:
    asf = _asf("none").eval()
    g = _gen(11)
    h_t, h_a, h_v = (torch.randn(B, D, generator=g) for _ in range(3))
    ref = asf(h_t, h_a, h_v).logits
    h_a2, h_v2 = h_a.clone(), h_v.clone()
    h_a2[1:] = torch.randn(B - 1, D, generator=g)
    h_v2[1:] = torch.randn(B - 1, D, generator=g)
    assert torch.allclose(asf(h_t, h_a2, h_v2).logits[0], ref[0], atol=1e-6)
    single = asf(h_t[:1], h_a[:1], h_v[:1]).logits
    assert torch.allclose(single[0], ref[0], atol=1e-6)


def test_attention_batch_mixes_samples_and_is_permutation_equivariant() -> None:
    asf = _asf("batch").eval()
    g = _gen(12)
    h_t, h_a, h_v = (torch.randn(B, D, generator=g) for _ in range(3))
    ref = asf(h_t, h_a, h_v).logits
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(asf(h_t[perm], h_a[perm], h_v[perm]).logits, ref[perm], atol=1e-5)
    h_a2 = h_a.clone()
    h_a2[1:] = torch.randn(B - 1, D, generator=g)
    assert not torch.allclose(asf(h_t, h_a2, h_v).logits[0], ref[0], atol=1e-4)  # sample 0 sees the others


def test_bad_head_count_and_attention_mode_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TelME(input_dims=DIMS, num_classes=C, hidden=8, asf_heads=3)
    with pytest.raises(ValueError, match="asf_attention"):
        TelME(input_dims=DIMS, num_classes=C, hidden=8, asf_heads=4, asf_attention="dialogue")
    with pytest.raises(ValueError, match="video"):
        TelME(input_dims={"text": 4, "audio": 4}, num_classes=C, hidden=8, asf_heads=4)


# --------------------------------------------------------------------------- method: stages, losses, freezing
def test_stages_in_paper_order_and_groups() -> None:
    m = _method()
    assert [s.name for s in m.stages()] == ["teacher", "student_audio", "student_video", "fusion"]
    assert set(m.param_groups_all()) == {"teacher", "student_audio", "student_video", "fusion"}
    assert [s.groups for s in m.stages()] == [("teacher",), ("student_audio",), ("student_video",), ("fusion",)]


def test_student_losses_are_weighted_eq4_terms() -> None:
    m = _method(alpha=0.3, beta=2.0, tau=2.0, feature_temp=0.5, student_dropout=0.0).train()
    batch = _batch()
    out = m(batch, "student_video")
    with torch.no_grad():
        m.eval()
        h_t, z_t = m.teacher(batch["text"])
        h_v, z_v = m.students["video"](batch["video"])
    assert torch.allclose(out.logits, z_v)
    assert out.losses["response"].item() == pytest.approx(0.3 * dist_response_loss(z_v, z_t, 2.0).item(), rel=1e-5)
    assert out.losses["feature"].item() == pytest.approx(2.0 * similarity_kl_loss(h_v, h_t, 0.5).item(), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(z_v, batch["label"]).item()
    assert out.losses["ce"].item() == pytest.approx(ce, rel=1e-5)


def test_frozen_teacher_is_deterministic_and_mode_restored() -> None:
    m = _method(teacher_dropout=0.9, student_dropout=0.0).train()
    batch = _batch()
    a = m(batch, "student_audio").losses["response"]
    b = m(batch, "student_audio").losses["response"]
    assert torch.equal(a, b)
    assert m.teacher.training  # forward put it in eval mode only while running it
    z1, z2 = m(batch, "teacher").logits, m(batch, "teacher").logits
    assert not torch.equal(z1, z2)  # in its own stage the teacher trains with dropout


def test_missing_rows_leave_student_losses() -> None:
    m = _method(student_dropout=0.0).eval()
    batch = _batch()
    batch["audio"][1] = 0.0
    batch["audio_missing"] = torch.tensor([False, True, False, False])
    out = m(batch, "student_audio")
    keep = torch.tensor([0, 2, 3])
    sub = {k: v[keep] for k, v in batch.items() if k != "audio_missing"}
    ref = m(sub, "student_audio")
    for term in ("ce", "response", "feature"):
        assert out.losses[term].item() == pytest.approx(ref.losses[term].item(), rel=1e-5)
    batch["audio_missing"] = torch.ones(B, dtype=torch.bool)
    out = m(batch, "student_audio")
    assert all(torch.isfinite(v) and v.item() == 0.0 for v in out.losses.values())
    sum(out.losses.values()).backward()  # a graph-connected zero, not a crash
    fused = m(batch, "fusion")  # missing rows pass through the frozen student
    assert torch.isfinite(fused.logits).all() and fused.logits.shape == (B, C)


def test_fusion_output_extras() -> None:
    m = _method()
    out = m(_batch(), "fusion")
    assert set(out.losses) == {"ce"} and set(out.extras) == {"gate", "lambda"}
    assert out.extras["lambda"].shape == (B,) and (out.extras["lambda"] <= 1).all()
    assert out.extras["gate"].shape == (B, D)


def test_feature_size_mismatch_and_unknown_stage() -> None:
    m = _method()
    batch = _batch()
    batch["audio"] = torch.randn(B, 7)
    with pytest.raises(ValueError, match="audio"):
        m(batch, "student_audio")
    with pytest.raises(KeyError, match="student_text"):
        m(_batch(), "student_text")


def _step(m: TelME, stage_name: str) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    stage = next(s for s in m.stages() if s.name == stage_name)
    opt = torch.optim.AdamW(m.param_groups(stage), lr=1e-2)
    m.train()
    out = m(_batch(), stage_name)
    sum(out.losses.values()).backward()
    opt.step()
    return before


@pytest.mark.parametrize("stage", ["student_audio", "student_video"])
def test_student_step_leaves_teacher_bit_identical(stage: str) -> None:
    m = _method()
    before = _step(m, stage)
    for n, p in m.named_parameters():
        if n.startswith("teacher."):
            assert torch.equal(p, before[n]), n
            assert p.grad is None, n
    role = stage.removeprefix("student_")
    assert any(not torch.equal(p, before[n]) for n, p in m.named_parameters() if n.startswith(f"students.{role}."))


def test_fusion_step_changes_only_asf() -> None:
    m = _method()
    before = _step(m, "fusion")
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("asf.") for n in changed), changed
    assert {n for n, _ in m.named_parameters() if n.startswith("asf.")} == changed


# --------------------------------------------------------------------------- configs
def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("corpus", ["meld", "iemocap", "demo-meld"])
def test_configs_bind_and_name_every_stage(corpus: str) -> None:
    base = yaml.safe_load((CONFIGS / "base.yaml").read_text())
    cfg = _merge(base, yaml.safe_load((CONFIGS / f"{corpus}.yaml").read_text()) or {})
    assert cfg["method"] == "telme" and set(cfg["features"]) == set(TelME.ROLES)
    m = build_method("telme", input_dims=DIMS, num_classes=C, **cfg["model"])
    assert list(cfg["stages"]) == [s.name for s in m.stages()]
    for block in cfg["stages"].values():
        assert {"epochs", "lr", "batch_size"} <= set(block)
    if corpus == "iemocap":
        assert (m.alpha, m.tau, m.asf.theta, cfg["stages"]["fusion"]["epochs"]) == (0.1, 2.0, 0.2, 8)
        assert m.asf.mha.num_heads == 4
    if corpus == "meld":
        assert (m.alpha, m.beta, m.tau, m.asf.theta, m.asf.mha.num_heads) == (1.0, 1.0, 4.0, 0.1, 3)
