"""Photos with faces in them, made from shipped FER2013 faces: each face upscaled and pasted on a wall-like
background (a left-to-right shading with fine blurred grain), as a webcam or phone picture of a person would be."""

from __future__ import annotations

import io

import numpy as np

from fixtures import ROOT

DEFAULT_DATA = ROOT / "data" / "fer2013_test.npz"

FACE_INDEX = 22        # position in the shipped PublicTest+PrivateTest file of the main face (a photo, frontal)
SECOND_FACE_INDEX = 2  # the smaller face of the two-face photo (another photo of another person)


def shipped_face(index: int) -> np.ndarray:
    with np.load(DEFAULT_DATA) as data:
        return data["pixels"][index]


def background(shape=(480, 640), seed: int = 0) -> np.ndarray:
    import cv2

    grain = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 12, shape), (0, 0), 1.5)
    return (grain + np.linspace(90, 170, shape[1])[None, :]).clip(0, 255).astype(np.uint8)


def paste(photo: np.ndarray, face: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    import cv2

    photo = photo.copy()
    photo[top:top + side, left:left + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return photo


def one_face_photo() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(a 640x480 grey photo, the pasted face's frame as (x, y, width, height))."""
    return paste(background(), shipped_face(FACE_INDEX), 100, 200, 240), (200, 100, 240, 240)


def two_face_photo() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(a 640x480 grey photo, the frames of its two faces, the larger first)."""
    photo = paste(background(), shipped_face(SECOND_FACE_INDEX), 60, 30, 160)
    photo = paste(photo, shipped_face(FACE_INDEX), 150, 360, 240)
    return photo, [(360, 150, 240, 240), (30, 60, 160, 160)]


def encode(image: np.ndarray, format: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format=format)
    return buffer.getvalue()


def blank_photo() -> np.ndarray:
    """A wall without a face."""
    return background(seed=1)


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
