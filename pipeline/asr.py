"""Transcripts by speech recognition, for inputs that come without one (``predict --asr``, ``read --asr``).

A Whisper model (``WhisperForConditionalGeneration``, a local dir or a hub id already in the local cache)
runs through transformers' automatic-speech-recognition pipeline with timestamps. The result is a list
of :class:`Chunk` (start, end, text); :func:`segment_chunks` turns it into utterances for ``--segment``
(a long recording split where the ASR put its timestamps). Every transcript made here is machine-made
and marked so: ``transcript_source = "asr:<model>"`` in predict's outputs, a ``fix`` per filled
utterance in a corpus read report.

The weights are read as safetensors only (a pickled ``pytorch_model.bin`` is refused, as for run dirs).
:func:`write_tiny_whisper` writes a tiny random Whisper (and a small byte-level tokenizer) for tests and
offline demos: it exercises the path (audio -> tokens with timestamps -> segments), its words are noise.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import UserValueError

SAMPLE_RATE = 16000  # what Whisper's feature extractor expects
MIN_SEGMENT_SECONDS = 0.5  # shorter ASR segments are joined to their neighbour (too little audio to encode)
LOG = logging.getLogger("pipeline.asr")


class AsrError(UserValueError):
    """The ASR model cannot be loaded or run here; the message names the model and what to do."""


@dataclass
class Chunk:
    """A stretch of speech the ASR transcribed: seconds from the start of the audio it was given."""

    start: float
    end: float | None
    text: str


def source_name(model: str | Path) -> str:
    """The ``transcript_source`` value of a transcript made by ``model``: ``asr:<model>``."""
    return f"asr:{model}"


# ------------------------------------------------------------------------------------------ segments
def segment_chunks(chunks: Sequence[Chunk], duration: float, *,
                   min_seconds: float = MIN_SEGMENT_SECONDS) -> list[Chunk]:
    """Utterances of a recording from the ASR's timestamped chunks, in time order: chunks with no words
    are dropped, times are clipped to ``[0, duration]`` (a chunk starting at or after the end is dropped, a
    missing end is the next chunk's start or the end of the audio), and a chunk shorter than
    ``min_seconds`` is joined to the one before it (the first to the one after it)."""
    ordered = sorted((c for c in chunks if c.text.strip()), key=lambda c: c.start)
    spans: list[Chunk] = []
    for i, c in enumerate(ordered):
        start = min(max(float(c.start), 0.0), duration)
        if start >= duration:
            continue
        end = c.end if c.end is not None else (ordered[i + 1].start if i + 1 < len(ordered) else duration)
        end = min(max(float(end), start), duration)
        spans.append(Chunk(start, end, " ".join(c.text.split())))
    out: list[Chunk] = []
    for c in spans:
        if out and (c.end - c.start < min_seconds or out[-1].end - out[-1].start < min_seconds):
            prev = out[-1]
            out[-1] = Chunk(prev.start, max(prev.end, c.end), f"{prev.text} {c.text}")
        else:
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------- transcriber
class Transcriber:
    """One Whisper model, loaded on first use: :meth:`chunks` / :meth:`text` of a media file's audio.
    ``num_beams`` 1 is greedy decoding (fast on a CPU); openai's command line uses 5."""

    def __init__(self, model: str | Path, *, device: str | None = None, num_beams: int = 1) -> None:
        self.model = str(model)
        self.device = device
        self.num_beams = num_beams
        self._pipe: Any = None

    @property
    def source(self) -> str:
        return source_name(self.model)

    def _load(self) -> Any:
        if self._pipe is None:
            from transformers import AutoProcessor, WhisperForConditionalGeneration, pipeline
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no weight-loading bars between a command's own lines
            try:
                model = WhisperForConditionalGeneration.from_pretrained(self.model, use_safetensors=True)
                processor = AutoProcessor.from_pretrained(self.model)
            except Exception as e:  # not found offline, not a Whisper, pickled weights: one line, the model named
                raise AsrError(f"--asr {self.model}: cannot load a Whisper model (safetensors weights, tokenizer, "
                               f"feature extractor) from it: {type(e).__name__}: {' '.join(str(e).split())[:300]}. "
                               f"Give a local Whisper dir or a hub id already downloaded") from None
            self._pipe = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                                  feature_extractor=processor.feature_extractor, device=self.device or "cpu")
        return self._pipe

    def chunks(self, path: str | Path, start: float | None = None, end: float | None = None
               ) -> tuple[list[Chunk], float]:
        """Timestamped chunks of ``[start, end]`` seconds of ``path``'s audio (times from ``start``) and
        the duration of that audio. Raises :class:`pipeline.media.MediaError` when it cannot be decoded."""
        from pipeline.media import load_audio

        wave = load_audio(path, start=start, end=end, sample_rate=SAMPLE_RATE)
        duration = len(wave) / SAMPLE_RATE
        long_form = {"chunk_length_s": 30, "batch_size": 1} if duration > 30 else {}  # windows of 30 s
        out = self._load()({"raw": wave, "sampling_rate": SAMPLE_RATE}, return_timestamps=True,
                           generate_kwargs={"num_beams": self.num_beams}, **long_form)
        chunks = [Chunk(float(c["timestamp"][0] or 0.0), None if c["timestamp"][1] is None else float(c["timestamp"][1]),
                        str(c.get("text") or "")) for c in out.get("chunks") or []]
        if not chunks and str(out.get("text") or "").strip():
            chunks = [Chunk(0.0, duration, str(out["text"]))]
        return chunks, duration

    def text(self, path: str | Path, start: float | None = None, end: float | None = None) -> str:
        """The whole transcript of ``[start, end]`` of ``path`` (whitespace collapsed)."""
        chunks, duration = self.chunks(path, start, end)
        return " ".join(c.text for c in segment_chunks(chunks, duration, min_seconds=0.0))


