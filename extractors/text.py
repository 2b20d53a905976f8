"""Text encoders: ``roberta`` (one utterance) and ``roberta-context`` (TelME's teacher input).

Both load any Hugging Face encoder with ``AutoTokenizer`` + ``AutoModel`` (RoBERTa for the paper
profile, MiniLM/BERT offline) and are frozen feature extractors.

``roberta-context`` builds TelME's prompt: the dialogue so far with speaker markers, the
tokenizer's separator, then ``Now <speaker> feels`` and the mask token; the feature is the last
layer's state at the mask. The context is cut from the left (oldest turns first) so the prompt
always survives; batches are left-padded so the mask is the last position of every row.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np

from extractors.base import Encoder, EncoderInput, EncoderLoadError, EncoderOutput, register_encoder
from extractors.profiles import TorchEncoder, dtype_name, hf_config, torch_dtype, weights_identity

POOLINGS = ("cls", "mean")
SPEAKER_FORMATS = ("name", "token")
PROMPT = "Now {speaker} feels"
MAX_SPEAKER_TOKENS = 9


def _load_text_tokenizer(weights: str) -> tuple[Any, Any]:
    """(tokenizer, config) of text weights, without the weights."""
    from transformers import AutoTokenizer

    config = hf_config(weights, "text encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderLoadError(f"cannot load text encoder weights {weights!r} (not a Hugging Face model dir or "
                               f"hub id with a tokenizer): {first}") from e
    return tokenizer, config


def _load_text_model(weights: str, dtype: Any) -> Any:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(weights, dtype=dtype).eval()
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderLoadError(f"cannot load text encoder weights {weights!r}: {first}") from e


def _position_offset(model: Any) -> int:
    """First position id of a real token: RoBERTa-style embeddings count from ``padding_idx + 1``,
    BERT-style from 0."""
    emb = getattr(model, "embeddings", None)
    if emb is not None and hasattr(emb, "create_position_ids_from_input_ids"):
        return int(emb.padding_idx) + 1
    return 0


# Model types whose embeddings count positions from ``padding_idx + 1`` (RoBERTa's convention): read from the config
# so that no modeling code is imported before the first encode; the loaded model is checked against it.
PAD_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                              "roberta-prelayernorm", "xmod", "longformer", "ibert"})


def _config_offset(config: Any) -> int:
    """:func:`_position_offset` from the config alone."""
    if getattr(config, "model_type", "") in PAD_OFFSET_TYPES:
        return int(getattr(config, "pad_token_id", 1) or 0) + 1
    return 0


def _pad(batch: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        if left:
            ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[i, width - len(x):] = 1
        else:
            ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, :len(x)] = 1
    return ids, mask


class _TextEncoder(TorchEncoder, Encoder):
    """Shared loading / forward of the text encoders."""

    modality = "text"

    def __init__(self, *, weights: str, device: str, dtype: str | None, sequence: bool, max_length: int,
                 random_weights: bool) -> None:
        import torch

        self.weights = weights
        self.sequence = bool(sequence)
        self.random_weights = bool(random_weights)
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        self.tokenizer, self.config = _load_text_tokenizer(weights)  # the weights load on the first encode
        self._offset = _config_offset(self.config)
        max_tokens = int(getattr(self.config, "max_position_embeddings", 512)) - self._offset
        if max_length < 2 or max_length > max_tokens:
            raise ValueError(f"max_length must be in [2, {max_tokens}] for {weights!r}, got {max_length}")
        self.max_length = int(max_length)
        self.dim = int(self.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._identity = weights_identity(weights)

    def _load_model(self) -> Any:
        model = _load_text_model(self.weights, self.dtype)
        if _position_offset(model) != self._offset:
            raise ValueError(f"{self.weights!r}: its embeddings count positions from {_position_offset(model)}, "
                             f"its config type {self.config.model_type!r} says {self._offset} (extractors/text.py "
                             f"PAD_OFFSET_TYPES)")
        return model

    left_pad = False  # roberta-context left-pads so that its mask token is the last position of every row

    def collate(self, samples: list[list[int]]) -> dict[str, Any]:
        """Token id lists (``load``'s output) -> the model's input tensors on the CPU: ``input_ids``,
        ``attention_mask`` and, for left-padded batches, explicit ``position_ids`` (real tokens count from
        the model's first position whatever the padding). ``encode`` and fine-tuning share it."""
        ids, mask = _pad(samples, self.pad_id, left=self.left_pad)
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.left_pad:
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0) + self._offset
        return batch

    def pooled(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Run ``model`` (this encoder's model, or the same model being fine-tuned) on a ``collate``d batch
        that is already on the model's device; returns (feature [B, D], last hidden states [B, L, D],
        attention mask [B, L]). Differentiable: ``encode`` wraps it in ``inference_mode``."""
        out = model(**batch)
        hidden = out.last_hidden_state
        return self.pool(hidden, batch["attention_mask"]), hidden, batch["attention_mask"]

    def pool(self, hidden: Any, mask: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def _run(self, samples: list[list[int]]) -> tuple[Any, Any]:
        """``encode``'s forward: (feature [B, D] float32, hidden [B, L, D] float32), no gradients."""
        import torch

        batch = {k: v.to(self.device) for k, v in self.collate(samples).items()}
        with torch.inference_mode():
            vec, hidden, _ = self.pooled(self.model, batch)
        return vec.float(), hidden.float()

    def input_loss(self, item: EncoderInput) -> tuple[float, float, str] | None:
        """Tokens of the utterance's own text beyond ``max_length`` (the context encoder drops old turns
        first by design; that is not counted, only an utterance that alone does not fit)."""
        text = item.text or ""
        if len(text.encode("utf-8")) + 4 <= self.max_length:  # a token spans >= 1 byte: it fits, skip tokenizing
            return None
        n = len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])
        return (float(n - self.max_length), float(n), "tokens") if n > self.max_length else None

    def _base_settings(self) -> dict[str, Any]:
        return {**self._identity, "max_length": self.max_length, "dtype": dtype_name(self.dtype),
                "sequence": self.sequence}


