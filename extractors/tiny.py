"""Tiny randomly initialised encoders, saved the way real checkpoints are, for tests and the
``offline`` profile (machines without a model hub).

Each model is built from a small config with a fixed seed and written with ``save_pretrained``
(or as a timm ``state_dict`` file for DenseNet), so that the encoders load them back through
exactly the code path users take for real weights (``AutoModel.from_pretrained(dir)``,
``timm.create_model(...)`` + ``load_state_dict``). Their outputs are meaningless (random weights);
encoders built from them report ``random_weights=True``.

``ensure_tiny_encoders(root)`` builds them once under ``root/<hash of the configs>/`` (atomically:
a temp dir renamed into place) and returns ``{name: local path}``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from extractors.base import stable_hash

BUILD_VERSION = "3"  # bump when a builder changes in a way the configs below do not show
SEED = 0
DEFAULT_ROOT = Path("~/.cache/merc/tiny-encoders")

# Word list of the tiny text tokenizer: enough for tests and the demo corpus to produce real ids.
_WORDS = (
    "now feels speaker i you he she we they it is am are was were be been a an the and or but not no yes "
    "to of in on at for with this that what why how who where when okay oh so really very just do did "
    "have has had go going went know think want like love hate good bad happy sad angry fear disgust "
    "surprise joy neutral anger sadness well hey hi hello sorry thanks thank please right sure mean "
    "can can't don't won't it's i'm you're that's get got come see look tell told say said time day "
    "0 1 2 3 4 5 6 7 8 9 : , . ! ? ' \""
).split()
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa order: <s>=0, <pad>=1, </s>=2

CONFIGS: dict[str, dict[str, Any]] = {
    "roberta": dict(
        vocab_size=len(_SPECIALS) + len(_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1,
    ),
    "data2vec": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        # 16 kHz -> 50 frames/s like the real model (strides multiply to 320), with 4 thin layers.
        conv_dim=(32, 32, 32, 32), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
        num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5, num_conv_pos_embeddings=2,
        mask_time_prob=0.0,
    ),
    "timesformer": dict(
        image_size=32, patch_size=8, num_channels=3, num_frames=8, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128,
    ),
    # timm's densenet121 constructor with a thinner, shallower architecture (timm has no smaller
    # DenseNet): 4 dense blocks of 1 layer each instead of 6/12/24/16, growth 16 instead of 32.
    "densenet": dict(model_name="densenet121", model_kwargs={"growth_rate": 16, "block_config": [1, 1, 1, 1],
                                                           "bn_size": 2}),
}


# Paper-size architectures (the ``paper-random`` profile): the papers' encoders from their configs, RANDOM weights,
# so the real compute can be timed on a machine without a model hub. Outputs are meaningless.
PAPER_CONFIGS: dict[str, dict[str, Any]] = {
    "roberta": dict(  # roberta-large
        vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
    ),
    "data2vec": dict(  # facebook/data2vec-audio-base(-960h)
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embedding_groups=16, conv_pos_kernel_size=19, num_conv_pos_embeddings=5, mask_time_prob=0.0,
    ),
    "timesformer": dict(  # facebook/timesformer-base-finetuned-k400
        image_size=224, patch_size=16, num_channels=3, num_frames=8, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072,
    ),
    "densenet": dict(model_name="densenet121", model_kwargs={}),  # timm densenet121 as it is
}
SETS: dict[str, dict[str, dict[str, Any]]] = {"tiny": CONFIGS, "paper": PAPER_CONFIGS}


def _seeded() -> None:
    import torch

    torch.manual_seed(SEED)


def _word_tokenizer() -> Any:
    """The tiny word-level RoBERTa-style tokenizer (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<mask>``)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(list(_SPECIALS) + list(_WORDS))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=512,
    )


def _build_roberta(out: Path, cfg: dict[str, Any]) -> None:
    """Tiny: the word-level tokenizer. Paper size: all-MiniLM-L6-v2's WordPiece tokenizer (real token counts
    for English; its 30,522 ids fit RoBERTa-large's 50,265 rows)."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    _seeded()
    RobertaModel(RobertaConfig(**cfg)).save_pretrained(out)
    if cfg["vocab_size"] > 30522:
        from extractors.profiles import minilm_dir

        AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(out)
    else:
        _word_tokenizer().save_pretrained(out)


def _build_data2vec(out: Path, cfg: dict[str, Any]) -> None:
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    _seeded()
    Data2VecAudioModel(Data2VecAudioConfig(**cfg)).save_pretrained(out)


def _build_timesformer(out: Path, cfg: dict[str, Any]) -> None:
    from transformers import TimesformerConfig, TimesformerModel

    _seeded()
    TimesformerModel(TimesformerConfig(**cfg)).save_pretrained(out)


def _build_densenet(out: Path, cfg: dict[str, Any]) -> None:
    import timm
    from safetensors.torch import save_file

    _seeded()
    model = timm.create_model(cfg["model_name"], pretrained=False, num_classes=0, **cfg["model_kwargs"])
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "timm_config.json").write_text(json.dumps(cfg, indent=2))  # for people: how to rebuild it


_BUILDERS: dict[str, tuple[Callable[[Path, dict[str, Any]], None], str]] = {
    # name -> (builder, what the returned path points at inside the built folder)
    "roberta": (_build_roberta, "."),
    "data2vec": (_build_data2vec, "."),
    "timesformer": (_build_timesformer, "."),
    "densenet": (_build_densenet, "model.safetensors"),
}


def _build_into(final: Path, build: Callable[[Path, dict[str, Any]], None], config: dict[str, Any]) -> None:
    """Build in a temp dir next to ``final`` and rename it into place; a concurrent builder that
    finished first wins (its folder has the ``.done`` marker) and ours is dropped."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp, config)
        (tmp / ".done").write_text(json.dumps(config, sort_keys=True))
        if final.exists() and not (final / ".done").exists():  # an unfinished leftover
            shutil.rmtree(final, ignore_errors=True)
        if not final.exists():
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / ".done").exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def default_root() -> Path:
    """``$MERC_TINY_DIR`` if set, else ``~/.cache/merc/tiny-encoders``."""
    return Path(os.environ.get("MERC_TINY_DIR") or DEFAULT_ROOT).expanduser()


def configs_key(which: str = "tiny") -> str:
    key = {"version": BUILD_VERSION, "seed": SEED, "configs": SETS[which], "words": list(_WORDS)}
    return stable_hash(key if which == "tiny" else {**key, "set": which})


def ensure_tiny_encoders(root: str | Path | None = None, which: str = "tiny") -> dict[str, str]:
    """Build the random encoders of ``SETS[which]`` ("tiny": the offline profile's; "paper": paper-size
    architectures, ~2.3 GB) under ``root`` (default :func:`default_root`) unless they already exist, and
    return ``{"roberta": dir, "data2vec": dir, "timesformer": dir, "densenet": file}``.

    Idempotent and safe against a concurrent builder: each model is built in a temp dir and renamed
    into ``root/<configs hash>/<name>``; a finished folder holds a ``.done`` marker."""
    base = Path(root).expanduser() if root is not None else default_root()
    base = base / configs_key(which)
    base.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for name, (build, inner) in _BUILDERS.items():
        final = base / name
        if not (final / ".done").exists():
            _build_into(final, build, SETS[which][name])
        paths[name] = str(final if inner == "." else final / inner)
    return paths