# ----------------------------------------------------------------------------- filling and splitting
def as_transcriber(asr: str | Path | Transcriber) -> Transcriber:
    return asr if isinstance(asr, Transcriber) else Transcriber(asr)


def fill_transcripts(records: Sequence[Any], report: Any, asr: str | Path | Transcriber) -> int:
    """Give every record (``Utterance``) with an empty transcript and an audio track the ASR's transcript of
    its span, marked machine-made: ``report.sources[id] = "asr:<model>"`` and a ``fix`` per record, then one
    ``info`` with the count. Returns how many were filled; a record whose audio cannot be decoded keeps its
    empty text (a ``skip`` says why). One function for corpus readers and predict."""
    from pipeline.extract import encoder_inputs, modality_input
    from pipeline.media import MediaError

    asr = as_transcriber(asr)
    todo = [r for r in records if not r.text.strip() and r.audio_path]
    spans = {it.utterance_id: modality_input(it, "audio") for it in encoder_inputs(todo)}
    filled = 0
    for r in todo:
        span = spans[r.utterance_id]
        try:
            text = asr.text(r.audio_path, span.start, span.end)
        except MediaError as e:
            report.add("skip", r.audio_path, f"no transcript and the ASR cannot read the audio: {e}",
                       utterance_id=r.utterance_id)
            continue
        r.text = text
        report.sources[r.utterance_id] = asr.source
        report.add("fix", r.audio_path, f"empty transcript filled by ASR ({asr.source}, machine-made)",
                   utterance_id=r.utterance_id)
        filled += 1
    report.add("info", asr.model, f"ASR filled {filled} of {len(todo)} missing transcript(s) "
                                  f"(machine-made, marked {asr.source})")
    report.counts["asr_filled"] = report.counts.get("asr_filled", 0) + filled
    return filled


def split_recording(path: str | Path, asr: str | Path | Transcriber) -> list[Chunk]:
    """The utterances of one recording (``predict --segment``): the ASR's timestamped chunks of its whole
    audio, through :func:`segment_chunks`. Raises :class:`AsrError` when the audio cannot be read or the
    ASR hears no words."""
    from pipeline.media import MediaError

    asr = as_transcriber(asr)
    try:
        chunks, duration = asr.chunks(path)
    except MediaError as e:
        raise AsrError(f"{path}: --segment cannot read its audio: {e}") from None
    segments = segment_chunks(chunks, duration)
    if not segments:
        raise AsrError(f"{path}: the ASR ({asr.source}) heard no words to split into utterances; "
                       f"give the transcript with --text or a sidecar .txt instead")
    return segments


# ------------------------------------------------------------------------------------------ tiny model
def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in byte order (bytes that print as themselves keep
    their character, the others get code points from 256 up)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


def write_tiny_whisper(out: str | Path, *, seed: int = 0, max_new_tokens: int = 40) -> Path:
    """Write a tiny random English Whisper to ``out`` (config, safetensors weights, generation config, a
    byte-level tokenizer whose words are lowercase letters, the standard feature extractor); no download.
    For tests and offline demos of the ASR path: timestamps and segments are real, the words are noise."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    eot = WHISPER_SPECIALS[0]
    tok = WhisperTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    tok.add_tokens([*WHISPER_SPECIALS, *(f"<|{i * 0.02:.2f}|>" for i in range(1501))], special_tokens=True)
    ids = dict(zip(WHISPER_SPECIALS, tok.convert_tokens_to_ids(list(WHISPER_SPECIALS))))
    words = {vocab[c] for c in "abcdefghijklmnopqrstuvwxyz"} | {vocab[alphabet[ord(" ")]]}
    suppress = [i for i in range(len(alphabet)) if i not in words] + [ids[t] for t in WHISPER_SPECIALS[1:]]
    special = dict(pad_token_id=ids[eot], bos_token_id=ids[eot], eos_token_id=ids[eot],
                   decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=max_new_tokens + 8,
                           begin_suppress_tokens=[], suppress_tokens=[], **special)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        **special, no_timestamps_token_id=ids["<|notimestamps|>"], max_initial_timestamp_index=10,
        is_multilingual=False, max_length=max_new_tokens, begin_suppress_tokens=[], suppress_tokens=suppress)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE).save_pretrained(out)
    return out
