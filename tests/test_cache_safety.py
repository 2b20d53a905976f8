"""The cache never loses work (issue 13): runs that ask for other columns keep this column's shards,
one writer at a time (file lock), versioned saves that readers never see half-done, old-layout caches,
killed runs cleaned up after, and DataLoader workers that die with their parent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache import CacheLock, CacheLocked, load_cache, save_cache
from pipeline.extract import cli, extract, load_shards
from test_extract import BytesEncoder, CharEncoder, make_corpus, settings, table

CHILD = Path(__file__).with_name("_extract_child.py")


def child(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def assert_same(a: Path, b: Path, columns: tuple[str, ...]) -> None:
    ta, tb = table(a), table(b)
    assert sorted(ta) == sorted(tb)
    for s in ta:
        assert list(ta[s]["utterance_id"]) == list(tb[s]["utterance_id"])
        for col in columns:
            np.testing.assert_array_equal(ta[s][col], tb[s][col])


def no_tmp(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if ".tmp" in p.name]


def test_run_for_other_columns_keeps_this_columns_shards(tmp_path):
    """Old code: the `bytes` run deleted every shard folder its list did not cover (lost chars work)."""
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        extract(data, cache, settings(CharEncoder(fail_after=3)))  # 8 of 30 rows written, then killed
    extract(data, cache, settings(BytesEncoder()))
    kept = load_shards(next((cache / "shards" / "text.chars").iterdir()))
    assert kept is not None and kept.num_rows == 8
    r = extract(data, cache, settings(CharEncoder()))
    assert r["columns"]["text.chars"]["computed"] == 22 and r["columns"]["text.chars"]["reused"] == 8
    assert set(load_cache(cache).meta["columns"]) == {"text.chars", "audio.bytes"}


def test_media_read_by_relative_or_absolute_path_is_the_same_row(tmp_path, monkeypatch):
    """Old code keyed a clip by its path as spelled: `make features` (the catalog's relative root) then the API
    with an absolute root found "corpus changed", dropped every media column from the dataset and recomputed
    them. Now a clip is keyed by its absolute path, and keys of caches written before are still reused."""
    import pipeline.extract as ex

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    relative, absolute = make_corpus(Path("m")), make_corpus(tmp_path / "m")
    assert relative.records[0].audio_path == "m/d0_u0.wav"
    extract(relative, tmp_path / "c", settings(CharEncoder(), BytesEncoder()))
    r = extract(absolute, tmp_path / "c", settings(BytesEncoder()))
    assert r["columns"]["audio.bytes"]["computed"] == 0 and r["columns"]["audio.bytes"]["reused"] == 30
    assert set(load_cache(tmp_path / "c").meta["columns"]) == {"text.chars", "audio.bytes"}  # nothing dropped

    # a cache written by the old code (path as spelled) is reused by either spelling, nothing recomputed
    with monkeypatch.context() as m:
        m.setattr(ex, "row_key", lambda it, mod, hist=False: ex.row_keys(it, mod, hist)[-1])
        first = extract(relative, tmp_path / "old", settings(CharEncoder(), BytesEncoder()))
    assert first["columns"]["audio.bytes"]["computed"] == 30
    old_keys = set(load_shards(next((tmp_path / "old" / "shards" / "audio.bytes").iterdir())).column("key").to_pylist())
    assert old_keys.isdisjoint(ex.row_key(it, "audio") for it in ex.encoder_inputs(absolute.records))
    for data in (relative, absolute):
        r = extract(data, tmp_path / "old", settings(CharEncoder(), BytesEncoder()))
        assert r["columns"]["audio.bytes"]["computed"] == 0 and r["columns"]["text.chars"]["computed"] == 0
        assert_same(tmp_path / "c", tmp_path / "old", ("text.chars", "audio.bytes"))
    r = extract(absolute, tmp_path / "old", settings(BytesEncoder()))  # the text column kept, not dropped
    assert set(load_cache(tmp_path / "old").meta["columns"]) == {"text.chars", "audio.bytes"}


def test_prune_lists_what_it_deletes_and_frees(tmp_path, capsys):
    data = make_corpus(tmp_path)
    root = tmp_path / "caches"
    extract(data, root / "t", settings(CharEncoder()))
    extract(data, root / "t", settings(CharEncoder(scale=3.0)))  # new fingerprint; old one stays on disk
    folders = sorted((root / "t" / "shards" / "text.chars").iterdir())
    assert len(folders) == 2
    old = [f for f in folders if f.name != load_cache(root / "t").meta["columns"]["text.chars"]["fingerprint"]]
    assert cli(["--prune", "--cache-root", str(root), "--corpus", "t"]) == 0
    out = capsys.readouterr().out
    assert f"deleted {old[0]}" in out and "MiB freed" in out and "dataset-1" in out  # old version listed too
    assert sorted((root / "t" / "shards" / "text.chars").iterdir()) == [f for f in folders if f not in old]
    assert table(root / "t")["train"]["text.chars"][0][3] == 3.0


def test_second_writer_stops_or_waits_naming_the_holder(tmp_path, capsys):
    data = make_corpus(tmp_path)
    root = tmp_path / "caches"
    cache = root / "t"
    extract(data, cache, settings(CharEncoder()))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:  # another writer (a thread here; the race test below uses processes)
        with CacheLock(cache, command="holder"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    try:
        with pytest.raises(CacheLocked, match=rf"pid {os.getpid()} on .* since .*holder"):
            extract(data, cache, settings(BytesEncoder()), wait=False)
        capsys.readouterr()
        assert cli(["--prune", "--no-wait", "--cache-root", str(root), "--corpus", "t"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("features --prune: cache") and "--no-wait" in err[0]
        threading.Timer(1.0, release.set).start()  # the holder finishes in 1 s
        t0 = time.perf_counter()
        extract(data, cache, settings(BytesEncoder()))  # waits for it, then runs
        assert time.perf_counter() - t0 >= 0.9
    finally:
        release.set()
        t.join()
    assert "is being written by pid" in capsys.readouterr().err
    assert set(load_cache(cache).meta["columns"]) == {"text.chars", "audio.bytes"}


def test_features_no_wait_stops_with_one_line(tmp_path, capsys):
    """The real command: `features --no-wait` on a cache another run holds exits 2 with one line."""
    from pipeline.corpora.demo import generate_demo

    root = generate_demo(tmp_path / "meld", layout="meld", n_dialogues={"train": 1, "dev": 1, "test": 1})
    cache = tmp_path / "caches" / "demo-meld"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with CacheLock(cache, command="python -m pipeline features (the other run)"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    try:
        capsys.readouterr()
        code = cli(["--corpus", "demo-meld", "--root", str(root), "--cache-root", str(tmp_path / "caches"),
                    "--encoders", "opensmile", "--no-wait", "--no-progress"])
    finally:
        release.set()
        t.join()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"features: cache {cache} is being written by pid {os.getpid()}")
    assert "(the other run)" in err[0] and not (cache / "meta.json").exists()


def test_reader_during_saves_sees_old_or_new_never_a_mix(tmp_path):
    """Old code: two renames then meta.json -- a reader between them got no `dataset/` or a dataset whose
    columns differ from meta.json's."""
    import datasets

    cache = tmp_path / "c"
    versions = []
    for i in range(2):
        cols = {"utterance_id": [f"u{j}" for j in range(50)], f"feat{i}": [[float(i)] * 64] * 50}
        versions.append((datasets.DatasetDict({"train": datasets.Dataset.from_dict(cols)}),
                         {"columns": {f"feat{i}": {"fingerprint": str(i), "dim": 64}}}))
    save_cache(cache, *versions[0])
    errors, loads = [], [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                c = load_cache(cache)
                assert set(c.meta["columns"]) <= set(c.dataset["train"].column_names), "meta and dataset differ"
                loads[0] += 1
            except Exception as e:  # noqa: BLE001 - any error is the failure
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(30):
            save_cache(cache, *versions[(i + 1) % 2])
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert loads[0] > 5
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("dataset")) == ["dataset-30", "dataset-31"]


def test_cache_in_the_old_layout_loads_and_migrates(tmp_path):
    data = make_corpus(tmp_path)
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder()))
    (cache / "dataset-1").rename(cache / "dataset")  # what the unversioned writer left
    meta = json.loads((cache / "meta.json").read_text())
    del meta["dataset"]
    (cache / "meta.json").write_text(json.dumps(meta))
    before = table(cache)
    r = extract(data, cache, settings(CharEncoder()))
    assert r["rewrote_dataset"] is False  # unchanged: the old layout is not rewritten for nothing
    extract(data, cache, settings(BytesEncoder()))
    assert json.loads((cache / "meta.json").read_text())["dataset"] == "dataset-1"
    assert (cache / "dataset").is_dir()  # kept as the previous version for readers that opened it
    extract(data, cache, settings(CharEncoder(scale=2.0)))
    assert not (cache / "dataset").exists() and (cache / "dataset-2").is_dir()
    np.testing.assert_array_equal(before["train"]["utterance_id"], table(cache)["train"]["utterance_id"])


