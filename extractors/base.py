"""The one encoder interface, and its registry.

An encoder turns raw media (or text) of one utterance into a feature vector (and optionally a
sequence). It is split in two so that decoding runs in DataLoader workers and overlaps compute:

* ``load(item)`` runs in a worker: decode / tokenize one ``EncoderInput`` into a picklable sample
  (numpy arrays, token lists). It must not touch the model.
* ``encode(samples)`` runs in the main process on a batch of samples and returns an
  ``EncoderOutput`` (numpy, float32).

``settings()`` returns everything that changes the output (weights id and revision, frames,
sample rate, pooling, ...) and nothing that does not (batch size, workers, device). The cache key
of a feature column is ``fingerprint()``: a hash of ``name@version`` + settings.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.registry import Registry

ENCODERS: Registry[type["Encoder"]] = Registry("encoder")
register_encoder = ENCODERS.register
# How many times each encoder loaded its weights in this process (lazy weights: only on the first
# ``encode``). Tests and benchmarks read it: an unchanged re-run must not add to it.
WEIGHT_LOADS: Counter[str] = Counter()


@dataclass
class EncoderInput:
    """What an encoder may see of one utterance: never the corpus name or its label."""

    utterance_id: str
    text: str = ""
    speaker: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)  # (speaker, text) of earlier turns, oldest first
    video_path: str | None = None
    audio_path: str | None = None
    start: float | None = None
    end: float | None = None
    video_side: str | None = None  # "left" / "right" half of a two-speaker frame


@dataclass
class EncoderOutput:
    vec: np.ndarray  # [B, dim] float32
    seq: list[np.ndarray] | None = None  # per item [T_i, seq_dim], only when the encoder was asked for sequences


class EncoderLoadError(UserError, OSError):
    """An encoder's weights cannot be loaded (a path that is not a model dir, a hub id not cached here): an
    expected failure, one line under the CLI's error policy."""


class EncoderInputError(ValueError):
    """Raised by ``load`` for an input that cannot be used (missing/corrupt media): the extract
    stage records it as a skip with this message instead of crashing."""


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable object. An unhashable setting is an error, never a random key."""
    try:
        blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except TypeError as e:
        raise TypeError(f"fingerprint settings must be JSON-serialisable: {e}") from None
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Encoder:
    """Base class; see the module docstring for the contract."""

    name: str = ""
    version: str = "1"  # bump when the semantics of the output change
    modality: str = ""  # "text" | "audio" | "video"
    dim: int = 0
    random_weights: bool = False  # True when the weights were randomly initialised (reported)
    uses_history: bool = False  # True when the output depends on EncoderInput.history (dialogue context)

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return stable_hash({"encoder": f"{self.name}@{self.version}", "settings": self.settings()})

    def load(self, item: EncoderInput) -> Any:
        raise NotImplementedError

    def encode(self, samples: list[Any]) -> EncoderOutput:
        raise NotImplementedError

    def input_loss(self, item: EncoderInput) -> tuple[float, float, str] | None:
        """How much of ``item`` this encoder's settings cut off: ``(lost, total, unit)`` (e.g. 40 of 300
        tokens, 5.2 of 30.2 seconds), or ``None`` when nothing is cut or the encoder cuts nothing. Cheap
        (a tokenizer pass or a media header); the extract report and ``predict`` say it."""
        return None

    def to(self, device: Any, dtype: Any = None) -> "Encoder":
        return self

    def report_counts(self) -> dict[str, Any]:
        """Extra facts for the extract report on the rows this run computed (e.g. face fallbacks)."""
        return {}


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    import extractors  # noqa: F401  (registers the encoders)

    return ENCODERS.create(name, **kwargs)
