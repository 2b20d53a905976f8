"""Where does a trained run get its answers from? Per-stage predictions and the demo's cue breakdown.

``python -m pipeline analyse RUN_DIR --cues data/demo/meld/demo_cues.csv`` scores every stage head
of a finished run (TelME: the text teacher, the audio and visual students, the fusion) on the
utterances grouped by where the demo corpus planted their label cue (all / text / audio / video).
The question it answers: on the utterances whose cue is **not** in modality m, does the fused model
beat the head that only sees m? That is what fusion is for, and a broken fusion cannot fake it.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.evaluate import load_trained  # noqa: F401  (re-exported: analysis and predict load runs alike)

CUE_MODES = ("all", "text", "audio", "video")


def stage_predictions(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Predicted class per utterance for every stage head of the final model (single process, CPU)."""
    import torch

    from pipeline.collate import make_loader
    from pipeline.train import IGNORE_INDEX, head_output

    config, cache, data, method, saved = load_trained(run_dir, (split,))
    method.eval()
    ds = data.splits[split]
    ids = list(cache.dataset[split]["utterance_id"])
    loader = make_loader(ds, batch_size=int(config["train"]["eval_batch_size"]))
    heads: dict[str, dict[str, Any]] = {}
    for stage in method.stages():
        preds: list[np.ndarray] = []
        with torch.no_grad():
            for batch in loader:
                y = head_output(method(batch, stage=stage.name), stage.eval_head)
                valid = batch["label"] != IGNORE_INDEX if "label" in batch else batch["label_mask"]
                out = y.argmax(-1) if y.dim() > valid.dim() else y
                preds.append(out[valid].cpu().numpy())
        heads[stage.name] = {"modality": stage.modality, "pred": np.concatenate(preds)}
    labels = np.asarray(cache.dataset[split]["label"])
    keep = labels >= 0
    return {"utterance_ids": [u for u, k in zip(ids, keep) if k], "labels": labels[keep], "heads": heads,
            "final_stage": saved["final_stage"]}


def read_cues(path: str | Path) -> dict[tuple[str, str], str]:
    """``demo_cues.csv`` -> {(split, key): cue mode}."""
    with open(path, newline="") as f:
        return {(row["split"], row["key"]): row["cue"] for row in csv.DictReader(f)}


def _cue_of(uid: str, split: str, cues: dict[tuple[str, str], str]) -> str | None:
    """The demo keys are the layouts' own names (MELD ``dia3_utt1``); readers may prefix the split."""
    for (s, key), cue in cues.items():
        if uid == key or (s == split and uid == f"{split}_{key}"):
            return cue
    return None


def cue_breakdown(run_dir: str | Path, cues_csv: str | Path, split: str = "test") -> dict[str, Any]:
    """Accuracy of every stage head per cue mode, and per unimodal head m the comparison with the
    fused head on the utterances whose cue is not in m."""
    p = stage_predictions(run_dir, split)
    cues = read_cues(cues_csv)
    mode = np.array([_cue_of(u, split, cues) or "?" for u in p["utterance_ids"]])
    if (mode == "?").all():
        raise ValueError(f"{cues_csv}: no utterance of {run_dir} [{split}] is listed (is this the run's corpus?)")
    y = p["labels"]
    table: dict[str, dict[str, float]] = {}
    for name, h in p["heads"].items():
        table[name] = {m: float((h["pred"][mode == m] == y[mode == m]).mean()) if (mode == m).any() else float("nan")
                       for m in CUE_MODES}
        table[name]["overall"] = float((h["pred"] == y).mean())
    fused = p["heads"][p["final_stage"]]["pred"]
    versus = {}
    for name, h in p["heads"].items():
        m = h["modality"]
        if m is None:
            continue
        elsewhere = np.isin(mode, [c for c in CUE_MODES if c not in ("all", m)])
        versus[name] = {"modality": m, "n": int(elsewhere.sum()),
                        "unimodal": float((h["pred"][elsewhere] == y[elsewhere]).mean()),
                        "fused": float((fused[elsewhere] == y[elsewhere]).mean())}
    return {"split": split, "n": int(len(y)), "by_cue": table, "cue_elsewhere": versus,
            "final_stage": p["final_stage"]}


