"""CMATH (models/cmath.py): every block and loss against a hand computation of its equation, masking,
switched-off terms, determinism and the YAML configs. Tiny sizes, CPU only."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.base import build_method
from models.cmath import (CMATH, MaskedStandardize, MultiHeadAttention, SequenceConv, SoftmaxGate, SpeakerPosition,
                          VariationalFusion, masked_cross_entropy, masked_kl, masked_mean, sinusoidal_positions)
from pipeline.config import load_config

DIMS = {"text": 7, "audio": 5, "video": 6}
C = 3


pytestmark = pytest.mark.usefixtures("single_thread_module")  # tiny tensors: one thread is faster


def make_batch(lengths: list[int], seed: int = 0, dims: dict[str, int] = DIMS) -> dict[str, torch.Tensor]:
    """Random dialogues of the given lengths, zero-padded to the longest (as the collator builds them)."""
    g = torch.Generator().manual_seed(seed)
    b, n = len(lengths), max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    batch: dict[str, torch.Tensor] = {}
    for m, d in dims.items():
        batch[m] = torch.randn(b, n, d, generator=g) * mask[..., None]
        batch[f"{m}_missing"] = torch.zeros(b, n, dtype=torch.bool)
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
        if v.dtype == torch.bool:
            fill = True  # a missing flag at padding must not matter either
        wide = torch.full((b, pad_to, *v.shape[2:]), fill, dtype=v.dtype)
        wide[:, :n] = v
        pad = ~new_mask.view(b, pad_to, *([1] * (v.dim() - 2)))
        out[k] = torch.where(pad, wide.new_full((), fill), wide)
    return out


def dialogue(batch: dict[str, torch.Tensor], i: int, n: int) -> dict[str, torch.Tensor]:
    """Row i of a batch, cut to its first n positions."""
    return {k: v[i:i + 1, :n] for k, v in batch.items()}


def tiny(**kwargs: object) -> CMATH:
    torch.manual_seed(0)
    base = dict(input_dims=DIMS, num_classes=C, d_model=8, heads=2, dropout=0.0, num_speakers=3,
                input_standardize=False)
    base.update(kwargs)
    return CMATH(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- blocks


def test_positional_encoding_matches_eq_6_7() -> None:
    pe = sinusoidal_positions(6, 8)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4))
    assert pe.abs().max() <= 1.0
    for i in range(6):
        for k in range(4):
            assert pe[i, 2 * k].item() == pytest.approx(math.sin(i / 10000 ** (2 * k / 8)), abs=1e-6)
            assert pe[i, 2 * k + 1].item() == pytest.approx(math.cos(i / 10000 ** (2 * k / 8)), abs=1e-6)


def test_speaker_embedding_padding_row_is_zero_and_ids_are_capped() -> None:
    torch.manual_seed(0)
    sp = SpeakerPosition(d_model=4, num_speakers=2)
    mask = torch.tensor([[True, True, True, False]])
    out = sp(torch.tensor([[0, 1, 5, 1]]), mask)
    pe = sinusoidal_positions(4, 4)
    assert torch.equal(sp.speaker.weight[2], torch.zeros(4))
    assert torch.allclose(out[0, 3], pe[3])  # padded: zero speaker row, position only
    assert torch.allclose(out[0, 0], sp.speaker.weight[0] + pe[0])
    assert torch.allclose(out[0, 2] - pe[2], sp.speaker.weight[1])  # id 5 >= num_speakers -> last row


def test_sequence_conv_is_a_same_padded_conv_along_utterances() -> None:
    torch.manual_seed(0)
    conv = SequenceConv(in_dim=3, out_dim=2, kernel_size=3)
    x = torch.randn(1, 4, 3)
    w = conv.conv.weight  # [out, in, k]
    xp = F.pad(x, (0, 0, 1, 1))  # zero utterance before and after
    manual = torch.stack([sum(w[:, :, j] @ xp[0, i + j] for j in range(3)) for i in range(4)])
    assert torch.allclose(conv(x)[0], manual, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        SequenceConv(in_dim=3, out_dim=2, kernel_size=2)


def test_cross_attention_with_one_valid_key_returns_its_value() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=4, heads=2, dropout=0.0).eval()
    q, kv = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    key_mask = torch.tensor([[False, False, True, False, False]])
    out, info = attn(q, kv, kv, key_mask)
    expected = attn.out_proj(attn.v_proj(kv[0, 2]))
    assert torch.allclose(out[0], expected.expand(3, 4), atol=1e-6)
    assert torch.equal(info.probs[..., [0, 1, 3, 4]], torch.zeros(1, 2, 3, 4))


def test_attention_matches_hand_computation() -> None:
    torch.manual_seed(1)
    attn = MultiHeadAttention(d_model=4, heads=1, dropout=0.0).eval()
    x = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    out, _ = attn(x, x, x, mask)
    q, k, v = attn.q_proj(x[0]), attn.k_proj(x[0]), attn.v_proj(x[0])
    scores = (q @ k.T / 2.0)[:, :2].softmax(-1)  # sqrt(d_head = 4) = 2; the padded key is dropped
    assert torch.allclose(out[0], attn.out_proj(scores @ v[:2]), atol=1e-6)


def test_softmax_gate_is_a_per_dimension_convex_combination() -> None:
    torch.manual_seed(0)
    gate = SoftmaxGate(d_model=4, branches=3)
    hs = [torch.randn(2, 3, 4) for _ in range(3)]
    out, w = gate(hs)
    assert (w >= 0).all() and torch.allclose(w.sum(2), torch.ones(2, 3, 4))
    e = torch.stack([gate.proj(h) for h in hs], 2).softmax(2)
    assert torch.allclose(out, sum(e[:, :, k] * hs[k] for k in range(3)), atol=1e-6)
    x = torch.randn(2, 3, 4)
    assert torch.allclose(gate([x, x, x])[0], x, atol=1e-6)


def test_variational_fusion_eq_15_17() -> None:
    torch.manual_seed(0)
    fusion = VariationalFusion(d_model=4, modalities=("text", "audio"), variational=True)
    h = {"text": torch.randn(2, 3, 4), "audio": torch.randn(2, 3, 4)}
    fused, mu_x, sigma_x = fusion(h, None)
    mu_hand = (fusion.mu["text"](h["text"]) + fusion.mu["audio"](h["audio"])) / 2
    sig_hand = (F.softplus(fusion.sigma["text"](h["text"])) + F.softplus(fusion.sigma["audio"](h["audio"]))) / 2
    assert torch.allclose(fused, mu_hand) and torch.allclose(mu_x, mu_hand)
    assert (sigma_x > 0).all() and torch.allclose(sigma_x, sig_hand + 1e-6)
    eps = torch.randn(2, 3, 4)
    assert torch.allclose(fusion(h, eps)[0], mu_hand + eps * sigma_x)
    assert torch.equal(fusion(h, torch.zeros(2, 3, 4))[0], fused)


def test_masked_standardize_uses_real_rows_only() -> None:
    torch.manual_seed(0)
    std = MaskedStandardize(dim=3)
    x = torch.randn(2, 4, 3) * 5 + 2
    rows = torch.tensor([[True, True, True, False], [True, True, False, False]])
    x_dirty = x.clone()
    x_dirty[~rows] = 1e6
    assert torch.allclose(std.eval()(x, rows), x / (1 + 1e-5) ** 0.5)  # untrained: the identity (up to eps)
    y = std.train()(x_dirty, rows)
    picked = x[rows]
    assert torch.allclose(y[rows], (picked - picked.mean(0)) / (picked.var(0, unbiased=False) + 1e-5).sqrt(),
                          atol=1e-5)
    x2 = torch.randn(2, 4, 3)
    std(x2, rows)
    mean_avg = (picked.mean(0) + x2[rows].mean(0)) / 2
    var_avg = (picked.var(0, unbiased=False) + x2[rows].var(0, unbiased=False)) / 2
    assert torch.allclose(std.running_mean, mean_avg, atol=1e-5)
    assert torch.allclose(std.running_var, var_avg, atol=1e-5)
    std.eval()
    assert torch.allclose(std(x, rows), (x - mean_avg) / (var_avg + 1e-5).sqrt(), atol=1e-5)


def test_standardized_model_ignores_padding_and_missing_rows() -> None:
    clean = make_batch([3, 5], seed=9)
    dirty = repad(clean, pad_to=7, garbage=1e4)
    dirty["audio"][0, 1] = 1e4  # a missing row holds garbage but is flagged
    dirty["audio_missing"][0, 1] = True
    clean["audio"][0, 1] = 0.0
    clean["audio_missing"][0, 1] = True
    a, b = tiny(input_standardize=True), tiny(input_standardize=True)
    a(clean, "main"), b(dirty, "main")  # training forwards update the running statistics
    for m in DIMS:
        assert torch.allclose(a.standardize[m].running_mean, b.standardize[m].running_mean, atol=1e-5)
        assert torch.allclose(a.standardize[m].running_var, b.standardize[m].running_var, atol=1e-5)
    assert a.standardize["text"].running_var.sub(1).abs().max() > 0.01  # the statistics really moved
    a.eval(), b.eval()
    out_a, out_b = a(clean, "main"), b(dirty, "main")
    assert torch.allclose(out_a.logits[clean["mask"]], out_b.logits[dirty["mask"]], atol=1e-5)
    assert out_a.losses["re"].item() == pytest.approx(out_b.losses["re"].item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------- losses


def test_masked_losses_match_eq_20_23_and_ignore_padding() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    zx, zm = torch.randn(2, 3, C), torch.randn(2, 3, C)
    zx[~mask] = float("nan")  # padding must not leak even as NaN
    labels = torch.tensor([[0, 2, -100], [1, -100, -100]])
    rows = [(0, 0), (0, 1), (1, 0)]
    ce_hand = sum(-F.log_softmax(zx[b, i], -1)[labels[b, i]] for b, i in rows) / 3
    assert masked_cross_entropy(zx, labels, mask).item() == pytest.approx(ce_hand.item(), rel=1e-6)
    kl_hand = 0.0
    for b, i in rows:  # Eq. 23: (1/n) sum_i sum_j p^x log(p^x / p^m)
        p, q = zx[b, i].softmax(-1), zm[b, i].softmax(-1)
        kl_hand += (p * (p / q).log()).sum().item() / 3
    assert masked_kl(zx, zm, mask).item() == pytest.approx(kl_hand, rel=1e-5)
    assert masked_kl(zx, zm, mask).item() > 0
    assert masked_kl(zx, zx.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    t = 3.0
    kl_t = sum((zx[b, i] / t).softmax(-1) @ ((zx[b, i] / t).log_softmax(-1) - (zm[b, i] / t).log_softmax(-1))
               for b, i in rows) / 3 * t**2
    assert masked_kl(zx, zm, mask, temperature=t).item() == pytest.approx(kl_t.item(), rel=1e-5)
    vals = torch.randn(2, 3, 4)
    vals[~mask] = float("inf")
    assert masked_mean(vals, mask).item() == pytest.approx(vals[mask].mean().item())
    unlabeled = torch.full_like(labels, -100)
    assert masked_cross_entropy(zm, unlabeled, mask).item() == 0.0


def test_reconstruction_loss_is_zero_for_identity_convs() -> None:
    dims = {"text": 8, "audio": 8, "video": 8}
    model = tiny(input_dims=dims).eval()
    with torch.no_grad():
        for m in dims:
            model.down[m].conv.weight.copy_(torch.eye(8)[:, :, None])
            model.up[m].conv.weight.copy_(torch.eye(8)[:, :, None])
    out = model(make_batch([3, 2], dims=dims), "main")
    assert out.losses["re"].item() == pytest.approx(0.0, abs=1e-10)


def test_reconstruction_loss_matches_eq_3_4_and_skips_missing_rows() -> None:
    model = tiny().eval()
    batch = make_batch([3, 2])
    batch["audio_missing"][0, 1] = True
    out = model(batch, "main")
    total = 0.0
    for m in DIMS:
        w_down, w_up = model.down[m].conv.weight[:, :, 0], model.up[m].conv.weight[:, :, 0]
        rows = batch["mask"] & ~batch[f"{m}_missing"]
        x = batch[m][rows]
        recon = x @ w_down.T @ w_up.T  # kernel 1: U'' = W_up W_down U
        total += ((x - recon) ** 2).mean().item()
    assert out.losses["re"].item() == pytest.approx(total, rel=1e-5)


def test_model_losses_match_hand_computation() -> None:
    model = tiny(w_kl=1.8, w_mse=1.0).eval()
    batch = make_batch([4, 2], seed=3)
    out = model(batch, "main")
    mask, labels = batch["mask"], batch["label"]
    assert set(out.losses) == {"ce_fused", "ce_text", "ce_audio", "ce_video", "re", "mse", "kl"}
    assert out.losses["ce_fused"].item() == pytest.approx(F.cross_entropy(out.logits[mask], labels[mask]).item())
    kl = 0.0
    for m in DIMS:
        zm = out.extras[f"logits_{m}"]
        assert out.losses[f"ce_{m}"].item() == pytest.approx(F.cross_entropy(zm[mask], labels[mask]).item())
        p = out.logits[mask].softmax(-1)
        kl += (p * (p.log() - zm[mask].log_softmax(-1))).sum(-1).mean().item()
    assert out.losses["kl"].item() == pytest.approx(1.8 * kl, rel=1e-5)


def test_mse_matches_eq_18_through_hooks() -> None:
    model = tiny(w_mse=0.7).eval()
    captured: dict[str, torch.Tensor] = {}
    for c in DIMS:
        model.cma[c].register_forward_hook(lambda mod, inp, out, c=c: captured.__setitem__(c, out[0]))
    model.fusion.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", out[0]))
    batch = make_batch([3, 5], seed=4)
    out = model(batch, "main")
    mask = batch["mask"]
    hand = sum(((captured["x"] - captured[m])[mask] ** 2).mean() for m in DIMS)
    assert out.losses["mse"].item() == pytest.approx(0.7 * hand.item(), rel=1e-5)


def test_zero_distillation_and_no_reconstruction_leave_the_four_ce_terms() -> None:
    model = tiny(w_mse=0.0, w_kl=0.0, use_reconstruction=False).eval()
    batch = make_batch([3, 4])
    out = model(batch, "main")
    assert set(out.losses) == {"ce_fused", "ce_text", "ce_audio", "ce_video"}
    mask, labels = batch["mask"], batch["label"]
    hand = F.cross_entropy(out.logits[mask], labels[mask]) + sum(
        F.cross_entropy(out.extras[f"logits_{m}"][mask], labels[mask]) for m in DIMS)
    assert sum(out.losses.values()).item() == pytest.approx(hand.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_padding_never_leaks(kernel_size: int) -> None:
    model = tiny(kernel_size=kernel_size).eval()
    clean = make_batch([3, 5], seed=5)
    dirty = repad(clean, pad_to=8, garbage=1e4)
    out_clean, out_dirty = model(clean, "main"), model(dirty, "main")
    mask = clean["mask"]
    assert torch.allclose(out_clean.logits[mask], out_dirty.logits[dirty["mask"]], atol=1e-5)
    for name, value in out_clean.losses.items():
        assert out_dirty.losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
    alone = model(dialogue(clean, 0, 3), "main")  # the short dialogue without any padding
    assert torch.allclose(alone.logits[0], out_clean.logits[0, :3], atol=1e-5)


def test_reordering_dialogues_reorders_outputs() -> None:
    model = tiny().eval()
    batch = make_batch([3, 5, 4], seed=6)
    perm = torch.tensor([2, 0, 1])
    out = model(batch, "main")
    out_perm = model({k: v[perm] for k, v in batch.items()}, "main")
    mask = batch["mask"][perm]
    assert torch.allclose(out.logits[perm][mask], out_perm.logits[mask], atol=1e-5)


# ---------------------------------------------------------------------------------------------------- switches


def _grads_after_backward(model: CMATH, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(batch, "main")
    sum(out.losses.values()).backward()
    return out.losses


def _no_grad(module: torch.nn.Module) -> bool:
    return all(p.grad is None for p in module.parameters())


def test_switched_off_reconstruction_vanishes() -> None:
    batch = make_batch([3, 4])
    off = tiny(use_reconstruction=False)
    assert off.up is None and "re" not in _grads_after_backward(off, batch)
    zero = tiny(w_re=0.0)
    assert "re" not in _grads_after_backward(zero, batch)
    assert _no_grad(zero.up)


def test_switched_off_distillation_terms_vanish() -> None:
    batch = make_batch([3, 4])
    model = tiny(w_mse=0.0, w_kl=0.0, w_ce_unimodal=0.0)
    losses = _grads_after_backward(model, batch)
    assert set(losses) == {"ce_fused", "re"}
    assert _no_grad(model.unimodal_heads)
    assert not _no_grad(model.fused_head)
    only_kl_off = tiny(w_kl=0.0)
    assert "kl" not in _grads_after_backward(only_kl_off, batch)
    only_mse_off = tiny(w_mse=0.0)
    assert "mse" not in _grads_after_backward(only_mse_off, batch)
    no_fused_ce = tiny(w_ce_fused=0.0)
    assert "ce_fused" not in _grads_after_backward(no_fused_ce, batch)


def test_switched_off_modules_are_not_built() -> None:
    batch = make_batch([3, 4])
    no_cma = tiny(use_cma=False)
    assert no_cma.cma is None and not any("cma" in n for n, _ in no_cma.named_parameters())
    assert torch.isfinite(sum(_grads_after_backward(no_cma, batch).values()))
    plain = tiny(variational=False).train()
    assert plain.fusion.sigma is None
    assert torch.equal(plain(batch, "main").logits, plain(batch, "main").logits)  # no sampling, dropout 0


def test_modality_subset_and_sigmoid_gate() -> None:
    text_only = tiny(modalities=["text"], input_dims={"text": 7})
    batch = make_batch([3, 2], dims={"text": 7})
    out = text_only(batch, "main")
    assert set(out.losses) == {"ce_fused", "ce_text", "re", "mse", "kl"}
    assert not any(k.startswith("gate_") for k in out.extras)  # one branch: no gate
    sig = tiny(modalities=["text", "audio"], gate="sigmoid")
    out = sig(make_batch([3, 2]), "main")
    assert out.extras["gate_audio"].shape == (2, 3, 2) and torch.isfinite(out.logits).all()
    with pytest.raises(KeyError, match="gate"):
        tiny(gate="nope")
    with pytest.raises(ValueError, match="modalities"):
        tiny(modalities=["smell"])


@pytest.mark.parametrize("role", ["text", "audio", "video"])
def test_single_modality_model_reads_only_its_role_and_builds_nothing_cross_modal(role: str) -> None:
    model = tiny(input_dims={role: DIMS[role]})  # modalities=None: the roles of input_dims (= features:)
    assert model.modalities == (role,)
    names = [n for n, _ in model.named_parameters()]
    others = [m for m in DIMS if m != role]
    assert not any(o in n for n in names for o in others), names
    assert not any("cross" in n or ".gate." in n for n in names), names  # no cross-attention, no Eq. 12 gate
    assert len(model.cma[role].cross_attn) == 0 and model.cma[role].gate is None
    assert set(names) < {n for n, _ in tiny().named_parameters()}  # a strict subset of the full model's
    # the same model as an explicit subset of a three-role input (same seed, same construction order)
    explicit = tiny(modalities=[role])
    assert [n for n, _ in explicit.named_parameters()] == names
    assert all(torch.equal(a, b) for a, b in zip(explicit.state_dict().values(), model.state_dict().values()))
    model.eval()
    batch = make_batch([4, 2])
    out = model(batch, "main")
    assert set(out.losses) == {"ce_fused", f"ce_{role}", "re", "mse", "kl"}
    assert torch.equal(out.logits, explicit.eval()(batch, "main").logits)
    scrambled = dict(batch, **{o: torch.randn_like(batch[o]) * 100 for o in others})
    assert torch.equal(model(scrambled, "main").logits, out.logits)  # other roles are never read
    model.train()
    sum(model(batch, "main").losses.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith("speaker_position.speaker"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_modalities_must_have_input_dims() -> None:
    with pytest.raises(KeyError, match="features"):
        tiny(modalities=["text", "audio"], input_dims={"text": 7})
    with pytest.raises(ValueError, match="smell"):
        tiny(input_dims={"text": 7, "smell": 3})
    assert tiny(input_dims={"video": 6, "audio": 5}).modalities == ("audio", "video")  # canonical order


# ---------------------------------------------------------------------------------------------------- training


def test_forward_backward_finite_and_every_parameter_trained() -> None:
    model = tiny(dropout=0.3).train()
    out = model(make_batch([4, 2, 3]), "main")
    assert out.logits.shape == (3, 4, C)
    sum(out.losses.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith("speaker_position.speaker"):
            continue  # the padding row's gradient is zero by design
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert [s.name for s in model.stages()] == ["main"]
    assert model.param_groups(model.stages()[0]) == list(model.parameters())


def test_sampling_noise_in_training_and_determinism_by_seed() -> None:
    batch = make_batch([3, 4])
    model = tiny().train()
    torch.manual_seed(1)
    a = model(batch, "main").logits
    b = model(batch, "main").logits
    assert not torch.allclose(a, b)  # eps ~ N(0, I) differs between passes
    torch.manual_seed(1)
    assert torch.equal(model(batch, "main").logits, a)
    assert torch.equal(tiny().state_dict()["fused_head.net.1.weight"], model.state_dict()["fused_head.net.1.weight"])
    model.eval()
    assert torch.equal(model(batch, "main").logits, model(batch, "main").logits)


def test_overfits_a_planted_signal() -> None:
    batch = make_batch([5, 5, 4], seed=8)
    for m in DIMS:  # the label is readable from the first feature of every modality
        batch[m][..., 0] = batch["label"].clamp(min=0).float() * 2.0
    model = tiny(d_model=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = model(batch, "main")
        loss = out.losses["ce_fused"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        sum(out.losses.values()).backward()
        opt.step()
    model.eval()
    pred = model(batch, "main").logits.argmax(-1)
    assert loss.item() < first / 3
    assert (pred[batch["mask"]] == batch["label"][batch["mask"]]).float().mean() > 0.9


def test_bad_batches_fail_with_clear_errors() -> None:
    model = tiny()
    batch = make_batch([3])
    with pytest.raises(KeyError, match="video"):
        model({k: v for k, v in batch.items() if k != "video"}, "main")
    bad = dict(batch, audio=torch.randn(1, 3, 9))
    with pytest.raises(ValueError, match="audio"):
        model(bad, "main")


# ---------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("corpus", [None, "iemocap", "meld", "demo-meld", "demo-iemocap"])
def test_configs_build_the_method(corpus: str | None) -> None:
    cfg = load_config("cmath", corpus)
    assert cfg["method"] == "cmath" and cfg["default_corpus"] == "demo-meld"
    assert set(cfg["features"]) == set(CMATH.ROLES)
    method = build_method("cmath", input_dims=DIMS, num_classes=C, **cfg["model"])
    assert [s.name for s in method.stages()] == list(cfg["stages"])
    assert cfg["train"]["optimizer"] == "adam"
    assert method.modalities == ("text", "audio", "video")  # modalities: null = the roles of features:
    one = load_config("cmath", corpus, overrides=["features={audio: audio.opensmile}"])  # a single-modality run
    assert one["features"] == {"audio": "audio.opensmile"}
    assert build_method("cmath", input_dims={"audio": 5}, num_classes=C, **one["model"]).modalities == ("audio",)
    via_model = load_config("cmath", corpus, overrides=["model.modalities=[audio]"])  # the make-friendly override
    assert build_method("cmath", input_dims=DIMS, num_classes=C, **via_model["model"]).modalities == ("audio",)
    if corpus == "meld":
        assert (cfg["model"]["d_model"], cfg["model"]["w_mse"], cfg["model"]["w_kl"]) == (400, 1.0, 1.2)
        assert (cfg["stages"]["main"]["lr"], cfg["stages"]["main"]["batch_size"]) == (2.0e-4, 4)
    if corpus in (None, "iemocap"):
        assert (cfg["model"]["d_model"], cfg["model"]["w_mse"], cfg["model"]["w_kl"]) == (500, 1.0, 1.8)
        assert (cfg["stages"]["main"]["lr"], cfg["stages"]["main"]["batch_size"]) == (3.0e-3, 16)
