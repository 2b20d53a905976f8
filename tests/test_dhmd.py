"""DHMD (models/dhmd.py): the dictionary stage against hand computation (spec shared/methods/dhmd.md §7),
stop-gradients, padding invariance, and "dictionary off == DMD exactly". Tiny sizes, CPU only."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.base import build_method
from models.dhmd import DHMD, MATCHINGS, SharedDictionary, kl_divergence, usage_loss
from models.dmd import DMD, EDGES, GraphEdges, gd_prior
from pipeline.config import load_config


DIMS = {"text": 5, "audio": 3, "video": 4}
TINY = dict(seq_len=9, d_model=8, num_heads=2, num_layers=1, kernel_sizes={"text": 2, "audio": 1, "video": 3},
            gd_hidden_homo=6, gd_hidden_hetero=5, embed_dropout=0.1, attn_dropout=0.1)
DICT = dict(num_atoms=6)


pytestmark = pytest.mark.usefixtures("single_thread_module")  # tiny tensors: one thread is faster


def tiny_dhmd(num_classes: int = 1, seed: int = 0, **overrides: object) -> DHMD:
    torch.manual_seed(seed)
    return DHMD(input_dims=DIMS, num_classes=num_classes, **{**TINY, **DICT, **overrides})


def make_batch(seed: int, n: int = 4, steps: int = 8, garbage: float | None = 0.0, num_classes: int = 1,
               lengths: dict[str, list[int]] | None = None) -> dict[str, torch.Tensor]:
    """A padded sequence batch; the real steps depend only on ``seed`` and the lengths, the padding is
    ``garbage`` (None = large noise)."""
    gen = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for role, dim in DIMS.items():
        lens = torch.tensor(lengths[role]) if lengths else torch.randint(1, 8, (n,), generator=gen)
        real = torch.randn(n, 8, dim, generator=gen)
        pad = torch.randn(n, steps, dim) * 100 if garbage is None else torch.full((n, steps, dim), garbage)
        mask = torch.arange(steps)[None, :] < lens[:, None]
        x = torch.where(mask[..., None], F.pad(real, (0, 0, 0, max(steps - 8, 0)))[:, :steps], pad)
        batch.update({role: x, f"{role}_mask": mask, f"{role}_len": lens})
    batch["score"] = torch.randn(n, generator=gen)
    batch["label_mask"] = torch.ones(n, dtype=torch.bool)
    batch["label"] = torch.randint(0, max(num_classes, 2), (n,), generator=gen)
    return batch


# --------------------------------------------------------------------------------------------------
# Dictionary building blocks
# --------------------------------------------------------------------------------------------------

def test_soft_assignment_rows_and_codes_sum_to_one() -> None:
    torch.manual_seed(0)
    dictionary = SharedDictionary(num_atoms=64, dim=50, temperature=0.1)
    assert dictionary.atoms.shape == (64, 50)
    assert torch.allclose(dictionary.atoms.norm(dim=1), torch.ones(64), atol=1e-6)  # L2-normalised init
    x = torch.randn(2, 46, 50)
    act = dictionary.activations(x)
    assert act.shape == (2, 46, 64)
    assert (act >= 0).all() and torch.allclose(act.sum(-1), torch.ones(2, 46), atol=1e-6)
    valid = torch.arange(46)[None, :] < torch.tensor([[46], [3]])
    codes = SharedDictionary.codes(act, valid)
    assert codes.shape == (2, 64) and torch.allclose(codes.sum(-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(codes[1], act[1, :3].mean(0), atol=1e-6)  # padded steps do not count


def test_activations_are_scale_invariant() -> None:
    torch.manual_seed(1)
    dictionary = SharedDictionary(num_atoms=5, dim=4, temperature=0.1)
    x = torch.randn(3, 7, 4)
    act = dictionary.activations(x)
    assert torch.allclose(dictionary.activations(3.7 * x), act, atol=1e-6)
    with torch.no_grad():
        dictionary.atoms[2] *= 5.0
    assert torch.allclose(dictionary.activations(x), act, atol=1e-6)


def test_kl_values_by_hand() -> None:
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    assert kl_divergence(p, q).item() == pytest.approx(0.510826, abs=1e-6)
    assert kl_divergence(q, p).item() == pytest.approx(0.368064, abs=1e-6)
    assert kl_divergence(torch.tensor([1.0, 0.0]), q).item() == pytest.approx(-math.log(0.9), abs=1e-6)  # 0 log 0 = 0


def test_routed_matching_value_by_hand() -> None:
    """Spec §7.6: p_L = (.5, .5), p_V = p_A = (.9, .1), HomoGD weights 1/6 + prior -> 0.792241."""
    codes = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]).view(3, 1, 2)
    w = (1 / 6 + gd_prior([0, 0, 1, 0, 1, 0], 0.25)).view(1, 6)
    match = MATCHINGS.get("kl_routed")
    assert match(codes, w, 0.1).item() == pytest.approx(0.792241, abs=1e-5)
    same = torch.tensor([0.3, 0.7]).expand(3, 4, 2)
    assert match(same, torch.rand(4, 6), 0.1).item() == pytest.approx(0.0, abs=1e-7)
    torch.manual_seed(2)
    rand = torch.softmax(torch.randn(3, 4, 5), -1)
    assert match(rand, torch.rand(4, 6), 0.1).item() >= 0


def test_contrastive_matching_matches_a_loop() -> None:
    torch.manual_seed(3)
    codes = torch.softmax(torch.randn(3, 4, 5) * 2, -1)

    def js(p: torch.Tensor, q: torch.Tensor) -> float:
        m = (p + q) / 2
        return float(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())

    total = 0.0
    for i, j in EDGES:
        for b in range(4):
            scores = torch.tensor([-js(codes[i, b], codes[j, c]) / 0.1 for c in range(4)])
            total += float(-torch.log_softmax(scores, 0)[b]) / 4 / 6
    assert MATCHINGS.get("contrastive")(codes, torch.ones(4, 6), 0.1).item() == pytest.approx(total, abs=1e-5)


def test_usage_term_bounds() -> None:
    k = 8
    uniform = torch.full((3, 4, k), 1 / k)
    assert usage_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = F.one_hot(torch.full((3, 4), 2), k).float()
    assert usage_loss(collapsed).item() == pytest.approx(math.log(k), abs=1e-6)
    # uniform on average is enough: half the samples on atom 0, half on atom 1, K = 2
    halves = F.one_hot(torch.tensor([[0, 1]] * 3), 2).float()
    assert usage_loss(halves).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_assignment_limit() -> None:
    torch.manual_seed(4)
    dictionary = SharedDictionary(num_atoms=5, dim=6, temperature=1e-4)
    x = dictionary.atoms.detach()[torch.tensor([3, 0, 4])].view(1, 3, 6)
    act = dictionary.activations(x)
    assert torch.allclose(act[0], F.one_hot(torch.tensor([3, 0, 4]), 5).float(), atol=1e-5)
    assert torch.allclose(dictionary.reconstruct(act), x, atol=1e-5)
    assert dictionary.fit_loss(x, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-8)


def test_losses_are_invariant_to_permuting_atoms() -> None:
    model = tiny_dhmd().eval()
    batch = make_batch(5)
    with torch.no_grad():
        before = model(batch, "main").losses
        for d in model.dictionaries.values():
            d.atoms.copy_(d.atoms[torch.randperm(d.atoms.size(0))])
        after = model(batch, "main").losses
    for k in ("cdm_homo", "cdm_hetero", "fit_homo", "fit_hetero", "use_homo", "use_hetero"):
        assert after[k].item() == pytest.approx(before[k].item(), abs=1e-6), k


# --------------------------------------------------------------------------------------------------
# Stop-gradients (spec §7.7)
# --------------------------------------------------------------------------------------------------

def test_matching_gives_no_gradient_to_the_teacher_code() -> None:
    codes = torch.softmax(torch.randn(3, 2, 4), -1).requires_grad_(True)
    weights = torch.zeros(2, 6)
    weights[:, 0] = 1.0  # only edge V -> L: teacher V (1), student L (0)
    (grad,) = torch.autograd.grad(MATCHINGS.get("kl_routed")(codes, weights, 0.1), codes)
    assert not grad[1].any() and not grad[2].any()
    assert grad[0].abs().sum() > 0
    w = torch.rand(2, 6, requires_grad=True)
    loss = MATCHINGS.get("kl_routed")(codes, w, 0.1)
    assert torch.autograd.grad(loss, w, allow_unused=True)[0] is None  # routing weights are detached


def test_dictionary_terms_reach_only_what_they_should() -> None:
    model = tiny_dhmd().train()
    out = model(make_batch(6), "main")
    gd_params = list(model.gd_homo.parameters()) + list(model.gd_hetero.parameters())
    cdm = out.losses["cdm_homo"] + out.losses["cdm_hetero"]
    for g in torch.autograd.grad(cdm, gd_params, retain_graph=True, allow_unused=True):
        assert g is None or not g.any()
    cdm_backbone = torch.autograd.grad(cdm, list(model.backbone.parameters()), retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in cdm_backbone)  # matching trains the backbone
    fit = out.losses["fit_homo"] + out.losses["fit_hetero"]
    for g in torch.autograd.grad(fit, list(model.backbone.parameters()), retain_graph=True, allow_unused=True):
        assert g is None or not g.any()
    atom_grads = torch.autograd.grad(fit, list(model.dictionaries.parameters()))
    assert all(g.abs().sum() > 0 for g in atom_grads)


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------

def test_dictionary_off_is_dmd_exactly() -> None:
    torch.manual_seed(7)
    dmd = DMD(input_dims=DIMS, num_classes=1, **TINY)
    torch.manual_seed(7)
    dhmd = DHMD(input_dims=DIMS, num_classes=1, use_dictionary=False, **TINY)
    assert dmd.state_dict().keys() == dhmd.state_dict().keys()
    for k, v in dmd.state_dict().items():
        assert torch.equal(v, dhmd.state_dict()[k]), k
    assert dhmd.param_groups_all().keys() == dmd.param_groups_all().keys()
    batch = make_batch(8, garbage=None)
    for step in range(2):  # train mode: dropout draws the same masks from the same seed
        torch.manual_seed(100 + step)
        out_a = dmd(batch, "main")
        torch.manual_seed(100 + step)
        out_b = dhmd(batch, "main")
        assert torch.equal(out_a.preds, out_b.preds)
        assert out_a.losses.keys() == out_b.losses.keys() and out_a.extras.keys() == out_b.extras.keys()
        for k in out_a.losses:
            assert torch.equal(out_a.losses[k], out_b.losses[k]), k
        for model, out in ((dmd, out_a), (dhmd, out_b)):  # one SGD step each
            model.zero_grad()
            sum(out.losses.values()).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    for (name, p), q in zip(dmd.named_parameters(), dhmd.parameters()):
        assert torch.equal(p.grad, q.grad) and torch.equal(p, q), name


def test_zero_dictionary_weights_give_the_dmd_loss() -> None:
    torch.manual_seed(9)
    dmd = DMD(input_dims=DIMS, num_classes=2, **TINY).eval()
    torch.manual_seed(9)
    dhmd = DHMD(input_dims=DIMS, num_classes=2, lambda_cdm=0.0, lambda_fit=0.0, lambda_use=0.0,
                **TINY, **DICT).eval()
    batch = make_batch(10, num_classes=2)
    with torch.no_grad():
        a, b = dmd(batch, "main"), dhmd(batch, "main")
    assert torch.equal(a.logits, b.logits)
    assert sum(b.losses.values()).item() == pytest.approx(sum(a.losses.values()).item(), abs=1e-6)
    assert set(b.losses) - set(a.losses) == {"cdm_homo", "cdm_hetero", "fit_homo", "fit_hetero", "use_homo",
                                             "use_hetero"}


@pytest.mark.parametrize("num_classes", [1, 2])
def test_forward_backward_finite_and_every_parameter_learns(num_classes: int) -> None:
    model = tiny_dhmd(num_classes).train()
    # odd B: the L1 signs of a head cannot cancel out (that would zero its bias gradients)
    out = model(make_batch(11, n=5, garbage=float("nan"), num_classes=num_classes), "main")
    if num_classes == 1:
        assert out.preds is not None and out.preds.shape == (5,) and out.logits is None
    else:
        assert out.logits is not None and out.logits.shape == (5, 2) and out.preds is None
    for space in ("homo", "hetero"):
        codes = out.extras[f"codes_{space}"]
        assert codes.shape == (5, 3, DICT["num_atoms"])
        assert torch.allclose(codes.sum(-1), torch.ones(5, 3), atol=1e-6)
    total = sum(out.losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("w_edge.bias"):  # one bias shared by all 6 edges: their softmax cancels it
            assert p.grad.abs().max() < 1e-6
        else:
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert set(model.stages()[0].groups) == {"backbone", "gd_homo", "gd_hetero", "dictionary"}


def test_routing_follows_the_gd_edges_or_is_uniform() -> None:
    """The matching term equals sum_x mean_b w_x KL(p_i || p_j) with w from the GD-Unit (or 1/6)."""
    batch = make_batch(12)
    for uniform in (False, True):
        model = tiny_dhmd(uniform_routing=uniform).eval()
        with torch.no_grad():
            feats = model.backbone.encode(batch)
            aux = model.auxiliary(feats)
            edges: GraphEdges = model.gd_homo(feats.logits_homo, feats.reprs_homo)
            out = model(batch, "main")
        w = torch.full((4, 6), 1 / 6) if uniform else edges.weights
        codes = aux.codes["homo"]
        expected = sum((w[:, x] * kl_divergence(codes[i], codes[j])).mean() for x, (i, j) in enumerate(EDGES))
        assert out.losses["cdm_homo"].item() == pytest.approx(0.05 * expected.item(), rel=1e-5)


@pytest.mark.parametrize("matching", ["kl_routed", "contrastive"])
def test_padding_never_changes_outputs_or_losses(matching: str) -> None:
    model = tiny_dhmd(matching=matching, dict_in_fusion=True).eval()
    lengths = {"text": [3, 7, 1, 5], "audio": [7, 2, 4, 6], "video": [1, 7, 7, 2]}
    runs = []
    for steps, garbage in [(7, 0.0), (11, None), (20, float("nan"))]:  # 20 > seq_len = 9
        with torch.no_grad():
            runs.append(model(make_batch(13, steps=steps, garbage=garbage, lengths=lengths), "main"))
    for out in runs[1:]:
        assert torch.allclose(out.preds, runs[0].preds, atol=1e-5)
        for k, v in runs[0].losses.items():
            assert torch.isfinite(v) and torch.allclose(v, out.losses[k], atol=1e-5), k
        for k, v in runs[0].extras.items():
            assert torch.allclose(v, out.extras[k], atol=1e-5), k


def test_dictionary_in_fusion_widens_the_head_and_feeds_the_prediction() -> None:
    model = tiny_dhmd(dict_in_fusion=True).train()
    d = TINY["d_model"]
    assert model.backbone.fusion.head.proj1.in_features == 18 * d  # 9d + 3 (d + 2d)
    out = model(make_batch(14), "main")
    grads = torch.autograd.grad(out.losses["task"], list(model.dictionaries.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_registry_signature_and_configs() -> None:
    model = build_method("dhmd", input_dims=DIMS, num_classes=1, **TINY, **DICT)
    assert isinstance(model, DHMD) and isinstance(model, DMD)
    with pytest.raises(TypeError, match="bad config keys"):
        build_method("dhmd", input_dims=DIMS, num_classes=1, num_atom=4)
    with pytest.raises(KeyError, match="dictionary matching"):
        tiny_dhmd(matching="nearest")
    for corpus in ("demo-mosi", "demo-mustard", "mosi", "mosei", "urfunny", "mustard"):
        config = load_config("dhmd", corpus)
        assert config["method"] == "dhmd" and set(config["stages"]) == {"main"}
        assert config["train"]["max_len"] == config["model"]["seq_len"]
        classification = corpus in ("urfunny", "mustard", "demo-mustard")
        assert config["train"]["select_metric"] == ("accuracy" if classification else "mae")
        dmd_config = load_config("dmd", corpus)
        dmd_model = dmd_config["model"]
        assert {k: v for k, v in config["model"].items() if k in dmd_model} == dmd_model  # same backbone as DMD
        assert config["stages"] == dmd_config["stages"] and config["train"] == dmd_config["train"]
        built = build_method("dhmd", input_dims=DIMS, num_classes=2, **config["model"])
        if corpus == "demo-mosi":
            with torch.no_grad():
                out = built.eval()(make_batch(15, steps=20, num_classes=2), "main")
            assert torch.isfinite(sum(out.losses.values()))


# --------------------------------------------------------------------------------------------------
# A subset of the modalities
# --------------------------------------------------------------------------------------------------

def test_single_modality_dhmd_has_no_matching_but_fits_its_dictionaries() -> None:
    torch.manual_seed(0)
    model = DHMD(input_dims={"video": DIMS["video"]}, num_classes=2, **TINY, **DICT, dict_in_fusion=True).train()
    d = TINY["d_model"]
    assert model.dictionaries["hetero"].atoms.shape == (6, d)  # h_m is d wide on one modality
    assert model.backbone.fusion.head.proj1.in_features == 2 * d + (d + d)  # F (2d) + both reconstructions
    batch = make_batch(16, num_classes=2)
    batch["label"] = torch.tensor([0, 1, 1, 0])
    out = model(batch, "main")
    assert not any(k.startswith(("cdm", "gd_")) for k in out.losses)
    assert {"fit_homo", "fit_hetero", "use_homo", "use_hetero"} <= set(out.losses)
    assert out.extras["codes_homo"].shape == (4, 1, 6) and "edges_homo" not in out.extras
    sum(out.losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("uniform", [False, True])
def test_two_modality_routing_follows_the_two_edges(uniform: bool) -> None:
    torch.manual_seed(0)
    model = DHMD(input_dims={"text": DIMS["text"], "audio": DIMS["audio"]}, num_classes=1, uniform_routing=uniform,
                 **TINY, **DICT).eval()
    batch = make_batch(17)
    with torch.no_grad():
        feats = model.backbone.encode(batch)
        aux = model.auxiliary(feats)
        edges = model.gd_hetero(feats.logits_hetero, feats.reprs_hetero)
        out = model(batch, "main")
    codes = aux.codes["hetero"]  # [2, B, K]: L, A
    assert codes.shape == (2, 4, 6)
    w = torch.full((4, 2), 0.5) if uniform else edges.weights
    expected = ((w[:, 0] * kl_divergence(codes[1], codes[0])).mean()  # A -> L
                + (w[:, 1] * kl_divergence(codes[0], codes[1])).mean())  # L -> A
    assert out.losses["cdm_hetero"].item() == pytest.approx(0.05 * expected.item(), rel=1e-5)
