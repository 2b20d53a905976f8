"""Every YAML under configs/ binds to what it configures (no weights, no GPU): a misspelt key fails
here, not at hour 3 of a run."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from pipeline.config import configs_dir, load_config

CONFIGS = configs_dir()
METHOD_YAMLS = sorted(p for p in CONFIGS.glob("*/*.yaml"))


@pytest.mark.parametrize("path", METHOD_YAMLS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_method_yaml_binds_to_the_method(path: Path) -> None:
    import models
    from models.base import METHODS

    method = path.parent.name
    config = load_config(method, None if path.stem == "base" else path.stem)
    cls = METHODS.get(config["method"])
    sig = inspect.signature(cls.__init__)
    input_dims = {role: 16 for role in config["features"]}
    extra = {}
    roles = cls.input_roles(config["model"])
    if roles:  # a mode that trains encoders (TelME finetune): the offline profile's tiny ones stand in
        from pipeline.extract import ExtractSettings, build_encoder

        extra["encoders"] = {r: build_encoder(config["features"][r].split(".", 1)[1].split("@")[0],
                                              ExtractSettings(encoders=[])) for r in roles}
        input_dims.update({r: int(e.dim) for r, e in extra["encoders"].items()})
    sig.bind(None, input_dims=input_dims, num_classes=3, **config["model"], **extra)  # TypeError on a bad key
    assert set(config["features"]) <= set(cls.ROLES), config["features"]
    model = models.build_method(config["method"], input_dims=input_dims, num_classes=3, **config["model"], **extra)
    declared = [s.name for s in model.stages()]
    assert set(config["stages"]) >= set(declared), f"{path}: stages {declared} need a block each"
    if config.get("default_corpus"):
        from pipeline.catalog import corpus_entry

        corpus_entry(config["default_corpus"])  # the default corpus is in the catalog


def test_corpus_catalog_names_registered_readers() -> None:
    from pipeline.catalog import corpus_entry
    from pipeline.corpora import CORPORA

    import extractors

    catalog = yaml.safe_load((CONFIGS / "corpora.yaml").read_text())
    assert "demo-meld" in catalog
    for name in catalog:
        e = corpus_entry(name)
        assert e.reader in CORPORA, (name, e.reader)
        reader_sig = inspect.signature(CORPORA.get(e.reader).__init__)
        reader_sig.bind(None, **e.options)
        for enc in e.encoders + e.sequence:
            assert enc in extractors.ENCODERS, (name, enc)