@pytest.mark.parametrize("point", ["save-dataset", "save-pointer"])
def test_kill_during_final_save_leaves_a_readable_cache(tmp_path, point):
    """SIGKILL at a point of the save; the cache still opens with meta and dataset agreeing; the next
    run completes it and removes the leftovers."""
    (tmp_path / "m").mkdir()
    data = make_corpus(tmp_path / "m")
    cache = tmp_path / "c"
    extract(data, cache, settings(CharEncoder()))
    p = child(str(tmp_path / "m"), str(cache), "chars,bytes", env={"MERC_FAULT_AT": point})
    assert p.wait(timeout=300) == -signal.SIGKILL, p.stderr.read()[-2000:]
    c = load_cache(cache)
    assert set(c.meta["columns"]) == {"text.chars"} and "audio.bytes" not in c.dataset["train"].column_names
    assert point != "save-dataset" or no_tmp(cache)  # the half-saved version is a temp folder
    r = extract(data, cache, settings(CharEncoder(), BytesEncoder()))
    assert r["columns"]["audio.bytes"]["computed"] == 0  # its shards were done before the save
    assert set(load_cache(cache).meta["columns"]) == {"text.chars", "audio.bytes"} and not no_tmp(cache)
    assert len([p for p in cache.iterdir() if p.name.startswith("dataset")]) == 2  # current + previous