@register_encoder("roberta")
class RobertaEncoder(_TextEncoder):
    """Utterance text -> the last layer's first-token ([CLS]/<s>) state (``pooling="cls"``) or the
    mean over its tokens (``pooling="mean"``). With ``sequence=True`` also the token states."""

    name = "roberta"

    def __init__(self, *, weights: str, device: str = "cpu", dtype: str | None = None, sequence: bool = False,
                 pooling: str = "cls", max_length: int = 128, random_weights: bool = False) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        super().__init__(weights=weights, device=device, dtype=dtype, sequence=sequence, max_length=max_length,
                         random_weights=random_weights)

    def settings(self) -> dict[str, Any]:
        return {**self._base_settings(), "pooling": self.pooling}

    def load(self, item: EncoderInput) -> list[int]:
        return list(self.tokenizer(item.text or "", truncation=True, max_length=self.max_length)["input_ids"])

    def pool(self, hidden: Any, mask: Any) -> Any:
        if self.pooling == "cls":
            return hidden[:, 0]
        h, m = hidden.float(), mask.unsqueeze(-1).float()  # in float32 whatever the compute dtype
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def encode(self, samples: list[list[int]]) -> EncoderOutput:
        vec, hidden = self._run(samples)
        seq = [hidden[i, :len(s)].cpu().numpy() for i, s in enumerate(samples)] if self.sequence else None
        return EncoderOutput(vec=vec.cpu().numpy().astype(np.float32), seq=seq)


def speaker_markers(history: Sequence[Sequence[str]], speaker: str) -> dict[str, int]:
    """Speaker -> 1-based number by order of first appearance in the dialogue (history, then the
    current speaker)."""
    order: dict[str, int] = {}
    for spk, _ in history:
        order.setdefault(str(spk), len(order) + 1)
    order.setdefault(str(speaker), len(order) + 1)
    return order


def speaker_tokens() -> list[str]:
    return [f"<s{i}>" for i in range(1, MAX_SPEAKER_TOKENS + 1)]


def _marker(number: int, speaker_format: str, in_turn: bool) -> str:
    if speaker_format == "token":  # TelME's <s1>..<s9>; later speakers share <s9>
        return f"<s{min(number, MAX_SPEAKER_TOKENS)}>"
    return f"Speaker {number}:" if in_turn else f"Speaker {number}"


def build_context_ids(tokenizer: Any, history: Sequence[Sequence[str]], speaker: str, text: str,
                      max_length: int, speaker_format: str = "name") -> list[int]:
    """TelME's teacher input as token ids: ``<m1> turn1 <m2> turn2 ... <mk> text <sep> Now <mk> feels``
    tokenized WITHOUT special tokens, cut to its LAST ``max_length - 1`` tokens (the oldest turns go
    first; the prompt survives), then the mask id appended (so ``len <= max_length`` and the last id
    is ``tokenizer.mask_token_id``). ``history`` is ``(speaker, text)`` of the earlier turns, oldest
    first. Markers: ``Speaker 1:`` ... by first appearance ("name") or ``<s1>``... ("token"; the
    tokenizer must hold them, see :class:`RobertaContextEncoder`)."""
    if speaker_format not in SPEAKER_FORMATS:
        raise ValueError(f"speaker_format must be one of {SPEAKER_FORMATS}, got {speaker_format!r}")
    if tokenizer.mask_token is None or tokenizer.sep_token is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no mask or sep token; "
                         f"roberta-context needs both")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if speaker_format == "token":
        unk = tokenizer.unk_token_id
        missing = [t for t in speaker_tokens() if tokenizer.convert_tokens_to_ids(t) in (None, unk)]
        if missing:
            raise ValueError(f"tokenizer lacks speaker tokens {missing}: add them first (add_speaker_tokens)")
    numbers = speaker_markers(history, speaker)
    turns = [f"{_marker(numbers[str(s)], speaker_format, True)} {t}" for s, t in [*history, (speaker, text)]]
    prompt = PROMPT.format(speaker=_marker(numbers[str(speaker)], speaker_format, False))
    string = " ".join(turns) + f" {tokenizer.sep_token} {prompt}"
    ids = list(tokenizer(string, add_special_tokens=False, verbose=False)["input_ids"])  # long is fine: cut below
    return ids[-(max_length - 1):] + [int(tokenizer.mask_token_id)]


