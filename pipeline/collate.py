"""Cached split -> batches of tensors for a method's feature roles.

One ``SplitDataset`` subclass per method granularity, chosen by name from ``GRANULARITIES``:

* ``utterance`` -- one item per labelled utterance: ``<role>`` [B, D], ``label`` [B] long
  (regression: ``score`` [B] float + ``label_mask`` [B] bool).
* ``dialogue`` -- one item per dialogue (rows grouped by ``dialogue_id``, ordered by ``position``),
  padded to the longest dialogue of the batch: ``<role>`` [B, L, D], ``mask`` [B, L] bool,
  ``speaker`` [B, L] long (index of the speaker by first appearance in its dialogue), ``label``
  [B, L] with -100 on padding and unlabelled turns (regression: ``score`` + ``label_mask``).
* ``sequence`` -- one item per labelled utterance with the ``<col>.seq`` frame sequences turned into at
  most ``max_len`` steps by the role's step policy (``SEQ_POLICIES``, config ``train.seq_policy``:
  ``uniform`` pools the whole utterance into T steps (default), ``words`` one step per word where the
  cache has word timings, ``truncate`` keeps the first T frames, on request, counted in ``coverage``),
  padded per batch to the longest: ``<role>`` [B, T, D], ``<role>_mask`` [B, T] bool, ``<role>_len`` [B] long.

Rows with a ``<col>.missing`` flag get zero features and ``<role>_missing`` [B] (dialogue: [B, L]).
Unlabelled rows (label -1, score nan) are dropped at utterance and sequence granularity and kept
as context with label -100 in dialogues.

``prepare_data(config, cache)`` checks the config against the method (roles, task, label set) and builds
the three split datasets.

Features are read once per split with ``Dataset.with_format("numpy")`` column slices and kept as
tensors; a batch is a fancy-index into them (the dataset's items are just indices). That holds the
whole split in RAM, which is fine for MELD / IEMOCAP / MOSI / MOSEI (a few hundred MB at most). For a
corpus that does not fit, replace ``_read_columns`` by a per-batch ``split.select(indices)`` read
(``with_format("numpy")`` on the Arrow memory map) inside ``collate``: the batch layout stays the same.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.base import ROW_UID  # noqa: F401  (re-exported: the batch key)
from pipeline.registry import Registry

IGNORE_INDEX = -100
SPLITS = ("train", "dev", "test")
GRANULARITIES: Registry[type["SplitDataset"]] = Registry("granularity")


def label_column(label_set: str) -> str:
    """Cache column of a label set: ``primary`` -> ``label``, ``<set>`` -> ``label.<set>``."""
    return "label" if label_set == "primary" else f"label.{label_set}"


class SplitDataset(Dataset):
    """Base: reads the columns of one split; items are indices, ``collate`` builds the batch.

    ``features`` maps role -> cache column; ``task`` is "classification" or "regression";
    ``label_column`` is the class-index column (ignored for regression); ``source`` names the cache
    and split in error messages.
    """

    SUPPORTS_INPUTS = False  # can serve decoded encoder inputs (``inputs``) for roles an encoder is trained on

    def __init__(self, *, split: Any, features: dict[str, str], task: str, label_column: str = "label",
                 max_len: int | None = None, seq_policy: Any = None, source: str = "cache",
                 inputs: dict[str, tuple[str, Any, Any]] | None = None) -> None:
        """``inputs``: role -> (column, ``pipeline.inputs.InputStore``, encoder) for the roles a method feeds
        as DECODED INPUTS to an encoder it trains (``Method.input_roles``); those roles are then not read as
        feature vectors, and the batch carries ``<role>.<key>`` = the encoder's ``collate`` of the rows and
        ``row_uid``: an id per row unique to this dataset object (a random 31-bit base << 32 + the row), so a
        method may remember what a frozen encoder computed for a row (``ROW_UID``)."""
        inputs = dict(inputs or {})
        if inputs and not self.SUPPORTS_INPUTS:
            raise ValueError(f"{source}: {type(self).__name__} cannot feed decoded encoder inputs "
                             f"(roles {sorted(inputs)}); only utterance granularity can")
        features = {r: c for r, c in features.items() if r not in inputs}
        if not features and not inputs:
            raise ValueError(f"{source}: no feature roles given (config `features:` is empty)")
        self.features = dict(features)
        self.task = task
        self.max_len = max_len
        self.seq_policy = seq_policy  # sequence granularity only: see SEQ_POLICIES
        self.source = source
        self.regression = task == "regression"
        self._columns = set(split.column_names)
        target = "score" if self.regression else label_column
        self._require(target, what="label column")
        cols = self._read_columns(split, [target, "dialogue_id", "position", "speaker"])
        n = len(split)
        if self.regression:
            self.score = torch.from_numpy(np.nan_to_num(cols["score"].astype(np.float32), nan=0.0))
            self.labelled = torch.from_numpy(~np.isnan(cols["score"].astype(np.float64)))
        else:
            labels = cols[label_column].astype(np.int64)
            self.labelled = torch.from_numpy(labels >= 0)
            self.label = torch.from_numpy(np.where(labels >= 0, labels, IGNORE_INDEX))
        self.dialogue_id = [str(d) for d in cols["dialogue_id"]]
        self.position = cols["position"].astype(np.int64)
        self.speaker_name = [str(s) for s in cols["speaker"]]
        self.missing = {role: self._missing(split, col, n) for role, col in self.features.items()}
        self.inputs: dict[str, tuple[Any, Any]] = {}  # role -> (store, encoder)
        self.uid_base = (secrets.randbits(31) + 1) << 32  # not torch's RNG: seeded runs stay the same
        self.input_keys: dict[str, list[str]] = {}
        for role, (col, store, encoder) in inputs.items():
            from pipeline.inputs import KEY_SUFFIX, MISSING_SUFFIX

            key_col = f"{col}{KEY_SUFFIX}"
            self._require(key_col, what="decoded-inputs column (run `features --inputs ...`)")
            cols = self._read_columns(split, [key_col, f"{col}{MISSING_SUFFIX}"])
            self.input_keys[role] = [str(k) for k in cols[key_col]]
            self.missing[role] = torch.from_numpy(cols[f"{col}{MISSING_SUFFIX}"].astype(bool))
            self.inputs[role] = (store, encoder)
        self._load_features(split)

    # -- reading -------------------------------------------------------------------------------
    def _require(self, column: str, what: str = "feature column") -> None:
        if column not in self._columns:
            have = ", ".join(sorted(c for c in self._columns if "." in c or c.startswith("label"))) or "(none)"
            raise KeyError(f"{self.source}: no {what} {column!r}; it has: {have}")

    def _read_columns(self, split: Any, columns: Sequence[str]) -> dict[str, np.ndarray]:
        for c in columns:
            self._require(c)
        return split.with_format("numpy", columns=list(columns))[:]

    def _missing(self, split: Any, column: str, n: int) -> torch.Tensor:
        flag = f"{column}.missing"
        if flag not in self._columns:
            return torch.zeros(n, dtype=torch.bool)
        return torch.from_numpy(self._read_columns(split, [flag])[flag].astype(bool))

    def _load_features(self, split: Any) -> None:
        """Read every role's vectors into ``self.vectors`` [N, D] (zeros where missing)."""
        self.vectors: dict[str, torch.Tensor] = {}
        for role, col in self.features.items():
            arr = np.asarray(self._read_columns(split, [col])[col], dtype=np.float32)
            if arr.ndim != 2:
                raise ValueError(f"{self.source}: column {col!r} is not a fixed-size vector column "
                                 f"(got shape {arr.shape})")
            vec = torch.from_numpy(np.ascontiguousarray(arr))
            vec[self.missing[role]] = 0.0
            self.vectors[role] = vec

    def input_dims(self) -> dict[str, int]:
        """Feature size per role (what a method's ``input_dims`` receives; an input role: its encoder's dim)."""
        dims = {role: int(vec.shape[1]) for role, vec in self.vectors.items()}
        dims.update({role: int(encoder.dim) for role, (_, encoder) in self.inputs.items()})
        return dims

    def _decoded(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """``<role>.<key>`` tensors of the decoded-input roles for ``rows`` (blank input where missing)."""
        out: dict[str, torch.Tensor] = {}
        for role, (store, encoder) in self.inputs.items():
            keys, missing = self.input_keys[role], self.missing[role]
            samples = [encoder.blank_sample() if bool(missing[r]) else encoder.sample_from_array(store.get(keys[r]))
                       for r in rows.tolist()]
            out.update({f"{role}.{k}": v for k, v in encoder.collate(samples).items()})
        return out

    # -- torch Dataset ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> int:
        return index

    @property
    def items(self) -> Sequence[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def _targets(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.regression:
            return {"score": self.score[rows], "label_mask": self.labelled[rows]}
        return {"label": self.label[rows]}


@GRANULARITIES.register("utterance")
class UtteranceDataset(SplitDataset):
    """One item per labelled utterance."""

    SUPPORTS_INPUTS = True

    def _load_features(self, split: Any) -> None:
        super()._load_features(split)
        self.rows = torch.nonzero(self.labelled, as_tuple=False).flatten()

    @property
    def items(self) -> torch.Tensor:
        return self.rows

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[torch.as_tensor(indices, dtype=torch.long)]
        batch = {role: vec[rows] for role, vec in self.vectors.items()}
        if self.inputs:
            batch.update(self._decoded(rows))
            batch[ROW_UID] = self.uid_base + rows
        batch.update({f"{role}_missing": m[rows] for role, m in self.missing.items()})
        batch.update(self._targets(rows))
        return batch


@GRANULARITIES.register("dialogue")
class DialogueDataset(SplitDataset):
    """One item per dialogue, utterances in position order."""

    def _load_features(self, split: Any) -> None:
        super()._load_features(split)
        groups: dict[str, list[int]] = {}
        for row, dialogue in enumerate(self.dialogue_id):
            groups.setdefault(dialogue, []).append(row)
        self.dialogues: list[torch.Tensor] = []
        speaker = np.zeros(len(self.dialogue_id), dtype=np.int64)
        for rows in groups.values():
            rows.sort(key=lambda r: self.position[r])
            seen: dict[str, int] = {}
            for r in rows:
                speaker[r] = seen.setdefault(self.speaker_name[r], len(seen))
            self.dialogues.append(torch.tensor(rows, dtype=torch.long))
        self.speaker = torch.from_numpy(speaker)

    @property
    def items(self) -> list[torch.Tensor]:
        return self.dialogues

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        dialogues = [self.dialogues[i] for i in indices]
        length = max(len(d) for d in dialogues)
        rows = torch.zeros(len(dialogues), length, dtype=torch.long)
        mask = torch.zeros(len(dialogues), length, dtype=torch.bool)
        for b, d in enumerate(dialogues):
            rows[b, : len(d)] = d
            mask[b, : len(d)] = True
        batch = {role: vec[rows] * mask.unsqueeze(-1) for role, vec in self.vectors.items()}
        batch.update({f"{role}_missing": m[rows] & mask for role, m in self.missing.items()})
        batch["mask"] = mask
        batch["speaker"] = torch.where(mask, self.speaker[rows], 0)
        targets = self._targets(rows)
        if self.regression:
            targets["score"] = targets["score"] * mask
            targets["label_mask"] = targets["label_mask"] & mask
        else:
            targets["label"] = torch.where(mask, targets["label"], IGNORE_INDEX)
        batch.update(targets)
        return batch


# ----------------------------------------------------------------------------- sequence step policies
# How a cached frame sequence (``<col>.seq``: every frame of the utterance, e.g. openSMILE LLD at 10 ms)
# becomes at most ``steps`` model steps. One function per policy, chosen by name from ``SEQ_POLICIES``
# (config ``train.seq_policy``: one name, or ``{role: name}``); each returns the [steps, D] the model sees.
SEQ_POLICIES: Registry[Any] = Registry("sequence policy")
WORD_SPANS = "word_spans"  # cache column: per row [[start, end], ...] seconds from the start of the utterance span


@SEQ_POLICIES.register("uniform")
def uniform_steps(seq: torch.Tensor, steps: int | None, words: Any = None, duration: float | None = None
                  ) -> torch.Tensor:
    """Mean-pool the n frames into ``steps`` contiguous, equal-width bins over the WHOLE utterance
    (bin k = frames floor(k n / T) .. floor((k+1) n / T) - 1); a sequence of <= ``steps`` frames is kept
    as it is. Every frame reaches the model (DMD's released features are 50 steps per utterance)."""
    n = seq.shape[0]
    if not steps or n <= steps:
        return seq
    edges = (torch.arange(steps + 1, dtype=torch.long) * n) // steps
    idx = torch.repeat_interleave(torch.arange(steps), edges[1:] - edges[:-1])
    out = torch.zeros(steps, seq.shape[1], dtype=seq.dtype).index_add_(0, idx, seq)
    return out / (edges[1:] - edges[:-1]).unsqueeze(1).to(seq.dtype)


@SEQ_POLICIES.register("truncate")
def truncate_steps(seq: torch.Tensor, steps: int | None, words: Any = None, duration: float | None = None
                   ) -> torch.Tensor:
    """The first ``steps`` frames (the head of the utterance; what the frames after it say is lost).
    Only on request; the dataset counts the rows it cut (``SequenceDataset.coverage``)."""
    return seq[:steps] if steps else seq


@SEQ_POLICIES.register("words")
def word_steps(seq: torch.Tensor, steps: int | None, words: Any = None, duration: float | None = None
               ) -> torch.Tensor:
    """One step per word (the CMU-SDK alignment): the mean of the frames whose centre falls inside the
    word's [start, end) (seconds from the start of the utterance span; frame i of n is centred at
    (i + 0.5) duration / n: openSMILE frames and uniformly sampled video frames both tile the span), the
    nearest frame for a word shorter than a frame. More words than ``steps`` are pooled uniformly."""
    n = seq.shape[0]
    if words is None or duration is None or not np.isfinite(duration) or duration <= 0:
        raise ValueError("word-aligned steps need word timings and the utterance span")
    spans = np.asarray(words, dtype=np.float64).reshape(-1, 2)
    if n == 0 or len(spans) == 0:
        return seq[:0]
    centre = (np.arange(n) + 0.5) * duration / n
    out = []
    for start, end in spans:
        inside = np.nonzero((centre >= start) & (centre < end))[0]
        if len(inside) == 0:
            inside = [int(np.clip(np.argmin(np.abs(centre - (start + end) / 2)), 0, n - 1))]
        out.append(seq[torch.as_tensor(inside, dtype=torch.long)].mean(0))
    return uniform_steps(torch.stack(out), steps)


def _config_error(msg: str) -> Exception:
    from pipeline.config import ConfigError

    return ConfigError(msg)


def seq_policies(policy: str | dict[str, str] | None, roles: Sequence[str]) -> dict[str, str]:
    """``train.seq_policy`` (one name for every role, or ``{role: name}``; missing roles get "uniform")
    -> ``{role: name}``; an unknown name or role is a ``ValueError`` naming it."""
    if policy is None:
        policy = "uniform"
    if isinstance(policy, str):
        out = {r: policy for r in roles}
    elif isinstance(policy, dict):
        extra = sorted(set(policy) - set(roles))
        if extra:
            raise _config_error(f"train.seq_policy names roles {extra} that are not feature roles {list(roles)}")
        out = {r: str(policy.get(r, "uniform")) for r in roles}
    else:
        raise _config_error(f"train.seq_policy must be a name or {{role: name}}, got {policy!r}")
    for name in out.values():
        if name not in SEQ_POLICIES:
            raise _config_error(f"train.seq_policy: unknown sequence policy {name!r}; known: "
                             f"{', '.join(SEQ_POLICIES.names())}")
    return out


@GRANULARITIES.register("sequence")
class SequenceDataset(SplitDataset):
    """One item per labelled utterance with per-frame ``<col>.seq`` features."""

    def _load_features(self, split: Any) -> None:
        self.sequences: dict[str, list[torch.Tensor]] = {}
        self.seq_dim: dict[str, int] = {}
        steps = self.max_len if self.max_len and self.max_len > 0 else None
        self.policies = seq_policies(self.seq_policy, list(self.features))
        self.coverage: dict[str, dict[str, Any]] = {}
        words = durations = None
        if "words" in self.policies.values():
            words, durations = self._word_timings(split)
        for role, col in self.features.items():
            seq_col = f"{col}.seq"
            policy = SEQ_POLICIES.get(self.policies[role])
            raw = self._read_columns(split, [seq_col])[seq_col]
            # an empty sequence (a row without media, e.g. a MUStARD context turn) reshapes to [0, 0]
            full = [torch.from_numpy(np.ascontiguousarray(
                        np.asarray(s, dtype=np.float32).reshape(len(s), -1 if len(s) else 0))) for s in raw]
            dims = {s.shape[1] for s in full if s.shape[0] > 0}
            if len(dims) > 1:
                raise ValueError(f"{self.source}: column {seq_col!r} mixes frame sizes {sorted(dims)}")
            dim = dims.pop() if dims else 0
            seqs, n_frames, n_used, cut = [], 0, 0, 0
            for i, missing in enumerate(self.missing[role].tolist()):
                s = full[i]
                if missing or s.shape[0] == 0:
                    seqs.append(torch.zeros(0, dim))
                    continue
                if words is not None and self.policies[role] == "words":
                    if not len(words[i]):
                        raise ValueError(f"{self.source}: row {self.utterance_ids[i]!r} has no word timings "
                                         f"(`{WORD_SPANS}`); seq_policy 'words' needs them for every row")
                    out = policy(s, steps, words[i], durations[i])
                else:
                    out = policy(s, steps)
                kept = s.shape[0] if self.policies[role] != "truncate" else out.shape[0]
                n_frames, n_used, cut = n_frames + s.shape[0], n_used + kept, cut + int(kept < s.shape[0])
                seqs.append(out)
            self.sequences[role] = seqs
            self.seq_dim[role] = dim
            self.coverage[role] = {"policy": self.policies[role], "steps": steps, "frames": n_frames,
                                   "frames_used": n_used, "truncated_rows": cut,
                                   "max_steps": max((s.shape[0] for s in seqs), default=0)}
        self.rows = torch.nonzero(self.labelled, as_tuple=False).flatten()

    def _word_timings(self, split: Any) -> tuple[list[Any], np.ndarray]:
        """Per row: the word spans (``word_spans``) and the utterance span's length (``end - start``)."""
        if WORD_SPANS not in self._columns:
            raise ValueError(f"{self.source}: seq_policy 'words' needs word timings (a `{WORD_SPANS}` column), "
                             f"and this cache has none: no corpus reader here gives word timings (the CMU-SDK's "
                             f"word-aligned features are not read); use train.seq_policy=uniform")
        cols = self._read_columns(split, [WORD_SPANS, "start", "end", "utterance_id"])
        self.utterance_ids = [str(u) for u in cols["utterance_id"]]
        durations = cols["end"].astype(np.float64) - cols["start"].astype(np.float64)
        bad = [self.utterance_ids[i] for i in np.nonzero(~(durations > 0))[0][:3]]
        if bad:
            raise ValueError(f"{self.source}: rows {bad} have no start/end span; seq_policy 'words' places "
                             f"frames in time from the span (use train.seq_policy=uniform)")
        return list(cols[WORD_SPANS]), durations

    def input_dims(self) -> dict[str, int]:
        return dict(self.seq_dim)

    @property
    def items(self) -> torch.Tensor:
        return self.rows

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[torch.as_tensor(indices, dtype=torch.long)]
        batch: dict[str, torch.Tensor] = {}
        for role, seqs in self.sequences.items():
            picked = [seqs[r] for r in rows.tolist()]
            lengths = torch.tensor([s.shape[0] for s in picked], dtype=torch.long)
            steps = max(int(lengths.max()), 1)
            out = torch.zeros(len(picked), steps, self.seq_dim[role])
            for b, s in enumerate(picked):
                out[b, : s.shape[0]] = s
            batch[role] = out
            batch[f"{role}_mask"] = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
            batch[f"{role}_len"] = lengths
            batch[f"{role}_missing"] = self.missing[role][rows]
        batch.update(self._targets(rows))
        return batch


def build_split_dataset(split: Any, *, granularity: str, features: dict[str, str], task: str,
                        label_column: str = "label", max_len: int | None = None, seq_policy: Any = None,
                        source: str = "cache", inputs: dict[str, tuple[str, Any, Any]] | None = None) -> SplitDataset:
    """The dataset of one cached split for a method's granularity (``seq_policy``: sequence only;
    ``inputs``: decoded encoder inputs, see ``SplitDataset``)."""
    cls = GRANULARITIES.get(granularity)
    return cls(split=split, features=features, task=task, label_column=label_column, max_len=max_len,
               seq_policy=seq_policy, source=source, inputs=inputs)


@dataclass
class RunData:
    """The cache seen through a method: one dataset per split, input dims and labels."""

    splits: dict[str, SplitDataset]
    input_dims: dict[str, int]
    num_classes: int
    label_names: list[str]
    task: str
    encoders: dict[str, Any] = field(default_factory=dict)  # role -> encoder the method trains (input roles)


def used_features(config: dict[str, Any]) -> dict[str, str]:
    """``role -> feature column`` a run reads: the config's ``features:`` less roles set to null and, for a
    subset run (``model.modalities: [text]``), less the roles the model does not use (``Method.roles_needed``).
    So a text-only cache trains a text-only run; the trainer, the run card and ``features.json`` all use this."""
    import models  # noqa: F401  (registers the methods)
    from models.base import METHODS
    from pipeline.config import ConfigError

    features = {role: col for role, col in dict(config.get("features") or {}).items() if col}
    if not features:  # e.g. a fine-tuning run: it reads the corpus, no cached feature column
        return {}
    needed = METHODS.get(config["method"]).roles_needed(dict(config.get("model") or {}))
    if needed is not None:
        absent = sorted(needed - set(features))
        if absent:
            raise ConfigError(f"model.modalities needs role(s) {absent} but config `features:` has no column for "
                              f"them: {dict(config.get('features') or {})}")
        features = {role: col for role, col in features.items() if role in needed}
    return features


def input_encoders(config: dict[str, Any], cache: Any, features: dict[str, str],
                   encoders: dict[str, Any] | None = None) -> dict[str, tuple[str, Any, Any]]:
    """role -> (column, ``InputStore``, encoder) for the roles the method feeds as decoded inputs to an
    encoder it trains (``Method.input_roles(model config)``, e.g. TelME's students in finetune mode). The
    encoder is rebuilt from the decoded-inputs column's saved settings (``encoders`` reuses given ones)."""
    import models  # noqa: F401
    from models.base import METHODS
    from pipeline.errors import UnknownName
    from pipeline.inputs import InputStore, build_input_encoder, inputs_meta

    roles = METHODS.get(config["method"]).input_roles(dict(config.get("model") or {}))
    out: dict[str, tuple[str, Any, Any]] = {}
    have = inputs_meta(cache)
    for role in sorted(roles & set(features)):
        col = features[role]
        if col not in have:
            enc = col.split(".", 1)[-1].split("@")[0]
            raise UnknownName(f"cache {cache.path} has no decoded inputs for {col} (role {role!r} is fine-tuned "
                              f"from its encoder's inputs); run `python -m pipeline features --corpus "
                              f"{cache.meta.get('corpus')} --encoders --inputs {enc}`; it has: "
                              f"{', '.join(sorted(have)) or '(none)'}")
        encoder = (encoders or {}).get(role) or build_input_encoder(col, have[col])
        out[role] = (col, InputStore(cache.path, col, have[col]), encoder)
    return out


def prepare_data(config: dict[str, Any], cache: Any, splits: Sequence[str] = SPLITS,
                 encoders: dict[str, Any] | None = None) -> RunData:
    """Build the split datasets the config's method needs (checks roles, task and label set). Roles the
    method trains an encoder for read the cache's decoded inputs (``input_encoders``; ``encoders`` reuses
    already built encoders for them)."""
    import models  # noqa: F401  (registers the methods)
    from models.base import METHODS
    from pipeline.config import ConfigError
    from pipeline.errors import UnknownName

    cls = METHODS.get(config["method"])
    task = cache.task
    if task not in cls.TASKS:
        raise ConfigError(f"method {config['method']!r} does not do {task} (cache {cache.path}); it does {cls.TASKS}")
    features = used_features(config)
    unknown = sorted(set(features) - set(cls.ROLES))
    if unknown or not features:
        raise ConfigError(f"config `features:` roles {unknown or '(none)'} are not roles of method "
                          f"{config['method']!r}: {cls.ROLES}")
    have = cache.meta.get("columns", {})
    decoded = cls.input_roles(dict(config.get("model") or {}))  # read as decoded inputs (input_encoders)
    absent = [col for role, col in features.items() if col not in have and role not in decoded]
    if absent:
        raise UnknownName(f"cache {cache.path} has no feature column(s) {', '.join(absent)}; it has: "
                          f"{', '.join(sorted(have)) or '(none)'}. Run `make features` with that encoder, or train "
                          f"on the modalities the cache has (e.g. --set model.modalities=[text])")
    label_set = config["label_set"]
    if task == "classification":
        sets = cache.meta.get("label_sets", {})
        if label_set not in sets:
            raise ConfigError(f"label_set {label_set!r} is not in cache {cache.path}; it has: {sorted(sets)}")
        label_names = list(sets[label_set])
    else:
        label_names = []
    inputs = input_encoders(config, cache, features, encoders)
    data = {}
    for split in splits:
        if split not in cache.dataset:
            raise UnknownName(f"cache {cache.path} has no split {split!r}; it has: {list(cache.dataset)}")
        data[split] = build_split_dataset(cache.dataset[split], granularity=cls.GRANULARITY, features=features,
                                          task=task, label_column=label_column(label_set),
                                          max_len=int(config["train"]["max_len"]),
                                          seq_policy=config["train"].get("seq_policy"), source=f"{cache.path} [{split}]",
                                          inputs=inputs)
    first = next(iter(data.values()))
    return RunData(splits=data, input_dims=first.input_dims(), num_classes=max(1, len(label_names)),
                   label_names=label_names, task=task, encoders={r: enc for r, (_, _, enc) in inputs.items()})


def make_loader(dataset: SplitDataset, *, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """A ``DataLoader`` over a split dataset (reseed ``generator`` for a reproducible shuffle)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate,
                      generator=generator, num_workers=0)
