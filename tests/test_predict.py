"""``predict`` on a new clip and a new dialogue gives what evaluating the same utterances from the cache
gives (same features, same model); the run dir stands alone; a pickled weights file is refused.

TelME (utterance granularity) and SUMMER (dialogue granularity) are trained once for this module on the
demo MELD cache with one epoch per stage: the numbers need not be good, only identical on both paths.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

TEST_SPLIT = "test"


def _train(method: str, cache: Path, out: Path, stages: list[str]) -> Path:
    from pipeline.train import cli

    overrides = [arg for s in stages for arg in ("--set", f"stages.{s}.epochs=1")]
    assert cli(["--method", method, "--cache", str(cache), "--out", str(out), "--name", method, *overrides]) == 0
    return out / method


@pytest.fixture(scope="module")
def runs(demo_meld_cache, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("predict-runs")
    return {"telme": _train("telme", demo_meld_cache, out, ["teacher", "student_audio", "student_video", "fusion"]),
            "summer": _train("summer", demo_meld_cache, out, ["teacher", "student"])}


@pytest.fixture(scope="module")
def test_rows(demo_meld_cache):
    from pipeline.cache import load_cache

    split = load_cache(demo_meld_cache).dataset[TEST_SPLIT]
    return split.select_columns(["utterance_id", "dialogue_id", "position", "speaker", "text", "label",
                                 "video_path"]).to_list()


def _dialogue_rows(rows: list[dict], min_turns: int = 5) -> list[int]:
    """Row indices (position order) of the first test dialogue with at least ``min_turns`` turns."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["dialogue_id"], []).append(i)
    picked = next(v for v in by.values() if len(v) >= min_turns)
    return sorted(picked, key=lambda i: rows[i]["position"])


def _reference(run_dir: Path, cache_path: Path, rows: list[int]) -> tuple[np.ndarray, list[int]]:
    """The trainer's evaluation (``pipeline.train.predict`` on the cache, labels and all) of the given
    rows, in that order: (class probabilities, true labels)."""
    import datasets
    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from pipeline.cache import Cache, load_cache
    from pipeline.collate import make_loader, prepare_data
    from pipeline.config import with_defaults, yaml_load
    from pipeline.train import build_model, predict

    cache = load_cache(cache_path)
    sub = Cache(path=cache.path, dataset=datasets.DatasetDict({TEST_SPLIT: cache.dataset[TEST_SPLIT].select(rows)}),
                meta=cache.meta)
    config = with_defaults(yaml_load(run_dir / "config.yaml"))
    saved = json.loads((run_dir / "metrics.json").read_text())
    data = prepare_data(config, sub, splits=(TEST_SPLIT,))
    method = build_model(config, data)
    method.load_state_dict(load_file(str(run_dir / saved["final_weights"])))
    stage = next(s for s in method.stages() if s.name == saved["final_stage"])
    accelerator = Accelerator()
    batch_size = int(config["train"]["eval_batch_size"])
    loader = accelerator.prepare(make_loader(data.splits[TEST_SPLIT], batch_size=batch_size))
    logits, targets = predict(accelerator, method, loader, stage)
    return torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy(), targets.tolist()


def _probabilities(pred, labels: list[str]) -> np.ndarray:
    return np.array([[u["probabilities"][c] for c in labels] for u in pred.utterances])


def _standalone_copy(run_dir: Path, dest: Path) -> Path:
    """The files a run dir needs for predict, with the cache it was trained on made unreachable."""
    dest.mkdir(parents=True)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for name in ("config.yaml", "features.json", saved["final_weights"]):
        shutil.copy2(run_dir / name, dest / name)
    saved["cache"] = str(dest / "no-such-cache")
    (dest / "metrics.json").write_text(json.dumps(saved))
    return dest


def test_run_dir_carries_the_encoders(runs, demo_meld_cache):
    import yaml

    meta = json.loads((demo_meld_cache / "meta.json").read_text())
    for run_dir in runs.values():
        feats = json.loads((run_dir / "features.json").read_text())
        roles = yaml.safe_load((run_dir / "config.yaml").read_text())["features"]
        assert feats["features"] == roles
        for role, col in roles.items():
            saved, cached = feats["columns"][col], meta["columns"][col]
            assert (saved["encoder"], saved["fingerprint"], saved["kwargs"]) == \
                (cached["encoder"], cached["fingerprint"], cached["kwargs"])
            assert feats["input_dims"][role] == cached["dim"]
        assert feats["label_sets"]["primary"] == meta["label_sets"]["primary"] and feats["task"] == "classification"