def test_two_runs_at_once_with_different_columns(tmp_path):
    """Old code: one run's save deleted the other's shards and it crashed (or its work was lost)."""
    (tmp_path / "m").mkdir()
    data = make_corpus(tmp_path / "m")
    ref = tmp_path / "ref"
    extract(data, ref, settings(CharEncoder(), BytesEncoder()))
    cache, go, release = tmp_path / "c", tmp_path / "go", tmp_path / "release"
    # the run that gets the lock first holds it (in its first encode) until the other says it waits:
    # they overlap for sure, however slow the machine (timing alone made this flaky under load)
    runs = [child(str(tmp_path / "m"), str(cache), enc, "--go", str(go), "--hold", str(release))
            for enc in ("chars", "bytes")]
    for r in runs:
        assert r.stdout.readline().startswith("pid")
    errs: list[list[str]] = [[], []]

    def read(i: int) -> None:
        for line in runs[i].stderr:
            errs[i].append(line)
            if "is being written by pid" in line:
                release.touch()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for t in readers:
        t.start()
    go.touch()
    for r in runs:
        r.wait(timeout=300)
    for t in readers:
        t.join(timeout=30)
    outs = ["".join(e) for e in errs]
    assert [r.returncode for r in runs] == [0, 0], [o[-2000:] for o in outs]
    assert release.exists(), "the runs did not overlap: neither waited for the other"
    assert sum("is being written by pid" in err for err in outs) == 1  # exactly one waited
    assert set(load_cache(cache).meta["columns"]) == {"text.chars", "audio.bytes"}
    assert_same(ref, cache, ("text.chars", "audio.bytes"))
    assert not no_tmp(cache)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_dataloader_workers_die_with_a_killed_run(tmp_path):
    """Old code: after SIGKILL of the parent, workers with a full pipe lived on forever."""
    p = child(str(tmp_path / "m"), str(tmp_path / "c"), "chars", "--workers", "2", "--big", "--delay", "1.0")
    pid = int(p.stdout.readline().split()[1])
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        workers = _children(pid)
        time.sleep(0.2)
    assert len(workers) == 2, "the DataLoader workers never started"
    time.sleep(1.5)  # they have loaded batches by now: their pipes are full
    os.kill(pid, signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.time() + 4.0  # torch's own parent watchdog needs >= 5 s, and misses blocked workers
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # clean up what the old code leaves before failing
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"
