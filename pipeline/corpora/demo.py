"""Demo corpora: small synthetic MELD / IEMOCAP / MOSI / MUStARD / UR-FUNNY releases with a learnable
cue per modality.

``python -m pipeline demo-data --out data/demo`` (the target of ``make demo-data``) writes every
layout into ``data/demo/{meld,iemocap,mosi,mustard,urfunny}``; ``--layout meld --out DIR`` writes
one layout into ``DIR`` itself. From Python: ``generate_demo(root, "meld", seed=0)``.

Each layout copies the file layout of the real release (file names, CSV columns, text formats),
so that the real readers (``pipeline/corpora/{meld,iemocap,mosi,mustard,urfunny}.py``) parse it unchanged:

* ``meld``: ``{train,dev,test}_sent_emo.csv`` + ``train_splits/``, ``dev_splits_complete/``,
  ``output_repeated_splits_test/`` with ``dia{D}_utt{U}.mp4`` (H.264 video + AAC mono 16 kHz).
  Train dialogue ids skip one number and a few train utterances carry ``â€™`` mojibake, as in
  the real release.
* ``iemocap``: ``SessionN/dialog/{EmoEvaluation,transcriptions}/<dialog>.txt``,
  ``SessionN/sentences/wav/<dialog>/<turn>.wav`` (16 kHz mono int16) and one two-speaker
  ``SessionN/dialog/avi/DivX/<dialog>.avi`` (MPEG-4 Part 2 video + PCM audio): the actor whose
  gender letter equals the session letter is on the left half.
* ``mosi``: MMSA's ``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``.
* ``mustard``: ``sarcasm_data.json`` (entries in shuffled show order, as in the real file) +
  ``videos/utterances_final/<id>.mp4`` (the target, with the cue) and
  ``videos/context_final/<id>_c.mp4`` (all context turns in one cue-less clip). Sized per show
  (``BBT``, ``FRIENDS``, ``GOLDENGIRLS``, ``SARCASMOHOLICS``; FRIENDS is the speaker-independent
  test show); ``turns`` counts the target plus its context turns. Labels ``sarcastic`` /
  ``not_sarcastic``, balanced inside each show up to sampling.
* ``urfunny``: UR-FUNNY v2's ``data_folds.pkl``, ``language_sdk.pkl``, ``humor_label_sdk.pkl``
  (written with ``pickle.dump`` of plain dicts, protocol 2, integer ids) +
  ``urfunny2_videos/<id>.mp4`` (the punchline, with the cue). Context sentences carry no cue.

The cues. Every label has a cue in each modality, strong enough to survive frozen encoders:

* text: two class-specific phrases around a neutral filler clause (``MELD_CUES[...].phrases``);
* audio: a voiced tone (4 harmonics, vibrato) whose f0 (120-400 Hz) and loudness depend on the class;
* video: a saturated hue per class filling a moving blob and (darker) the background.

Each utterance gets a *cue mode* (default 40 % ``all``, 20 % each ``text``/``audio``/``video``):
the modalities outside the mode carry a signal drawn from one class-independent distribution
(text: filler only; audio: a tone in ``UNINFORMATIVE_F0_HZ``, above every class pitch; video: a
grey blob). ``demo_cues.csv`` (columns ``split,key,label,cue``) lists the mode of every labelled
utterance; ``key`` is ``dia{D}_utt{U}`` (MELD, with ``split``), the turn name (IEMOCAP, ``split``
= session), ``<video_id>_<clip_id>`` (MOSI, ``split`` = mode), the id (MUStARD, ``split`` = show;
UR-FUNNY, ``split`` = fold; only the scored target / punchline is listed, context turns carry no
cue). For MOSI the cues follow the score:
f0, loudness, hue and brightness grow continuously with it and the phrase follows its 7-class bin.

Everything is drawn from ``numpy.random.default_rng(seed)`` (plan) and per-utterance generators
seeded with ``(seed, crc32(key))`` (media noise), so the same seed writes the same CSV / label bytes
and, with single-threaded encoders, the same media bytes.
"""
from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
import math
import pickle
import shutil
import sys
import time
import wave
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.registry import Registry

CUE_MODES = ("all", "text", "audio", "video")
DEFAULT_CUE_MIX: dict[str, float] = {"all": 0.4, "text": 0.2, "audio": 0.2, "video": 0.2}
CUES_FILE = "demo_cues.csv"
CUES_COLUMNS = ("split", "key", "label", "cue")

CLASS_F0_RANGE_HZ = (120.0, 400.0)  # class pitches are spread geometrically over this range
UNINFORMATIVE_F0_HZ = (480.0, 620.0)  # pitch of the cue-less tone: same for every class, above all class pitches
ENERGY_RANGE = (0.2, 0.6)  # peak amplitude of the tone (class-specific; cue-less tones draw uniformly from it)
UNINFORMATIVE_VALUE = (0.35, 0.8)  # brightness of the cue-less grey blob
CUE_SATURATION = 0.85


# =========================================================================== cue tables


@dataclass(frozen=True)
class ClassCue:
    """The cue of one label in every modality."""

    phrases: tuple[str, ...]  # text: two of these appear in the utterance
    f0: float  # audio: fundamental frequency, Hz
    energy: float  # audio: peak amplitude of the tone (0..1)
    hue: float  # video: hue in degrees (0..360)
    value: float = 0.85  # video: brightness of the blob (0..1)
    punct: str = "."  # text: end punctuation after the phrase


PHRASES: dict[str, tuple[str, ...]] = {
    # MELD emotions (no apostrophes: they must survive the mojibake the MELD layout adds)
    "anger": ("I am absolutely furious", "how dare you", "this makes me so angry",
              "I am sick and tired of this", "get out of my face", "stop lying to me right now"),
    "joy": ("this is wonderful news", "I am so happy for us", "that is fantastic",
            "I love it so much", "yay, best day ever", "we did it, hooray"),
    "surprise": ("oh my god, really", "wait, what", "no way, seriously", "I cannot believe it",
                 "whoa, since when", "you did what"),
    "sadness": ("I miss her so much", "I feel so lonely", "this is heartbreaking", "I just want to cry",
                "everything feels hopeless", "I am so sad today"),
    "fear": ("I am really scared", "I am terrified", "something is wrong, help me",
             "please do not leave me here", "what if he finds us", "I am so nervous and afraid"),
    "disgust": ("ew, that is disgusting", "gross, that smells awful", "yuck, get it away",
                "that is revolting", "ugh, so nasty", "I think I am going to throw up"),
    "neutral": ("nothing special, just a normal day", "it is fine, whatever", "alright, noted",
                "sure, that works", "sounds reasonable to me", "it is an ordinary plan"),
    # IEMOCAP codes
    "neu": ("nothing special, just a normal day", "it is fine, whatever", "alright, noted",
            "sure, that works", "sounds reasonable to me", "it is an ordinary plan"),
    "fru": ("this is so frustrating", "nothing ever works out", "I keep trying and it is useless",
            "why is this so complicated", "I have been waiting forever", "this is ridiculous"),
    "ang": ("I am absolutely furious", "how dare you", "this makes me so angry",
            "I am sick and tired of this", "get out of my face", "stop lying to me right now"),
    "sad": ("I miss her so much", "I feel so lonely", "this is heartbreaking", "I just want to cry",
            "everything feels hopeless", "I am so sad today"),
    "hap": ("I am so happy", "that makes me glad", "what a lovely day", "I feel really good",
            "this is so sweet", "I am very pleased"),
    "exc": ("I am so excited", "I can hardly wait", "this is amazing", "let us go right now",
            "oh wow, that is incredible", "best news ever"),
}
PUNCT: dict[str, str] = {"anger": "!", "ang": "!", "joy": "!", "hap": "!", "exc": "!", "surprise": "?",
                         "fear": "!", "disgust": "!", "fru": "!"}