def test_predict_one_clip_matches_the_cache(runs, demo_meld_cache, test_rows, tmp_path, capsys):
    """A clip with a sidecar transcript, through the command line (--json, --csv, --explain)."""
    from pipeline.predict import cli

    row = _dialogue_rows(test_rows)[0]
    r = test_rows[row]
    clip = tmp_path / "clip.mp4"
    shutil.copy2(r["video_path"], clip)
    clip.with_suffix(".txt").write_text(r["text"] + "\n")
    out_json, out_csv, png = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "explain.png"
    assert cli([str(runs["telme"]), str(clip), "--speaker", r["speaker"], "--json", str(out_json),
                "--csv", str(out_csv), "--explain", str(png)]) == 0
    printed = capsys.readouterr().out
    got = json.loads(out_json.read_text())
    labels = got["label_names"]
    probs, _ = _reference(runs["telme"], demo_meld_cache, [row])
    (u,) = got["utterances"]
    assert u["text"] == r["text"] and u["speaker"] == r["speaker"]
    np.testing.assert_allclose([u["probabilities"][c] for c in labels], probs[0], atol=1e-5)
    assert u["label"] == labels[int(probs[0].argmax())] and f"**{u['label']}**" in printed
    with out_csv.open() as f:
        (csv_row,) = list(csv.DictReader(f))
    assert csv_row["label"] == u["label"] and float(csv_row[f"p_{labels[0]}"]) == pytest.approx(probs[0][0], abs=1e-5)
    # --explain: TelME's gate (one per hidden unit) and lambda (one per utterance), and the unimodal heads
    assert set(u["extras"]) == {"gate", "lambda"} and len(u["extras"]["gate"]) == 96
    assert 0.0 < u["extras"]["lambda"] <= 1.0
    assert set(u["heads"]) == {"teacher", "student_audio", "student_video"} and png.stat().st_size > 1000
    assert "lambda" in printed and "head teacher" in printed


