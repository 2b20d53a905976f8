"""TelME in finetune mode (the paper's students): the decoded-inputs cache, student encoders trained by
distillation through the one trainer, kill + resume, predict. Demo MELD with the tiny offline encoders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import majority_share, one_torch_thread

DEMO_FT = Path(__file__).resolve().parents[1] / "configs" / "telme" / "demo-students-finetune.yaml"
# Small and quick: 2 epochs per student stage; the teacher and the fusion are cheap heads.
QUICK = ["stages.teacher.epochs=1", "stages.student_audio.epochs=2", "stages.student_video.epochs=2",
         "stages.fusion.epochs=2"]


@pytest.fixture(scope="module")
def ft_cache(demo_meld_cache: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo MELD cache (the session cache stays as other tests expect it) + decoded inputs."""
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    cache = tmp_path_factory.mktemp("ftcache") / "demo-meld"
    shutil.copytree(demo_meld_cache, cache)
    entry = corpus_entry("demo-meld", demo_root / "meld")
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = "demo-meld"
    with one_torch_thread():
        report = extract(data, cache, ExtractSettings(encoders=[], inputs=["data2vec", "timesformer"],
                                                      progress=False))
    assert report["columns"]["audio.data2vec (inputs)"]["computed"] == len(data.records)
    return cache


def _config(*overrides: str) -> dict[str, Any]:
    from pipeline.config import load_config

    return load_config("telme", "demo-meld", str(DEMO_FT), [*QUICK, *overrides])


def _train(cache: Path, out: Path, *overrides: str, resume: bool = False) -> dict[str, Any]:
    from pipeline.train import train

    with one_torch_thread():
        return train(_config(*overrides), cache, out, seed=3, resume=resume)


