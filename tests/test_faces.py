"""Face policies of the video encoders (extractors/faces.py) with the real MTCNN of facenet-pytorch on a
real photograph (scikit-image's astronaut) composited into a generated video: left half the astronaut
(large face), right half a coffee cup (no face) above a small copy of the astronaut (small face)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from extractors import EncoderInput, create_encoder  # noqa: E402
from extractors.faces import FACE_POLICIES, FaceCropper  # noqa: E402
from extractors.tiny import CONFIGS as TINY_CONFIGS  # noqa: E402
from extractors.tiny import ensure_tiny_encoders  # noqa: E402
from pipeline.media import resize_frames  # noqa: E402

H = 320  # frame 320 x 640
pytestmark = pytest.mark.usefixtures("single_thread_module")


def _scene(with_faces: bool = True) -> np.ndarray:
    from skimage import data

    canvas = np.full((H, 2 * H, 3), 90, np.uint8)
    canvas[: H // 2, H:] = resize_frames(data.coffee()[None], (H // 2, H))[0]
    if with_faces:
        canvas[:, :H] = resize_frames(data.astronaut()[None], H)[0]
        canvas[H // 2:, H + H // 4: H + 3 * H // 4] = resize_frames(data.astronaut()[None], H // 2)[0]
    return canvas


def _write(path: Path, img: np.ndarray, frames: int = 6) -> str:
    with av.open(str(path), "w") as c:
        vs = c.add_stream("h264", rate=10)
        vs.width, vs.height, vs.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
        for _ in range(frames):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("faces")
    return {"faces": _write(d / "faces.mp4", _scene()), "none": _write(d / "none.mp4", _scene(False))}


@pytest.fixture(scope="module")
def tiny() -> dict[str, str]:
    return ensure_tiny_encoders()  # the shared tiny-model folder (built once, reused)


def _densenet(tiny: dict[str, str], face: str, **kw: object):
    return create_encoder("densenet", weights_file=tiny["densenet"], num_frames=2, image_size=64,
                          random_weights=True, model_kwargs=TINY_CONFIGS["densenet"]["model_kwargs"], face=face, **kw)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a - a.mean(), b - b.mean())[0, 1])


def test_mtcnn_finds_the_real_face_and_the_crop_is_the_face(clips: dict[str, str], tiny: dict[str, str]) -> None:
    from skimage import data

    cropper = FaceCropper("largest_face")
    scene = _scene()
    boxes = cropper.boxes(scene[None])[0]
    assert boxes is not None and len(boxes) == 2  # the astronaut and its small copy; not the coffee cup
    big = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    # the astronaut's face in the 512 px photo is near x 181-268, y 62-172 -> scaled by 320/512 here
    assert big[0] == pytest.approx(113, abs=12) and big[2] == pytest.approx(167, abs=12)
    assert big[1] == pytest.approx(39, abs=12) and big[3] == pytest.approx(108, abs=12)

    whole = _densenet(tiny, "frame").load(EncoderInput("v", video_path=clips["faces"]))
    face = _densenet(tiny, "largest_face").load(EncoderInput("v", video_path=clips["faces"]))
    assert face["frames"].shape == whole["frames"].shape == (2, 64, 64, 3) and face["fallbacks"] == 0
    assert np.abs(face["frames"].astype(int) - whole["frames"].astype(int)).mean() > 20  # not the whole frame
    # the crop looks like the astronaut's face region of the photo, not like the whole frame
    ref = resize_frames(data.astronaut()[None, 40:200, 145:305], 64)[0]
    assert _corr(face["frames"][0], ref) > 0.8 > _corr(whole["frames"][0], ref)

    # speaker_side: the right half holds only the SMALL face; largest_face ignores the side
    side = _densenet(tiny, "speaker_side").load(EncoderInput("v", video_path=clips["faces"], video_side="right"))
    assert side["fallbacks"] == 0
    assert _corr(side["frames"][0], ref) > 0.7  # the small astronaut, found inside the speaker's half
    ignore = _densenet(tiny, "largest_face").load(EncoderInput("v", video_path=clips["faces"], video_side="right"))
    np.testing.assert_array_equal(ignore["frames"], face["frames"])


def test_no_face_falls_back_to_the_whole_frame_and_is_counted(clips: dict[str, str], tiny: dict[str, str]) -> None:
    enc = _densenet(tiny, "largest_face")
    samples = [enc.load(EncoderInput("n", video_path=clips["none"])),
               enc.load(EncoderInput("f", video_path=clips["faces"]))]
    whole = _densenet(tiny, "frame").load(EncoderInput("n", video_path=clips["none"]))
    assert samples[0]["fallbacks"] == 2
    np.testing.assert_array_equal(samples[0]["frames"], whole["frames"])  # the fallback is the whole frame
    out = enc.encode(samples)
    assert out.vec.shape == (2, enc.dim) and np.isfinite(out.vec).all()
    assert enc.report_counts() == {"face": "largest_face", "face_fallbacks": {
        "clips": 2, "frames": 4, "fallback_frames": 2, "fallback_clips": 1}}
    assert _densenet(tiny, "frame").report_counts() == {"face": "frame"}


def test_face_policy_is_part_of_the_fingerprint(tiny: dict[str, str]) -> None:
    fps = {face: _densenet(tiny, face).fingerprint() for face in FACE_POLICIES}
    assert len(set(fps.values())) == 3
    assert "face" not in _densenet(tiny, "frame").settings()  # `frame` keeps the pre-policy fingerprint
    assert _densenet(tiny, "largest_face").settings()["face_detector"]["name"] == "mtcnn"
    assert _densenet(tiny, "frame", face_crop=True).fingerprint() == fps["largest_face"]  # older kwarg
    ts = {face: create_encoder("timesformer", weights=tiny["timesformer"], num_frames=2, face=face,
                               random_weights=True).fingerprint() for face in FACE_POLICIES}
    assert len(set(ts.values())) == 3
    with pytest.raises(ValueError, match="face must be one of"):
        FaceCropper("eyes")


def test_extract_report_prints_the_fallbacks(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.extract import print_report

    col = {"encoder": "densenet", "fingerprint": "f", "dim": 34, "computed": 3, "reused": 0, "random_weights": True,
           "seconds": 1.0, "face": "largest_face",
           "face_fallbacks": {"clips": 3, "frames": 24, "fallback_frames": 5, "fallback_clips": 2}}
    print_report({"cache": "c", "columns": {"video.densenet": col}, "skipped": {}})
    assert "face video.densenet: policy largest_face, no face in 5/24 frames (2/3 clips)" in capsys.readouterr().out
