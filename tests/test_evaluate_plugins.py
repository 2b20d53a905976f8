"""A run dir from outside cannot make `evaluate` / `analyse` import code: plugins are asked for."""
from __future__ import annotations

import json

import pytest
import yaml


def test_run_json_plugins_are_not_imported(tmp_path):
    from pipeline.evaluate import load_trained

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_plugin.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "evil", "features": {"text": "text.x"},
                                                     "model": {}, "stages": {}}))
    (run / "metrics.json").write_text(json.dumps({"final_weights": "w.safetensors", "final_stage": "main"}))
    (run / "run.json").write_text(json.dumps({"plugins": [str(evil)], "cache": str(tmp_path / "nocache")}))
    with pytest.raises(KeyError, match="--plugin"):
        load_trained(run)
    assert not marker.exists()
