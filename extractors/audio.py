"""Audio encoders: ``data2vec`` (Data2VecAudioModel) and ``opensmile`` (hand-crafted functionals).

Both decode the utterance's span of ``audio_path`` (or of ``video_path`` when there is no separate
audio file) to 16 kHz mono with :func:`pipeline.media.load_audio`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from extractors.base import Encoder, EncoderInput, EncoderInputError, EncoderOutput, register_encoder
from extractors.profiles import TorchEncoder, dtype_name, has_local_file, hf_config, torch_dtype, weights_identity

AUDIO_POOLINGS = ("mean", "first")
# Every openSMILE feature set opensmile-python 2.6.0 ships (its config files are in the wheel), with its
# number of functionals / low-level descriptors (pinned by tests/test_extractors.py): IS09 384 / 16,
# IS10 1582 / 38 (the CMATH / SUMMER papers' audio features), IS11 4368 / 59, IS12 6125 / 64, IS13 6373 / 65,
# ComParE_2016 6373 / 65, emobase 988 / 26, GeMAPSv01b 62 / 18, eGeMAPSv02 88 / 25. (GeMAPS / eGeMAPS /
# eGeMAPSv01b are older aliases that opensmile deprecates.)
OPENSMILE_SETS = ("ComParE_2016", "emobase", "eGeMAPSv02", "GeMAPSv01b", "IS09", "IS10", "IS11", "IS12", "IS13")


def _load_wave(item: EncoderInput, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """The utterance's waveform, or :class:`EncoderInputError` naming the file."""
    from pipeline.media import MediaError, load_audio

    path = item.audio_path or item.video_path
    if not path:
        raise EncoderInputError(f"{item.utterance_id}: no audio_path or video_path")
    try:
        return load_audio(path, start=item.start, end=item.end, sample_rate=sample_rate, max_seconds=max_seconds)
    except MediaError as e:
        raise EncoderInputError(str(e)) from e


def media_seconds(path: str) -> float | None:
    """Duration of a media file from its header (soundfile, else PyAV), ``None`` when it cannot be read."""
    try:
        import soundfile as sf

        return float(sf.info(path).duration)
    except Exception:  # noqa: BLE001 - not a soundfile format: try the container header
        pass
    try:
        import av

        with av.open(path) as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000  # AV_TIME_BASE
            stream = next(iter(container.streams.audio), None)
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001 - an unreadable file is the loader's problem, reported there
        return None
    return None


def audio_loss(item: EncoderInput, max_seconds: float | None) -> tuple[float, float, str] | None:
    """Seconds of the utterance's span beyond ``max_seconds`` (only the last ``max_seconds`` are kept)."""
    if max_seconds is None:
        return None
    path = item.audio_path or item.video_path
    if not path:
        return None
    if item.start is not None and item.end is not None:
        total = float(item.end) - float(item.start)
    else:
        whole = media_seconds(path)
        if whole is None:
            return None
        total = whole - float(item.start or 0.0) if item.end is None else float(item.end) - float(item.start or 0.0)
    return (total - max_seconds, total, "seconds") if total > max_seconds + 1e-6 else None


def _min_samples(conv_kernel: list[int], conv_stride: list[int]) -> int:
    """Shortest input for which the conv feature encoder still yields one frame."""
    n = 1
    for k, s in reversed(list(zip(conv_kernel, conv_stride))):
        n = (n - 1) * s + k
    return n


