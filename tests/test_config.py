"""Config layering: base.yaml < <corpus>.yaml < --config < --set, and errors that name file and line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import (TRAIN_DEFAULTS, ConfigError, apply_override, config_files, configs_dir,
                             corpus_config_name, deep_merge, load_config, save_config, with_defaults)

BASE = """\
method: toy
default_corpus: demo-meld
features:
  text: text.roberta
  audio: audio.data2vec
model:
  theta: 0.1
  heads: [1, 2, 3]
stages:
  teacher: {epochs: 10, lr: 1.0e-5, batch_size: 4}
  fusion: {epochs: 10, lr: 1.0e-5, batch_size: 4}
train:
  seed: 42
  grad_clip: 10.0
"""
CORPUS = """\
model:
  heads: [4]
stages:
  fusion: {lr: 2.0e-5}
train:
  mixed_precision: no
"""


@pytest.fixture()
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "configs"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "base.yaml").write_text(BASE)
    (root / "toy" / "meld.yaml").write_text(CORPUS)
    monkeypatch.setenv("MERC_CONFIGS", str(root))
    return root


def test_deep_merge_of_base_and_corpus(configs: Path) -> None:
    c = load_config("toy", "meld")
    assert c["model"] == {"theta": 0.1, "heads": [4]}  # nested dict merged, list replaced
    assert c["stages"]["fusion"] == {"epochs": 10, "lr": 2.0e-5, "batch_size": 4}
    assert c["stages"]["teacher"]["lr"] == 1.0e-5
    assert c["train"]["mixed_precision"] == "no"  # YAML's bare `no` (false) is read as "no"
    assert c["train"]["grad_clip"] == 10.0 and c["train"]["seed"] == 42
    assert c["train"]["optimizer"] == TRAIN_DEFAULTS["optimizer"]  # defaults filled in
    assert c["label_set"] == "primary"
    assert config_files("toy", "meld") == [configs / "toy" / "base.yaml", configs / "toy" / "meld.yaml"]


def test_missing_corpus_yaml_means_base_only(configs: Path) -> None:
    c = load_config("toy", "iemocap")
    assert c["model"]["heads"] == [1, 2, 3]
    assert corpus_config_name("toy", [None, "demo-iemocap", "meld"]) == "meld"
    assert corpus_config_name("toy", ["nothing"]) is None


def test_overrides_are_parsed_as_yaml(configs: Path) -> None:
    c = load_config("toy", "meld", overrides=["stages.fusion.lr=1e-4", "model.theta=0.2", "model.new=[1, 2]",
                                              "train.optimizer=adam", "stages.extra.epochs=3"])
    assert c["stages"]["fusion"]["lr"] == pytest.approx(1e-4) and isinstance(c["stages"]["fusion"]["lr"], float)
    assert c["model"]["theta"] == 0.2 and c["model"]["new"] == [1, 2]
    assert c["train"]["optimizer"] == "adam"
    assert c["stages"]["extra"] == {"epochs": 3}


def test_config_path_is_merged_last(configs: Path, tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("model:\n  theta: 0.5\n")
    c = load_config("toy", "meld", config_path=extra, overrides=["model.theta=0.7"])
    assert c["model"]["theta"] == 0.7
    assert load_config("toy", "meld", config_path=extra)["model"]["theta"] == 0.5
    alone = tmp_path / "alone.yaml"
    alone.write_text("method: other\nstages: {main: {epochs: 1, lr: 0.1, batch_size: 2}}\n")
    assert load_config(None, None, config_path=alone)["method"] == "other"


def test_unknown_top_level_key_names_file_and_line(configs: Path) -> None:
    (configs / "toy" / "meld.yaml").write_text("model:\n  theta: 0.3\nmodle:\n  theta: 0.2\n")
    with pytest.raises(ConfigError, match=r"meld\.yaml:3: unknown top-level key 'modle'"):
        load_config("toy", "meld")


def test_bad_yaml_names_file_and_line(configs: Path) -> None:
    (configs / "toy" / "meld.yaml").write_text("model:\n  theta: 0.3\n  bad: [1, 2\n")
    with pytest.raises(ConfigError, match=r"meld\.yaml:\d+: invalid YAML"):
        load_config("toy", "meld")


def test_bad_overrides_and_keys(configs: Path) -> None:
    with pytest.raises(ConfigError, match="unknown top-level key 'modle'"):
        load_config("toy", overrides=["modle.theta=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config("toy", overrides=["model.theta"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_config("toy", overrides=["train.lr=0.1"])
    with pytest.raises(ConfigError, match="stages.fusion.learning_rate"):
        load_config("toy", overrides=["stages.fusion.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="model.theta is a value"):
        apply_override({"model": {"theta": 1}}, "model.theta.x=2")


def test_missing_method_and_mismatch(configs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config for method 'nothing'"):
        load_config("nothing")
    other = tmp_path / "other.yaml"
    other.write_text("method: other\n")
    with pytest.raises(ConfigError, match="does not match --method 'toy'"):
        load_config("toy", config_path=other)


def test_save_config_round_trip(configs: Path, tmp_path: Path) -> None:
    c = load_config("toy", "meld")
    path = save_config(c, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == c
    assert with_defaults(c) == c  # idempotent


def test_deep_merge_does_not_mutate_inputs() -> None:
    base = {"a": {"b": 1, "c": [1]}}
    over = {"a": {"b": 2}}
    out = deep_merge(base, over)
    assert out == {"a": {"b": 2, "c": [1]}} and base == {"a": {"b": 1, "c": [1]}}
    out["a"]["c"].append(2)
    assert base["a"]["c"] == [1]


def test_default_configs_dir_is_in_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERC_CONFIGS", raising=False)
    assert configs_dir() == Path(__file__).resolve().parents[1] / "configs"
