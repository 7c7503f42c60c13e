"""fercore.faces on photos made from shipped FER2013 faces (tests/photos.py) and on files that are not images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from fercore import faces
from photos import (FACE_INDEX, blank_photo, encode, one_face_photo, overlap, paste, shipped_face,
                    two_face_photo)


def test_the_face_pasted_in_a_photo_is_found_where_it_is():
    photo, frame = one_face_photo()
    found = faces.find_faces(photo)
    assert len(found) == 1 and overlap(found[0], frame) > 0.75


def test_a_wall_without_a_face_has_none_and_its_centre_square_is_offered():
    photo = blank_photo()
    assert faces.find_faces(photo) == []
    assert faces.centre_box(photo) == faces.Box(80, 0, 480, 480)
    assert faces.crop_face(photo, faces.centre_box(photo)).shape == (48, 48)


def test_two_faces_come_largest_first():
    photo, frames = two_face_photo()
    found = faces.find_faces(photo)
    assert len(found) == 2 and found[0].area > found[1].area
    assert all(overlap(box, frame) > 0.75 for box, frame in zip(found, frames))


def test_the_crop_of_a_found_face_is_the_shipped_face_and_wider_margins_take_in_the_wall():
    photo, _ = one_face_photo()
    box = faces.find_faces(photo)[0]
    original = shipped_face(FACE_INDEX).astype(float).ravel()

    def likeness(margin):
        crop = faces.crop_face(photo, box, margin=margin)
        assert crop.shape == (48, 48) and crop.dtype == np.uint8
        return np.corrcoef(crop.astype(float).ravel(), original)[0, 1]

    assert likeness(faces.DEFAULT_MARGIN) > 0.6
    assert likeness(faces.DEFAULT_MARGIN) > likeness(0.05) > likeness(0.1) > likeness(0.2)


def test_a_big_photo_is_searched_downscaled_and_the_box_maps_back():
    import cv2

    photo, _ = one_face_photo()
    big = cv2.resize(photo, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 2560x1920, beyond DETECT_SIDE
    assert max(big.shape) > faces.DETECT_SIDE
    found = faces.find_faces(big)
    # searched at DETECT_SIDE: the box found on the photo at that size, scaled back by 2560 / 1024
    searched = cv2.resize(big, (faces.DETECT_SIDE, faces.DETECT_SIDE * 3 // 4), interpolation=cv2.INTER_AREA)
    assert len(found) == 1 and overlap(found[0], tuple(2.5 * v for v in faces.find_faces(searched)[0])) > 0.95
    assert overlap(found[0], tuple(4 * v for v in one_face_photo()[1])) > 0.7  # and it is the face


def test_a_face_at_the_border_is_cropped_with_its_edge_repeated():
    photo = paste(blank_photo(), shipped_face(FACE_INDEX), 0, 0, 200)
    crop = faces.crop_face(photo, faces.Box(0, 0, 200, 200), margin=0.25)
    assert crop.shape == (48, 48)
    assert faces.crop_face(photo, faces.Box(-10, -10, 50, 50)).shape == (48, 48)
    with pytest.raises(ValueError, match="margin"):
        faces.crop_face(photo, faces.Box(0, 0, 10, 10), margin=-0.1)
    with pytest.raises(ValueError, match="empty face box"):
        faces.crop_face(photo, faces.Box(0, 0, 0, 10))


def test_read_image_decodes_png_and_jpeg_to_rgb_and_faces_survive_jpeg():
    photo, frame = one_face_photo()
    png = faces.read_image(encode(photo), "me.png")
    assert png.shape == (480, 640, 3) and png.dtype == np.uint8 and (png[..., 0] == photo).all()
    jpeg = faces.read_image(encode(photo, "JPEG"), "me.jpg")
    assert jpeg.shape == (480, 640, 3)
    assert overlap(faces.find_faces(jpeg)[0], frame) > 0.75


def test_read_image_turns_a_phone_photo_upright():
    from PIL import Image

    photo, _ = one_face_photo()
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; the viewer rotates 90 degrees clockwise
    Image.fromarray(np.rot90(photo)).save(buffer, format="JPEG", exif=exif)
    upright = faces.read_image(buffer.getvalue())
    assert upright.shape == (480, 640, 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height and whose data is one tiny compressed row."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"name,label\nalice,3\n", "not an image"),
    ("a photo of me".encode(), "not an image"),
    (png_header_only(8_000, 8_000), "8000x8000 pixels: more pixels than this app reads"),
    (png_header_only(100_000, 100_000), "more pixels than this app reads"),
])
def test_non_images_get_one_clear_error_naming_the_upload(data, message):
    with pytest.raises(ValueError, match=message) as error:
        faces.read_image(data, "holiday.png")
    assert str(error.value).startswith("holiday.png: ")


def test_a_truncated_png_is_refused_by_name():
    photo, _ = one_face_photo()
    data = encode(photo)
    with pytest.raises(ValueError, match=r"^cut\.png: cannot read the image"):
        faces.read_image(data[:len(data) // 2], "cut.png")
