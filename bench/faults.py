"""Fault-injection suite (``make faults``): kills and races against the cache and the trainer; prints a table.

In fresh processes, on a small generated MELD demo (``roberta`` + ``opensmile`` features, shards of 8
rows, two DataLoader workers):

- ``features`` SIGKILLed at ``--kills`` points (default 8): random moments mid-compute (a random
  delay after a random shard count), and named points of the shard write and of the final save (``MERC_FAULT_AT``: half a shard written; dataset saved but not
  renamed; renamed but meta.json not replaced; replaced but old versions not removed), then restarted
  until it finishes;
- ``train`` (CMATH on that cache, a few epochs) SIGKILLed at ``--train-kills`` random times, then
  continued with ``--resume`` (or started again when it died before claiming its run dir);
- races: two ``features`` runs at once on one cache (same encoder list / different lists), two
  ``train`` runs into one ``--out`` with the same ``--name``.

Each row checks: the cache opens right after the kill (old or new version), the final cache equals an
uninterrupted run (features: allclose 1e-4, as batches differ between resumed and whole runs; train:
metrics and curves bit-identical), no process of the killed run is left (its session is scanned after
3 s: DataLoader workers included), no ``.tmp`` is left after the final run.

    python bench/faults.py [--kills 8] [--train-kills 5] [--races same,different,train] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENCODERS = ["roberta", "opensmile"]
NAMED_POINTS = ["shard-write:3", "save-pointer", "save-cleanup", "save-dataset"]  # taken in this order
TRAIN_SETS = ["features={text: text.roberta, audio: audio.opensmile}", "stages.main.epochs=6"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def features_cmd(root: Path, cache_root: Path, encoders: list[str] = ENCODERS) -> list[str]:
    return [sys.executable, "-m", "pipeline", "features", "--corpus", "demo-meld", "--root", str(root),
            "--cache-root", str(cache_root), "--encoders", *encoders, "--no-progress", "--shard-size", "8",
            "--batch-size", "4", "--num-workers", "2"]


def train_cmd(cache: Path, out: Path, name: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "train", "--method", "cmath", "--cache", str(cache), "--out", str(out),
           "--name", name]
    for s in TRAIN_SETS:
        cmd += ["--set", s]
    return cmd


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (every run starts its own session)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def orphans_after(sid: int, wait: float = 3.0) -> int:
    """Processes of the dead run still alive ``wait`` s after it died; they are then killed (counted)."""
    deadline = time.time() + wait
    left = session_members(sid)
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = session_members(sid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(left)


def start(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen(cmd, env={**env(), **(extra_env or {})}, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)


def run(cmd: list[str], log: Path, *, kill_after: float | None = None, point: str | None = None,
        after_shards: tuple[Path, int, float] | None = None) -> dict:
    """Run ``cmd``; SIGKILL it (like ``kill -9 <pid>``) after ``kill_after`` s, or ``after_shards`` =
    (cache, k, d): d s after the k-th shard file appears (mid-compute, at a random moment), or let it
    kill itself at ``point``. Returns rc, seconds and the orphans left."""
    t0 = time.time()
    p = start(cmd, log, {"MERC_FAULT_AT": point} if point else None)
    if after_shards is not None:
        folder, k, d = after_shards
        while p.poll() is None and sum(1 for _ in folder.rglob("shard-*.arrow")) < k:
            time.sleep(0.02)
        kill_after = d
    try:
        rc = p.wait(timeout=kill_after if kill_after is not None else 900)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        rc = p.wait()
    return {"rc": rc, "seconds": time.time() - t0, "orphans": orphans_after(p.pid), "killed": rc == -signal.SIGKILL}


def readable(cache: Path) -> str:
    from pipeline.cache import load_cache

    if not (cache / "meta.json").exists():
        return "no cache yet"
    try:
        c = load_cache(cache)
        missing = set(c.meta["columns"]) - set(c.dataset["train"].column_names)
        return "ok" if not missing else f"MIX: meta lists {sorted(missing)} the dataset lacks"
    except Exception as e:  # noqa: BLE001 - the finding
        return f"ERROR {type(e).__name__}"


def tmp_left(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if ".tmp" in p.name)


def cache_diff(a: Path, b: Path, columns: list[str]) -> str:
    """"equal" or what differs (rows, columns, values beyond allclose(rtol=1e-4, atol=1e-5))."""
    import numpy as np

    from pipeline.cache import load_cache

    ca, cb = load_cache(a), load_cache(b)
    if sorted(ca.dataset) != sorted(cb.dataset):
        return "splits differ"
    if {c: v["fingerprint"] for c, v in ca.meta["columns"].items()} != \
            {c: v["fingerprint"] for c, v in cb.meta["columns"].items()}:
        return "columns differ"
    worst = 0.0
    for s in ca.dataset:
        x, y = ca.dataset[s].with_format("numpy")[:], cb.dataset[s].with_format("numpy")[:]
        if list(x["utterance_id"]) != list(y["utterance_id"]):
            return f"{s}: rows differ"
        for col in columns:
            if not np.allclose(x[col], y[col], rtol=1e-4, atol=1e-5):
                return f"{s}.{col} differs"
            worst = max(worst, float(np.abs(x[col] - y[col]).max()))
    return f"equal (max abs diff {worst:.1e})"


def run_equal(a: Path, b: Path) -> str:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ca, cb = (json.loads((d / "curves.json").read_text()) for d in (a, b))
    same = ma["dev"] == mb["dev"] and ma["test"] == mb["test"] and ca == cb
    return "bit-identical" if same else "DIFFERENT"


def features_kills(work: Path, root: Path, ref: Path, n: int, ref_seconds: float, rng: random.Random) -> list[dict]:
    rows = []
    points = list(NAMED_POINTS)
    audio = f"audio.{ENCODERS[1]}"
    for i in range(n):
        cache_root = work / f"kill-{i}"
        cache = cache_root / "demo-meld"
        # every other pair of rows starts from a finished cache whose audio column must be recomputed
        # (its shards deleted): a kill there must leave the previous version readable
        prefilled = i % 4 >= 2
        if prefilled:
            shutil.copytree(ref, cache, ignore=shutil.ignore_patterns(".lock*"))
            shutil.rmtree(cache / "shards" / audio)
        watch = cache / "shards" / audio if prefilled else cache
        total = sum(1 for _ in (ref / "shards" / audio if prefilled else ref).rglob("shard-*.arrow"))
        point, after = None, None
        if i % 2 == 1 and points:
            point = points.pop(0)
            what = f"at {point}"
        else:
            after = (watch, rng.randint(1, max(1, total - 1)), round(rng.uniform(0.0, 0.5), 2))
            what = f"{after[2]} s after shard {after[1]} of {total}"
        what += f" ({'re-extracting ' + audio + ' of a finished cache' if prefilled else 'fresh cache'})"
        r = run(features_cmd(root, cache_root), work / f"kill-{i}.log", point=point, after_shards=after)
        shards = sum(1 for _ in (cache / "shards").rglob("shard-*.arrow")) if (cache / "shards").is_dir() else 0
        after = f"{readable(cache)}; {shards} shards on disk"
        restarts, orphans, rc = 0, r["orphans"], 0
        while True:
            restarts += 1
            rr = run(features_cmd(root, cache_root), work / f"kill-{i}-restart{restarts}.log")
            orphans += rr["orphans"]
            rc = rr["rc"]
            if rc == 0 or restarts >= 3:
                break
        rows.append({"case": "features SIGKILL", "fault": what, "killed": "yes" if r["killed"] else "finished first",
                     "after_kill": after, "restarts": restarts if rc == 0 else f"FAILED rc {rc}",
                     "result": cache_diff(ref, cache, [f"text.{ENCODERS[0]}", f"audio.{ENCODERS[1]}"]),
                     "orphans": orphans, "tmp": tmp_left(cache_root)})
    return rows


def train_kills(work: Path, cache: Path, ref_run: Path, n: int, ref_seconds: float, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        out = work / f"train-kill-{i}"
        delay = round(rng.uniform(4.0, max(5.0, 0.9 * ref_seconds)), 1)
        r = run(train_cmd(cache, out, "r"), work / f"train-kill-{i}.log", kill_after=delay)
        restarts, orphans, rc = 0, r["orphans"], 0
        while True:
            restarts += 1
            resume = (out / "r" / "run.json").exists()
            cmd = ([sys.executable, "-m", "pipeline", "train", "--resume", str(out / "r")] if resume
                   else train_cmd(cache, out, "r"))
            rr = run(cmd, work / f"train-kill-{i}-restart{restarts}.log")
            orphans += rr["orphans"]
            rc = rr["rc"]
            if rc == 0 or restarts >= 3:
                break
        rows.append({"case": "train SIGKILL + --resume", "fault": f"after {delay} s",
                     "killed": "yes" if r["killed"] else "finished first",
                     "after_kill": "-", "restarts": restarts if rc == 0 else f"FAILED rc {rc}",
                     "result": run_equal(ref_run, out / "r") if rc == 0 else "-", "orphans": orphans,
                     "tmp": tmp_left(out)})
    return rows


def race(work: Path, name: str, cmds: list[list[str]], logs: list[Path]) -> tuple[list[int], int, list[str]]:
    procs = [start(c, log) for c, log in zip(cmds, logs)]
    rcs = [p.wait(timeout=900) for p in procs]
    orphans = sum(orphans_after(p.pid) for p in procs)
    return rcs, orphans, [log.read_text() for log in logs]


def features_race(work: Path, root: Path, ref: Path, kind: str) -> dict:
    cache_root = work / f"race-{kind}"
    lists = [ENCODERS, ENCODERS] if kind == "same" else [[ENCODERS[0]], [ENCODERS[1]]]
    rcs, orphans, logs = race(work, kind, [features_cmd(root, cache_root, e) for e in lists],
                              [work / f"race-{kind}-{i}.log" for i in range(2)])
    waited = sum("is being written by pid" in log for log in logs)
    return {"case": f"2 x features, {kind} encoders", "fault": "race", "killed": "-",
            "after_kill": f"rc {rcs}, {waited} waited", "restarts": 0,
            "result": cache_diff(ref, cache_root / "demo-meld", [f"text.{ENCODERS[0]}", f"audio.{ENCODERS[1]}"])
            if rcs == [0, 0] else "FAILED", "orphans": orphans, "tmp": tmp_left(cache_root)}


def train_race(work: Path, cache: Path, ref_run: Path) -> dict:
    out = work / "race-train"
    rcs, orphans, logs = race(work, "train", [train_cmd(cache, out, "r")] * 2,
                              [work / f"race-train-{i}.log" for i in range(2)])
    refused = sum("already holds a run" in log for log in logs)
    ok = sorted(rcs) == [0, 2] and refused == 1
    return {"case": "2 x train, one --out and --name", "fault": "race", "killed": "-",
            "after_kill": f"rc {sorted(rcs)}, {refused} refused in one line", "restarts": 0,
            "result": run_equal(ref_run, out / "r") if ok else "FAILED", "orphans": orphans, "tmp": tmp_left(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=8,
                   help="features kills: every 2nd at the next named point (" + ", ".join(NAMED_POINTS) +
                        "), the others at a random moment mid-compute")
    p.add_argument("--train-kills", type=int, default=5)
    p.add_argument("--races", default="same,different,train", help="comma list of same,different,train ('' = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="work folder (default: a temp folder, removed at the end)")
    p.add_argument("--dialogues", type=int, default=4, help="train dialogues of the demo corpus")
    a = p.parse_args(argv)
    os.environ.update({k: v for k, v in env().items() if k != "PYTHONPATH"})
    rng = random.Random(a.seed)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="merc-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    from pipeline.corpora.demo import generate_demo

    t_all = time.time()
    root = generate_demo(work / "meld", layout="meld", n_dialogues={"train": a.dialogues, "dev": 1, "test": 1})
    ref_run = run(features_cmd(root, work / "ref"), work / "ref.log")
    if ref_run["rc"] != 0:
        print(f"faults: the uninterrupted features run failed; see {work / 'ref.log'}", file=sys.stderr)
        return 1
    ref = work / "ref" / "demo-meld"
    rows = features_kills(work, root, ref, a.kills, ref_run["seconds"], rng)
    races = [r for r in a.races.split(",") if r]
    for kind in ("same", "different"):
        if kind in races:
            rows.append(features_race(work, root, ref, kind))
    if a.train_kills or "train" in races:
        t = run(train_cmd(ref, work / "train-ref", "r"), work / "train-ref.log")
        if t["rc"] != 0:
            print(f"faults: the uninterrupted train run failed; see {work / 'train-ref.log'}", file=sys.stderr)
            return 1
        rows += train_kills(work, ref, work / "train-ref" / "r", a.train_kills, t["seconds"], rng)
        if "train" in races:
            rows.append(train_race(work, ref, work / "train-ref" / "r"))
    print(f"\nfault injection: demo MELD ({a.dialogues}+1+1 dialogues), features {' + '.join(ENCODERS)}, "
          f"train cmath ({', '.join(TRAIN_SETS)}); seed {a.seed}; {time.time() - t_all:.0f} s in all\n")
    head = ["case", "fault", "killed", "after kill / outcome", "restarts", "final vs uninterrupted", "orphans", ".tmp left"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    bad = 0
    for r in rows:
        print(f"| {r['case']} | {r['fault']} | {r['killed']} | {r['after_kill']} | {r['restarts']} | {r['result']} "
              f"| {r['orphans']} | {r['tmp']} |")
        bad += (not (r["result"].startswith("equal") or r["result"] == "bit-identical") or r["orphans"] > 0
                or r["tmp"] > 0 or "ERROR" in str(r["after_kill"]) or "MIX" in str(r["after_kill"]))
    print(f"\n{len(rows) - bad} of {len(rows)} rows pass" + (f"; logs in {work}" if bad or a.work else ""))
    if not a.work and not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