# MOSI: phrase by 7-class bin (round(score)), lower case like the real transcripts.
MOSI_PHRASES: dict[int, tuple[str, ...]] = {
    -3: ("this was the worst movie ever", "absolutely terrible and awful", "a complete waste of time"),
    -2: ("i really did not like it", "it was pretty bad", "the acting was poor and boring"),
    -1: ("it was a bit disappointing", "kind of weak overall", "not quite as good as i hoped"),
    0: ("it was neither good nor bad", "i have mixed feelings", "it was just average"),
    1: ("it was fairly decent", "somewhat enjoyable", "a little better than expected"),
    2: ("i really liked it", "it was very good", "great acting and a fun story"),
    3: ("an absolute masterpiece", "the best movie i have ever seen", "i loved every single minute"),
}


def _spread(order: Sequence[str], lo: float, hi: float, geometric: bool = False) -> dict[str, float]:
    """Evenly (or geometrically) spaced values from ``lo`` to ``hi``, assigned in ``order``."""
    k = len(order)
    out: dict[str, float] = {}
    for i, name in enumerate(order):
        frac = i / (k - 1) if k > 1 else 0.0
        out[name] = lo * (hi / lo) ** frac if geometric else lo + (hi - lo) * frac
    return out


def cue_table(*, hue_order: Sequence[str], f0_order: Sequence[str],
              energy_order: Sequence[str], phrases: Mapping[str, tuple[str, ...]] = PHRASES) -> dict[str, ClassCue]:
    """One ``ClassCue`` per class: hues evenly around the wheel, f0 geometric over
    ``CLASS_F0_RANGE_HZ``, energy evenly over ``ENERGY_RANGE``, each in its own class order;
    the text cues come from ``phrases`` (default ``PHRASES``)."""
    if not (set(hue_order) == set(f0_order) == set(energy_order)):
        raise ValueError("hue_order, f0_order and energy_order must name the same classes")
    k = len(hue_order)
    hues = {name: 360.0 * i / k for i, name in enumerate(hue_order)}
    f0s = _spread(f0_order, *CLASS_F0_RANGE_HZ, geometric=True)
    energies = _spread(energy_order, *ENERGY_RANGE)
    return {name: ClassCue(phrases=phrases[name], f0=f0s[name], energy=energies[name], hue=hues[name],
                           punct=PUNCT.get(name, "."))
            for name in hue_order}


MELD_EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive",
                  "fear": "negative", "sadness": "negative", "disgust": "negative", "anger": "negative"}
MELD_PRIOR = {"neutral": 0.36, "joy": 0.16, "surprise": 0.12, "anger": 0.11, "sadness": 0.09,
              "disgust": 0.08, "fear": 0.08}
MELD_CUES = cue_table(
    hue_order=("anger", "joy", "disgust", "neutral", "sadness", "fear", "surprise"),
    f0_order=("sadness", "neutral", "disgust", "anger", "joy", "fear", "surprise"),
    energy_order=("neutral", "sadness", "fear", "disgust", "joy", "surprise", "anger"),
)

IEMOCAP_CODES = ("neu", "fru", "ang", "sad", "hap", "exc")  # labelled codes; "xxx"/"oth" turns are also written
IEMOCAP_PRIOR = {"neu": 0.23, "fru": 0.25, "ang": 0.15, "sad": 0.15, "hap": 0.08, "exc": 0.14}
IEMOCAP_CUES = cue_table(
    hue_order=("ang", "hap", "fru", "neu", "sad", "exc"),
    f0_order=("sad", "neu", "fru", "ang", "hap", "exc"),
    energy_order=("neu", "sad", "hap", "fru", "exc", "ang"),
)
IEMOCAP_WORD = {"neu": "Neutral", "fru": "Frustration", "ang": "Anger", "sad": "Sadness",
                "hap": "Happiness", "exc": "Excited", "oth": "Other", "xxx": "Neutral"}
IEMOCAP_VAD = {"neu": (3.0, 2.5, 3.0), "fru": (2.0, 3.0, 3.0), "ang": (1.5, 4.0, 4.0),
               "sad": (1.5, 2.0, 2.0), "hap": (4.0, 3.0, 3.0), "exc": (4.0, 4.0, 3.5),
               "oth": (3.0, 3.0, 3.0), "xxx": (2.5, 3.0, 3.0)}


def mosi_cue(score: float) -> ClassCue:
    """MOSI cue of a score in [-3, 3]: f0, energy, hue (20 -> 240 degrees: orange -> green -> blue)
    and brightness grow with the score; the phrases come from the score's 7-class bin."""
    frac = (min(max(score, -3.0), 3.0) + 3.0) / 6.0
    lo, hi = CLASS_F0_RANGE_HZ
    return ClassCue(phrases=MOSI_PHRASES[int(np.clip(np.rint(score), -3, 3))], f0=lo * (hi / lo) ** frac,
                    energy=ENERGY_RANGE[0] + (ENERGY_RANGE[1] - ENERGY_RANGE[0]) * frac,
                    hue=20.0 + 220.0 * frac, value=0.5 + 0.4 * frac)


# Neutral material that carries no label: sentence prefixes and bodies (they contain apostrophes).
DIALOGUE_PREFIXES = ("So", "Well", "Listen", "Hey", "Um", "You know", "Look")
DIALOGUE_FILLERS = (
    "I talked to Monica about the apartment", "we're picking up the chairs tomorrow",
    "the coffee place closes at nine", "he said he'd call after work", "my cousin is coming over on Sunday",
    "the game starts at eight", "we should move the couch", "I'm going to the store later",
    "there's a package on the table", "she's at the office until five", "I put the keys in the drawer",
    "the bus was late again", "they're painting the hallway this week", "I left my jacket at Joey's place",
    "we've got two tickets for Friday", "the mail came early", "it's my turn to do the dishes",
)
MOSI_FILLERS = (
    "so i went to see this movie last weekend", "the film is about a guy and his family",
    "it came out a few months ago", "there's a scene in the middle with a car", "my friend told me about it",
    "the director also made another one", "it runs about two hours", "i watched it on a tuesday",
    "the story takes place in a small town", "they're releasing the sequel next year",
    "i'd seen the trailer before", "the main character works at a bank",
)


# =========================================================================== options and plan


