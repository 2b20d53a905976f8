"""The extract stage: incremental, resumable, skips recorded, stale columns recomputed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from extractors.base import Encoder, EncoderInputError, EncoderOutput
from pipeline.cache import load_cache
from pipeline.corpora.base import CorpusData, ReadReport, Utterance
from pipeline.extract import ExtractSettings, encoder_inputs, extract, load_shards, prune


class CharEncoder(Encoder):
    """Deterministic text encoder for tests: character statistics of the utterance."""

    name, modality, dim = "chars", "text", 4

    def __init__(self, scale: float = 1.0, fail_after: int | None = None) -> None:
        self.scale, self.fail_after, self.calls = scale, fail_after, 0

    def settings(self):
        return {"scale": self.scale}

    def load(self, item):
        return item.text

    def encode(self, samples):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        v = np.array([[len(t), sum(map(ord, t)) % 97, t.count(" "), self.scale] for t in samples], np.float32)
        return EncoderOutput(vec=v, seq=[np.full((len(t.split()), 2), 1.0, np.float32) for t in samples])


class BytesEncoder(Encoder):
    """Audio-side test encoder: reads the media file; a bad file is an EncoderInputError."""

    name, modality, dim = "bytes", "audio", 2

    def settings(self):
        return {}

    def load(self, item):
        data = Path(item.audio_path).read_bytes()
        if not data.startswith(b"RIFF"):
            raise EncoderInputError(f"{item.audio_path}: not a wav file")
        return data

    def encode(self, samples):
        return EncoderOutput(vec=np.array([[len(s), s[-1]] for s in samples], np.float32))


def make_corpus(tmp: Path, n_dialogues: int = 6, per: int = 5) -> CorpusData:
    recs = []
    for d in range(n_dialogues):
        split = ["train", "train", "train", "dev", "test", "test"][d % 6]
        for p in range(per):
            uid = f"d{d}_u{p}"
            wav = tmp / f"{uid}.wav"
            if not wav.exists():  # a second call (another process) keeps the files, so their row keys
                wav.write_bytes(b"RIFF" + bytes([d, p]) if (d, p) != (1, 2) else b"junk")
            recs.append(Utterance(corpus="t", split=split, dialogue_id=f"d{d}", position=p, utterance_id=uid,
                                  speaker=f"s{p % 2}", text=f"dialogue {d} turn {p} " + "x" * p, label=(d + p) % 3,
                                  label_name=str((d + p) % 3), audio_path=str(wav)))
    return CorpusData(name="t", records=recs, report=ReadReport("t", str(tmp)),
                      label_sets={"primary": ["a", "b", "c"]}, modalities=("text", "audio"))


def settings(*encoders, **kw) -> ExtractSettings:
    return ExtractSettings(encoders=list(encoders), num_workers=0, batch_size=4, shard_size=8, progress=False, **kw)


def table(cache_dir: Path) -> dict:
    c = load_cache(cache_dir)
    return {s: c.dataset[s].with_format("numpy")[:] for s in c.dataset}


def test_history_is_earlier_turns_of_same_dialogue(tmp_path):
    data = make_corpus(tmp_path)
    items = encoder_inputs(data.records)
    third = next(i for i in items if i.utterance_id == "d2_u2")
    assert [t for _, t in third.history] == ["dialogue 2 turn 0 ", "dialogue 2 turn 1 x"]
    assert encoder_inputs(data.records)[0].history == []


def test_first_run_writes_cache_and_rerun_does_nothing(tmp_path):
    data = make_corpus(tmp_path / "media" if (tmp_path / "media").mkdir() is None else tmp_path)
    cache = tmp_path / "cache"
    r1 = extract(data, cache, settings(CharEncoder(), BytesEncoder()))
    assert r1["columns"]["text.chars"]["computed"] == 30 and r1["rewrote_dataset"]
    c = load_cache(cache)
    assert sorted(c.dataset) == ["dev", "test", "train"]
    assert c.dim("text.chars") == 4 and c.meta["columns"]["audio.bytes"]["dim"] == 2
    tr = c.dataset["train"]
    assert tr["utterance_id"][:5] == [f"d0_u{p}" for p in range(5)]  # dialogue order kept
    # the bad wav is a recorded skip: zeros + missing flag + reason in the report
    row = tr["utterance_id"].index("d1_u2")
    assert tr["audio.bytes.missing"][row] is True and tr["audio.bytes"][row] == [0.0, 0.0]
    assert any("not a wav" in e["reason"] for e in r1["skipped"]["audio.bytes"])
    assert json.loads((cache / "report.json").read_text())["columns"]["audio.bytes"]["computed"] == 30
    enc = CharEncoder()
    r2 = extract(data, cache, settings(enc, BytesEncoder()))
    assert r2["columns"]["text.chars"]["computed"] == 0 and r2["columns"]["text.chars"]["reused"] == 30
    assert enc.calls == 0 and r2["rewrote_dataset"] is False


def test_killed_run_resumes_to_same_dataset(tmp_path):
    """A real process SIGKILLed mid-encode, then again mid-shard-write (half a shard on disk, under its
    temp name); the next run resumes from the finished shards, removes the leftover, and gives the
    uninterrupted run's dataset. Writing shards in place (no temp name + rename) fails here: the half
    shard would be read as a finished one."""
    import signal
    import subprocess
    import sys

    (tmp_path / "m").mkdir()
    data = make_corpus(tmp_path / "m")
    full = tmp_path / "full"
    extract(data, full, settings(CharEncoder()))
    part = tmp_path / "part"
    run = [sys.executable, str(Path(__file__).with_name("_extract_child.py")), str(tmp_path / "m"), str(part), "chars"]
    # 1. killed in its 3rd encode call: batches 1-2 (8 rows = one shard) are on disk
    p = subprocess.run(run + ["--kill-in-encode", "3"], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    folder = next((part / "shards" / "text.chars").iterdir())
    assert load_shards(folder).num_rows == 8 and not list(part.rglob("*.tmp"))
    # 2. killed while writing its 2nd shard, half of it written
    p = subprocess.run(run, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MERC_FAULT_AT": "shard-write:2"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert len(list(folder.glob("*.tmp"))) == 1  # the shard in flight
    kept = load_shards(folder)
    assert kept.num_rows == 16  # the 8 from before + one new finished shard
    r = extract(data, part, settings(CharEncoder()))
    assert r["columns"]["text.chars"]["computed"] == 30 - 16 and r["columns"]["text.chars"]["reused"] == 16
    assert not [f for f in part.rglob("*") if ".tmp" in f.name]  # the killed runs' leftovers are gone
    a, b = table(full), table(part)
    for s in a:
        np.testing.assert_array_equal(a[s]["text.chars"], b[s]["text.chars"])
        assert list(a[s]["utterance_id"]) == list(b[s]["utterance_id"])


def test_only_changed_rows_and_changed_settings_recompute(tmp_path):
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder(), BytesEncoder()))
    data.records[3].text = "a new transcript"
    r = extract(data, cache, settings(CharEncoder(), BytesEncoder()))
    assert r["columns"]["text.chars"]["computed"] == 1 and r["columns"]["audio.bytes"]["computed"] == 0
    ctx = CharEncoder()
    ctx.uses_history = True  # a context encoder: the next turn of the dialogue changes too
    r = extract(data, tmp_path / "c2", settings(ctx))
    data.records[3].text = "another transcript"
    ctx.uses_history = True
    r = extract(data, tmp_path / "c2", settings(ctx))
    assert r["columns"]["text.chars"]["computed"] == 2  # d0_u3 and d0_u4 (whose history holds d0_u3)
    r = extract(data, cache, settings(CharEncoder(scale=2.0), BytesEncoder()))
    assert r["columns"]["text.chars"]["computed"] == 30  # new fingerprint: stale column recomputed
    assert len(list((cache / "shards" / "text.chars").iterdir())) == 2  # old fingerprint kept until --prune
    assert table(cache)["train"]["text.chars"][0][3] == 2.0
    gone = prune(cache)
    assert [p.parent.name for p, _ in gone if "shards" in p.parts] == ["text.chars"]
    assert len(list((cache / "shards" / "text.chars").iterdir())) == 1 and all(size > 0 for _, size in gone)
    assert table(cache)["train"]["text.chars"][0][3] == 2.0


def test_columns_from_earlier_runs_are_kept(tmp_path):
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder()))
    extract(data, cache, settings(BytesEncoder()))
    assert set(load_cache(cache).meta["columns"]) == {"text.chars", "audio.bytes"}


def test_sequences_are_stored_unpadded_with_lengths(tmp_path):
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder(), sequence=("chars",)))
    tr = load_cache(cache).dataset["train"]
    for text, seq, n in zip(tr["text"], tr["text.chars.seq"], tr["text.chars.seq_len"]):
        assert n == len(text.split()) == len(seq) and all(len(step) == 2 for step in seq)


def test_float16_storage(tmp_path):
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder(), dtype="float16"))
    extract(data, tmp_path / "c32", settings(CharEncoder()))
    feat = load_cache(cache).dataset["train"].features["text.chars"]
    assert feat.feature.dtype == "float16" and feat.length == 4  # stored half precision on disk
    np.testing.assert_allclose(table(cache)["train"]["text.chars"], table(tmp_path / "c32")["train"]["text.chars"],
                               rtol=1e-3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# all six offline encoders (roberta-context reads each turn's history, which can sit on the other rank)
ENCODER_NAMES = ["roberta", "roberta-context", "data2vec", "timesformer", "opensmile", "densenet"]
COLUMNS = ["text.roberta", "text.roberta-context", "audio.data2vec", "video.timesformer", "audio.opensmile",
           "video.densenet"]


def test_two_processes_give_the_same_dataset_as_one(tmp_path):
    """`accelerate launch --num_processes 2` splits the missing rows across ranks, then merges."""
    import os
    import subprocess
    import sys

    from pipeline.corpora.demo import generate_demo

    root = generate_demo(tmp_path / "meld", layout="meld", n_dialogues={"train": 3, "dev": 1, "test": 1})
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1")
    base = ["-m", "pipeline", "features", "--corpus", "demo-meld", "--root", str(root),
            "--encoders", *ENCODER_NAMES, "--sequence", "roberta", "densenet", "--no-progress", "--num-workers", "0"]
    for n, cache in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        cmd = ([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--main_process_port", str(_free_port())] if n == 2  # not 29500: two suites on one machine
               else [sys.executable]) + base + ["--cache-root", str(cache)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    shard_files = {f.name.split("-")[1] for f in (tmp_path / "two" / "demo-meld" / "shards").rglob("shard-*.arrow")}
    assert shard_files == {"r0", "r1"}  # both ranks did work
    a, b = table(tmp_path / "one" / "demo-meld"), table(tmp_path / "two" / "demo-meld")
    for s in a:
        assert list(a[s]["utterance_id"]) == list(b[s]["utterance_id"])
        for col in COLUMNS:  # every column, its missing flags, and the sequences with their lengths
            np.testing.assert_allclose(a[s][col], b[s][col], rtol=1e-4, atol=1e-5, err_msg=col)
            if f"{col}.missing" in a[s]:
                assert list(a[s][f"{col}.missing"]) == list(b[s][f"{col}.missing"]), col
        for col in ("text.roberta", "video.densenet"):
            assert list(a[s][f"{col}.seq_len"]) == list(b[s][f"{col}.seq_len"]), col
            for x, y in zip(a[s][f"{col}.seq"], b[s][f"{col}.seq"]):
                np.testing.assert_allclose(np.stack(list(x)) if len(x) else np.zeros((0,)),
                                           np.stack(list(y)) if len(y) else np.zeros((0,)), rtol=1e-4, atol=1e-5)
