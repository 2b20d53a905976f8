"""Issue 16: lazy encoder weights (fingerprint from configs + weight-file hashes, load on first encode) and the
grouped decode of the extract stage (one decode per clip for all encoders of a modality) giving today's outputs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from extractors.base import WEIGHT_LOADS, EncoderInput, create_encoder
from extractors.tiny import ensure_tiny_encoders


@pytest.fixture(scope="module")
def tiny() -> dict[str, str]:
    return ensure_tiny_encoders()  # the shared tiny-model folder (built once, reused)


def _flip_middle_byte(path: Path) -> None:
    """Change one byte in the middle of a weights file (past a safetensors header), keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("name", ["timesformer", "densenet", "roberta"])
def test_fingerprint_needs_no_weights_and_follows_weight_edits(name: str, tiny: dict[str, str], tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("MERC_HASH_CACHE", str(tmp_path / "hashes"))
    src = Path(tiny[name])
    if src.is_dir():
        weights = tmp_path / src.name
        shutil.copytree(src, weights)
        weight_file = weights / "model.safetensors"
        kwargs = {"weights": str(weights)}
    else:
        weight_file = tmp_path / src.name
        shutil.copyfile(src, weight_file)
        kwargs = {"weights_file": str(weight_file), "model_kwargs": {"growth_rate": 16, "block_config": [1, 1, 1, 1],
                                                                     "bn_size": 2}}
    before = sum(WEIGHT_LOADS.values())
    enc = create_encoder(name, **kwargs)
    fp = enc.fingerprint()
    assert create_encoder(name, **kwargs).fingerprint() == fp  # stable (second time from the hash memo)
    _flip_middle_byte(weight_file)
    edited = create_encoder(name, **kwargs)
    assert edited.fingerprint() != fp
    assert not enc.loaded and not edited.loaded and sum(WEIGHT_LOADS.values()) == before
    item = EncoderInput(utterance_id="u", text="oh my god you are here")
    sample = edited.load(item) if name == "roberta" else [np.zeros((8, 32, 32, 3), np.uint8)][0]
    if name != "roberta":
        sample = {"frames": np.zeros((8, edited.image_size, edited.image_size, 3), np.uint8), "fallbacks": 0}
    out = edited.encode([sample])
    assert out.vec.shape == (1, edited.dim) and edited.loaded and WEIGHT_LOADS[name] >= 1
    assert sum(WEIGHT_LOADS.values()) == before + 1  # loaded once, on the first encode


def test_unchanged_rerun_loads_no_weights(demo_root: Path, demo_meld_cache: Path) -> None:
    from pipeline.catalog import corpus_entry
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, extract

    entry = corpus_entry("demo-meld", str(demo_root / "meld"))
    data = read_corpus(entry.reader, entry.root, **entry.options)
    data.name = "demo-meld"
    before = dict(WEIGHT_LOADS)
    report = extract(data, demo_meld_cache, ExtractSettings(encoders=entry.encoders, sequence=tuple(entry.sequence),
                                                           progress=False))
    assert report["rewrote_dataset"] is False
    assert {c["computed"] for c in report["columns"].values()} == {0}
    assert not any(c["weights_loaded"] for c in report["columns"].values())
    assert dict(WEIGHT_LOADS) == before


def test_unchanged_rerun_imports_neither_timm_nor_opensmile(demo_root: Path, demo_meld_cache: Path,
                                                             tmp_path: Path) -> None:
    """In a fresh process (what `make features` again is), an unchanged re-run does not import timm (2 s:
    torchvision, dynamo) or openSMILE just to know the width of columns it does not compute."""
    import json
    import subprocess
    import sys

    cache = tmp_path / "demo-meld"
    shutil.copytree(demo_meld_cache, cache)
    script = f"""
import json, sys
from pipeline.catalog import corpus_entry
from pipeline.corpora.base import read_corpus
from pipeline.extract import ExtractSettings, extract
entry = corpus_entry("demo-meld", {str(demo_root / "meld")!r})
data = read_corpus(entry.reader, entry.root, **entry.options)
data.name = "demo-meld"
r = extract(data, {str(cache)!r}, ExtractSettings(encoders=entry.encoders, sequence=tuple(entry.sequence), progress=False))
print(json.dumps({{"computed": sorted({{c["computed"] for c in r["columns"].values()}}), "rewrote": r["rewrote_dataset"],
                  "timm": "timm" in sys.modules, "opensmile": "opensmile" in sys.modules}}))
"""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"computed": [0], "rewrote": False, "timm": False, "opensmile": False}
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["columns"]["video.densenet"]["dim"] == json.loads((demo_meld_cache / "meta.json").read_text())[
        "columns"]["video.densenet"]["dim"]


