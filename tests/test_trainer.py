"""The trainer end to end on tiny caches with a planted signal, using the test-only "probe" method.

Covered: learning, stage freezing and best-weight restore, dev-only selection, determinism, crash +
resume, the losses and weights against a plain-torch replay, reports, `evaluate`, several seeds, dialogue
and regression data, config errors, and a 2-process run (gloo) compared loosely with 1 process.
"""
from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import _probe_method as pm
from pipeline.cache import save_cache
from pipeline.config import ConfigError
from pipeline.evaluate import cli as evaluate_cli
from pipeline.evaluate import evaluate_run
from pipeline.train import CRASH_ENV, OPTIMIZERS, SCHEDULES, SimulatedCrash, cli as train_cli, train

REPO = Path(__file__).resolve().parents[1]
PROBE_FILE = str(Path(pm.__file__).resolve())


@pytest.fixture(scope="module", autouse=True)
def _one_thread_frozen_heap(single_thread_module: None) -> Any:
    """Tiny tensors: one thread avoids contention on shared CPUs (restored after this module). Accelerate's
    free_memory() runs gc.collect(); freezing the heap built so far keeps that cheap (unfrozen after)."""
    gc.freeze()
    yield
    gc.unfreeze()


SEEN: dict[str, Any] = {}


def _losses(curves: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, float]]]:
    return {stage: [{k: v for k, v in r["loss"].items() if k != "total"} for r in rows] for stage, rows in curves.items()}


