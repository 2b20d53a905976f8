"""pipeline.media: decoding audio/video spans, side crops, resizing, resampling and clear errors.

All media are written here from numpy with PyAV / soundfile (no ffmpeg binary, no downloads).
Frame ``i`` of every test video has a top band of grey level ``12 * i`` (so the decoded frame index
can be read back), a red left half and a blue right half.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from pipeline.media import MediaError, load_audio, load_frames

FPS = 10
SECONDS = 2.0
N_FRAMES = int(FPS * SECONDS)  # 20
W, H = 64, 32
BAND = 8  # rows of the index band
TONE = 440.0


def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2, 0] = 220  # left half red
    img[:, W // 2:, 2] = 220  # right half blue
    img[:BAND] = 12 * i  # index band (grey)
    return img


def _tone(rate: int, seconds: float, freq: float = TONE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_video(path: Path, vcodec: str, acodec: str | None, audio_rate: int = 44100) -> Path:
    """A 2 s, 10 fps, 64x32 clip; with a 440 Hz tone track when ``acodec`` is given."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        if vcodec == "h264":
            vs.options = {"crf": "10"}  # near lossless so the band survives
        else:
            vs.bit_rate = 2_000_000
        a_stream = None
        if acodec:
            a_stream = c.add_stream(acodec, rate=audio_rate)
            a_stream.layout = "mono"
        for i in range(N_FRAMES):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        if a_stream is not None:
            x = _tone(audio_rate, SECONDS)
            fmt = "fltp" if acodec == "aac" else "s16"
            step = a_stream.codec_context.frame_size or 1024
            for pts in range(0, len(x), step):
                chunk = x[pts:pts + step]
                data = chunk[None] if fmt == "fltp" else (chunk * 32767).astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                frame.sample_rate, frame.pts = audio_rate, pts
                for pkt in a_stream.encode(frame):
                    c.mux(pkt)
            for pkt in a_stream.encode():
                c.mux(pkt)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files = {
        "mp4": write_video(d / "clip.mp4", "h264", "aac"),
        "avi": write_video(d / "clip.avi", "mpeg4", "pcm_s16le"),
        "silent_mp4": write_video(d / "video_only.mp4", "h264", None),
    }
    sf.write(d / "tone44k.wav", _tone(44100, 1.0), 44100, subtype="FLOAT")
    files["wav"] = d / "tone44k.wav"
    stereo = np.stack([_tone(16000, 1.0), np.zeros(16000, np.float32)], axis=1)
    sf.write(d / "stereo.wav", stereo, 16000, subtype="FLOAT")
    files["stereo"] = d / "stereo.wav"
    (d / "empty.mp4").write_bytes(b"")
    files["empty"] = d / "empty.mp4"
    (d / "garbage.avi").write_bytes(b"RIFF\x00junk" * 500)
    files["garbage"] = d / "garbage.avi"
    blob = files["mp4"].read_bytes()
    (d / "truncated.mp4").write_bytes(blob[: len(blob) // 3])
    files["truncated"] = d / "truncated.mp4"
    sf.write(d / "no_samples.wav", np.zeros((0,), np.float32), 16000)
    files["no_samples"] = d / "no_samples.wav"
    return files


def band_index(frames: np.ndarray) -> np.ndarray:
    """The frame index each decoded frame shows (from its grey band)."""
    return np.round(frames[:, 2:BAND - 2, 4:-4].mean(axis=(1, 2, 3)) / 12).astype(int)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


# ----------------------------------------------------------------------------- video

@pytest.mark.parametrize("kind", ["mp4", "avi"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_whole_clip_uniform(media: dict[str, Path], kind: str, backend: str) -> None:
    frames = load_frames(media[kind], num_frames=4, backends=[backend])
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    # 20 frames in 4 segments of 5: middle frames 2, 7, 12, 17
    assert band_index(frames).tolist() == [2, 7, 12, 17]


@pytest.mark.parametrize("kind", ["mp4", "avi"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_span(media: dict[str, Path], kind: str, backend: str) -> None:
    # [0.5, 1.5] s = frames 5..14; 4 segments of 2.5 frames: 6.25, 8.75, 11.25, 13.75
    frames = load_frames(media[kind], start=0.5, end=1.5, num_frames=4, backends=[backend])
    assert band_index(frames).tolist() == [6, 8, 11, 13]
    # more frames than the span holds: indices repeat, stay inside the span
    idx = band_index(load_frames(media[kind], start=1.0, end=1.2, num_frames=5, backends=[backend]))
    assert idx.min() >= 10 and idx.max() <= 11 and (np.diff(idx) >= 0).all()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_end_is_clipped_and_start_past_end_fails(media: dict[str, Path], backend: str) -> None:
    idx = band_index(load_frames(media["mp4"], start=1.5, end=99.0, num_frames=5, backends=[backend]))
    assert idx.tolist() == [15, 16, 17, 18, 19]
    with pytest.raises(MediaError, match="clip.mp4"):
        load_frames(media["mp4"], start=5.0, end=6.0, backends=[backend])


def test_decoders_agree(media: dict[str, Path]) -> None:
    a = load_frames(media["avi"], start=0.3, end=1.7, num_frames=6, backends=["decord"]).astype(int)
    b = load_frames(media["avi"], start=0.3, end=1.7, num_frames=6, backends=["pyav"]).astype(int)
    assert np.abs(a - b).max() <= 2


def test_side_crop_and_resize(media: dict[str, Path]) -> None:
    left = load_frames(media["mp4"], num_frames=2, side="left")
    right = load_frames(media["mp4"], num_frames=2, side="right")
    assert left.shape == right.shape == (2, H, W // 2, 3)
    body_l, body_r = left[:, BAND + 2:].reshape(-1, 3).mean(0), right[:, BAND + 2:].reshape(-1, 3).mean(0)
    assert body_l[0] > 180 and body_l[2] < 40  # red
    assert body_r[2] > 180 and body_r[0] < 40  # blue
    square = load_frames(media["mp4"], num_frames=3, side="right", size=16)
    assert square.shape == (3, 16, 16, 3) and square.dtype == np.uint8
    assert square[:, 8:, :, 2].mean() > 180
    assert load_frames(media["mp4"], num_frames=1, size=(24, 40)).shape == (1, 24, 40, 3)
    with pytest.raises(ValueError, match="side"):
        load_frames(media["mp4"], side="middle")


# ----------------------------------------------------------------------------- audio

@pytest.mark.parametrize("backend", ["decord", "pyav", "soundfile"])
def test_resampled_tone_keeps_its_pitch(media: dict[str, Path], backend: str) -> None:
    x = load_audio(media["wav"], sample_rate=16000, backends=[backend])
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) <= 16
    assert abs(peak_hz(x, 16000) - TONE) < 2.0
    assert 0.4 < np.abs(x).max() < 0.6


@pytest.mark.parametrize("kind", ["mp4", "avi"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_audio_from_video_span(media: dict[str, Path], kind: str, backend: str) -> None:
    x = load_audio(media[kind], start=0.5, end=1.5, sample_rate=16000, backends=[backend])
    assert abs(len(x) - 16000) <= 400  # AAC priming may shift a few ms
    assert abs(peak_hz(x, 16000) - TONE) < 2.0
    y = load_audio(media[kind], sample_rate=8000, backends=[backend])
    assert abs(len(y) - 16000) <= 200 and abs(peak_hz(y, 8000) - TONE) < 2.0


def test_audio_span_and_max_seconds_are_exact_on_wav(media: dict[str, Path]) -> None:
    full = load_audio(media["wav"], backends=["soundfile"])
    part = load_audio(media["wav"], start=0.25, end=0.75, backends=["soundfile"])
    assert len(part) == 8000
    tail = load_audio(media["wav"], max_seconds=0.25, backends=["soundfile"])
    np.testing.assert_allclose(tail, full[-4000:], atol=1e-6)
    # max_seconds longer than the clip keeps everything
    assert len(load_audio(media["wav"], max_seconds=10, backends=["soundfile"])) == len(full)


def test_stereo_is_downmixed(media: dict[str, Path]) -> None:
    x = load_audio(media["stereo"], backends=["soundfile"])
    assert x.ndim == 1 and len(x) == 16000
    assert 0.2 < np.abs(x).max() < 0.3  # (0.5 tone + silence) / 2


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("loader", [load_audio, load_frames])
def test_missing_empty_corrupt_files(media: dict[str, Path], tmp_path: Path, loader) -> None:
    for path, words in [(tmp_path / "nope.mp4", "not found"), (media["empty"], "empty"),
                        (media["garbage"], "cannot decode"), (media["truncated"], "cannot decode")]:
        with pytest.raises(MediaError, match=path.name) as err:
            loader(path)
        assert words in str(err.value)


def test_audio_errors(media: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match="video_only.mp4.*no audio stream"):
        load_audio(media["silent_mp4"])
    with pytest.raises(MediaError, match="no_samples.wav"):
        load_audio(media["no_samples"])
    with pytest.raises(MediaError, match=r"tone44k.wav.*no audio samples"):
        load_audio(media["wav"], start=5.0, end=6.0)
    with pytest.raises(MediaError, match="before its start"):
        load_audio(media["wav"], start=0.6, end=0.5)
    assert issubclass(MediaError, ValueError)


def test_workers_forked_after_the_parent_decoded_do_not_hang(demo_root, tmp_path):
    """`predict` (or any API call) decodes in the parent, then an extract forks DataLoader workers: the
    readers the parent left open must not be closed in the workers (that joined decoder threads the child
    does not have and hung it forever). In a subprocess, so a regression fails by timeout, not a stuck suite."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    script = textwrap.dedent(f"""
        import glob
        from pipeline.media import load_audio, load_frames
        from pipeline.catalog import corpus_entry
        from pipeline.corpora.base import read_corpus
        from pipeline.extract import ExtractSettings, extract
        clip = sorted(glob.glob({str(demo_root / 'meld')!r} + "/*/*.mp4"))[0]
        load_frames(clip, num_frames=8, size=32); load_audio(clip, sample_rate=16000)
        e = corpus_entry("demo-meld", {str(demo_root / 'meld')!r})
        d = read_corpus(e.reader, e.root, **e.options); d.name = "demo-meld"; d.records = d.records[:8]
        r = extract(d, {str(tmp_path / 'c')!r}, ExtractSettings(encoders=["timesformer", "data2vec"], num_workers=2,
                                                               batch_size=4, progress=False))
        print("computed", sum(c["computed"] for c in r["columns"].values()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "computed 16" in proc.stdout