def print_breakdown(b: dict[str, Any]) -> None:
    print(f"accuracy per head and cue mode ({b['split']}, n={b['n']})")
    print("| head | " + " | ".join(CUE_MODES) + " | overall |")
    print("|---|" + "---:|" * (len(CUE_MODES) + 1))
    for name, row in b["by_cue"].items():
        print(f"| {name} | " + " | ".join(f"{row[m]:.2f}" for m in CUE_MODES) + f" | {row['overall']:.2f} |")
    if b["cue_elsewhere"]:
        print("\nutterances whose cue is in another modality than the head's:")
        print("| head | modality | n | head acc | fused acc |\n|---|---|---:|---:|---:|")
        for name, v in b["cue_elsewhere"].items():
            print(f"| {name} | {v['modality']} | {v['n']} | {v['unimodal']:.2f} | {v['fused']:.2f} |")


def cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline analyse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--cues", required=True, help="the demo corpus' demo_cues.csv")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"))
    a = p.parse_args(list(argv))
    b = cue_breakdown(a.run_dir, a.cues, a.split)
    print_breakdown(b)
    (Path(a.run_dir) / f"cues-{a.split}.json").write_text(json.dumps(b, indent=1))
    return 0


def run_predictions(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """The final model's output per scored utterance: class index, or score for regression."""
    p = stage_predictions(run_dir, split)
    return {"utterance_ids": p["utterance_ids"], "labels": p["labels"],
            "pred": p["heads"][p["final_stage"]]["pred"]}


def _score_subset(pred: np.ndarray, target: np.ndarray, regression: bool) -> float:
    """Accuracy; for regression the binary (negative vs non-negative) accuracy of the score."""
    if regression:
        return float(((pred >= 0) == (target >= 0)).mean())
    return float((pred == target).mean())


def compare_with_unimodal(fused_run: str | Path, unimodal_runs: dict[str, str | Path], cues_csv: str | Path,
                          split: str = "test") -> dict[str, dict[str, Any]]:
    """Fused run vs one single-modality run per modality (the same method trained on one role), on
    the utterances whose cue is in another modality than that run's. Regression runs are compared
    on their binary accuracy (score sign) there. Returns {modality: {n, unimodal, fused}}."""
    from pipeline.cache import load_cache

    fused = run_predictions(fused_run, split)
    cues = read_cues(cues_csv)
    mode = {u: _cue_of(u, split, cues) for u in fused["utterance_ids"]}
    saved = json.loads((Path(fused_run) / "metrics.json").read_text())
    regression = saved.get("task") == "regression"
    if regression:  # score the true scores, not the rounded 7-class labels
        cache = load_cache(saved["cache"])
        score = dict(zip(cache.dataset[split]["utterance_id"], cache.dataset[split]["score"]))
        target_of = {u: float(score[u]) for u in fused["utterance_ids"]}
    else:
        target_of = dict(zip(fused["utterance_ids"], fused["labels"]))
    fused_of = dict(zip(fused["utterance_ids"], fused["pred"]))
    out: dict[str, dict[str, Any]] = {}
    for m, run in unimodal_runs.items():
        uni = run_predictions(run, split)
        ids = [u for u in uni["utterance_ids"] if mode.get(u) not in (None, "all", m) and u in fused_of]
        if not ids:
            raise ValueError(f"{cues_csv}: no {split} utterance of {run} has its cue outside {m}")
        uni_of = dict(zip(uni["utterance_ids"], uni["pred"]))
        t = np.array([target_of[u] for u in ids])
        out[m] = {"n": len(ids), "unimodal": _score_subset(np.array([uni_of[u] for u in ids]), t, regression),
                  "fused": _score_subset(np.array([fused_of[u] for u in ids]), t, regression)}
    return out
