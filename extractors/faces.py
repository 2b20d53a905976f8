"""Face policies for the video encoders: which pixels of a frame an encoder sees.

* ``frame`` -- the whole frame, or the speaker's half where the corpus says which (IEMOCAP's
  ``video_side``); no detector.
* ``largest_face`` -- the largest face MTCNN finds in the whole frame.
* ``speaker_side`` -- the speaker's half first (``video_side``; the whole frame where a corpus gives
  none), then the largest face in it. For IEMOCAP, where both actors are in the frame.

The detector is MTCNN from ``facenet-pytorch`` (its wheel ships the P/R/O-Net weights, so it runs
offline), on the CPU inside the DataLoader workers (``load``), created lazily in each process. A face
box is grown by ``margin`` of its size on every side, made square around its centre, clipped to the
frame, cropped and resized to the encoder's input size. A frame without a face (or below the detection
thresholds) falls back to the whole frame (the speaker's half for ``speaker_side``); the fallbacks are
counted and reported by the extract stage. Frames are detected at most ``detect_size`` pixels on their
longer side (boxes scaled back to the full frame) to keep 720p corpora affordable.

Our choices (not from a paper: the papers' visual features were made with tools the releases do not
name exactly): margin 0.2, MTCNN's default thresholds (0.6, 0.7, 0.7) and minimum face 20 px.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FACE_POLICIES = ("frame", "largest_face", "speaker_side")


def detector_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facenet-pytorch")
    except PackageNotFoundError:
        return "missing"


class FaceCropper:
    """Crop frames to a face by ``policy``; see the module docstring. Picklable (the detector is not
    pickled: each worker builds its own)."""

    def __init__(self, policy: str = "frame", *, margin: float = 0.2, min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), detect_size: int = 640) -> None:
        if policy not in FACE_POLICIES:
            raise ValueError(f"face must be one of {FACE_POLICIES}, got {policy!r}")
        self.policy = policy
        self.margin = float(margin)
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.detect_size = int(detect_size)
        self._mtcnn: Any = None
        if self.uses_detector:
            self._detector()  # fail now (not in every worker) when facenet-pytorch is missing

    @property
    def uses_detector(self) -> bool:
        return self.policy != "frame"

    def settings(self) -> dict[str, Any]:
        """What changes the pixels: part of the encoder's settings (so of its column fingerprint)."""
        if not self.uses_detector:
            return {"face": "frame"}
        return {"face": self.policy, "face_detector": {
            "name": "mtcnn", "facenet_pytorch": detector_version(), "margin": self.margin,
            "min_face_size": self.min_face_size, "thresholds": list(self.thresholds), "detect_size": self.detect_size}}

    def side(self, video_side: str | None) -> str | None:
        """Which half of the frame to decode: the speaker's for ``frame`` / ``speaker_side``."""
        return None if self.policy == "largest_face" else video_side

    def _detector(self) -> Any:
        if self._mtcnn is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as e:
                raise ImportError(f"face policy {self.policy!r} needs facenet-pytorch (installed with --no-deps by "
                                  f"`make install`): {e}") from e
            self._mtcnn = MTCNN(keep_all=True, device="cpu", min_face_size=self.min_face_size,
                                thresholds=list(self.thresholds), post_process=False)
        return self._mtcnn

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mtcnn"] = None
        return state

    def boxes(self, frames: np.ndarray) -> list[np.ndarray | None]:
        """Per frame the detected boxes [K, 4] (x1, y1, x2, y2 in full-frame pixels), or None."""
        import torch

        from pipeline.media import resize_frames

        h, w = frames.shape[1:3]
        scale = min(1.0, self.detect_size / max(h, w))
        small = frames if scale == 1.0 else resize_frames(frames, (max(1, round(h * scale)), max(1, round(w * scale))))
        with torch.inference_mode():
            found, _ = self._detector().detect(np.ascontiguousarray(small))
        return [None if b is None else np.asarray(b, dtype=np.float64) / scale for b in found]

    def crop(self, frames: np.ndarray, size: int) -> tuple[np.ndarray, int]:
        """uint8 [T, H, W, 3] -> ([T, size, size, 3], number of frames that fell back to the whole frame)."""
        from pipeline.media import resize_frames

        if not self.uses_detector:
            return resize_frames(frames, size), 0
        h, w = frames.shape[1:3]
        out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
        fallbacks = 0
        for t, boxes in enumerate(self.boxes(frames)):
            if boxes is None or len(boxes) == 0:
                out[t] = resize_frames(frames[t:t + 1], size)[0]
                fallbacks += 1
                continue
            x1, y1, x2, y2 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            side = max(x2 - x1, y2 - y1) * (1 + 2 * self.margin)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            left, top = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
            right, bottom = int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2)))
            if right - left < 2 or bottom - top < 2:
                out[t] = resize_frames(frames[t:t + 1], size)[0]
                fallbacks += 1
                continue
            out[t] = resize_frames(np.ascontiguousarray(frames[t:t + 1, top:bottom, left:right]), size)[0]
        return out, fallbacks
