"""Faces in a photo: read it, find the faces, crop one the way FER2013's faces are cropped (48x48 grey).

The detector is OpenCV's frontal-face Haar cascade, whose model file ships inside the opencv-python-headless
package (cv2.data.haarcascades): nothing is fetched at run time.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from fercore.data import IMAGE_SIZE

CASCADE = "haarcascade_frontalface_default.xml"
# FER2013's crops are what this cascade finds: on 300 shipped faces upscaled x5 and pasted on a textured grey
# background, the box it finds around a face has the median side 0.99 of the face's frame, at its very corner, and
# the crop closest to the shipped face (mean absolute difference) has no margin. Wider margins are for the user.
DEFAULT_MARGIN = 0.0
MAX_PIXELS = 40_000_000        # a 40-megapixel photo is more than any phone takes; a larger header is a bomb
DETECT_SIDE = 1024             # photos are searched at most this large (the box is mapped back): fast on a CPU
MIN_FACE_SHARE = 0.06          # a face smaller than 6% of the photo's shorter side is noise at 48x48 anyway


class Box(NamedTuple):
    """A face's square in the photo, in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


def read_image(data: bytes, name: str = "the upload") -> np.ndarray:
    """An image file's bytes as uint8 RGB (H, W, 3), turned upright by its EXIF orientation (phone photos).

    ValueError naming `name` for empty bytes, a file that is not an image, a truncated one, or one whose header
    announces more than MAX_PIXELS pixels (checked before any pixel is decoded)."""
    from PIL import Image, ImageOps

    if not data:
        raise ValueError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"{name}: {width}x{height} pixels: more pixels than this app reads "
                                 f"({MAX_PIXELS // 1_000_000} megapixels); send a smaller picture")
            image.load()  # decode now, inside the try: a truncated file fails here, not later
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    except ValueError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own limit, above ours, refuses it while opening
        raise ValueError(f"{name}: more pixels than this app reads ({e})") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{name}: not an image PIL can read (PNG or JPEG expected)") from None
    except Exception as e:  # truncated data, bad chunks, decompression bombs: PIL raises many types for them
        raise ValueError(f"{name}: cannot read the image ({type(e).__name__}: {e})") from None


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image.astype(np.uint8, copy=False), cv2.COLOR_RGB2GRAY if image.shape[2] == 3
                            else cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {CASCADE} did not load from {cv2.data.haarcascades}")
    return cascade


def find_faces(image: np.ndarray) -> list[Box]:
    """The frontal faces in a grey or RGB photo, largest first (an empty list when there is none)."""
    import cv2

    gray = _gray(image)
    scale = min(1.0, DETECT_SIDE / max(gray.shape))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    smallest = max(24, int(MIN_FACE_SHARE * min(small.shape)))
    found = _cascade().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                        minSize=(smallest, smallest))
    boxes = [Box(*(int(round(v / scale)) for v in box)) for box in found]
    return sorted(boxes, key=lambda box: box.area, reverse=True)


def centre_box(image: np.ndarray) -> Box:
    """The largest square in the middle of the photo: what to crop when no face is found."""
    height, width = np.asarray(image).shape[:2]
    side = min(height, width)
    return Box((width - side) // 2, (height - side) // 2, side, side)


def crop_face(image: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The face in `box` as the model sees it: a square grown by `margin` of its side on each edge, grey,
    resized to 48x48 uint8. Outside the photo the edge pixels are repeated (a face at the border)."""
    import cv2

    if margin < 0:
        raise ValueError(f"margin must be at least 0, got {margin}")
    gray = _gray(image)
    x, y, width, height = box
    if width <= 0 or height <= 0:
        raise ValueError(f"empty face box {tuple(box)}")
    side = max(width, height) * (1 + 2 * margin)
    cx, cy = x + width / 2, y + height / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = int(round(side))
    pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        left, top = left + pad, top + pad
    square = gray[top:top + side, left:left + side]
    return cv2.resize(square, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def draw_box(image: np.ndarray, box: Box, color=(230, 40, 40)) -> np.ndarray:
    """An RGB copy of the photo with the face's square drawn, its line about 0.5% of the photo's size."""
    import cv2

    rgb = np.asarray(image, dtype=np.uint8)
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3].copy()
    thickness = max(2, round(max(rgb.shape[:2]) / 200))
    x, y, width, height = box
    cv2.rectangle(rgb, (x, y), (x + width - 1, y + height - 1), color, thickness)
    return rgb
