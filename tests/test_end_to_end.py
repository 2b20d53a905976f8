"""The whole chain on the demo corpus: generated media -> offline features -> a method -> metrics.

The demo plants each utterance's label cue in every modality (40%) or in one modality only
(20% each). A fused model must beat each single-modality head of itself on the utterances whose cue
is in another modality: a broken fusion (one that ignores the audio-visual shift, say) equals the
text teacher there and misses the margin by construction.
"""
from __future__ import annotations

import pytest

MARGIN = 0.15


@pytest.fixture(scope="module")
def telme_run(demo_meld_cache, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.train import train

    config = load_config("telme", "demo-meld")
    out = tmp_path_factory.mktemp("runs") / "telme"
    result = train(config, demo_meld_cache, out, seed=config["train"]["seed"])
    return out, result


def test_telme_fusion_beats_each_modality_where_the_cue_is_elsewhere(telme_run, demo_root):
    from pipeline.analysis import cue_breakdown

    run_dir, result = telme_run
    b = cue_breakdown(run_dir, demo_root / "meld" / "demo_cues.csv")
    assert set(b["cue_elsewhere"]) == {"teacher", "student_audio", "student_video"}
    for head, v in b["cue_elsewhere"].items():
        assert v["n"] >= 30
        assert v["fused"] >= v["unimodal"] + MARGIN, (head, v)
    # each unimodal head did learn its own modality's cue (the features kept it)
    assert b["by_cue"]["teacher"]["text"] >= 0.5
    assert b["by_cue"]["student_audio"]["audio"] >= 0.5
    assert b["by_cue"]["student_video"]["video"] >= 0.5
    assert result["test"]["accuracy"] > 0.6  # 7 classes: chance is ~0.25 for the majority class


def test_telme_run_dir_has_every_report(telme_run):
    run_dir, _ = telme_run
    for name in ("metrics.json", "per_class.md", "confusion.png", "curves.png", "run_card.md", "config.yaml",
                 "stage-teacher.safetensors", "stage-fusion.safetensors"):
        assert (run_dir / name).is_file(), name
    card = (run_dir / "run_card.md").read_text()
    assert "dev" in card and "RANDOM" in card.upper()  # the selection rule and the random-weights warning


# --------------------------------------------------------------------------- DMD / DHMD (sequence methods)

# The fused DMD run must beat each of its single-modality runs (the same config, `features:` naming one
# role) in sign accuracy on the MOSI demo's test clips whose cue is in another modality (~40 per modality),
# over the config's seed 1111 and training seeds 0 and 1. There a single-modality run sees no cue, so the
# best it can do is the sign base rate of the group (0.63-0.66 on this demo; noise took it to 0.71 once),
# and a fusion that ignores one modality falls to that modality's base rate there: gap ~0, +-0.1 of
# sampling noise per seed at n ~40. Measured gaps fused - single (seeds 1111 / 0 / 1): text 0.39 / 0.34 /
# 0.24 (mean 0.33), audio 0.37 / 0.39 / 0.29 (0.35), video 0.55 / 0.33 / 0.43 (0.43). Thresholds: every seed
# and role at least DMD_WORST (a broken fusion passes that in one seed ~1 time in 15) and each role's mean
# over the seeds at least DMD_MEAN (a broken fusion's mean stays within ~0.1 of 0); both stay under the
# smallest measured values (0.24 and 0.33) with room for float differences between machines.
DMD_SEEDS = (1111, 0, 1)
DMD_WORST, DMD_MEAN = 0.15, 0.25
SEQUENCE_FEATURES = {"text": "text.roberta", "audio": "audio.opensmile", "video": "video.densenet"}


def _train_once(method: str, corpus: str, cache, out, features: dict[str, str] | None = None):
    from conftest import one_torch_thread
    from pipeline.config import load_config
    from pipeline.train import train

    config = load_config(method, corpus)
    if features is not None:
        config["features"] = features
    with one_torch_thread():
        result = train(config, cache, out, seed=config["train"]["seed"])
    return out, result


@pytest.fixture(scope="module")
def dmd_mosi_seed_runs(demo_mosi_cache, tmp_path_factory):
    """The fused DMD run and one single-modality run per role on the MOSI demo, for each of DMD_SEEDS:
    {seed: {name: (run dir, result)}}."""
    from conftest import fused_and_single_modality_runs_by_seed

    assert DMD_SEEDS[0] == 1111  # the config's seed first: dmd_mosi_runs
    return fused_and_single_modality_runs_by_seed(
        "dmd", "demo-mosi", demo_mosi_cache, {seed: tmp_path_factory.mktemp(f"dmd-{seed}") for seed in DMD_SEEDS},
        SEQUENCE_FEATURES)


@pytest.fixture(scope="module")
def dmd_mosi_runs(dmd_mosi_seed_runs):
    """The runs with the config's seed: {name: (run dir, result)}."""
    return dmd_mosi_seed_runs[DMD_SEEDS[0]]


def _sign_accuracy_by_cue(run_dir, cues_csv) -> dict[str, float]:
    """Binary (negative vs non-negative) accuracy of a regression run per cue mode of the test clips."""
    import json

    import numpy as np

    from pipeline.analysis import read_cues, run_predictions
    from pipeline.cache import load_cache

    p = run_predictions(run_dir)
    cache = load_cache(json.loads((run_dir / "metrics.json").read_text())["cache"])
    score = dict(zip(cache.dataset["test"]["utterance_id"], cache.dataset["test"]["score"]))
    cue = {key: mode for (_, key), mode in read_cues(cues_csv).items()}
    modes = np.array([cue[u] for u in p["utterance_ids"]])
    right = (np.asarray(p["pred"]) >= 0) == (np.array([score[u] for u in p["utterance_ids"]]) >= 0)
    return {m: float(right[modes == m].mean()) for m in ("all", "text", "audio", "video")}


def test_dmd_fusion_beats_each_single_modality_run_where_the_cue_is_elsewhere(dmd_mosi_seed_runs, demo_root):
    from conftest import one_torch_thread
    from pipeline.analysis import compare_with_unimodal

    cues = demo_root / "mosi" / "demo_cues.csv"
    gaps: dict[str, list[float]] = {role: [] for role in SEQUENCE_FEATURES}
    for seed, runs in dmd_mosi_seed_runs.items():
        fused_dir, fused = runs["fused"]
        with one_torch_thread():
            versus = compare_with_unimodal(fused_dir, {m: runs[m][0] for m in SEQUENCE_FEATURES}, cues)
            by_cue = {m: _sign_accuracy_by_cue(runs[m][0], cues) for m in SEQUENCE_FEATURES}
        assert set(versus) == set(SEQUENCE_FEATURES)
        for role, v in versus.items():
            assert v["n"] >= 30, (seed, role, v)
            assert v["fused"] >= v["unimodal"] + DMD_WORST, (seed, role, v)
            gaps[role].append(v["fused"] - v["unimodal"])
        # each single-modality run did learn its own modality's cue (where that cue is present)
        for role in SEQUENCE_FEATURES:
            assert by_cue[role][role] >= 0.75 and by_cue[role]["all"] >= 0.75, (seed, role, by_cue[role])
        assert fused["test"]["mae"] < 0.8 and fused["test"]["corr"] > 0.85, (seed, fused["test"])  # label std ~1.8
        for role in SEQUENCE_FEATURES:
            assert fused["test"]["mae"] < runs[role][1]["test"]["mae"], (seed, role)
    for role, values in gaps.items():
        assert sum(values) / len(values) >= DMD_MEAN, (role, values)


def test_single_modality_runs_build_a_model_on_that_role_only(dmd_mosi_runs):
    import yaml

    from pipeline.evaluate import load_trained

    for role, column in SEQUENCE_FEATURES.items():
        run_dir, _ = dmd_mosi_runs[role]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["features"] == {role: column}
        _, _, data, method, _ = load_trained(run_dir)
        assert data.input_dims.keys() == {role} and method.modalities == (role,)
        assert method.gd_homo is None and method.stages()[0].modality == role
    _, _, _, fused, _ = load_trained(dmd_mosi_runs["fused"][0])
    assert set(fused.modalities) == set(SEQUENCE_FEATURES) and fused.gd_homo is not None


def test_dmd_regression_run_report_and_evaluate_reproduces_it(dmd_mosi_runs):
    import json

    from pipeline.__main__ import main

    run_dir, result = dmd_mosi_runs["fused"]
    for name in ("metrics.json", "run_card.md", "curves.png", "config.yaml", "stage-main.safetensors"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["task"] == "regression" and saved["select_metric"] == "mae"
    for key in ("mae", "corr", "acc7", "acc2_has0", "acc2_non0", "f1_non0"):
        assert key in saved["test"], key
    assert main(["evaluate", str(run_dir)]) == 0  # = python -m pipeline evaluate RUN
    again = json.loads((run_dir / "eval.json").read_text())["test"]
    for key, value in result["test"].items():
        if isinstance(value, float):
            assert again[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("cache_fixture", ["demo_mosi_cache", "demo_mustard_cache"])
def test_sequence_masks_match_the_stored_lengths(cache_fixture, request):
    """The collator's masks and lengths equal the cache's `<col>.seq_len` (capped at max_len), the steps
    are the stored frames pooled over the whole row (seq_policy uniform) and the padding is zero, on a real cache (MUStARD's context turns have
    no media: empty sequences, unlabelled, dropped)."""
    import numpy as np
    import torch

    from pipeline.cache import load_cache
    from pipeline.collate import prepare_data, uniform_steps
    from pipeline.config import load_config

    cache = load_cache(request.getfixturevalue(cache_fixture))
    config = load_config("dmd", cache.meta["corpus"])
    cap = int(config["train"]["max_len"])
    data = prepare_data(config, cache)
    for split, ds in data.splits.items():
        rows = ds.rows.tolist()
        batch = ds.collate(list(range(len(rows))))
        table = cache.dataset[split]
        for role, column in config["features"].items():
            stored = np.asarray(table[f"{column}.seq_len"])[rows]
            assert (stored > 0).all()
            lengths = np.minimum(stored, cap)
            mask = batch[f"{role}_mask"]
            assert batch[f"{role}_len"].tolist() == lengths.tolist()
            assert torch.equal(mask, torch.arange(mask.size(1))[None, :] < torch.as_tensor(lengths)[:, None])
            assert not batch[role][~mask].any()
            assert data.splits[split].coverage[role]["policy"] == "uniform"  # the DMD default: whole rows
            for b in (0, len(rows) - 1):
                frames = np.asarray(table[rows[b]][f"{column}.seq"], dtype=np.float32).reshape(stored[b], -1)
                steps = uniform_steps(torch.from_numpy(frames), cap).numpy()  # every stored frame, pooled
                assert np.allclose(batch[role][b, : lengths[b]].numpy(), steps), (split, role, b)


# DHMD on the MUStARD demo (conftest.MUSTARD_SUITE_SIZES: 40 FRIENDS test targets, 21 / 19). A model that
# learnt nothing (a constant predictor, or a coin flip) is right on each target with probability at most the
# majority share 0.525, so it reaches binomial_floor(40, 0.525) = 29 right (0.725) with probability < 1%: the
# threshold. Measured with the
# config's seed 1111 and training seeds 0-6 on this demo: 0.775-0.95 (mean 0.89); with the default 14 test
# targets the same seeds gave 0.64-1.0, which no bound at n = 14 separates from luck (12 / 14 needed).
def test_dhmd_runs_on_the_mustard_demo_and_writes_its_report(demo_mustard_cache, tmp_path_factory):
    import json

    from conftest import binomial_floor, majority_share
    from pipeline.cache import load_cache

    run_dir, result = _train_once("dhmd", "demo-mustard", demo_mustard_cache, tmp_path_factory.mktemp("runs") / "dhmd")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["task"] == "classification" and saved["select_metric"] == "accuracy"
    assert saved["label_names"] == ["not_sarcastic", "sarcastic"]
    n = result["test"]["n"]
    assert n == 40  # every FRIENDS target: the speaker-independent test show
    p0 = majority_share(load_cache(demo_mustard_cache).dataset["test"]["label"])
    assert round(result["test"]["accuracy"] * n) >= binomial_floor(n, p0), result["test"]
    for name in ("run_card.md", "per_class.md", "confusion.png", "curves.png", "stage-main.safetensors"):
        assert (run_dir / name).is_file(), name
    losses = result["curves"]["main"][0]["loss"]
    assert {"cdm_homo", "cdm_hetero", "fit_homo", "use_homo", "gd_homo_logit"} <= set(losses)  # DHMD's terms


# --------------------------------------------------------------------------- CMATH / SUMMER (dialogue methods)

# On the MELD demo's test utterances whose cue is in another modality than m (~45 per m), the run that
# only sees m has no cue: it guesses from the class prior (0.13-0.37 there). A fused model that collapsed
# onto m would score the same (gap ~0, +-0.1 of sampling noise at n ~45). Checked over the configs' seed 42
# and training seeds 0 and 1 (DIALOGUE_SEEDS). Measured gaps fused - single (seeds 42 / 0 / 1):
#   CMATH  text 0.41 / 0.54 / 0.39 (mean 0.45), audio 0.36 / 0.40 / 0.53 (0.43), video 0.33 / 0.29 / 0.49 (0.37)
#   SUMMER text 0.30 / 0.39 / 0.28 (mean 0.33), audio 0.42 / 0.40 / 0.18 (0.33), video 0.44 / 0.42 / 0.42 (0.43)
# Thresholds: every seed and role at least DIALOGUE_WORST (only a floor: SUMMER's smallest single gap is
# 0.18) and each role's mean over the seeds at least DIALOGUE_MEAN (a collapsed fusion's mean stays within
# ~0.1 of 0; the smallest measured mean is 0.33).
DIALOGUE_SEEDS = (42, 0, 1)
DIALOGUE_WORST, DIALOGUE_MEAN = 0.10, 0.25
# Split by where the cue is: on the utterances cued only in k, the fused model must beat every run that
# lacks k. A fusion that ignores k guesses there like those runs (gap ~0, noisier at n ~22: +-0.14), which
# the averaged comparison above can miss (it gets half of the gain from the other modality). Measured over
# the same seeds: smallest gap per seed CMATH 0.23 / 0.23 / 0.30, SUMMER 0.22 / 0.39 / 0.17; smallest mean
# over the seeds of one (cue, run) pair CMATH 0.32, SUMMER 0.32. A CMATH whose fused model never sees audio
# (audio zeroed in its forward) scored 0.0 / 0.17 / -0.04 against the text run and 0.0 / 0.0 / 0.13 against
# the video run on the audio-cued utterances (means 0.04): caught by both bounds.
DIALOGUE_MODE_WORST, DIALOGUE_MODE_MEAN = 0.10, 0.20


def _accuracy_by_cue(run_dir, cues_csv) -> dict[str, float]:
    """Test accuracy of a classification run per cue mode of the MELD demo's test utterances."""
    import numpy as np

    from pipeline.analysis import read_cues, run_predictions

    p = run_predictions(run_dir)
    cue: dict[str, str] = {}
    for (split, key), mode in read_cues(cues_csv).items():
        if split == "test":  # the MELD reader prefixes the split: test_dia3_utt1
            cue[key] = cue[f"test_{key}"] = mode
    modes = np.array([cue[u] for u in p["utterance_ids"]])
    right = np.asarray(p["pred"]) == np.asarray(p["labels"])
    return {m: float(right[modes == m].mean()) for m in ("all", "text", "audio", "video")}


def _dialogue_seed_runs(method: str, runs: dict, cache, tmp_path_factory) -> dict[int, dict]:
    from conftest import DIALOGUE_FEATURES, fused_and_single_modality_runs_by_seed

    out = fused_and_single_modality_runs_by_seed(method, "demo-meld", cache, {
        seed: tmp_path_factory.mktemp(f"{method}-{seed}") for seed in DIALOGUE_SEEDS[1:]}, DIALOGUE_FEATURES)
    return {DIALOGUE_SEEDS[0]: runs, **out}  # the session fixture's runs: the configs' seed


@pytest.fixture(scope="module")
def cmath_meld_seed_runs(cmath_meld_runs, demo_meld_cache, tmp_path_factory):
    return _dialogue_seed_runs("cmath", cmath_meld_runs, demo_meld_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def summer_meld_seed_runs(summer_meld_runs, demo_meld_cache, tmp_path_factory):
    return _dialogue_seed_runs("summer", summer_meld_runs, demo_meld_cache, tmp_path_factory)


@pytest.mark.parametrize("method", ["cmath", "summer"])
def test_dialogue_fusion_beats_each_single_modality_run_where_the_cue_is_elsewhere(method, request, demo_root):
    from conftest import DIALOGUE_FEATURES, one_torch_thread
    from pipeline.analysis import compare_with_unimodal
    from pipeline.config import load_config

    assert load_config(method, "demo-meld")["train"]["seed"] == DIALOGUE_SEEDS[0]
    seed_runs = request.getfixturevalue(f"{method}_meld_seed_runs")
    cues = demo_root / "meld" / "demo_cues.csv"
    roles = tuple(DIALOGUE_FEATURES)
    gaps: dict[str, list[float]] = {role: [] for role in roles}
    mode_gaps: dict[tuple[str, str], list[float]] = {}
    for seed, runs in seed_runs.items():
        with one_torch_thread():
            versus = compare_with_unimodal(runs["fused"][0], {m: runs[m][0] for m in roles}, cues)
            by_cue = {name: _accuracy_by_cue(run_dir, cues) for name, (run_dir, _) in runs.items()}
        assert set(versus) == set(roles)
        for role, v in versus.items():
            assert v["n"] >= 30, (method, seed, role, v)
            assert v["fused"] >= v["unimodal"] + DIALOGUE_WORST, (method, seed, role, v)
            gaps[role].append(v["fused"] - v["unimodal"])
        for role in roles:  # each single-modality run did learn its own cue, so the gaps are not a broken baseline
            assert by_cue[role][role] >= 0.6 and by_cue[role]["all"] >= 0.6, (method, seed, role, by_cue[role])
        for cued in roles:
            for role in roles:
                if role != cued:
                    gap = by_cue["fused"][cued] - by_cue[role][cued]
                    assert gap >= DIALOGUE_MODE_WORST, (method, seed, cued, role, by_cue)
                    mode_gaps.setdefault((cued, role), []).append(gap)
        assert runs["fused"][1]["test"]["accuracy"] > 0.6, (seed, runs["fused"][1]["test"])  # 7 classes, majority ~0.3
    for role, values in gaps.items():
        assert sum(values) / len(values) >= DIALOGUE_MEAN, (method, role, values)
    for key, values in mode_gaps.items():
        assert sum(values) / len(values) >= DIALOGUE_MODE_MEAN, (method, key, values)


@pytest.mark.parametrize("method", ["cmath", "summer"])
def test_dialogue_single_modality_runs_build_nothing_cross_modal(method, request):
    import yaml

    from conftest import DIALOGUE_FEATURES
    from pipeline.evaluate import load_trained

    runs = request.getfixturevalue(f"{method}_meld_runs")
    for name, (run_dir, _) in runs.items():
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        _, _, data, model, _ = load_trained(run_dir)
        names = [n for n, _ in model.named_parameters()]
        if name == "fused":
            assert config["features"] == DIALOGUE_FEATURES and model.modalities == tuple(DIALOGUE_FEATURES)
            continue
        assert config["features"] == {name: DIALOGUE_FEATURES[name]}
        assert data.input_dims.keys() == {name} and model.modalities == (name,)
        assert not any(other in n for n in names for other in DIALOGUE_FEATURES if other != name), names
        if method == "cmath":
            assert all(len(t.cross_attn) == 0 and t.gate is None for t in model.cma.values())
        else:
            assert model.teacher_modality == name and len(model.student.cross) == 0
            assert model.student.modality_fuse is None and model.student.global_fuse is None