def _same_metrics(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Scalar metrics equal within float noise, tables (per class, confusion) exactly."""
    scalars = [k for k, v in a.items() if isinstance(v, float)]
    return ({k: a[k] for k in scalars} == pytest.approx({k: b[k] for k in scalars})
            and {k: v for k, v in a.items() if k not in scalars} == {k: v for k, v in b.items() if k not in scalars})


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of a result two equivalent runs must share."""
    return {k: result[k] for k in ("dev", "test", "stages", "curves")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return pm.make_probe_cache(tmp_path_factory.mktemp("cache") / "probe")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "probe.yaml"
    path.write_text(yaml.safe_dump(pm.probe_config()))
    return path


@pytest.fixture(scope="module")
def reference(cache: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ref") / "run"
    pm.MODES.clear()
    result = train(pm.probe_config(), cache, out, seed=0)
    SEEN["modes"] = list(pm.MODES)
    return out, result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_process_run(cache: Any, config_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """Starts `accelerate launch` with 2 CPU processes in the background (checked by the last test).

    Accelerate 1.15 runs `--cpu --num_processes 2` as ONE process unless MPI is set up; two gloo
    processes come from the torchrun launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=1."""
    out = tmp_path_factory.mktemp("mp")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop(CRASH_ENV, None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "pipeline", "train", "--config", str(config_file), "--cache", str(cache.path),
           "--plugin", PROBE_FILE, "--out", str(out), "--name", "mp",
           # per-process batch 8 x 2 processes = the 1-process batch of 16, same number of steps
           "--set", "stages.unimodal.batch_size=8", "--set", "stages.fusion.batch_size=8"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc, out / "mp"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", autouse=True)
def _start_two_process_run_early(two_process_run: Any) -> None:
    """The 2-process run is slow to start; let it run while the in-process tests do."""


def test_learns_the_planted_signal_and_writes_reports(cache: Any, reference: tuple[Path, dict[str, Any]]) -> None:
    out, result = reference
    assert result["test"]["accuracy"] >= 0.85 and result["dev"]["weighted_f1"] >= 0.85
    assert result["stages"]["unimodal"]["best_dev"]["accuracy"] >= 0.85
    for name in ("metrics.json", "curves.json", "per_class.md", "confusion.png", "curves.png", "config.yaml",
                 "run_card.md", "stage-unimodal.safetensors", "stage-fusion.safetensors"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert metrics["stages"]["fusion"]["best_epoch"] == result["stages"]["fusion"]["best_epoch"]
    assert "test never used for selection" in metrics["selection"]
    card = (out / "run_card.md").read_text()
    assert "model selected on dev weighted_f1" in card and cache.fingerprint() in card
    assert "Features from random weights: audio.probe" in card
    per_class = (out / "per_class.md").read_text()
    assert all(name in per_class for name in pm.LABELS)
    assert list((out / "tensorboard").iterdir()), "tensorboard events were written"


def test_stages_freeze_restore_and_chain(reference: tuple[Path, dict[str, Any]]) -> None:
    out, result = reference
    first, last = load_file(str(out / "stage-unimodal.safetensors")), load_file(str(out / "stage-fusion.safetensors"))
    text_keys = [k for k in first if k.startswith(("text_encoder", "text_out"))]
    fusion_keys = [k for k in first if k.startswith("fusion")]
    assert text_keys and fusion_keys
    for k in text_keys:  # frozen during "fusion": the next stage starts from (and keeps) these weights
        assert torch.equal(first[k], last[k]), k
    assert any(not torch.equal(first[k], last[k]) for k in fusion_keys)
    for stage, info in result["stages"].items():  # the best dev epoch is what each stage keeps
        curve = [r["dev"]["weighted_f1"] for r in result["curves"][stage]]
        assert info["best_epoch"] == int(np.argmax(curve)) + 1
        assert info["best_dev"]["weighted_f1"] == max(curve)
    assert result["dev"]["weighted_f1"] == pytest.approx(result["stages"]["fusion"]["best_dev"]["weighted_f1"])


def test_frozen_groups_run_in_eval_mode(reference: tuple[Path, dict[str, Any]]) -> None:
    modes = SEEN["modes"]
    steps_per_epoch = 6  # 95 labelled train rows / batch 16
    assert modes.count(("unimodal", True, False)) == 3 * steps_per_epoch  # frozen fusion head in eval mode
    assert modes.count(("fusion", False, True)) == 3 * steps_per_epoch  # frozen text encoder: no dropout
    assert len(modes) == 6 * steps_per_epoch


def test_schedules() -> None:
    warm = SCHEDULES.get("linear_warmup")(2, 10)
    assert [warm(s) for s in (0, 1, 2, 6, 10, 12)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    assert SCHEDULES.get("constant")(2, 10)(7) == 1.0
    assert set(OPTIMIZERS.names()) == {"adam", "adamw"}


def test_selection_never_looks_at_test(cache: Any, reference: tuple[Path, dict[str, Any]],
                                       tmp_path: Path) -> None:
    """Same features, shuffled test labels: every dev-side number and weight must be unchanged."""
    ds = cache.dataset
    rng = np.random.default_rng(1)
    test = ds["test"].remove_columns("label").add_column("label", rng.permutation(ds["test"]["label"][:]).tolist())
    scrambled = save_cache(tmp_path / "scrambled", type(ds)({"train": ds["train"], "dev": ds["dev"], "test": test}),
                           cache.meta)
    out, result = reference
    other = train(pm.probe_config(), scrambled, tmp_path / "run", seed=0)
    assert other["curves"] == result["curves"] and other["stages"] == result["stages"]
    assert other["dev"] == result["dev"] and other["test"] != result["test"]
    a, b = load_file(str(out / "stage-fusion.safetensors")), load_file(str(tmp_path / "run" / "stage-fusion.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_metrics(cache: Any, reference: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    again = train(pm.probe_config(), cache, tmp_path / "again", seed=0)
    assert _strip(again) == _strip(reference[1])


# --------------------------------------------------------------------------- the losses, recomputed by hand

def _hand_forward(w: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
    """The probe's loss terms written out with plain tensor ops (dropout 0): h = relu(x W1' + b1),
    text = h Wt' + bt; "unimodal": ce(text); "fusion": out = [h, audio] Wf' + bf, ce(out) + 0.1 mean (out - text)^2."""
    def ce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        log_p = logits - logits.exp().sum(-1, keepdim=True).log()
        return -log_p[torch.arange(len(label)), label].mean()

    h = (batch["text"] @ w["text_encoder.0.weight"].T + w["text_encoder.0.bias"]).clamp(min=0)
    text = h @ w["text_out.weight"].T + w["text_out.bias"]
    if stage == "unimodal":
        return {"ce": ce(text, batch["label"])}
    out = torch.cat([h, batch["audio"]], -1) @ w["fusion.1.weight"].T + w["fusion.1.bias"]
    return {"ce": ce(out, batch["label"]), "align": 0.1 * ((out - text.detach()) ** 2).mean()}


def test_losses_match_a_plain_torch_replay(cache: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's per-epoch mean losses and saved weights against an independent replay: the same initial
    weights and the same batches (checked against the cache: each epoch is a permutation of the labelled
    train rows), then AdamW (lr, weight decay 0.01), the linear warmup schedule, the global-norm clip 10,
    stage freezing and the best-dev restore between stages written out by hand. Dropout is 0 so no RNG is
    involved. Catches e.g. a schedule that is never stepped, a stage that trains frozen groups, losses
    averaged over the wrong count or the next stage starting from the last instead of the best epoch."""
    init: dict[str, torch.Tensor] = {}
    seen: list[tuple[str, dict[str, torch.Tensor]]] = []
    forward = pm.ProbeMethod.forward

    def spy(self: Any, batch: dict[str, torch.Tensor], stage: str) -> Any:
        if torch.is_grad_enabled():
            if not init:
                init.update({k: v.detach().clone() for k, v in self.state_dict().items()})
            seen.append((stage, {k: v.detach().clone() for k, v in batch.items() if torch.is_tensor(v)}))
        return forward(self, batch, stage)

    monkeypatch.setattr(pm.ProbeMethod, "forward", spy)
    config = pm.probe_config()
    config["model"]["dropout"] = 0.0
    result = train(config, cache, tmp_path / "run", seed=0)

    train_split = cache.dataset["train"]
    labelled = [i for i, y in enumerate(train_split["label"]) if y >= 0]
    rows = {tuple(np.round(np.asarray(train_split[i]["text.probe"], np.float32), 5)): i for i in labelled}
    epochs, steps = 3, -(-len(labelled) // 16)
    assert len(seen) == 2 * epochs * steps
    for e in range(2 * epochs):
        chunk = seen[e * steps:(e + 1) * steps]
        order = [rows[tuple(np.round(x, 5))] for _, b in chunk for x in b["text"].numpy()]
        assert sorted(order) == labelled  # every labelled row once per epoch, the unlabelled one never
        labels = [train_split[i]["label"] for i in order]
        assert [int(y) for _, b in chunk for y in b["label"]] == labels

    w = {k: v.clone() for k, v in init.items()}
    hand_curves: dict[str, list[dict[str, float]]] = {}
    snapshots: dict[str, list[dict[str, torch.Tensor]]] = {}
    groups = {"unimodal": ("text_encoder.", "text_out."), "fusion": ("fusion.",)}
    lrs = {"unimodal": 0.02, "fusion": 0.05}
    for index, stage in enumerate(("unimodal", "fusion")):
        trained = {k: w[k].clone().requires_grad_(True) for k in w if k.startswith(groups[stage])}
        opt = torch.optim.AdamW(list(trained.values()), lr=lrs[stage], weight_decay=0.01)
        total, warm = epochs * steps, int(0.1 * epochs * steps)
        hand_curves[stage], snapshots[stage] = [], []
        for epoch in range(epochs):
            sums: dict[str, float] = {}
            for k in range(steps):
                step = epoch * steps + k  # the LR factor applied in this step (warmup, then linear decay)
                factor = step / warm if step < warm else (total - step) / (total - warm)
                for group in opt.param_groups:
                    group["lr"] = lrs[stage] * factor
                terms = _hand_forward({**w, **trained}, seen[(index * epochs + epoch) * steps + k][1], stage)
                opt.zero_grad()
                sum(terms.values()).backward()
                norm = torch.sqrt(sum((p.grad ** 2).sum() for p in trained.values()))
                if norm > 10.0:
                    for p in trained.values():
                        p.grad.mul_(10.0 / (norm + 1e-6))
                opt.step()
                for name, v in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(v.detach())
            hand_curves[stage].append({name: v / steps for name, v in sums.items()})
            snapshots[stage].append({k: v.detach().clone() for k, v in trained.items()})
        best = result["stages"][stage]["best_epoch"]
        w.update(snapshots[stage][best - 1])  # the next stage starts from this stage's best dev epoch

    losses = _losses(result["curves"])
    assert losses == {s: [pytest.approx(r, rel=1e-4, abs=1e-6) for r in rows] for s, rows in hand_curves.items()}
    saved = load_file(str(tmp_path / "run" / "stage-fusion.safetensors"))
    for k, v in w.items():
        assert torch.allclose(saved[k], v, atol=1e-5), k


def test_crash_and_resume_reach_the_same_result(cache: Any, reference: tuple[Path, dict[str, Any]],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv(CRASH_ENV, "3")  # after the last "unimodal" epoch, before the stage is closed
    with pytest.raises(SimulatedCrash):
        train(pm.probe_config(), cache, out, seed=0)
    progress = json.loads((out / "checkpoints" / "progress.json").read_text())
    assert (progress["stage_index"], progress["epochs_done"]) == (0, 3)
    assert not (out / "stage-unimodal.safetensors").exists()
    monkeypatch.setenv(CRASH_ENV, "2")  # resume, then stop in the middle of "fusion"
    with pytest.raises(SimulatedCrash):
        train(pm.probe_config(), cache, out, seed=0, resume=True)
    progress = json.loads((out / "checkpoints" / "progress.json").read_text())
    assert (progress["stage_index"], progress["epochs_done"]) == (1, 2)
    assert len([d for d in (out / "checkpoints").iterdir() if d.is_dir()]) == 1  # older checkpoints pruned
    monkeypatch.delenv(CRASH_ENV)
    resumed = train(pm.probe_config(), cache, out, seed=0, resume=True)
    assert _strip(resumed) == _strip(reference[1])  # the curves hold every epoch's mean loss terms


def test_evaluate_reproduces_test_metrics(cache: Any, reference: tuple[Path, dict[str, Any]]) -> None:
    out, result = reference
    again = evaluate_run(out, split="test", cache_path=cache.path)
    assert _same_metrics(again["test"], result["test"])
    saved = json.loads((out / "eval.json").read_text())
    assert saved["test"]["weighted_f1"] == pytest.approx(result["test"]["weighted_f1"])
    dev = evaluate_run(out, split="dev", cache_path=cache.path)
    assert dev["dev"]["weighted_f1"] == pytest.approx(result["dev"]["weighted_f1"])


def test_cli_several_seeds_then_evaluate(cache: Any, config_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--config", str(config_file), "--cache", str(cache.path), "--plugin", PROBE_FILE, "--seeds", "0", "1",
            "--out", str(tmp_path), "--name", "multi", "--set", "stages.unimodal.epochs=2",
            "--set", "stages.fusion.epochs=1"]
    assert train_cli(argv) == 0
    run = tmp_path / "multi"
    printed = capsys.readouterr().out
    assert "weighted_f1" in printed and "±" in printed
    per_seed = [json.loads((run / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    curves = [json.loads((run / f"seed-{s}" / "curves.json").read_text()) for s in (0, 1)]
    assert curves[0] != curves[1]  # the seed matters
    aggregate = json.loads((run / "metrics.json").read_text())
    values = [m["test"]["accuracy"] for m in per_seed]
    assert aggregate["test"]["accuracy"]["values"] == values
    assert aggregate["test"]["accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert aggregate["test"]["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    info = json.loads((run / "run.json").read_text())
    assert info["seeds"] == [0, 1] and info["cache"] == str(cache.path.resolve())
    card = (run / "run_card.md").read_text()
    assert "--seeds 0 1" in card and cache.fingerprint() in card and "mean ± sample std" in card
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"]["fusion"]["epochs"] == 1
    assert evaluate_cli([str(run)]) == 0
    for s, m in zip((0, 1), per_seed):
        assert _same_metrics(json.loads((run / f"seed-{s}" / "eval.json").read_text())["test"], m["test"])
    capsys.readouterr()
    from pipeline.__main__ import main

    assert main(["train", *argv]) == 2  # the run dir is taken: one line, nothing overwritten
    assert capsys.readouterr().err.strip().startswith(
        f"train: error: {run} already holds a run; use --resume {run} or another --name")
    assert train_cli(["--resume", str(run)]) == 0  # finished seeds are not retrained
    assert json.loads((run / "metrics.json").read_text()) == aggregate


def test_dialogue_granularity(tmp_path: Path) -> None:
    dcache = pm.make_probe_cache(tmp_path / "dcache", seed=2)
    config = {**pm.probe_config(), "method": "probe-dialogue"}
    result = train(config, dcache, tmp_path / "run", seed=0)
    labelled = sum(1 for x in dcache.dataset["test"]["label"] if x >= 0)
    assert result["test"]["n"] == labelled  # every labelled turn scored once, padding never
    assert result["test"]["accuracy"] >= 0.85
    assert _same_metrics(evaluate_run(tmp_path / "run", cache_path=dcache.path)["test"], result["test"])


def test_regression_selects_on_mae(tmp_path: Path) -> None:
    rcache = pm.make_probe_cache(tmp_path / "rcache", task="regression")
    # bf16 autocast after fp32 runs in the same process (Accelerate's precision is process-wide)
    result = train(pm.probe_config(mixed_precision="bf16"), rcache, tmp_path / "run", seed=0)
    assert result["select_metric"] == "mae" and not result["higher_is_better"]
    for stage, info in result["stages"].items():
        maes = [r["dev"]["mae"] for r in result["curves"][stage]]
        assert info["best_epoch"] == int(np.argmin(maes)) + 1
    assert result["test"]["corr"] > 0.8 and result["test"]["acc2_non0"] > 0.8
    assert {"acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"} <= set(result["test"])
    card = (tmp_path / "run" / "run_card.md").read_text()
    assert "`has0` = negative (< 0) vs non-negative (>= 0)" in card and "mae (lower is better)" in card


def test_config_errors_are_clear(cache: Any, tmp_path: Path) -> None:
    config = pm.probe_config()
    del config["stages"]["fusion"]
    with pytest.raises(ConfigError, match="no `stages.fusion` block"):
        train(config, cache, tmp_path / "a", seed=0)
    with pytest.raises(ConfigError, match="roles \\['video'\\]"):
        train({**pm.probe_config(), "features": {"video": "video.x"}}, cache, tmp_path / "b", seed=0)
    with pytest.raises(ConfigError, match="label_set '4class'"):
        train({**pm.probe_config(), "label_set": "4class"}, cache, tmp_path / "c", seed=0)
    with pytest.raises(ConfigError, match="select_metric 'f2'"):
        train(pm.probe_config(select_metric="f2"), cache, tmp_path / "d", seed=0)
    with pytest.raises(TypeError, match="bad config keys"):
        train({**pm.probe_config(), "model": {"hiden": 3}}, cache, tmp_path / "e", seed=0)


def test_two_processes_match_one_loosely(two_process_run: Any, reference: tuple[Path, dict[str, Any]]) -> None:
    proc, run = two_process_run
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    ckpt = next(d for d in (run / "checkpoints").iterdir() if d.is_dir())
    assert {p.name for p in ckpt.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    one = reference[1]
    assert metrics["test"]["n"] == one["test"]["n"]  # gather_for_metrics dropped the padding duplicates
    assert metrics["test"]["accuracy"] >= 0.85
    assert abs(metrics["test"]["accuracy"] - one["test"]["accuracy"]) <= 0.1
    assert abs(metrics["dev"]["weighted_f1"] - one["dev"]["weighted_f1"]) <= 0.1