def _add_speaker_tokens_to_tokenizer(tokenizer: Any) -> list[int]:
    """Add the ``<s1>``..``<s9>`` the tokenizer lacks; returns their new ids (empty when it had them all)."""
    unk = tokenizer.unk_token_id
    new = [t for t in speaker_tokens() if tokenizer.convert_tokens_to_ids(t) in (None, unk)]
    if not new:
        return []
    tokenizer.add_tokens(new, special_tokens=True)
    return [int(i) for i in tokenizer.convert_tokens_to_ids(new)]


def _init_speaker_rows(model: Any, ids: list[int]) -> None:
    """Give the embedding rows ``ids`` (tokens just added) the mean of the model's existing rows,
    growing the embedding first when they lie past its end (deterministic, unlike
    ``resize_token_embeddings``' random init)."""
    import torch

    if not ids:
        return
    old = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= old:
        model.resize_token_embeddings(max(max(ids) + 1, old), mean_resizing=False)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        emb.weight[ids] = emb.weight[:old].mean(0, keepdim=True).to(emb.weight.dtype)


def add_speaker_tokens(tokenizer: Any, model: Any) -> None:
    """Add ``<s1>``..``<s9>`` to the tokenizer and give each NEW embedding row the mean of the existing
    rows. Tokens the tokenizer already holds (a fine-tuned model dir saved with them) keep their trained rows."""
    _init_speaker_rows(model, _add_speaker_tokens_to_tokenizer(tokenizer))


@register_encoder("roberta-context")
class RobertaContextEncoder(_TextEncoder):
    """TelME teacher input (see :func:`build_context_ids`) -> the last layer's state at the mask
    position. ``max_turns`` keeps only the latest turns of the history (default None: all that fit
    in ``max_length``, as TelME). ``speaker_format="name"`` (default) writes ``Speaker 1:``...: a frozen encoder never
    learned TelME's ``<s1>``..``<s9>``; ``"token"`` adds those tokens (mean-initialised rows). With
    ``sequence=True`` also the token states of the whole input (mask included)."""

    name = "roberta-context"
    uses_history = True

    def __init__(self, *, weights: str, device: str = "cpu", dtype: str | None = None, sequence: bool = False,
                 max_length: int = 512, speaker_format: str = "name", max_turns: int | None = None,
                 random_weights: bool = False) -> None:
        if speaker_format not in SPEAKER_FORMATS:
            raise ValueError(f"speaker_format must be one of {SPEAKER_FORMATS}, got {speaker_format!r}")
        if max_turns is not None and max_turns < 0:
            raise ValueError(f"max_turns must be >= 0 or None (all turns that fit), got {max_turns}")
        self.speaker_format = speaker_format
        self.max_turns = max_turns
        super().__init__(weights=weights, device=device, dtype=dtype, sequence=sequence, max_length=max_length,
                         random_weights=random_weights)
        if self.tokenizer.mask_token is None or self.tokenizer.sep_token is None:
            raise ValueError(f"{weights!r}: its tokenizer has no mask or sep token; roberta-context needs both")
        # "token": the tokenizer gets <s1>..<s9> now (``load`` needs them); the model's rows on first load.
        self._new_token_ids = _add_speaker_tokens_to_tokenizer(self.tokenizer) if speaker_format == "token" else []

    def _load_model(self) -> Any:
        model = super()._load_model()
        if "position_ids" not in inspect.signature(model.forward).parameters:
            raise ValueError(f"{self.weights!r}: its model takes no position_ids, so left-padded batches would shift "
                             f"positions; roberta-context needs a BERT/RoBERTa-style encoder")
        _init_speaker_rows(model, self._new_token_ids)
        return model

    def settings(self) -> dict[str, Any]:
        return {**self._base_settings(), "speaker_format": self.speaker_format, "prompt": PROMPT,
                "max_turns": self.max_turns}

    def load(self, item: EncoderInput) -> list[int]:
        history = list(item.history)
        if self.max_turns is not None:  # a window of the latest turns (None: TelME's, all that fit)
            history = history[len(history) - self.max_turns:] if self.max_turns else []
        return build_context_ids(self.tokenizer, [(str(s), str(t)) for s, t in history], item.speaker,
                                 item.text or "", self.max_length, self.speaker_format)

    left_pad = True

    def pool(self, hidden: Any, mask: Any) -> Any:
        return hidden[:, -1]  # the mask is the last position of every left-padded row

    def encode(self, samples: list[list[int]]) -> EncoderOutput:
        vec, hidden = self._run(samples)
        seq = ([hidden[i, hidden.shape[1] - len(s):].cpu().numpy() for i, s in enumerate(samples)]
               if self.sequence else None)
        return EncoderOutput(vec=vec.cpu().numpy().astype(np.float32), seq=seq)