@pytest.fixture(scope="module")
def ft_run(ft_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ftrun") / "run"
    return out, _train(ft_cache, out)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_decoded_inputs_are_exactly_what_the_encoder_consumes(ft_cache: Path, demo_root: Path) -> None:
    from pipeline.cache import load_cache
    from pipeline.extract import encoder_inputs, modality_input, prune
    from pipeline.inputs import KEY_SUFFIX, MISSING_SUFFIX, InputStore, build_input_encoder
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus

    cache = load_cache(ft_cache)
    entry = corpus_entry("demo-meld", demo_root / "meld")
    items = {it.utterance_id: it for it in encoder_inputs(read_corpus(entry.reader, entry.root, **entry.options).records)}
    dev = cache.dataset["dev"]
    rows = dev.select(range(6))
    for col, dtype in (("audio.data2vec", np.float32), ("video.timesformer", np.uint8)):
        info = cache.meta["inputs"][col]
        store, encoder = InputStore(cache.path, col, info), build_input_encoder(col, info)
        assert not any(rows[f"{col}{MISSING_SUFFIX}"])
        stored = [store.get(k) for k in rows[f"{col}{KEY_SUFFIX}"]]
        for uid, arr in zip(rows["utterance_id"], stored):  # the encoder's own `load`, bit for bit
            fresh = encoder.input_array(encoder.load(modality_input(items[uid], encoder.modality)))
            assert arr.dtype == dtype and np.array_equal(arr, fresh), (col, uid)
        batch = encoder.collate([encoder.sample_from_array(a) for a in stored])
        with torch.no_grad():  # decoded input -> collate -> the model == the cached feature column
            vec = encoder.pooled(encoder.model, batch)[0].numpy()
        np.testing.assert_allclose(vec, np.asarray(rows[col], np.float32), atol=1e-5)
    frames = InputStore(cache.path, "video.timesformer", cache.meta["inputs"]["video.timesformer"])
    assert frames.get(rows[f"video.timesformer{KEY_SUFFIX}"][0]).shape == (8, 32, 32, 3)
    # an explicit prune keeps what meta.json uses, the decoded inputs included
    assert not [p for p, _ in prune(ft_cache, dry_run=True) if "inputs" in p.parts]


def test_rerun_computes_no_input_and_keeps_them(ft_cache: Path, demo_root: Path, tmp_path: Path) -> None:
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    entry = corpus_entry("demo-meld", demo_root / "meld")
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = "demo-meld"
    cache = tmp_path / "demo-meld"
    shutil.copytree(ft_cache, cache)
    again = extract(data, cache, ExtractSettings(encoders=[], inputs=["timesformer"], progress=False))
    assert again["columns"]["video.timesformer (inputs)"]["computed"] == 0
    other = extract(data, cache, ExtractSettings(encoders=["opensmile"], progress=False))  # another column only
    meta = json.loads((cache / "meta.json").read_text())
    assert set(meta["inputs"]) == {"audio.data2vec", "video.timesformer"} and not other["rewrote_dataset"]


def test_finetune_mode_trains_the_student_encoders_and_keeps_the_teacher(ft_run: tuple[Path, dict],
                                                                          ft_cache: Path) -> None:
    from pipeline.cache import load_cache
    from pipeline.inputs import build_input_encoder

    out, result = ft_run
    meta = load_cache(ft_cache).meta["inputs"]
    teacher, audio, video, fusion = (_weights(out / f"stage-{s}.safetensors")
                                     for s in ("teacher", "student_audio", "student_video", "fusion"))
    for role, col, stage in (("audio", "audio.data2vec", audio), ("video", "video.timesformer", video)):
        start = build_input_encoder(col, meta[col]).model.state_dict()
        prefix = f"students.{role}.backbone."
        trained = {k[len(prefix):]: v for k, v in stage.items() if k.startswith(prefix)}
        assert trained.keys() == start.keys()
        changed = [k for k in start if not torch.equal(trained[k], start[k])]
        assert len(changed) > len(start) // 2, f"{role}: only {len(changed)} of {len(start)} tensors trained"
        # the frozen teacher is bit-identical after every later stage
        for later in (audio, video, fusion):
            assert all(torch.equal(later[k], teacher[k]) for k in teacher if k.startswith("teacher."))
    # the video stage leaves the fine-tuned audio student alone; the fusion stage leaves both students alone
    assert all(torch.equal(video[k], audio[k]) for k in audio if k.startswith("students.audio."))
    assert all(torch.equal(fusion[k], video[k]) for k in video if k.startswith("students."))
    assert not any(torch.equal(fusion[k], video[k]) for k in video if k.startswith("asf.") and k.endswith("weight"))
    # beats a constant predictor after 2 epochs per student (7 classes; README table: 0.78 with the demo config)
    assert result["test"]["accuracy"] > majority_share(load_cache(ft_cache).dataset["test"]["label"]) + 0.05
    feats = json.loads((out / "features.json").read_text())
    assert set(feats["inputs"]) == {"audio.data2vec", "video.timesformer"} and set(feats["columns"]) == \
        {"text.roberta-context"}


def test_fusion_memo_runs_each_frozen_student_once_per_row_with_the_same_outputs(ft_cache: Path) -> None:
    """Fusion stage, finetune mode: h_a, h_v of a row are computed once (by row_uid) and read back after;
    the logits equal the recomputing model's, and the memory is dropped when a student may change."""
    from pipeline.cache import load_cache
    from pipeline.collate import ROW_UID, make_loader, prepare_data
    from pipeline.train import build_model

    config = _config()
    data = prepare_data(config, load_cache(ft_cache), splits=("dev",))
    torch.manual_seed(0)
    memo = build_model(config, data)
    plain = build_model({**config, "model": {**config["model"], "fusion_memo": False}}, data)
    plain.load_state_dict(memo.state_dict())
    memo.eval(), plain.eval()  # the ASF's dropout off: the same logits from the same h (students are eval anyway)
    rows_seen = {"audio": 0, "video": 0}  # rows through each encoder (both models share the encoder objects)
    for role in rows_seen:
        memo.students[role].encoder.pooled = _counting(memo.students[role].encoder.pooled, rows_seen, role)

    def fusion(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, int]]:
        before = dict(rows_seen)
        logits = model(batch, stage="fusion").logits
        return logits, {r: rows_seen[r] - before[r] for r in rows_seen}

    dev = data.splits["dev"]
    with one_torch_thread():
        for epoch in range(2):
            ran = {"audio": 0, "video": 0}
            for batch in make_loader(dev, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
                assert ROW_UID in batch
                want, _ = fusion(plain, batch)
                got, rows = fusion(memo, batch)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                ran = {r: ran[r] + rows[r] for r in ran}
            assert ran == ({"audio": len(dev), "video": len(dev)} if epoch == 0 else {"audio": 0, "video": 0})
        batch = next(iter(make_loader(dev, batch_size=4)))
        memo(batch, stage="student_audio")  # a student stage: the students may change from here
        assert fusion(memo, batch)[1] == {"audio": 4, "video": 4}
        memo.load_state_dict(memo.state_dict())  # new weights: recomputed
        assert fusion(memo, batch)[1] == {"audio": 4, "video": 4}
        assert fusion(memo, batch)[1] == {"audio": 0, "video": 0}
        # a row repeated in one batch (Accelerate's padded last batch) runs the encoder once
        memo.load_state_dict(memo.state_dict())
        twice = {k: torch.cat([v, v]) for k, v in batch.items()}
        got, rows = fusion(memo, twice)
        assert rows == {"audio": 4, "video": 4}
        torch.testing.assert_close(got[:4], fusion(plain, batch)[0], rtol=1e-5, atol=1e-5)
        # a loaded run scoring new data sends no row uid: nothing remembered
        memo.load_state_dict(memo.state_dict())
        bare = {k: v for k, v in batch.items() if k != ROW_UID}
        assert fusion(memo, bare)[1] == fusion(memo, bare)[1] == {"audio": 4, "video": 4}


def _counting(pooled: Any, seen: dict[str, int], role: str) -> Any:
    def wrapped(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
        seen[role] += int(next(iter(inputs.values())).shape[0])
        return pooled(model, inputs)
    return wrapped


def test_crash_mid_student_stage_then_resume_equals_the_uninterrupted_run(ft_run: tuple[Path, dict],
                                                                           ft_cache: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.train import CRASH_STEPS_ENV, SimulatedCrash

    ref, ref_result = ft_run
    out = tmp_path / "run"
    # teacher: 1 epoch x 35 batches; the audio student has 35 batches an epoch: die in its second epoch
    monkeypatch.setenv(CRASH_STEPS_ENV, str(35 + 35 + 10))
    with pytest.raises(SimulatedCrash):
        _train(ft_cache, out)
    progress = json.loads((out / "checkpoints" / "progress.json").read_text())
    assert progress["stage_index"] == 1 and progress["epochs_done"] == 1
    monkeypatch.delenv(CRASH_STEPS_ENV)
    result = _train(ft_cache, out, resume=True)
    assert result["dev"] == ref_result["dev"] and result["test"] == ref_result["test"]
    a, b = _weights(out / "stage-fusion.safetensors"), _weights(ref / "stage-fusion.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_accumulation_and_checkpointing_train_the_students(ft_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _train(ft_cache, out, "stages.teacher.epochs=1", "stages.student_audio.epochs=1",
                    "stages.student_video.epochs=1", "stages.fusion.epochs=1", "train.mixed_precision=bf16",
                    "train.grad_accum_steps=2", "model.gradient_checkpointing=true")
    curves = result["curves"]
    for stage in ("student_audio", "student_video"):
        losses = curves[stage][0]["loss"]
        assert np.isfinite(losses["total"]) and losses["response"] > 0 and losses["feature"] >= 0
    teacher, video = (_weights(out / f"stage-{s}.safetensors") for s in ("teacher", "student_video"))
    assert not all(torch.equal(teacher[k], video[k]) for k in teacher if k.startswith("students.video.backbone."))


def test_predict_on_a_clip_equals_scoring_it_from_the_cache(ft_run: tuple[Path, dict], ft_cache: Path,
                                                            tmp_path: Path) -> None:
    import datasets

    from pipeline.cache import Cache, load_cache
    from pipeline.predict import load_run, predict, score_cache

    out, _ = ft_run
    cache = load_cache(ft_cache)
    test = cache.dataset["test"]
    row = next(i for i, (a, v) in enumerate(zip(test["audio.data2vec.input_missing"],
                                                 test["video.timesformer.input_missing"])) if not a and not v)
    r = test[row]
    clip = tmp_path / "clip.mp4"
    shutil.copy2(r["video_path"], clip)
    clip.with_suffix(".txt").write_text(r["text"] + "\n")
    run = load_run(out)
    assert set(run.input_encoders) == {"audio", "video"}
    sub = Cache(path=cache.path, dataset=datasets.DatasetDict({"test": test.select([row])}), meta=cache.meta)
    _, scored = score_cache(run, sub, "test")
    ref = torch.softmax(torch.from_numpy(scored.outputs).double(), -1).numpy()[0]
    # a run dir copy that cannot reach the cache: predict decodes the clip and runs the FINE-TUNED students
    alone = tmp_path / "alone"
    alone.mkdir()
    saved = json.loads((out / "metrics.json").read_text())
    for name in ("config.yaml", "features.json", saved["final_weights"]):
        shutil.copy2(out / name, alone / name)
    saved["cache"] = str(tmp_path / "no-such-cache")
    (alone / "metrics.json").write_text(json.dumps(saved))
    with one_torch_thread():
        pred = predict(alone, [clip], speaker=r["speaker"])
    (u,) = pred.utterances
    labels = pred.label_names
    np.testing.assert_allclose([u["probabilities"][c] for c in labels], ref, atol=1e-5)
    assert not u["degraded"]
    # the exported run (no path of this machine in its recipe: the students' encoders are rebuilt from the
    # profile, their fine-tuned weights come from model.safetensors) predicts the same
    from pipeline.export import export_run

    exported = export_run(out, tmp_path / "export")
    recipe = (exported / "features.json").read_text()
    assert str(Path.home()) not in recipe and "site-packages" not in recipe
    assert {c["kwargs"] for c in json.loads(recipe)["inputs"].values()} == {None}
    card = (exported / "README.md").read_text()  # exporting a finetune-mode run crashed here (KeyError) before
    assert "`audio.data2vec` | data2vec" in card and card.count("fine-tuned in this run") == 2
    with one_torch_thread():
        (v,) = predict(exported, [clip], speaker=r["speaker"]).utterances
    np.testing.assert_allclose([v["probabilities"][c] for c in labels], ref, atol=1e-5)


def test_finetune_mode_without_decoded_inputs_is_one_clear_error(demo_meld_cache: Path, tmp_path: Path) -> None:
    from pipeline.errors import UnknownName

    with pytest.raises(UnknownName, match=r"features --corpus demo-meld --encoders --inputs data2vec"):
        _train(demo_meld_cache, tmp_path / "run")
    assert not (tmp_path / "run" / "stage-teacher.safetensors").exists()


def test_two_processes_train_the_students(ft_cache: Path, tmp_path: Path) -> None:
    """`accelerate launch` with 2 CPU processes (gloo) runs the finetune-mode stages through the same trainer."""
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    epochs = [f"stages.{s}.epochs=1" for s in ("teacher", "student_audio", "student_video", "fusion")]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "pipeline", "train", "--method", "telme", "--cache", str(ft_cache), "--config",
           str(DEMO_FT), "--out", str(tmp_path), "--name", "mp", *[x for e in epochs for x in ("--set", e)]]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "mp" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and np.isfinite(metrics["test"]["accuracy"])
    teacher = load_file(str(tmp_path / "mp" / "stage-teacher.safetensors"))
    video = load_file(str(tmp_path / "mp" / "stage-student_video.safetensors"))
    keys = [k for k in teacher if k.startswith("students.")]
    assert keys and sum(not torch.equal(teacher[k], video[k]) for k in keys) > len(keys) // 2
