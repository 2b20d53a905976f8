"""The decoded-inputs cache: the exact tensors an audio / video encoder consumes, stored once per corpus.

Fine-tuning an audio or video encoder (TelME's students, spec ``shared/methods/telme.md`` 2.3) runs the
encoder on its *input* every step. Decoding an mp4 and resampling its audio every step is what makes the
authors' training slow; here the extract stage stores ``encoder.load(item)`` -- the resampled mono waveform
at the encoder's rate and span, or the sampled frames at the encoder's size (uint8, before normalisation) --
and a fine-tuning epoch reads Arrow instead of decoding media.

``python -m pipeline features --corpus meld --inputs data2vec timesformer`` writes them with every guarantee
of a feature column (row-keyed, sharded, atomic shards, resumable, incremental, the writer lock, versioned
meta), because it is the same extract stage: a :class:`DecodedInputs` wraps the encoder and the shards get
another row format (:class:`InputRows`). Layout in the cache::

    inputs/<modality>.<encoder>/<fingerprint>/shard-*.arrow   key, missing, reason, data (bytes), shape, dtype
    meta.json  "inputs": {"audio.data2vec": {encoder, fingerprint, settings, kwargs, profile, ...}}
    dataset-<n>/  columns "<col>.input_key" (the row key into the shards) and "<col>.input_missing"

The fingerprint covers what shapes the decoded input (sample rate, span, frames, image size, face policy)
and not the weights: one decoded-inputs column serves the pretrained encoder and every fine-tuned copy.
Normalisation happens in ``encoder.collate`` at batch time, so stored frames stay uint8. Sizes: a
TimeSformer-base clip is 8 x 224 x 224 x 3 bytes = 1.2 MB (1.2 GB per 1,000 clips); a data2vec waveform is
4 bytes x 16,000 per second (MELD's ~3.5 s mean: about 0.22 GB per 1,000 clips, at most 1.6 MB for the 25 s cap).

:class:`InputStore` reads one column's shards memory-mapped (RAM does not grow with the corpus) and returns
a row's array by its key; the collator (``pipeline/collate.py``) turns them into the encoder's batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from extractors.base import Encoder, EncoderInput, stable_hash
from pipeline.errors import UnknownName

INPUTS_DIR = "inputs"
KEY_SUFFIX = ".input_key"
MISSING_SUFFIX = ".input_missing"
META_KEY = "inputs"


class DecodedInputs(Encoder):
    """An encoder seen as its decoder: ``load`` is the encoder's own ``load`` (so the stored input is exactly
    what ``encode`` would have received) and ``encode`` returns the loaded arrays unchanged."""

    version = "1"

    def __init__(self, encoder: Encoder) -> None:
        for need in ("input_settings", "input_array", "sample_from_array", "collate", "pooled", "blank_sample"):
            if not hasattr(encoder, need):
                raise UnknownName(f"encoder {encoder.name!r} has no decoded-inputs support (no `{need}`): "
                                  f"`features --inputs` takes data2vec, timesformer")
        self.inner = encoder
        self.name, self.modality, self.dim = encoder.name, encoder.modality, 0
        self.uses_history = False
        self.random_weights = False
        self.init_kwargs = getattr(encoder, "init_kwargs", None)

    def settings(self) -> dict[str, Any]:
        return {"input_of": self.inner.name, **self.inner.input_settings()}

    def fingerprint(self) -> str:
        return stable_hash({"inputs": f"{self.name}@{self.version}", "settings": self.settings()})

    def load(self, item: EncoderInput) -> Any:
        return self.inner.load(item)

    def encode(self, samples: list[Any]) -> list[np.ndarray]:  # type: ignore[override]
        report = getattr(self.inner, "_count", None)
        if report is not None:  # face-policy fallbacks, counted as the feature column counts them
            report(samples)
        return [self.inner.input_array(s) for s in samples]

    def input_loss(self, item: EncoderInput) -> tuple[float, float, str] | None:
        return self.inner.input_loss(item)

    def report_counts(self) -> dict[str, Any]:
        return self.inner.report_counts()

    def to(self, device: Any, dtype: Any = None) -> "DecodedInputs":
        return self  # decoding runs on the CPU; the model is not used

    def shard_rows(self, dtype: str, sequence: bool) -> "InputRows":
        return InputRows()


class InputRows:
    """Row format of decoded-inputs shards: one array per row as raw bytes + its shape and dtype."""

    def rows(self, encoder: Encoder, samples: list[Any]) -> list[np.ndarray]:
        return encoder.encode(samples)  # type: ignore[return-value]

    def blank(self, encoder: Encoder) -> np.ndarray:
        return np.zeros(0, np.uint8)

    def table(self, keys: list[str], rows: list[np.ndarray], missing: list[bool], reasons: list[str]):
        import pyarrow as pa

        arrays = [np.ascontiguousarray(r) for r in rows]
        return pa.table({"key": pa.array(keys, pa.string()),
                         "data": pa.array([a.tobytes() for a in arrays], pa.large_binary()),
                         "shape": pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32())),
                         "dtype": pa.array([a.dtype.str for a in arrays], pa.string()),
                         "missing": pa.array(missing, pa.bool_()),
                         "reason": pa.array(reasons, pa.string())})


class InputStore:
    """One decoded-inputs column of a cache, memory-mapped: ``get(key)`` -> the row's array."""

    def __init__(self, cache_path: str | Path, column: str, info: dict[str, Any]) -> None:
        from pipeline.extract import load_shards

        self.folder = Path(cache_path) / INPUTS_DIR / column / str(info["fingerprint"])
        table = load_shards(self.folder)
        if table is None:
            raise UnknownName(f"{self.folder}: the decoded inputs of {column} are not in the cache; run "
                              f"`python -m pipeline features --inputs {info.get('encoder', column)}`")
        self.column, self.info = column, info
        self._data = table.column("data")
        self._shape = table.column("shape")
        self._dtype = table.column("dtype")
        self._index = {k: i for i, k in enumerate(table.column("key").to_pylist())}

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> np.ndarray:
        i = self._index.get(key)
        if i is None:
            raise KeyError(f"{self.folder}: no decoded input for row key {key}")
        shape = self._shape[i].as_py()
        raw = self._data[i].as_buffer()
        return np.frombuffer(raw, dtype=np.dtype(self._dtype[i].as_py())).reshape(shape)