@register_encoder("data2vec")
class Data2VecEncoder(TorchEncoder, Encoder):
    """data2vec-audio (``Data2VecAudioModel``) over the utterance waveform.

    Input: ``sample_rate`` mono audio, of which the LAST ``max_seconds`` are kept (TelME keeps the
    last 400k samples = 25 s); clips shorter than the conv stack's receptive field are zero-padded.
    Normalisation: the checkpoint's ``AutoFeatureExtractor`` when it has one, else zero-mean
    unit-variance per utterance (the same thing for data2vec's extractor). Output: the mean of the
    last layer over valid frames (``pooling="mean"``) or its first frame (``"first"``, TelME);
    with ``sequence=True`` also the frame states (50 frames/s for the real model).
    """

    name = "data2vec"
    modality = "audio"

    def __init__(self, *, weights: str, device: str = "cpu", dtype: str | None = None, sequence: bool = False,
                 sample_rate: int = 16000, max_seconds: float | None = None, pooling: str = "mean",
                 random_weights: bool = False) -> None:
        import torch
        from transformers import AutoFeatureExtractor

        if pooling not in AUDIO_POOLINGS:
            raise ValueError(f"pooling must be one of {AUDIO_POOLINGS}, got {pooling!r}")
        self.weights = weights
        self.sequence = bool(sequence)
        self.sample_rate = int(sample_rate)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.pooling = pooling
        self.random_weights = bool(random_weights)
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        cfg = hf_config(weights, "data2vec")  # the weights themselves load on the first encode
        self.feature_extractor = None
        if has_local_file(weights, "preprocessor_config.json"):
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(weights)
            fe_rate = getattr(self.feature_extractor, "sampling_rate", self.sample_rate)
            if fe_rate != self.sample_rate:
                raise ValueError(f"{weights!r} expects {fe_rate} Hz audio, but sample_rate={self.sample_rate}")
        self.min_samples = _min_samples(list(cfg.conv_kernel), list(cfg.conv_stride))
        self.dim = int(cfg.hidden_size)
        self._identity = weights_identity(weights)
        self._frame_mask: Any = None

    def _load_model(self) -> Any:
        from transformers import Data2VecAudioModel

        try:
            model = Data2VecAudioModel.from_pretrained(self.weights, dtype=self.dtype).eval()
        except (OSError, ValueError) as e:
            raise OSError(f"cannot load data2vec weights {self.weights!r}: {e}") from e
        self._mask_positional_convs(model)
        return model

    def _mask_positional_convs(self, model: Any) -> None:
        """Zero padded frames after each positional conv layer.

        data2vec-audio stacks several convolutions as its relative positional embedding; HF zeroes
        padded frames only before the first, so in a padded batch the later layers read non-zero
        padding and the last valid frames differ from an unpadded run. Zeroing after every layer
        reproduces exactly the zero padding a single utterance sees, so batched == one-by-one."""
        layers = getattr(getattr(getattr(model, "encoder", None), "pos_conv_embed", None), "layers", None)
        for layer in layers or []:
            layer.register_forward_hook(self._zero_padding)

    def _zero_padding(self, module: Any, inputs: Any, output: Any) -> Any:
        if self._frame_mask is None:
            return output
        return output * self._frame_mask[:, None, : output.shape[-1]].to(output.dtype)  # [B, D, T]

    def settings(self) -> dict[str, Any]:
        return {**self._identity, "sample_rate": self.sample_rate, "max_seconds": self.max_seconds,
                "pooling": self.pooling, "normalise": "feature_extractor" if self.feature_extractor else "utterance",
                "dtype": dtype_name(self.dtype), "sequence": self.sequence}

    def input_loss(self, item: EncoderInput) -> tuple[float, float, str] | None:
        return audio_loss(item, self.max_seconds)

    def load(self, item: EncoderInput) -> np.ndarray:
        wave = _load_wave(item, self.sample_rate, self.max_seconds)
        if len(wave) < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - len(wave)))
        return wave

    def input_settings(self) -> dict[str, Any]:
        """What shapes ``load``'s output (the decoded input), without the weights: the fingerprint of a
        decoded-inputs column (``pipeline/inputs.py``), shared by every weights this encoder may carry."""
        return {"sample_rate": self.sample_rate, "max_seconds": self.max_seconds, "min_samples": self.min_samples}

    def blank_sample(self) -> np.ndarray:
        """The input of a row without audio (zeros; such rows are flagged missing and left out of losses)."""
        return np.zeros(self.min_samples, np.float32)

    def input_array(self, sample: np.ndarray) -> np.ndarray:
        """``load``'s output as the one array a decoded-inputs cache stores (float32 mono waveform)."""
        return np.asarray(sample, np.float32)

    def sample_from_array(self, array: np.ndarray) -> np.ndarray:
        """Inverse of ``input_array``: what ``collate`` takes."""
        return array

    def _inputs(self, samples: list[np.ndarray]) -> tuple[Any, Any]:
        """Normalised, right-padded input values [B, N] and their attention mask."""
        import torch

        if self.feature_extractor is not None:
            feats = self.feature_extractor(samples, sampling_rate=self.sample_rate, padding=True,
                                           return_attention_mask=True, return_tensors="pt")
            return feats["input_values"], feats["attention_mask"]
        width = max(len(x) for x in samples)
        values = torch.zeros((len(samples), width), dtype=torch.float32)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for i, x in enumerate(samples):
            x = x.astype(np.float64)
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
            values[i, :len(x)] = torch.from_numpy(x.astype(np.float32))
            mask[i, :len(x)] = 1
        return values, mask

    def collate(self, samples: list[np.ndarray]) -> dict[str, Any]:
        """Waveforms (``load``'s output) -> the model's inputs on the CPU: ``input_values`` [B, N] (normalised,
        right-padded) and ``attention_mask`` [B, N]. ``encode`` and fine-tuning (TelME's audio student) share it."""
        values, mask = self._inputs(samples)
        return {"input_values": values, "attention_mask": mask}

    def pooled(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any, list[int]]:
        """Run ``model`` (this encoder's model, or the same model being fine-tuned) on a ``collate``d batch on
        the model's device: (feature [B, D] by ``pooling``, last hidden states [B, T, D], valid frames per row).
        Differentiable: ``encode`` wraps it in ``inference_mode``."""
        import torch

        values, mask = batch["input_values"], batch["attention_mask"]
        lengths = model._get_feat_extract_output_lengths(mask.sum(-1)).to(torch.long).tolist()
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(values.shape[1])))
        frame_mask = torch.zeros((len(lengths), frames), device=values.device)
        for i, n in enumerate(lengths):
            frame_mask[i, :n] = 1
        self._frame_mask = frame_mask
        try:
            out = model(input_values=values.to(next(model.parameters()).dtype), attention_mask=mask)
        finally:
            self._frame_mask = None
        hidden = out.last_hidden_state.float()
        if self.pooling == "first":
            vec = hidden[:, 0]
        else:  # mean over valid frames
            vec = (hidden * frame_mask.unsqueeze(-1)).sum(1) / frame_mask.sum(1, keepdim=True).clamp(min=1)
        return vec, hidden, lengths

    def encode(self, samples: list[np.ndarray]) -> EncoderOutput:
        import torch

        batch = {k: v.to(self.device) for k, v in self.collate(samples).items()}
        with torch.inference_mode():
            vec, hidden, lengths = self.pooled(self.model, batch)
            seq = [hidden[i, :n].cpu().numpy() for i, n in enumerate(lengths)] if self.sequence else None
            return EncoderOutput(vec=vec.cpu().numpy().astype(np.float32), seq=seq)


