"""Video encoders: ``timesformer`` (TimesformerModel, one clip embedding) and ``densenet`` (timm
DenseNet, per-frame embeddings averaged).

Both sample ``num_frames`` frames uniformly over the utterance's span of ``video_path`` with
:func:`pipeline.media.load_frames` (the speaker's half for two-speaker video), cut to a face by the
``face`` policy (:mod:`extractors.faces`: ``frame`` = no cut, ``largest_face``, ``speaker_side``; MTCNN,
whole-frame fallback counted in the extract report), resized to a SQUARE input, and normalise with the
ImageNet mean/std unless the checkpoint's preprocessor says otherwise. The ``frame`` policy adds nothing
to ``settings()`` (caches made before the policies existed stay valid); the others add the policy and
the detector's settings, so each policy is its own column fingerprint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from extractors.base import Encoder, EncoderInput, EncoderInputError, EncoderOutput, register_encoder
from pipeline.errors import MissingFile, UserValueError
from extractors.faces import FaceCropper
from extractors.profiles import (TorchEncoder, dtype_name, file_identity, has_local_file, hf_config, torch_dtype,
                                 weights_identity)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_clip(item: EncoderInput, num_frames: int, size: int, faces: FaceCropper) -> dict[str, Any]:
    """``{"frames": uint8 [T, size, size, 3], "fallbacks": frames without a face}`` of the utterance,
    or :class:`EncoderInputError` naming the file."""
    from pipeline.media import MediaError, load_frames

    if not item.video_path:
        raise EncoderInputError(f"{item.utterance_id}: no video_path")
    try:
        frames = load_frames(item.video_path, start=item.start, end=item.end, num_frames=num_frames,
                             side=faces.side(item.video_side), size=None if faces.uses_detector else size)
    except MediaError as e:
        raise EncoderInputError(str(e)) from e
    if not faces.uses_detector:
        return {"frames": frames, "fallbacks": 0}
    crops, fallbacks = faces.crop(frames, size)
    return {"frames": crops, "fallbacks": fallbacks}


class FacePolicyMixin:
    """The ``face`` policy of a video encoder and its fallback counts (for the extract report)."""

    faces: FaceCropper
    num_frames: int

    def _init_faces(self, face: str) -> None:
        self.faces = FaceCropper(face)
        self.face_counts = {"clips": 0, "frames": 0, "fallback_frames": 0, "fallback_clips": 0}

    def _count(self, samples: list[dict[str, Any]]) -> list[np.ndarray]:
        for s in samples:
            self.face_counts["clips"] += 1
            self.face_counts["frames"] += len(s["frames"])
            self.face_counts["fallback_frames"] += int(s["fallbacks"])
            self.face_counts["fallback_clips"] += int(s["fallbacks"] > 0)
        return [s["frames"] for s in samples]

    def report_counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"face": self.faces.policy}
        if self.faces.uses_detector:
            out["face_fallbacks"] = dict(self.face_counts)
        return out


def _normalise(frames: list[np.ndarray], mean: tuple[float, ...], std: tuple[float, ...], device: Any,
               dtype: Any) -> Any:
    """uint8 [B][T, H, W, 3] -> float [B, T, 3, H, W], scaled to [0, 1] then (x - mean) / std."""
    import torch

    x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 1, 4, 2, 3).float() / 255.0
    m = torch.tensor(mean, device=device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


@register_encoder("timesformer")
class TimesformerEncoder(FacePolicyMixin, TorchEncoder, Encoder):
    """TimeSformer (``TimesformerModel``): ``num_frames`` frames resized to the config's
    ``image_size`` (square), normalised, -> the last layer's CLS state. With ``sequence=True`` also
    one vector per frame (the mean of that frame's patch tokens), ``[num_frames, dim]``. The mean/std
    come from the checkpoint's ``preprocessor_config.json`` when it has one, else ImageNet's."""

    name = "timesformer"
    modality = "video"

    def __init__(self, *, weights: str, device: str = "cpu", dtype: str | None = None, sequence: bool = False,
                 num_frames: int = 8, face: str = "frame", random_weights: bool = False) -> None:
        import torch

        if num_frames <= 0:
            raise ValueError(f"num_frames must be > 0, got {num_frames}")
        self._init_faces(face)
        self.weights = weights
        self.sequence = bool(sequence)
        self.num_frames = int(num_frames)
        self.random_weights = bool(random_weights)
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        config = hf_config(weights, "TimeSformer")  # the weights themselves load on the first encode
        self.image_size = int(config.image_size)
        self.patch_size = int(config.patch_size)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        proc = has_local_file(weights, "preprocessor_config.json")
        if proc:
            cfg = json.loads(Path(proc).read_text())
            self.mean = tuple(float(v) for v in cfg.get("image_mean", IMAGENET_MEAN))
            self.std = tuple(float(v) for v in cfg.get("image_std", IMAGENET_STD))
        self.dim = int(config.hidden_size)
        self._identity = weights_identity(weights)

    def _load_model(self) -> Any:
        from transformers import TimesformerModel

        try:
            return TimesformerModel.from_pretrained(self.weights, dtype=self.dtype).eval()
        except (OSError, ValueError) as e:
            raise OSError(f"cannot load TimeSformer weights {self.weights!r}: {e}") from e

    def settings(self) -> dict[str, Any]:
        return {**self._identity, "num_frames": self.num_frames, "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "dtype": dtype_name(self.dtype),
                "sequence": self.sequence, **self._face_settings()}

    def _face_settings(self) -> dict[str, Any]:
        return {} if not self.faces.uses_detector else self.faces.settings()

    def load(self, item: EncoderInput) -> dict[str, Any]:
        return _load_clip(item, self.num_frames, self.image_size, self.faces)

    def input_settings(self) -> dict[str, Any]:
        """What shapes ``load``'s output (uint8 frames), without the weights or the normalisation: the
        fingerprint of a decoded-inputs column (``pipeline/inputs.py``)."""
        return {"num_frames": self.num_frames, "image_size": self.image_size, **self._face_settings()}

    def blank_sample(self) -> dict[str, Any]:
        """The input of a row without video (black frames; such rows are flagged missing)."""
        return {"frames": np.zeros((self.num_frames, self.image_size, self.image_size, 3), np.uint8), "fallbacks": 0}

    def input_array(self, sample: dict[str, Any]) -> np.ndarray:
        """``load``'s output as the one array a decoded-inputs cache stores: uint8 frames [T, H, W, 3]."""
        return np.asarray(sample["frames"], np.uint8)

    def sample_from_array(self, array: np.ndarray) -> dict[str, Any]:
        """Inverse of ``input_array``: what ``collate`` takes."""
        return {"frames": array, "fallbacks": 0}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Clips (``load``'s output: uint8 frames) -> ``pixel_values`` [B, T, 3, H, W] on the CPU, normalised.
        ``encode`` and fine-tuning (TelME's video student) share it."""
        import torch

        return {"pixel_values": _normalise([s["frames"] for s in samples], self.mean, self.std, "cpu", torch.float32)}

    def pooled(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """Run ``model`` (this encoder's, or the same model being fine-tuned) on a ``collate``d batch on its
        device: (CLS feature [B, D], last hidden states [B, 1 + P*T, D]). Differentiable."""
        x = batch["pixel_values"].to(next(model.parameters()).dtype)
        hidden = model(pixel_values=x).last_hidden_state.float()
        return hidden[:, 0], hidden

    def encode(self, samples: list[dict[str, Any]]) -> EncoderOutput:
        import torch

        self._count(samples)
        batch = {k: v.to(self.device) for k, v in self.collate(samples).items()}
        with torch.inference_mode():
            vec, hidden = self.pooled(self.model, batch)
            x = batch["pixel_values"]
            seq = None
            if self.sequence:
                b, t = hidden.shape[0], x.shape[1]
                # Tokens after CLS are ordered (patch, frame): index p * T + t.
                per_frame = hidden[:, 1:].reshape(b, -1, t, hidden.shape[-1]).mean(1)
                seq = [per_frame[i].cpu().numpy() for i in range(b)]
            return EncoderOutput(vec=vec.cpu().numpy().astype(np.float32), seq=seq)


def _read_state_dict(path: str) -> dict[str, Any]:
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFile(f"{p}: DenseNet weights file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _check_fits(path: str, skeleton: Any, model_name: str) -> None:
    """A .safetensors file whose tensor names / shapes do not fit the architecture: a ValueError now,
    read from the file's header only (a torch pickle can only be checked when it is loaded)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFile(f"{p}: DenseNet weights file not found")
    if p.suffix != ".safetensors":
        return
    from safetensors import safe_open

    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    with safe_open(str(p), framework="pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith("classifier.")}
    bad = sorted(set(want) ^ set(have)) + sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if bad:
        raise UserValueError(f"{path}: does not fit timm {model_name!r}: {len(bad)} tensors differ in name or shape "
                         f"(first: {bad[0]})")


@register_encoder("densenet")
class DenseNetEncoder(FacePolicyMixin, TorchEncoder, Encoder):
    """timm DenseNet (``weights`` = timm model name, default ``densenet121``), built with
    ``pretrained=False, num_classes=0`` (plus ``model_kwargs``: architecture overrides for timm's
    constructor, e.g. the tiny offline model's ``growth_rate``/``block_config``) and loaded from
    ``weights_file`` (.safetensors or a torch state_dict; classifier keys are dropped). Without ``weights_file`` the weights are random
    (seeded with ``seed``) and ``random_weights`` is forced to True.

    ``num_frames`` frames, resized to ``image_size`` (square), ImageNet-normalised -> the global-pooled
    embedding of each frame, averaged over frames. With ``sequence=True`` also the per-frame
    embeddings ``[num_frames, dim]``. ``face``: the face policy (module docstring); ``face_crop=True``
    (older kwargs) means ``face="largest_face"``."""

    name = "densenet"
    modality = "video"

    def __init__(self, *, weights: str = "densenet121", weights_file: str | None = None, device: str = "cpu",
                 dtype: str | None = None, sequence: bool = False, num_frames: int = 8, image_size: int = 224,
                 face_crop: bool = False, face: str = "frame", seed: int = 0,
                 model_kwargs: dict[str, Any] | None = None, random_weights: bool = False) -> None:
        import torch

        if face_crop and face == "frame":
            face = "largest_face"
        self._init_faces(face)
        if num_frames <= 0 or image_size <= 0:
            raise ValueError(f"num_frames and image_size must be > 0, got {num_frames}, {image_size}")
        self.model_name = weights
        self.model_kwargs = dict(model_kwargs or {})
        self.weights_file = weights_file
        self.sequence = bool(sequence)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.face_crop = False  # kept in settings() as before, so `frame` caches keep their fingerprint
        self.seed = int(seed)
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        # timm (2 s to import: torchvision, dynamo) is imported only when the structure is needed (``dim``, the
        # first encode), so an unchanged re-run that computes nothing never imports it
        self._dim: int | None = None
        if weights_file and not Path(weights_file).expanduser().is_file():
            raise MissingFile(f"{Path(weights_file).expanduser()}: DenseNet weights file not found")
        self._file_id: str | None = file_identity(Path(weights_file).expanduser()) if weights_file else None
        self.random_weights = bool(random_weights) or not weights_file
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Embedding width, from the architecture built on the meta device (structure only; checks that a
        .safetensors ``weights_file`` fits it, from the file's header)."""
        if self._dim is None:
            import timm
            import torch

            try:
                with torch.device("meta"):
                    skeleton = timm.create_model(self.model_name, pretrained=False, num_classes=0, **self.model_kwargs)
            except (RuntimeError, TypeError) as e:
                raise UserValueError(f"densenet: cannot build timm {self.model_name!r} with {self.model_kwargs}: {e}") from e
            if self.weights_file:
                _check_fits(self.weights_file, skeleton, self.model_name)
            self._dim = int(skeleton.num_features)
        return self._dim

    def _load_model(self) -> Any:
        import timm
        import torch

        _ = self.dim  # the structure checks first (a clear error for a file that does not fit)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = timm.create_model(self.model_name, pretrained=False, num_classes=0, **self.model_kwargs)
        if self.weights_file:
            state = {k: v for k, v in _read_state_dict(self.weights_file).items() if not k.startswith("classifier.")}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise UserValueError(f"{self.weights_file}: does not fit timm {self.model_name!r}: {e}") from e
        return model

    def settings(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_kwargs": self.model_kwargs, "weights_file": self._file_id,
                "seed": None if self._file_id else self.seed, "num_frames": self.num_frames,
                "image_size": self.image_size, "face_crop": self.face_crop, "mean": list(self.mean),
                "std": list(self.std), "dtype": dtype_name(self.dtype), "sequence": self.sequence,
                **({} if not self.faces.uses_detector else self.faces.settings())}

    def load(self, item: EncoderInput) -> dict[str, Any]:
        return _load_clip(item, self.num_frames, self.image_size, self.faces)

    def encode(self, samples: list[dict[str, Any]]) -> EncoderOutput:
        import torch

        with torch.inference_mode():
            x = _normalise(self._count(samples), self.mean, self.std, self.device, self.dtype)  # [B, T, 3, H, W]
            b, t = x.shape[:2]
            per_frame = self.model(x.flatten(0, 1)).float().reshape(b, t, -1)
            vec = per_frame.mean(1)
            seq = [per_frame[i].cpu().numpy() for i in range(b)] if self.sequence else None
            return EncoderOutput(vec=vec.cpu().numpy().astype(np.float32), seq=seq)