def inputs_meta(cache: Any) -> dict[str, dict[str, Any]]:
    return dict(cache.meta.get(META_KEY) or {})


def build_input_encoder(column: str, info: dict[str, Any]) -> Encoder:
    """The encoder whose inputs ``column`` holds, built from the saved constructor kwargs or, when there are
    none (an export leaves out what the profile rebuilds) or they do not load here, from the column's
    profile; its decoded-inputs fingerprint must equal the cached one (else its ``load`` would not make
    what the cache holds)."""
    from extractors.base import create_encoder
    from extractors.profiles import encoder_kwargs
    from pipeline.config import ConfigError

    name = str(info["encoder"])
    attempts: list[tuple[str, Any]] = []
    if info.get("kwargs") is not None:
        attempts.append(("the cached settings", lambda: dict(info["kwargs"])))
    if info.get("profile"):
        attempts.append((f"profile {info['profile']!r}", lambda: encoder_kwargs(str(info["profile"]), name)))
    errors: list[str] = []
    for how, make in attempts:
        try:
            kwargs = make()
            encoder = create_encoder(name, **kwargs)
        except (OSError, ValueError, TypeError, KeyError) as e:
            errors.append(f"{how}: {e}")
            continue
        encoder.init_kwargs = kwargs  # type: ignore[attr-defined]
        got = DecodedInputs(encoder).fingerprint()
        if got == info.get("fingerprint"):
            return encoder
        errors.append(f"{how}: decodes differently (fingerprint {got} != cached {info.get('fingerprint')})")
    raise ConfigError(f"decoded inputs {column}: cannot rebuild encoder {name!r} as cached ("
                      + ("; ".join(errors) or "no settings saved") + f"); re-run `features --inputs {name}`")


__all__ = ["DecodedInputs", "InputRows", "InputStore", "INPUTS_DIR", "KEY_SUFFIX", "MISSING_SUFFIX", "META_KEY",
           "build_input_encoder", "inputs_meta"]