@dataclass(frozen=True)
class DemoOptions:
    """Everything that shapes one demo corpus (see ``generate_demo``)."""

    seed: int
    dialogues: dict[str, int]
    turns: tuple[int, int]
    cue_mix: dict[str, float]
    frame_size: int
    fps: int
    sample_rate: int
    noise: float

    def __post_init__(self) -> None:
        lo, hi = self.turns
        if not 1 <= lo <= hi:
            raise ValueError(f"turns must be (min, max) with 1 <= min <= max, got {self.turns}")
        bad = [m for m in self.cue_mix if m not in CUE_MODES]
        if bad or any(w < 0 for w in self.cue_mix.values()) or sum(self.cue_mix.values()) <= 0:
            raise ValueError(f"cue_mix must map some of {CUE_MODES} to non-negative weights "
                             f"with a positive sum, got {self.cue_mix}")
        if self.frame_size < 16 or self.frame_size % 2:
            raise ValueError(f"frame_size must be an even number >= 16, got {self.frame_size}")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be in 1..60, got {self.fps}")
        if self.sample_rate not in (16000, 22050, 44100, 48000):
            raise ValueError(f"sample_rate must be 16000, 22050, 44100 or 48000, got {self.sample_rate}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


@dataclass(frozen=True)
class Render:
    """How one utterance's media look and sound (drawn by ``make_render``)."""

    f0: float
    energy: float
    hue: float
    saturation: float
    value: float
    seed: tuple[int, int]  # seeds the pixel / sample noise of this utterance


@dataclass
class CueRow:
    """One row of ``demo_cues.csv``."""

    split: str
    key: str
    label: str
    cue: str


@dataclass
class DemoSummary:
    """What a layout writer wrote (printed by the CLI)."""

    layout: str
    root: Path
    utterances: dict[str, int] = field(default_factory=dict)  # per split
    dialogues: dict[str, int] = field(default_factory=dict)  # per split
    files: list[str] = field(default_factory=list)  # label / text files, relative to root
    media: dict[str, int] = field(default_factory=dict)  # folder (relative) -> number of media files
    cues: list[CueRow] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        modes = Counter(r.cue for r in self.cues)
        lines = [f"{self.layout}: wrote {sum(self.utterances.values())} utterances to {self.root} "
                 f"in {self.seconds:.1f} s",
                 "  " + ", ".join(f"{s}: {n} utterances / {self.dialogues.get(s, 0)} dialogues"
                                  for s, n in self.utterances.items()),
                 "  cue modes: " + ", ".join(f"{m} {modes.get(m, 0)}" for m in CUE_MODES)]
        lines += [f"  {f}" for f in self.files + [CUES_FILE]]
        lines += [f"  {d}/ ({n} media files)" for d, n in sorted(self.media.items())]
        return "\n".join(lines)


def quota(n: int, weights: Sequence[float], rng: np.random.Generator) -> list[int]:
    """Split ``n`` items into integer counts proportional to ``weights`` (largest remainder,
    ties broken at random)."""
    w = np.asarray(weights, dtype=float)
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(int)
    rest = n - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), rng.random()))
    for i in order[:rest]:
        counts[i] += 1
    return [int(c) for c in counts]