def test_densenet_weights_that_do_not_fit_are_one_clear_error(tiny: dict[str, str], tmp_path: Path) -> None:
    """The fit check moved from the constructor to the first use of the structure (``dim``; the extract
    stage asks for it while planning a column that computes, before any work). Both errors are user errors
    (the command printed a traceback and exited 1 before)."""
    kwargs = {"weights_file": str(tiny["densenet"]), "model_kwargs": {"growth_rate": 8, "block_config": [1, 1, 1, 1],
                                                                       "bn_size": 2}}
    enc = create_encoder("densenet", **kwargs)  # the file's header is read later, not here
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="does not fit timm 'densenet121'"):  # one line, exit 2 from a command
        _ = enc.dim
    with pytest.raises(UserError, match="weights file not found"):
        create_encoder("densenet", weights_file=str(tmp_path / "absent.safetensors"))


def test_grouped_decode_equals_one_encoder_at_a_time(tiny: dict[str, str], tmp_path: Path) -> None:
    """Both video encoders (different sizes) and both audio encoders in one pass give exactly the shards of
    one pass per encoder with the decode memo off; a corrupt clip is a recorded skip naming the file."""
    from bench.scale_clips import ClipSpec, write_clip
    from pipeline import media
    from pipeline.extract import ColumnJob, compute_group, load_shards

    spec = ClipSpec(width=160, height=90, fps=24, audio_rate=48000, channels=2, keyint=12)
    clips = []
    for i, duration in enumerate((1.3, 2.2, 0.6)):
        write_clip(tmp_path / f"c{i}.mp4", duration, spec, seed=i)
        clips.append(tmp_path / f"c{i}.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    items = [EncoderInput(utterance_id=f"u{i}", video_path=str(p), audio_path=str(p), start=0.1 if i == 1 else None,
                          end=1.9 if i == 1 else None) for i, p in enumerate([*clips, bad])]
    video = [create_encoder("timesformer", weights=tiny["timesformer"]),
             create_encoder("densenet", weights_file=tiny["densenet"], image_size=48,
                            model_kwargs={"growth_rate": 16, "block_config": [1, 1, 1, 1], "bn_size": 2})]
    audio = [create_encoder("data2vec", weights=tiny["data2vec"]), create_encoder("opensmile")]

    def run(encoders, folder: Path, grouped: bool):
        jobs = [ColumnJob(e, [(it.utterance_id, it) for it in items], folder / e.name) for e in encoders]
        for group in ([jobs] if grouped else [[j] for j in jobs]):
            compute_group(group, batch_size=2, num_workers=0, shard_size=64, dtype="float32", progress=False)
        return {e.name: load_shards(folder / e.name).sort_by("key") for e in encoders}

    saved = media._DECODED.capacity
    try:
        media._DECODED.capacity = 0  # today's path: every encoder decodes for itself
        alone = run(video + audio, tmp_path / "alone", grouped=False)
    finally:
        media._DECODED.capacity = saved
    grouped = {**run(video, tmp_path / "grouped", grouped=True), **run(audio, tmp_path / "grouped", grouped=True)}
    for name, table in alone.items():
        other = grouped[name]
        assert table.column("key").to_pylist() == other.column("key").to_pylist() == ["u0", "u1", "u2", "u3"]
        np.testing.assert_array_equal(np.stack(table.column("vec").to_numpy(zero_copy_only=False)),
                                      np.stack(other.column("vec").to_numpy(zero_copy_only=False)))
        assert other.column("missing").to_pylist() == [False, False, False, True], other.column("reason").to_pylist()
        assert str(bad) in other.column("reason").to_pylist()[3]


def test_thread_choices() -> None:
    """Training: 1 intra-op thread for a small model, torch's default for a big one, a number as given; extract:
    the cores left after the decode workers, at least 1; every core for text (its workers only tokenize)."""
    from pipeline.extract import compute_threads
    from pipeline.train import SMALL_MODEL_PARAMS, cpu_threads

    assert cpu_threads("auto", SMALL_MODEL_PARAMS - 1, 8) == 1
    assert cpu_threads("auto", SMALL_MODEL_PARAMS, 8) == 8
    assert cpu_threads(3, 10, 8) == 3
    with pytest.raises(ValueError, match="threads"):
        cpu_threads(0, 10, 8)
    cores = len(os.sched_getaffinity(0))
    assert compute_threads("auto", 0) == cores
    assert compute_threads("auto", cores + 5) == 1
    assert compute_threads("auto", 2, "audio") == compute_threads("auto", 2, "video") == max(1, cores - 2)
    assert compute_threads("auto", 2, "text") == cores  # its workers only tokenize
    assert compute_threads(1, 2, "text") == 1
    assert compute_threads(2, 16) == 2