@pytest.mark.parametrize("method", ["telme", "summer"])
def test_predict_dialogue_matches_the_cache(method, runs, demo_meld_cache, test_rows, tmp_path):
    """A folder of clips + CSV, predicted with a copy of the run dir that cannot reach the cache."""
    from pipeline.predict import predict

    rows = _dialogue_rows(test_rows)
    folder = tmp_path / "dialogue"
    folder.mkdir()
    with (folder / "dialogue.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "speaker", "text"])
        for n, i in enumerate(rows):
            shutil.copy2(test_rows[i]["video_path"], folder / f"turn{n}.mp4")
            w.writerow([f"turn{n}.mp4", test_rows[i]["speaker"], test_rows[i]["text"]])
    standalone = _standalone_copy(runs[method], tmp_path / "run")
    pred = predict(standalone, [folder], explain=True)
    probs, truth = _reference(runs[method], demo_meld_cache, rows)
    assert truth == [test_rows[i]["label"] for i in rows]
    assert [u["position"] for u in pred.utterances] == list(range(len(rows)))
    assert [u["text"] for u in pred.utterances] == [test_rows[i]["text"] for i in rows]
    np.testing.assert_allclose(_probabilities(pred, pred.label_names), probs, atol=1e-5)
    assert [u["label"] for u in pred.utterances] == [pred.label_names[int(k)] for k in probs.argmax(-1)]
    assert all(u["extras"] for u in pred.utterances)  # TelME gate/lambda, SUMMER expert gates per turn


class _RunsCode:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_are_refused(runs, tmp_path, test_rows, capsys):
    from pipeline.__main__ import main
    from pipeline.predict import WeightsError, load_run

    run = _standalone_copy(runs["telme"], tmp_path / "run")
    saved = json.loads((run / "metrics.json").read_text())
    marker = tmp_path / "code-ran"
    (run / saved["final_weights"]).write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(WeightsError, match="pickle"):
        load_run(run)
    clip = tmp_path / "clip.mp4"
    shutil.copy2(test_rows[0]["video_path"], clip)
    assert main(["predict", str(run), str(clip), "--text", "hello"]) == 2
    assert "not a safetensors file" in capsys.readouterr().err
    # evaluate refuses the same pickle with one line (it used to end in a SafetensorError traceback)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "not a safetensors file" in err and "Traceback" not in err
    assert not marker.exists()
    # a run dir pointing its weights at a pickle by name, or outside itself, is refused the same way
    for name, message in (("evil.pt", "only from .safetensors"), ("../outside.safetensors", "inside the run dir")):
        (run / "evil.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
        (run / "metrics.json").write_text(json.dumps({**saved, "final_weights": name}))
        with pytest.raises(WeightsError, match=message):
            load_run(run)
    assert not marker.exists()


def test_encoders_that_differ_are_refused(runs):
    from pipeline.predict import PredictError, rebuild_encoders

    feats = json.loads((runs["telme"] / "features.json").read_text())
    col = "audio.data2vec"
    one = {**feats, "columns": {col: dict(feats["columns"][col])}}
    assert rebuild_encoders(one)[col].fingerprint() == feats["columns"][col]["fingerprint"]
    # weights moved away: the column's profile rebuilds the same encoder, still checked by fingerprint
    one["columns"][col]["kwargs"] = {**one["columns"][col]["kwargs"], "weights": "/no/such/weights"}
    assert rebuild_encoders(one)[col].fingerprint() == feats["columns"][col]["fingerprint"]
    one["columns"][col]["fingerprint"] = "0000000000000000"
    with pytest.raises(PredictError, match=f"{col}.*fingerprint"):
        rebuild_encoders(one)
    one["columns"][col] = {**feats["columns"][col], "encoder": "no-such-encoder"}
    with pytest.raises(PredictError, match=f"{col}.*no-such-encoder"):
        rebuild_encoders(one)


def test_bad_inputs_name_the_file(tmp_path):
    from pipeline.corpora.base import CorpusError
    from pipeline.predict import PredictError, read_inputs

    with pytest.raises(PredictError, match="nothing.mp4: not found"):
        read_inputs([tmp_path / "nothing.mp4"], text="hi")
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"")
    with pytest.raises(PredictError, match="a.txt"):
        read_inputs([clip])
    (tmp_path / "d.csv").write_text("file,speaker,text\na.mp4,Ann,hi\nmissing.mp4,Bob,yo\n")
    with pytest.raises(CorpusError, match=r"d.csv:3: media file .*missing.mp4"):
        read_inputs([tmp_path / "d.csv"])
    (tmp_path / "e.csv").write_text("clip_name,words\na.mp4,hi\n")
    with pytest.raises(CorpusError, match=r"e.csv:1: .*file and text"):
        read_inputs([tmp_path / "e.csv"])
    records, _ = read_inputs([clip], text="hello", speaker="Ann")
    assert (records[0].text, records[0].speaker, records[0].video_path) == ("hello", "Ann", str(clip))


# ------------------------------------------------------------------------- honest inputs (issue 14)
def test_sidecars_and_csvs_decode_and_repair_as_the_readers(tmp_path):
    """cp1252 and mojibake transcripts (sidecar .txt, dialogue CSV) give predict the text the MELD reader gives."""
    from pipeline.corpora.meld import MeldReader
    from pipeline.predict import read_inputs
    from test_corpora import default_meld_rows, meld_row, write_meld

    said = ["It\u2019s \u201cfine\u201d \u2013 really\u2026", "Caf\u00e9 au lait, s\u2019il vous pla\u00eet"]
    encodings = {"cp1252": lambda t: t.encode("cp1252"),
                 "mojibake": lambda t: t.encode("utf-8").decode("cp1252", "replace").encode("utf-8")}
    for name, encode in encodings.items():
        rows = default_meld_rows()
        rows["test"] = [meld_row(1, 0, 0, said[0], "Ross"), meld_row(1, 1, 1, said[1], "Rachel")]
        from test_corpora import MELD_HEADER, csv_text

        root = write_meld(tmp_path / name / "meld", rows,
                          csv_bytes={"test": encode(csv_text(MELD_HEADER, rows["test"]))})
        by_reader = [r.text for r in MeldReader().read(root).split("test")]
        clip = tmp_path / name / "a.mp4"
        clip.write_bytes(b"")
        clip.with_suffix(".txt").write_bytes(encode(said[0] + "\n"))
        (tmp_path / name / "b.mp4").write_bytes(b"")
        (tmp_path / name / "d.csv").write_bytes(encode(f"file,speaker,text\na.mp4,Ross,\"{said[0]}\"\n"
                                                       f"b.mp4,Rachel,\"{said[1]}\"\n"))
        sidecar, report = read_inputs([clip])
        dialogue, _ = read_inputs([tmp_path / name / "d.csv"])
        assert by_reader == ["It's \"fine\" - really...", "Café au lait, s'il vous plaît"], name
        assert [sidecar[0].text] == by_reader[:1] and [r.text for r in dialogue] == by_reader, name
        if name == "cp1252":
            assert any("Windows-1252" in e.reason for e in report.of("fix"))


def _broken_clips(tmp_path: Path, good: str) -> dict[str, Path]:
    clips = {"empty": tmp_path / "empty.mp4", "cut": tmp_path / "cut.mp4", "text": tmp_path / "notes.mp4",
             "good": tmp_path / "good.mp4"}
    clips["empty"].write_bytes(b"")
    clips["cut"].write_bytes(Path(good).read_bytes()[:2000])  # header box only: "moov atom not found"
    clips["text"].write_text("this is not a video\n")
    shutil.copy2(good, clips["good"])
    return clips


def test_degraded_rows_are_marked_everywhere(runs, test_rows, tmp_path, capfd):
    from pipeline.__main__ import main

    clips = _broken_clips(tmp_path, test_rows[0]["video_path"])
    long_text = " ".join(["word"] * 400)
    csv_path = tmp_path / "dialogue.csv"
    csv_path.write_text("file,speaker,text\n"
                        f"empty.mp4,Ann,hello there\ncut.mp4,Bob,what happened\nnotes.mp4,Ann,\"{long_text}\"\n"
                        f"good.mp4,Bob,\ngood.mp4,Ann,all good\n")
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    code = main(["predict", str(runs["telme"]), str(csv_path), "--json", str(out_json), "--csv", str(out_csv)])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "moov atom" not in captured.err and "moov atom" not in captured.out  # decoder noise: the log only
    got = json.loads(out_json.read_text())
    u = got["utterances"]
    assert [x["degraded"] for x in u] == [True, True, True, True, False] and got["degraded_rows"] == 4
    assert set(u[0]["missing"]) == {"audio", "video"} and "empty file" in u[0]["missing"]["audio"]
    assert set(u[1]["missing"]) == {"audio", "video"} and set(u[2]["missing"]) == {"audio", "video"}
    assert set(u[3]["missing"]) == {"text"} and "empty transcript" in u[3]["missing"]["text"]
    ((col, cut),) = u[2]["truncated"].items()  # TelME's text column (the context encoder)
    max_length = json.loads((runs["telme"] / "features.json").read_text())["columns"][col]["settings"]["max_length"]
    assert col.startswith("text.") and cut["unit"] == "tokens" and cut["lost"] > 0
    assert cut["of"] == cut["lost"] + max_length and cut["of"] > 400
    assert u[4]["missing"] == {} and u[4]["truncated"] == {}
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["degraded"] for r in rows] == ["1", "1", "1", "1", "0"]
    assert "empty file" in rows[0]["missing"] and f"{col}: lost" in rows[2]["truncated"]
    assert "4 of 5 row(s) degraded" in captured.out and "(degraded)" in captured.out
    assert "no text: " in captured.out and f"{col} cut: lost" in captured.out
    # --strict: the same outputs, then a non-zero exit naming the rows
    assert main(["predict", str(runs["telme"]), str(csv_path), "--strict"]) == 3
    assert "4 degraded row(s)" in capfd.readouterr().err


def test_no_usable_modality_is_refused(runs, test_rows, tmp_path, capfd):
    from pipeline.__main__ import main

    clips = _broken_clips(tmp_path, test_rows[0]["video_path"])
    for clip, text in ((clips["empty"], ""), (clips["cut"], "   "), (clips["text"], "")):
        code = main(["predict", str(runs["telme"]), str(clip), "--text", text])
        err = capfd.readouterr().err
        assert code == 2 and "Traceback" not in err and "no usable modality" in err and clip.name in err
    # a real clip with an empty transcript is not refused: text is missing, audio and video are read
    assert main(["predict", str(runs["telme"]), str(clips["good"]), "--text", ""]) == 0
    assert "no text: " in capfd.readouterr().out