@register_encoder("opensmile")
class OpenSmileEncoder(Encoder):
    """openSMILE functionals of the utterance (``feature_set``: one of ``OPENSMILE_SETS``, e.g. "IS10" = 1582,
    "ComParE_2016" = 6373, "emobase" = 988, "eGeMAPSv02" = 88 values), computed with ``opensmile.Smile.process_signal`` on the decoded
    ``sample_rate`` waveform. With ``sequence=True`` also the low-level descriptors (10 ms frames).

    openSMILE has no model on a device: it runs on the CPU inside ``load`` (so in the DataLoader
    workers, in parallel); ``encode`` only stacks the results. ``device``/``dtype`` are accepted
    for a uniform constructor and ignored."""

    name = "opensmile"
    modality = "audio"

    def __init__(self, *, feature_set: str = "eGeMAPSv02", sample_rate: int = 16000, max_seconds: float | None = None,
                 sequence: bool = False, device: str = "cpu", dtype: str | None = None) -> None:
        from importlib.metadata import version

        if feature_set not in OPENSMILE_SETS:
            raise ValueError(f"feature_set must be one of {OPENSMILE_SETS}, got {feature_set!r}")
        self.feature_set = feature_set
        self.sample_rate = int(sample_rate)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.sequence = bool(sequence)
        self.opensmile_version = str(version("opensmile"))  # the package's version, without importing it
        self._smiles: dict[str, Any] | None = None
        self._dims: dict[str, int] = {}  # feature level -> width, asked of openSMILE when first needed

    def _width(self, level: str) -> int:
        if level not in self._dims:
            self._dims[level] = len(self._smile(level).feature_names)
        return self._dims[level]

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self._width("Functionals")

    @property
    def seq_dim(self) -> int:
        return self._width("LowLevelDescriptors")

    def _smile(self, level: str) -> Any:
        """A ``Smile`` per feature level, created lazily in each process (workers re-create theirs)."""
        import opensmile

        if self._smiles is None:
            self._smiles = {}
        if level not in self._smiles:
            self._smiles[level] = opensmile.Smile(feature_set=opensmile.FeatureSet[self.feature_set],
                                                  feature_level=opensmile.FeatureLevel[level])
        return self._smiles[level]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_smiles"] = None  # native handles stay in their process
        return state

    def settings(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "opensmile": self.opensmile_version,
                "sample_rate": self.sample_rate, "max_seconds": self.max_seconds, "sequence": self.sequence}

    def input_loss(self, item: EncoderInput) -> tuple[float, float, str] | None:
        return audio_loss(item, self.max_seconds)

    def load(self, item: EncoderInput) -> dict[str, np.ndarray]:
        wave = _load_wave(item, self.sample_rate, self.max_seconds)
        try:
            vec = self._smile("Functionals").process_signal(wave, self.sample_rate).to_numpy(np.float32).reshape(-1)
            out = {"vec": vec}
            if self.sequence:
                lld = self._smile("LowLevelDescriptors").process_signal(wave, self.sample_rate)
                out["seq"] = lld.to_numpy(np.float32).reshape(-1, self.seq_dim)
        except Exception as e:  # noqa: BLE001 - openSMILE errors are plain RuntimeErrors without the file
            raise EncoderInputError(f"{item.audio_path or item.video_path}: openSMILE failed: {e}") from e
        if vec.shape != (self.dim,):
            raise EncoderInputError(f"{item.audio_path or item.video_path}: openSMILE gave {vec.shape[0]} values, "
                                    f"expected {self.dim}")
        return out

    def encode(self, samples: list[dict[str, np.ndarray]]) -> EncoderOutput:
        vec = np.nan_to_num(np.stack([s["vec"] for s in samples]).astype(np.float32))
        seq = [np.nan_to_num(s["seq"]) for s in samples] if self.sequence else None
        return EncoderOutput(vec=vec, seq=seq)