def draw_labels(n: int, prior: dict[str, float], min_each: int, rng: np.random.Generator) -> list[str]:
    """``n`` labels: ``min_each`` of every class, the rest drawn from ``prior``, shuffled."""
    names = list(prior)
    min_each = min(min_each, n // len(names))
    p = np.array([prior[c] for c in names], dtype=float)
    counts = min_each + rng.multinomial(n - min_each * len(names), p / p.sum())
    labels = [c for c, k in zip(names, counts) for _ in range(int(k))]
    rng.shuffle(labels)
    return labels


def assign_cue_modes(labels: Sequence[str], mix: dict[str, float], rng: np.random.Generator) -> list[str]:
    """A cue mode per utterance, with ``mix`` proportions inside every class (so every class gets
    some of each mode, ``all`` first when the class is small)."""
    modes_order = sorted(mix, key=lambda m: (-mix[m], CUE_MODES.index(m)))
    out = [""] * len(labels)
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        counts = quota(len(idx), [mix[m] for m in modes_order], rng)
        modes = [m for m, k in zip(modes_order, counts) for _ in range(k)]
        rng.shuffle(modes)
        for i, m in zip(idx, modes):
            out[i] = m
    return out


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _two(rng: np.random.Generator, phrases: Sequence[str]) -> tuple[str, str]:
    i, j = rng.choice(len(phrases), size=2, replace=False)
    return phrases[int(i)], phrases[int(j)]


def dialogue_text(phrases: Sequence[str] | None, punct: str, rng: np.random.Generator) -> str:
    """A conversational line: neutral filler plus two different phrases of the class
    (``phrases=None``: filler only). Two phrases keep the cue strong under a frozen sentence encoder."""
    prefix, body = _pick(rng, DIALOGUE_PREFIXES), _pick(rng, DIALOGUE_FILLERS)
    if phrases is None:
        second = _pick(rng, [f for f in DIALOGUE_FILLERS if f != body])
        return f"{prefix}, {body}. {_cap(second)}."
    first, other = _two(rng, phrases)
    if rng.random() < 0.5:
        return f"{prefix}, {body}. {_cap(first)}{punct} {_cap(other)}{punct}"
    return f"{_cap(first)}{punct} {_cap(body)}, {other}{punct}"


def review_text(phrases: Sequence[str] | None, rng: np.random.Generator) -> str:
    """A lower-case spoken review line (MOSI style): filler plus two polarity phrases of the bin."""
    body = _pick(rng, MOSI_FILLERS)
    if phrases is None:
        return f"{body} and {_pick(rng, [f for f in MOSI_FILLERS if f != body])}"
    first, other = _two(rng, phrases)
    return f"{body} and {first} {other}" if rng.random() < 0.5 else f"{first} {body} and {other}"


def make_render(cue: ClassCue, mode: str, key: str, opts: DemoOptions, rng: np.random.Generator) -> Render:
    """Audio / video parameters of one utterance: the class cue (jittered by ``opts.noise``) in the
    modalities ``mode`` covers, a class-independent draw in the others."""
    n = opts.noise
    if mode in ("all", "audio"):
        f0 = cue.f0 * math.exp(rng.normal(0.0, 0.02 * n))
        energy = float(np.clip(cue.energy * (1.0 + rng.normal(0.0, 0.05 * n)), 0.05, 0.9))
    else:
        f0 = float(rng.uniform(*UNINFORMATIVE_F0_HZ))
        energy = float(rng.uniform(*ENERGY_RANGE))
    if mode in ("all", "video"):
        hue = (cue.hue + rng.normal(0.0, 4.0 * n)) % 360.0
        sat = float(np.clip(CUE_SATURATION + rng.normal(0.0, 0.03 * n), 0.6, 1.0))
        val = float(np.clip(cue.value + rng.normal(0.0, 0.03 * n), 0.3, 1.0))
    else:
        hue, sat, val = 0.0, 0.0, float(rng.uniform(*UNINFORMATIVE_VALUE))
    return Render(f0=float(f0), energy=energy, hue=float(hue), saturation=sat, value=val,
                  seed=(opts.seed, zlib.crc32(key.encode())))


# =========================================================================== media synthesis


def synth_voice(r: Render, n_samples: int, sample_rate: int, noise: float) -> np.ndarray:
    """A voiced tone: 4 harmonics (amplitude 1/k) on a slowly vibrating f0, a syllable-rate
    loudness envelope with 30 ms ramps, plus white background noise. float32 in [-1, 1]."""
    rng = np.random.default_rng(r.seed)
    t = np.arange(n_samples) / sample_rate
    f = r.f0 * (1.0 + 0.01 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 5)) / sum(1.0 / k for k in range(1, 5))
    env = 0.8 + 0.2 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 2 * np.pi))
    ramp = min(int(0.03 * sample_rate), n_samples // 2)
    if ramp > 0:
        env[:ramp] *= np.linspace(0.0, 1.0, ramp)
        env[n_samples - ramp:] *= np.linspace(1.0, 0.0, ramp)
    y = r.energy * tone * env + rng.normal(0.0, 0.01 * noise, n_samples)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def background_noise(n_samples: int, noise: float, seed: tuple[int, int]) -> np.ndarray:
    """The room noise between turns (float32)."""
    return np.random.default_rng(seed).normal(0.0, 0.01 * noise, n_samples).astype(np.float32)


def hsv_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """RGB (0..255 floats) of an HSV colour with ``hue`` in degrees."""
    return np.array(colorsys.hsv_to_rgb((hue % 360.0) / 360.0, sat, val)) * 255.0


def synth_frames(r: Render, n_frames: int, height: int, width: int, fps: int, noise: float) -> np.ndarray:
    """A "speaker" clip: an ellipse covering about half of the frame, drifting and pulsing, in the
    render's colour on a darker background of the same hue, plus pixel noise. [T, H, W, 3] uint8."""
    rng = np.random.default_rng(r.seed)
    phi = rng.uniform(0, 2 * np.pi)
    t = (np.arange(n_frames) / fps)[:, None, None]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2 + 0.08 * width * np.cos(2 * np.pi * 0.5 * t + phi)
    cy = height / 2 + 0.06 * height * np.sin(2 * np.pi * 0.5 * t + phi)
    rx = 0.36 * width * (1.0 + 0.04 * np.sin(2 * np.pi * 2.0 * t))
    ry = 0.42 * height
    mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0)[..., None]
    fg = hsv_rgb(r.hue, r.saturation, r.value)
    bg = hsv_rgb(r.hue, r.saturation, 0.5 * r.value)
    frames = np.where(mask, fg, bg) + rng.normal(0.0, 6.0 * noise, (n_frames, height, width, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def idle_frames(n_frames: int, height: int, width: int, noise: float, seed: tuple[int, int]) -> np.ndarray:
    """A silent listener: a still, dim grey ellipse (the same for every class). [T, H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    mask = (((xx - width / 2) / (0.34 * width)) ** 2 + ((yy - height / 2) / (0.4 * height)) ** 2 <= 1.0)[..., None]
    still = (np.where(mask, 0.3 * 255.0, 0.15 * 255.0) * np.ones(3)).astype(np.float32)
    # float32 noise, drawn in place: a whole dialog of frames per half, so this is the IEMOCAP writer's main cost
    frames = rng.standard_normal((n_frames, height, width, 3), dtype=np.float32)
    frames *= np.float32(6.0 * noise)
    frames += still[None]
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


def _mux(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int, *,
         video_codec: str, audio_codec: str) -> None:
    """Write ``frames`` ([T, H, W, 3] uint8) and mono ``audio`` (float32) with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if video_codec == "libx264":
            vs = container.add_stream("libx264", rate=fps,
                                      options={"crf": "18", "preset": "ultrafast", "threads": "1"})
        else:
            vs = container.add_stream(video_codec, rate=fps)
            vs.bit_rate = 2_000_000
            vs.codec_context.qmax = 4
        vs.height, vs.width = int(frames.shape[1]), int(frames.shape[2])
        vs.pix_fmt = "yuv420p"
        aus = container.add_stream(audio_codec, rate=sample_rate, layout="mono")
        if audio_codec == "aac":
            aus.bit_rate = 64_000
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            container.mux(vs.encode(vf))
        container.mux(vs.encode())
        if audio_codec == "aac":
            af = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="fltp", layout="mono")
        else:
            af = av.AudioFrame.from_ndarray(_int16(audio)[None, :], format="s16", layout="mono")
        af.sample_rate = sample_rate
        af.pts = 0
        container.mux(aus.encode(af))
        container.mux(aus.encode())


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """MP4: H.264 (libx264, yuv420p) video + AAC mono audio."""
    _mux(path, frames, audio, fps, sample_rate, video_codec="libx264", audio_codec="aac")


def write_avi(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """AVI: MPEG-4 Part 2 (the DivX family) video + 16-bit PCM mono audio."""
    _mux(path, frames, audio, fps, sample_rate, video_codec="mpeg4", audio_codec="pcm_s16le")


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """WAV: mono 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(_int16(audio).tobytes())


def write_clip(path: Path, r: Render, duration: float, opts: DemoOptions) -> None:
    """One single-speaker utterance clip (MELD, MOSI)."""
    n_frames = max(1, round(duration * opts.fps))
    n_samples = round(duration * opts.sample_rate)
    s = opts.frame_size
    write_mp4(path, synth_frames(r, n_frames, s, s, opts.fps, opts.noise),
              synth_voice(r, n_samples, opts.sample_rate, opts.noise), opts.fps, opts.sample_rate)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


# =========================================================================== layouts


class LayoutWriter:
    """Base of a layout writer. ``default_dialogues`` names the units a user may size with
    ``n_dialogues`` (splits, sessions or modes) and their defaults."""

    name: str = ""
    default_dialogues: dict[str, int] = {}
    default_turns: tuple[int, int] = (3, 6)
    owned: tuple[str, ...] = ()  # what it writes under root (cleared before rewriting an earlier demo)

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:  # pragma: no cover - interface
        raise NotImplementedError


LAYOUTS: Registry[type[LayoutWriter]] = Registry("demo layout")
register_layout = LAYOUTS.register


MELD_COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime")
MELD_CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
FRIENDS = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")
MOJIBAKE_APOSTROPHE = "\u2019".encode("utf-8").decode("cp1252")  # "â€™"


def _meld_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _dialogue_speakers(n: int, rng: np.random.Generator) -> list[str]:
    """Speakers of ``n`` turns: 2-3 people, each speaking first once, then no one twice in a row."""
    k = min(n, int(rng.integers(2, 4)))
    cast = [FRIENDS[i] for i in rng.choice(len(FRIENDS), size=k, replace=False)]
    out = list(cast)
    while len(out) < n:
        out.append(_pick(rng, [c for c in cast if c != out[-1]]))
    return out[:n]


@register_layout("meld")
class MeldDemo(LayoutWriter):
    """MELD.Raw: three ``*_sent_emo.csv`` files and one mp4 per utterance."""

    name = "meld"
    default_dialogues = {"train": 60, "dev": 16, "test": 24}
    default_turns = (3, 6)
    owned = (*MELD_CLIP_DIRS.values(), "train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv")

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:
        rng = np.random.default_rng(opts.seed)
        summary = DemoSummary(layout=self.name, root=root)
        for split in ("train", "dev", "test"):
            n_dia = opts.dialogues[split]
            ids = list(range(n_dia))
            if split == "train" and n_dia >= 2:  # the real train split skips a dialogue number
                gap = n_dia // 2
                ids = [i for i in range(n_dia + 1) if i != gap]
            sizes = [int(rng.integers(opts.turns[0], opts.turns[1] + 1)) for _ in ids]
            labels = draw_labels(sum(sizes), MELD_PRIOR, 3, rng)
            modes = assign_cue_modes(labels, opts.cue_mix, rng)
            clip_dir = root / MELD_CLIP_DIRS[split]
            rows: list[list[object]] = []
            texts: list[str] = []
            k = 0
            for dia, size in zip(ids, sizes):
                season, episode = int(rng.integers(1, 10)), int(rng.integers(1, 25))
                clock = float(rng.uniform(30.0, 1200.0))
                for utt, speaker in enumerate(_dialogue_speakers(size, rng)):
                    label, mode = labels[k], modes[k]
                    k += 1
                    cue = MELD_CUES[label]
                    key = f"dia{dia}_utt{utt}"
                    texts.append(dialogue_text(cue.phrases if mode in ("all", "text") else None, cue.punct, rng))
                    duration = int(rng.integers(opts.fps, 2 * opts.fps + 1)) / opts.fps
                    render = make_render(cue, mode, f"{split}/{key}", opts, rng)
                    write_clip(clip_dir / f"{key}.mp4", render, duration, opts)
                    rows.append([len(rows) + 1, None, speaker, label, MELD_SENTIMENT[label], dia, utt,
                                 season, episode, _meld_time(clock), _meld_time(clock + duration)])
                    clock += duration + float(rng.uniform(0.1, 1.2))
                    summary.cues.append(CueRow(split, key, label, mode))
            if split == "train":  # a few apostrophes written as mojibake, like the real train CSV
                with_apostrophe = [i for i, t in enumerate(texts) if "'" in t]
                for i in with_apostrophe[:3]:
                    texts[i] = texts[i].replace("'", MOJIBAKE_APOSTROPHE)
            for row, text in zip(rows, texts):
                row[1] = text
            _write_csv(root / f"{split}_sent_emo.csv", MELD_COLUMNS, rows)
            summary.files.append(f"{split}_sent_emo.csv")
            summary.media[MELD_CLIP_DIRS[split]] = len(rows)
            summary.utterances[split] = len(rows)
            summary.dialogues[split] = len(ids)
        return summary


def _iemocap_dialog_name(session: int, index: int) -> str:
    """``Ses01F_impro01``, ``Ses01M_script01_1``, ...: the recording letter alternates."""
    letter = "F" if (session + index) % 2 == 1 else "M"
    if index % 2 == 0:
        return f"Ses{session:02d}{letter}_impro{index // 2 + 1:02d}"
    return f"Ses{session:02d}{letter}_script{index // 2 + 1:02d}_1"


@register_layout("iemocap")
class IemocapDemo(LayoutWriter):
    """IEMOCAP full release: per-dialog EmoEvaluation / transcription files, per-turn wavs and one
    two-speaker avi per dialog. Each dialog also has one ``xxx`` or ``oth`` turn (dropped by readers).

    The default size (25 dialogs of 8-12 labelled turns, ~250 utterances: ~160 train, ~45 dev, ~50 test
    = Session5) is what the six classes need to be learnable on the offline features (CMATH and SUMMER
    reach a test accuracy of ~0.7 on it); it is written in ~6-12 s on 2 cores."""

    name = "iemocap"
    default_dialogues = {"Session1": 5, "Session2": 5, "Session3": 5, "Session4": 5, "Session5": 5}
    default_turns = (8, 12)
    owned = tuple(f"Session{i}" for i in range(1, 6))

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:
        rng = np.random.default_rng(opts.seed)
        summary = DemoSummary(layout=self.name, root=root)
        plan: list[tuple[str, list[int], list[str]]] = []  # session, dialog sizes, labels
        for session_name, n_dialogs in opts.dialogues.items():
            sizes = [int(rng.integers(opts.turns[0], opts.turns[1] + 1)) for _ in range(n_dialogs)]
            plan.append((session_name, sizes, draw_labels(sum(sizes), IEMOCAP_PRIOR, 2, rng)))
        # cue modes are shared out over the whole corpus, so small sessions keep the configured mix
        all_modes = assign_cue_modes([lab for _, _, labels in plan for lab in labels], opts.cue_mix, rng)
        k = 0
        for session_name, sizes, labels in plan:
            session = int(session_name.removeprefix("Session"))
            for index, size in enumerate(sizes):
                dialog = _iemocap_dialog_name(session, index)
                start = sum(sizes[:index])
                codes, cue_modes = labels[start:start + size], all_modes[k:k + size]
                k += size
                slot = int(rng.integers(0, size + 1))  # where the unlabelled turn goes
                codes.insert(slot, "xxx" if index % 2 == 0 else "oth")
                cue_modes.insert(slot, "")
                self._write_dialog(root / session_name, dialog, codes, cue_modes, opts, rng, summary)
            summary.utterances[session_name] = sum(sizes)
            summary.dialogues[session_name] = len(sizes)
        return summary

    def _write_dialog(self, session_dir: Path, dialog: str, codes: list[str], cue_modes: list[str],
                      opts: DemoOptions, rng: np.random.Generator, summary: DemoSummary) -> None:
        sr, fps, s = opts.sample_rate, opts.fps, opts.frame_size
        left_letter = dialog[5]  # "F" of "Ses01F_..."
        first = "F" if rng.random() < 0.5 else "M"
        counters = {"F": 0, "M": 0}
        # name, code, start, end, text, mode, render
        turns: list[tuple[str, str, float, float, str, str, Render]] = []
        clock = float(rng.uniform(1.5, 3.0))
        for i, (code, mode) in enumerate(zip(codes, cue_modes)):
            letter = first if i % 2 == 0 else ("M" if first == "F" else "F")
            name = f"{dialog}_{letter}{counters[letter]:03d}"
            counters[letter] += 1
            start = round(clock, 4)
            end = round(start + float(rng.uniform(1.0, 2.0)), 4)
            clock = end + float(rng.uniform(0.3, 0.9))
            if code in IEMOCAP_CUES:
                cue = IEMOCAP_CUES[code]
                text = dialogue_text(cue.phrases if mode in ("all", "text") else None, cue.punct, rng)
                render = make_render(cue, mode, name, opts, rng)
                summary.cues.append(CueRow(session_dir.name, name, code, mode))
            else:  # an unlabelled turn: no cue anywhere
                text = dialogue_text(None, ".", rng)
                render = make_render(IEMOCAP_CUES["neu"], "text", name, opts, rng)
            turns.append((name, code, start, end, text, mode, render))
        total = clock + 1.0

        # the dialog's sound track and video; the sentence wavs are cut from the sound track
        audio = background_noise(round(total * sr), opts.noise, (opts.seed, zlib.crc32(dialog.encode())))
        n_frames = int(math.ceil(total * fps))
        left = idle_frames(n_frames, s, s, opts.noise, (opts.seed, zlib.crc32((dialog + "/L").encode())))
        right = idle_frames(n_frames, s, s, opts.noise, (opts.seed, zlib.crc32((dialog + "/R").encode())))
        wav_dir = session_dir / "sentences" / "wav" / dialog
        for name, _, start, end, _, _, render in turns:
            a, b = round(start * sr), round(end * sr)
            audio[a:b] = synth_voice(render, b - a, sr, opts.noise)
            write_wav(wav_dir / f"{name}.wav", audio[a:b], sr)
            f_a, f_b = int(math.ceil(start * fps)), min(n_frames, int(math.ceil(end * fps)))
            if f_b > f_a:
                half = left if name.rsplit("_", 1)[1][0] == left_letter else right
                half[f_a:f_b] = synth_frames(render, f_b - f_a, s, s, fps, opts.noise)
        write_avi(session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi",
                  np.concatenate([left, right], axis=2), audio, fps, sr)

        evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcription = []
        for name, code, start, end, text, _, _ in turns:
            v, a_, d = (x + float(rng.choice([-0.5, 0.0, 0.5])) for x in IEMOCAP_VAD[code])
            evaluation.append(f"[{start:.4f} - {end:.4f}]\t{name}\t{code}\t[{v:.4f}, {a_:.4f}, {d:.4f}]")
            second = "Frustration" if code == "xxx" else IEMOCAP_WORD[code]
            evaluation += [f"C-E2:\t{IEMOCAP_WORD[code]};\t()", f"C-E3:\t{second};\t()",
                           f"A-E3:\tval {round(v)}; act {round(a_)}; dom  {round(d)};\t()", ""]
            transcription.append(f"{name} [{start:08.4f}-{end:08.4f}]: {text}")
        for sub, lines in (("EmoEvaluation", evaluation), ("transcriptions", transcription)):
            path = session_dir / "dialog" / sub / f"{dialog}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            summary.files.append(str(path.relative_to(session_dir.parent)))
        summary.media[str(wav_dir.relative_to(session_dir.parent))] = len(turns)
        avi_dir = str((session_dir / "dialog" / "avi" / "DivX").relative_to(session_dir.parent))
        summary.media[avi_dir] = summary.media.get(avi_dir, 0) + 1


MOSI_COLUMNS = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode")
MOSI_BIN_PRIOR = {str(b): w for b, w in zip(range(-3, 4), (0.10, 0.16, 0.17, 0.12, 0.17, 0.16, 0.12))}
_YOUTUBE_ID = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@register_layout("mosi")
class MosiDemo(LayoutWriter):
    """CMU-MOSI in the MMSA layout: ``label.csv`` and ``Raw/<video_id>/<clip_id>.mp4``.
    ``n_dialogues`` counts videos per mode (one speaker per video).

    The default size (~300 clips: ~160 train, ~40 valid, ~100 test) is what regression needs to be
    learnable on the offline features (DMD reaches a test MAE of ~0.5 on it) and leaves ~40 test clips
    per "cue in another modality" group for the end-to-end fusion test; it is written in ~7 s."""

    name = "mosi"
    default_dialogues = {"train": 26, "valid": 6, "test": 16}
    default_turns = (4, 8)
    owned = ("Raw", "label.csv")

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:
        rng = np.random.default_rng(opts.seed)
        summary = DemoSummary(layout=self.name, root=root)
        rows: list[list[object]] = []
        used: set[str] = set()
        for mode_name, n_videos in opts.dialogues.items():
            sizes = [int(rng.integers(opts.turns[0], opts.turns[1] + 1)) for _ in range(n_videos)]
            bins = draw_labels(sum(sizes), MOSI_BIN_PRIOR, 1, rng)
            modes = assign_cue_modes(bins, opts.cue_mix, rng)
            k = 0
            for size in sizes:
                video_id = ""
                while not video_id or video_id in used:
                    video_id = "".join(_YOUTUBE_ID[int(i)] for i in rng.integers(0, len(_YOUTUBE_ID), 11))
                used.add(video_id)
                for clip_id in range(1, size + 1):
                    offset = float(rng.choice([-0.4, -0.2, 0.0, 0.2, 0.4]))
                    score = round(min(max(int(bins[k]) + offset, -3.0), 3.0) * 5) / 5 + 0.0  # 0.2 steps
                    mode = modes[k]
                    k += 1
                    cue = mosi_cue(score)
                    key = f"{video_id}_{clip_id}"
                    text = review_text(cue.phrases if mode in ("all", "text") else None, rng)
                    duration = int(rng.integers(opts.fps, 2 * opts.fps + 1)) / opts.fps
                    write_clip(root / "Raw" / video_id / f"{clip_id}.mp4", make_render(cue, mode, key, opts, rng),
                               duration, opts)
                    annotation = "Positive" if score > 0 else "Negative" if score < 0 else "Neutral"
                    rows.append([video_id, clip_id, text, f"{score:.1f}", "", "", "", annotation, mode_name])
                    summary.cues.append(CueRow(mode_name, key, f"{score:.1f}", mode))
                summary.media[f"Raw/{video_id}"] = size
            summary.utterances[mode_name] = sum(sizes)
            summary.dialogues[mode_name] = n_videos
        _write_csv(root / "label.csv", MOSI_COLUMNS, rows)
        summary.files.append("label.csv")
        return summary


# --------------------------------------------------------------------------- MUStARD and UR-FUNNY

SARCASM_PHRASES: dict[str, tuple[str, ...]] = {
    "sarcastic": ("oh great, just what I needed", "wow, what a brilliant idea", "yeah, because that always works",
                  "oh sure, I totally believe you", "thanks a lot, that was so helpful",
                  "well, is that not just perfect"),
    "not_sarcastic": ("I think that is a good plan", "thank you, I really mean it", "that sounds nice to me",
                      "okay, I will help you with that", "I agree with you on this", "let us do it that way"),
}
SARCASM_PRIOR = {"not_sarcastic": 0.5, "sarcastic": 0.5}
SARCASM_CUES = cue_table(hue_order=("sarcastic", "not_sarcastic"), f0_order=("not_sarcastic", "sarcastic"),
                         energy_order=("not_sarcastic", "sarcastic"), phrases=SARCASM_PHRASES)
MUSTARD_CASTS: dict[str, tuple[str, ...]] = {
    "BBT": ("SHELDON", "LEONARD", "PENNY", "HOWARD", "RAJ", "AMY", "BERNADETTE"),
    "FRIENDS": ("CHANDLER", "JOEY", "MONICA", "PHOEBE", "RACHEL", "ROSS"),
    "GOLDENGIRLS": ("DOROTHY", "ROSE", "BLANCHE", "SOPHIA"),
    "SARCASMOHOLICS": ("HOST", "DAVE", "NANCY", "PETER"),
}
MUSTARD_SHOW_PREFIX = {"FRIENDS": "1", "BBT": "2", "GOLDENGIRLS": "3", "SARCASMOHOLICS": "4"}

HUMOR_PHRASES: dict[str, tuple[str, ...]] = {
    "humorous": ("and that is when my cat took over the company", "so my mother said, just buy a bigger fridge",
                 "and then the robot asked me out for dinner", "which is why I no longer babysit goats",
                 "and then the dog filed my taxes", "turns out the penguin was the manager"),
    "not_humorous": ("and this is what the data shows", "so we measured it again the next year",
                     "the results were published last spring", "this is how the system works today",
                     "we collected samples from twelve countries", "and that changed how we think about energy"),
}
HUMOR_PRIOR = {"not_humorous": 0.5, "humorous": 0.5}
HUMOR_CUES = cue_table(hue_order=("humorous", "not_humorous"), f0_order=("not_humorous", "humorous"),
                       energy_order=("not_humorous", "humorous"), phrases=HUMOR_PHRASES)
TALK_FILLERS = (
    "so I want to tell you about my research", "when I started working on this problem",
    "we spent three years in the lab", "let me show you a picture", "this is a map of the city",
    "most of us use a phone every day", "I grew up in a small town", "here is a question I get a lot",
    "a few years ago I met a farmer", "the first prototype was made of cardboard",
    "we asked a thousand people the same question", "imagine you are standing on a bridge",
)


def talk_text(phrases: Sequence[str] | None, rng: np.random.Generator) -> str:
    """A TED-style sentence: a filler clause plus two phrases of the class (``None``: fillers only)."""
    body = _pick(rng, TALK_FILLERS)
    if phrases is None:
        return f"{_cap(body)}, and {_pick(rng, [f for f in TALK_FILLERS if f != body])}."
    first, other = _two(rng, phrases)
    return f"{_cap(body)}, {first}. {_cap(other)}."


def _unique_numbers(n: int, low: int, high: int, rng: np.random.Generator) -> list[int]:
    return [int(x) for x in rng.choice(np.arange(low, high), size=n, replace=False)]


@register_layout("mustard")
class MustardDemo(LayoutWriter):
    """MUStARD: ``sarcasm_data.json``, one target clip and one context clip per id.
    ``n_dialogues`` counts targets per show; every target is its own dialogue."""

    name = "mustard"
    default_dialogues = {"BBT": 20, "FRIENDS": 14, "GOLDENGIRLS": 8, "SARCASMOHOLICS": 6}
    default_turns = (2, 5)
    owned = ("videos", "sarcasm_data.json")

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:
        rng = np.random.default_rng(opts.seed)
        summary = DemoSummary(layout=self.name, root=root)
        plan: list[tuple[str, str]] = []  # (show, label) per target
        for show, n in opts.dialogues.items():
            plan += [(show, label) for label in draw_labels(n, SARCASM_PRIOR, 2, rng)]
        modes = assign_cue_modes([label for _, label in plan], opts.cue_mix, rng)
        numbers = _unique_numbers(len(plan), 10, 10 * len(plan) + 1000, rng)
        entries: list[tuple[str, dict[str, object]]] = []
        for (show, label), mode, number in zip(plan, modes, numbers):
            uid = f"{MUSTARD_SHOW_PREFIX[show]}_{number}"
            cue = SARCASM_CUES[label]
            n_turns = int(rng.integers(opts.turns[0], opts.turns[1] + 1))
            cast = MUSTARD_CASTS[show]
            speakers = self._speakers(n_turns, cast, rng)
            context = [dialogue_text(None, ".", rng) for _ in range(n_turns - 1)]
            text = dialogue_text(cue.phrases if mode in ("all", "text") else None, cue.punct, rng)
            duration = int(rng.integers(opts.fps, 2 * opts.fps + 1)) / opts.fps
            write_clip(root / "videos" / "utterances_final" / f"{uid}.mp4",
                       make_render(cue, mode, uid, opts, rng), duration, opts)
            if context:  # one cue-less clip for all context turns, as in the release
                write_clip(root / "videos" / "context_final" / f"{uid}_c.mp4",
                           make_render(cue, "text", f"{uid}_c", opts, rng), min(3.0, 0.6 * len(context)), opts)
            entries.append((uid, {"utterance": text, "speaker": speakers[-1], "context": context,
                                  "context_speakers": speakers[:-1], "show": show,
                                  "sarcasm": label == "sarcastic"}))
            summary.cues.append(CueRow(show, uid, label, mode))
        order = rng.permutation(len(entries))  # the real file does not group ids by show
        data = {entries[int(i)][0]: entries[int(i)][1] for i in order}
        (root / "sarcasm_data.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        summary.files.append("sarcasm_data.json")
        for show, n in opts.dialogues.items():
            summary.utterances[show] = n
            summary.dialogues[show] = n
        summary.media["videos/utterances_final"] = len(entries)
        summary.media["videos/context_final"] = sum(1 for _, e in entries if e["context"])
        return summary

    @staticmethod
    def _speakers(n: int, cast: Sequence[str], rng: np.random.Generator) -> list[str]:
        """Speakers of ``n`` turns from ``cast``: 2-3 people, no one twice in a row."""
        k = min(len(cast), int(rng.integers(2, 4)))
        people = [cast[int(i)] for i in rng.choice(len(cast), size=k, replace=False)]
        out = [people[0]]
        while len(out) < n:
            out.append(_pick(rng, [p for p in people if p != out[-1]]))
        return out[:n]


@register_layout("urfunny")
class UrFunnyDemo(LayoutWriter):
    """UR-FUNNY v2: three pickles of plain dicts and one punchline clip per id.
    ``n_dialogues`` counts punchlines per fold; every punchline is its own dialogue."""

    name = "urfunny"
    default_dialogues = {"train": 30, "dev": 8, "test": 10}
    default_turns = (2, 5)
    owned = ("urfunny2_videos", "data_folds.pkl", "language_sdk.pkl", "humor_label_sdk.pkl")

    def write(self, root: Path, opts: DemoOptions) -> DemoSummary:
        rng = np.random.default_rng(opts.seed)
        summary = DemoSummary(layout=self.name, root=root)
        ids = iter(_unique_numbers(sum(opts.dialogues.values()), 1, 20000, rng))
        folds: dict[str, list[int]] = {}
        language: dict[int, dict[str, object]] = {}
        labels: dict[int, int] = {}
        for fold, n in opts.dialogues.items():
            fold_labels = draw_labels(n, HUMOR_PRIOR, 2, rng)
            modes = assign_cue_modes(fold_labels, opts.cue_mix, rng)
            folds[fold] = []
            for label, mode in zip(fold_labels, modes):
                uid = next(ids)
                cue = HUMOR_CUES[label]
                n_turns = int(rng.integers(opts.turns[0], opts.turns[1] + 1))
                language[uid] = {"punchline_sentence": talk_text(cue.phrases if mode in ("all", "text") else None, rng),
                                 "context_sentences": [talk_text(None, rng) for _ in range(n_turns - 1)]}
                labels[uid] = int(label == "humorous")
                folds[fold].append(uid)
                duration = int(rng.integers(opts.fps, 2 * opts.fps + 1)) / opts.fps
                write_clip(root / "urfunny2_videos" / f"{uid}.mp4", make_render(cue, mode, str(uid), opts, rng),
                           duration, opts)
                summary.cues.append(CueRow(fold, str(uid), label, mode))
            summary.utterances[fold] = n
            summary.dialogues[fold] = n
        for name, obj in (("data_folds.pkl", folds), ("language_sdk.pkl", language), ("humor_label_sdk.pkl", labels)):
            with (root / name).open("wb") as f:
                pickle.dump(obj, f, protocol=2)
            summary.files.append(name)
        summary.media["urfunny2_videos"] = len(labels)
        return summary


# =========================================================================== entry points


def write_demo(root: str | Path, layout: str = "meld", *, seed: int = 0,
               n_dialogues: dict[str, int] | None = None, turns: tuple[int, int] | None = None,
               cue_mix: dict[str, float] | None = None,
               frame_size: int = 96, fps: int = 10, sample_rate: int = 16000, noise: float = 1.0) -> DemoSummary:
    """``generate_demo``, returning the ``DemoSummary`` of what was written."""
    writer = LAYOUTS.get(layout)
    unknown = sorted(set(n_dialogues or {}) - set(writer.default_dialogues))
    if unknown:
        raise ValueError(f"n_dialogues for layout {layout!r} has unknown keys {unknown}; "
                         f"known: {', '.join(writer.default_dialogues)}")
    dialogues = {**writer.default_dialogues, **(n_dialogues or {})}
    bad = {k: v for k, v in dialogues.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"n_dialogues must be positive integers, got {bad}")
    lo, hi = turns or writer.default_turns
    opts = DemoOptions(seed=seed, dialogues=dialogues, turns=(int(lo), int(hi)),
                       cue_mix=dict(cue_mix or DEFAULT_CUE_MIX), frame_size=frame_size, fps=fps,
                       sample_rate=sample_rate, noise=noise)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / CUES_FILE).is_file():  # an earlier demo: clear what this layout writes, so no stale clip stays
        for rel in writer.owned:
            target = root / rel
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    started = time.perf_counter()
    summary = writer().write(root, opts)
    _write_csv(root / CUES_FILE, CUES_COLUMNS, [[r.split, r.key, r.label, r.cue] for r in summary.cues])
    summary.seconds = time.perf_counter() - started
    return summary


def generate_demo(root: str | Path, layout: str = "meld", *, seed: int = 0,
                  n_dialogues: dict[str, int] | None = None, turns: tuple[int, int] | None = None,
                  cue_mix: dict[str, float] | None = None,
                  frame_size: int = 96, fps: int = 10, sample_rate: int = 16000, noise: float = 1.0) -> Path:
    """Write a demo corpus in ``layout``'s real release layout under ``root`` and return ``root``.

    Args:
        layout: a registered layout (``LAYOUTS.names()``: iemocap, meld, mosi, mustard, urfunny).
        seed: everything (labels, texts, media noise) follows from it.
        n_dialogues: overrides of the layout's sizes: dialogues per split for MELD
            (train/dev/test), dialogs per session for IEMOCAP (Session1..Session5), videos per mode
            for MOSI (train/valid/test), targets per show for MUStARD (BBT/FRIENDS/GOLDENGIRLS/
            SARCASMOHOLICS), punchlines per fold for UR-FUNNY (train/dev/test). Keys not given keep
            their default.
        turns: (min, max) utterances per dialogue / clips per video (default per layout); for
            MUStARD / UR-FUNNY the scored utterance plus its context turns.
        cue_mix: share of each cue mode (``all``/``text``/``audio``/``video``), default 40/20/20/20.
        frame_size: height and width of one speaker's frame (IEMOCAP frames are twice as wide).
        fps: video frame rate. sample_rate: audio rate of every file (AAC, PCM).
        noise: scales every jitter and noise level (0 = clean cues).
    When ``root`` holds an earlier demo (it has ``demo_cues.csv``), the files and folders this
    layout writes are removed first; nothing else in ``root`` is touched.
    """
    return write_demo(root, layout, seed=seed, n_dialogues=n_dialogues, turns=turns, cue_mix=cue_mix,
                      frame_size=frame_size, fps=fps, sample_rate=sample_rate, noise=noise).root


def read_cues(root: str | Path) -> list[CueRow]:
    """The rows of ``<root>/demo_cues.csv`` (to score utterances by where their cue is)."""
    path = Path(root) / CUES_FILE
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CUES_COLUMNS:
            raise ValueError(f"{path}:1: expected columns {','.join(CUES_COLUMNS)}, got {reader.fieldnames}")
        return [CueRow(r["split"], r["key"], r["label"], r["cue"]) for r in reader]


def _key_value(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not value.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected KEY=N, got {text!r}")
    return key.strip(), int(value)


def _cue_mix(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected MODE=WEIGHT[,MODE=WEIGHT...], got {text!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected MODE=WEIGHT[,MODE=WEIGHT...], got {text!r}")
    return out


def cli(argv: list[str] | None = None) -> int:
    """``python -m pipeline demo-data`` / ``python -m pipeline.corpora.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline demo-data",
        description="Write synthetic demo corpora in the real MELD / IEMOCAP / MOSI / MUStARD / UR-FUNNY "
                    "release layouts, "
                    "with a learnable cue per modality (see pipeline/corpora/demo.py).")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder; with --layout all (default) each layout goes to OUT/<layout>")
    parser.add_argument("--layout", default="all", choices=["all", *LAYOUTS.names()],
                        help="which layout to write (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--dialogues", type=_key_value, action="append", default=[], metavar="KEY=N",
                        help="size override, repeatable: MELD train=/dev=/test=, IEMOCAP Session1=..., "
                             "MOSI train=/valid=/test= (videos), MUStARD BBT=/FRIENDS=/GOLDENGIRLS=/"
                             "SARCASMOHOLICS= (targets), UR-FUNNY train=/dev=/test= (punchlines)")
    parser.add_argument("--cue-mix", type=_cue_mix, default=None, metavar="all=0.4,text=0.2,...",
                        help="share of each cue mode (default all=0.4,text=0.2,audio=0.2,video=0.2)")
    parser.add_argument("--noise", type=float, default=1.0, help="scale of all jitter and noise (default 1)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: is a file; give a folder (it is created if missing)")
    layouts = LAYOUTS.names() if args.layout == "all" else [args.layout]
    sizes = dict(args.dialogues)
    known = {k for layout in layouts for k in LAYOUTS.get(layout).default_dialogues}
    if set(sizes) - known:
        parser.error(f"--dialogues: unknown keys {sorted(set(sizes) - known)} for layout(s) "
                     f"{', '.join(layouts)}; known: {', '.join(sorted(known))}")
    for layout in layouts:
        root = args.out / layout if args.layout == "all" else args.out
        own = {k: v for k, v in sizes.items() if k in LAYOUTS.get(layout).default_dialogues}
        try:
            summary = write_demo(root, layout, seed=args.seed, n_dialogues=own, cue_mix=args.cue_mix,
                                 noise=args.noise)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(summary.describe())
    return 0

if __name__ == "__main__":
    sys.exit(cli())
