"""fercore.data on real files written here: each format, each validation error, the cache, splits, the shipped file."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fercore.data as data
from fercore.data import DEFAULT_DATA_PATH, DataError, FerDataset, load_dataset, stratified_split
from fercore.labels import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST, SPLIT_NAMES, TRAINING

SHARED_NPZ = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013.npz"


def random_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 48, 48) images covering 0 and 255 and 1-, 2- and 3-digit values, and labels cycling 0..6."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    pixels[:, 0, :4] = [0, 7, 42, 255]
    return pixels, np.arange(n) % 7


def pixel_text(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel().tolist()))


def write_kaggle_csv(path: Path, pixels, labels, usage, newline="\n", quoted=True) -> Path:
    q = '"' if quoted else ""
    lines = ["emotion,pixels,Usage"] + [f"{y},{q}{pixel_text(x)}{q},{SPLIT_NAMES[u]}"
                                        for x, y, u in zip(pixels, labels, usage)]
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def kaggle_lines(n: int = 6) -> list[str]:
    pixels, labels = random_faces(n)
    return ["emotion,pixels,Usage"] + [f"{y},{pixel_text(x)},Training" for x, y in zip(pixels, labels)]


# ------------------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("newline,quoted", [("\n", True), ("\r\n", False)])
def test_kaggle_csv(tmp_path, newline, quoted):
    pixels, labels = random_faces(600)  # several parse chunks, parsed on threads
    usage = np.repeat([TRAINING, PUBLIC_TEST, PRIVATE_TEST], 200)
    path = write_kaggle_csv(tmp_path / "fer2013.csv", pixels, labels, usage, newline, quoted)
    ds = load_dataset(path)
    assert len(ds) == 600 and ds.pixels.dtype == np.uint8 and ds.pixels.shape == (600, 48, 48)
    np.testing.assert_array_equal(ds.pixels, pixels)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.split, usage)  # the file's Usage, untouched
    assert ds.ids.tolist() == [str(i) for i in range(600)]
    assert ds.ferplus_votes is None and ds.source == str(path)


def test_the_vectorised_path_takes_well_formed_rows_and_refuses_the_rest():
    pixels, _ = random_faces(3)
    rows = [pixel_text(x).encode() for x in pixels]
    np.testing.assert_array_equal(data._parse_pixel_chunk(rows), pixels.reshape(3, -1))  # no slow fallback
    _, rest = rows[0].split(b" ", 1)
    for bad in (rows[0] + b" 1", rows[0].rsplit(b" ", 1)[0], rows[0].replace(b" ", b"  ", 1), rows[0] + b" ",
                rows[0].replace(b" ", b"a", 1), b"256 " + rest, b"0001 " + rest, b"-1 " + rest):
        assert data._parse_pixel_chunk([rows[1], bad, rows[2]]) is None, bad[:20]


def test_course_train_csv_gets_a_stratified_validation_split(tmp_path):
    pixels, labels = random_faces(140)
    rows = [f"{y},{pixel_text(x)}" for x, y in zip(pixels, labels)]
    path = write_lines(tmp_path / "train.csv", ["label,feature"] + rows)
    ds = load_dataset(path, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ds.pixels, pixels)
    np.testing.assert_array_equal(ds.labels, labels)
    assert set(ds.split.tolist()) == {TRAINING, PUBLIC_TEST}
    assert np.bincount(ds.labels[ds.split == PUBLIC_TEST], minlength=7).tolist() == [4] * 7  # 20% of 20 per class
    assert ds.ids.tolist() == [str(i) for i in range(140)]


def test_course_test_csv_has_no_labels(tmp_path):
    pixels, _ = random_faces(5)
    ids = ["17", "3", "250", "4", "9"]
    path = write_lines(tmp_path / "test.csv", ["id,feature"] + [f"{i},{pixel_text(x)}" for i, x in zip(ids, pixels)])
    ds = load_dataset(path)
    assert ds.labels is None
    np.testing.assert_array_equal(ds.pixels, pixels)
    assert ds.ids.tolist() == ids
    assert (ds.split == PRIVATE_TEST).all()


def test_csv_with_loose_spacing_and_leading_zeros_is_still_read(tmp_path):
    pixels, labels = random_faces(3)
    loose = "  ".join(f"{v:03d}" for v in pixels[1].ravel().tolist())  # the precise path accepts what int() accepts
    lines = kaggle_lines(3)
    lines[2] = f' {labels[1]} ,"{loose} ", PublicTest '
    ds = load_dataset(write_lines(tmp_path / "loose.csv", lines))
    np.testing.assert_array_equal(ds.pixels[1], pixels[1])
    assert ds.labels[1] == labels[1] and ds.split[1] == PUBLIC_TEST


def save_image(path: Path, image: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)
    return path


def test_class_folders_png_and_jpeg(tmp_path):
    pixels, _ = random_faces(4)
    root = tmp_path / "faces"
    save_image(root / "Happy" / "a.png", pixels[0])
    save_image(root / "happy" / "b.png", pixels[1])  # any case; both are Happy
    save_image(root / "0" / "c.jpg", pixels[2], quality=95)  # 0 = Angry
    rgb = np.dstack([np.full((64, 80), 200, np.uint8)] * 3)  # colour, not 48x48: converted with PIL
    save_image(root / "NEUTRAL" / "d.jpeg", rgb)
    ds = load_dataset(root, val_fraction=0)
    assert ds.ids.tolist() == ["0/c.jpg", "Happy/a.png", "NEUTRAL/d.jpeg", "happy/b.png"]
    assert [CLASS_NAMES[k] for k in ds.labels] == ["Angry", "Happy", "Neutral", "Happy"]
    np.testing.assert_array_equal(ds.pixels[1], pixels[0])  # PNG is lossless
    np.testing.assert_array_equal(ds.pixels[3], pixels[1])
    assert np.abs(ds.pixels[0].astype(int) - pixels[2]).mean() < 12  # JPEG is close
    assert ds.pixels.shape == (4, 48, 48) and abs(int(ds.pixels[2].mean()) - 200) <= 1
    assert (ds.split == TRAINING).all()


def test_split_folders(tmp_path):
    pixels, _ = random_faces(30)
    root = tmp_path / "kaggle"
    for i in range(30):
        split = "train" if i < 20 else "test"
        save_image(root / split / CLASS_NAMES[i % 7].lower() / f"{i}.png", pixels[i])
    ds = load_dataset(root, val_fraction=0.25)
    test_rows = np.array([i.startswith("test/") for i in ds.ids])
    assert (ds.split[test_rows] == PRIVATE_TEST).all() and test_rows.sum() == 10
    assert set(ds.split[~test_rows].tolist()) == {TRAINING, PUBLIC_TEST}  # validation carved from train/
    with_val = tmp_path / "with_val"
    save_image(with_val / "Train" / "sad" / "x.png", pixels[0])
    save_image(with_val / "val" / "sad" / "y.png", pixels[1])
    save_image(with_val / "test" / "fear" / "z.png", pixels[2])
    assert load_dataset(with_val).split.tolist() == [TRAINING, PUBLIC_TEST, PRIVATE_TEST]  # in split order


def test_npz_like_the_shared_file(tmp_path):
    pixels, labels = random_faces(12)
    votes = np.random.default_rng(0).integers(0, 11, size=(12, 10)).astype(np.uint8)
    usage = np.arange(12) % 3
    path = tmp_path / "mine.npz"
    np.savez_compressed(path, pixels=pixels, emotion=labels.astype(np.uint8), usage=usage.astype(np.uint8),
                        ferplus_votes=votes)
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.pixels, pixels)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.split, usage)
    np.testing.assert_array_equal(ds.ferplus_votes, votes)
    assert ds.ids.tolist() == [str(i) for i in range(12)]
    flat = tmp_path / "flat.npz"  # (N, 2304) pixels and usage given by name also work
    np.savez(flat, pixels=pixels.reshape(12, -1), emotion=labels, usage=np.array(SPLIT_NAMES)[usage],
             ids=np.arange(100, 112))
    ds = load_dataset(flat)
    np.testing.assert_array_equal(ds.pixels, pixels)
    np.testing.assert_array_equal(ds.split, usage)
    assert ds.ids[0] == "100"


def test_format_comes_from_the_content_not_the_name(tmp_path):
    pixels, labels = random_faces(4)
    csv_named_npz = write_kaggle_csv(tmp_path / "looks_like.npz", pixels, labels, [0, 0, 1, 2])
    npz_named_csv = tmp_path / "looks_like.csv"
    with open(npz_named_csv, "wb") as f:
        np.savez(f, pixels=pixels, emotion=labels, usage=np.array([0, 0, 1, 2]))
    assert data.detect_format(csv_named_npz) == "csv" and data.detect_format(npz_named_csv) == "npz"
    np.testing.assert_array_equal(load_dataset(csv_named_npz).pixels, load_dataset(npz_named_csv).pixels)


# ---------------------------------------------------------------------------------------------- validation

def replace_line(lines: list[str], index: int, old: str, new: str) -> list[str]:
    lines = list(lines)
    lines[index] = lines[index].replace(old, new, 1)
    return lines


def pixel_line(label: str, values: list[str], usage: str = "Training") -> str:
    return f"{label},{' '.join(values)},{usage}"


GOOD = [str(v) for v in random_faces(1)[0][0].ravel().tolist()]

CSV_ERRORS = {  # name: (lines, expected line number, words the message must hold)
    "header": (["emotion,pixel,Usage"] + kaggle_lines(2)[1:], 1, "unrecognised header"),
    "too few pixels": (kaggle_lines(3) + [pixel_line("1", GOOD[:-1])], 5,
                       "expected 2304 pixel values in pixels, found 2303"),
    "too many pixels": (kaggle_lines(3)[:2] + [pixel_line("1", GOOD + ["5"])], 3, "found 2305"),
    "not an integer": (kaggle_lines(2) + [pixel_line("3", GOOD[:9] + ["12a"] + GOOD[10:])], 4,
                       "value 10 is '12a', not an integer"),
    "fractional pixel": (kaggle_lines(2) + [pixel_line("3", ["1.5"] + GOOD[1:])], 4, "value 1 is '1.5'"),
    "pixel out of range": (kaggle_lines(4) + [pixel_line("3", GOOD[:99] + ["256"] + GOOD[100:])], 6,
                           "value 100 is 256, outside 0..255"),
    "negative pixel": (kaggle_lines(1) + [pixel_line("3", ["-1"] + GOOD[1:])], 3, "value 1 is '-1'"),
    "label out of range": (kaggle_lines(2) + [pixel_line("7", GOOD)], 4, "emotion is '7', expected an integer 0-6"),
    "label not an integer": (kaggle_lines(2) + [pixel_line("happy", GOOD)], 4, "emotion is 'happy'"),
    "bad usage": (kaggle_lines(3) + [pixel_line("2", GOOD, "Train")], 5,
                  "Usage is 'Train', expected one of Training, PublicTest, PrivateTest"),
    "missing field": (kaggle_lines(2) + [f"2,{' '.join(GOOD)}"], 4,
                      "expected 3 comma-separated fields (emotion,pixels,Usage), found 2"),
    "comma-separated pixels": (kaggle_lines(2) + [f"2,{','.join(GOOD)},Training"], 4,
                               "expected 3 comma-separated fields"),
    "empty pixel field": (kaggle_lines(2) + ["2,,Training"], 4, "found 0"),
    "header only": (["emotion,pixels,Usage"], None, "no data rows"),
}


@pytest.mark.parametrize("name", list(CSV_ERRORS))
def test_csv_errors_name_the_file_and_line(tmp_path, name):
    lines, line, words = CSV_ERRORS[name]
    path = write_lines(tmp_path / "bad.csv", lines)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(DataError) as error:
        load_dataset(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    assert (f"line {line}:" in message) if line else "line" not in message, message
    assert words in message, message
    assert message.count("\n") == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # never modified


def test_the_earliest_problem_is_reported(tmp_path):
    lines = kaggle_lines(8)
    lines = replace_line(lines, 6, "Training", "Validation")  # line 7
    lines = replace_line(lines, 3, ",", ",1 ")  # line 4: 2305 pixels
    lines[8] = lines[8].rsplit(",", 1)[0]  # line 9: a missing field ends the scan
    with pytest.raises(DataError, match=r"line 4: expected 2304 pixel values in pixels, found 2305") as error:
        load_dataset(write_lines(tmp_path / "many.csv", lines))
    assert error.value.line == 4 and error.value.path == str(tmp_path / "many.csv")


def test_rows_that_only_add_up_to_the_right_total_are_caught(tmp_path):
    lines = kaggle_lines(3) + [pixel_line("1", GOOD[:-1]), pixel_line("1", GOOD + ["9"])]  # 2303 + 2305 pixels
    with pytest.raises(DataError, match=r"line 5: expected 2304 pixel values in pixels, found 2303"):
        load_dataset(write_lines(tmp_path / "pair.csv", lines))


def test_error_deep_in_a_large_file_and_after_blank_lines(tmp_path):
    lines = kaggle_lines(400) + [""] + [pixel_line("1", GOOD[:-1])]  # past several vectorised chunks
    path = write_lines(tmp_path / "big.csv", lines)
    with pytest.raises(DataError, match=r"big\.csv: line 403: expected 2304 pixel values"):
        load_dataset(path)


@pytest.mark.parametrize("content,words", [
    (b"", "empty file (0 bytes)"),
    (b"  \n\n", "empty file"),
    (b"emotion,pixels,Usage\n0,1 2\x00 3,Training\n", "line 2: binary file (NUL byte)"),
    ("emotion,pixels,Usage\n".encode("utf-16"), "UTF-16"),
    (b"emotion,pixels,Usage\n0,1 2,Training\n0,\xe9t\xe9,Training\n", "line 3: not UTF-8 text"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "a single image"),
    (b"\x93NUMPY\x01\x00", "a single .npy array"),
    (b"\x1f\x8b\x08\x00", "gzip-compressed"),
])
def test_empty_and_binary_files(tmp_path, content, words):
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)) as error:
        load_dataset(path)
    assert words in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.csv: no such file or folder"):
        load_dataset(tmp_path / "nowhere.csv")


def test_folder_errors_name_the_folder_or_image(tmp_path):
    pixels, _ = random_faces(2)
    unknown = tmp_path / "unknown"
    save_image(unknown / "happy" / "a.png", pixels[0])
    save_image(unknown / "smiling" / "b.png", pixels[1])
    with pytest.raises(DataError, match=r"unknown: unknown folder name\(s\) 'smiling'"):
        load_dataset(unknown)

    mixed = tmp_path / "mixed"
    save_image(mixed / "happy" / "a.png", pixels[0])
    save_image(mixed / "train" / "sad" / "b.png", pixels[1])
    with pytest.raises(DataError, match=r"mixed: class and split folders mixed"):
        load_dataset(mixed)

    empty_image = tmp_path / "zero"
    save_image(empty_image / "sad" / "a.png", pixels[0])
    (empty_image / "sad" / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero/sad/b\.png: empty image file \(0 bytes\)"):
        load_dataset(empty_image)

    broken = tmp_path / "broken"
    save_image(broken / "fear" / "a.png", pixels[0])
    (broken / "fear" / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken/fear/c\.jpg: cannot read image"):
        load_dataset(broken)

    truncated = tmp_path / "truncated"
    png = save_image(truncated / "angry" / "t.png", pixels[0])
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError, match=r"truncated/angry/t\.png: cannot read image"):
        load_dataset(truncated)

    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"nothing: no class folders"):
        load_dataset(tmp_path / "nothing")


def npz_with(path: Path, **overrides) -> Path:
    pixels, labels = random_faces(5)
    arrays = {"pixels": pixels, "emotion": labels.astype(np.uint8), "usage": np.zeros(5, np.uint8)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("overrides,words", [
    ({"emotion": None}, "missing array 'emotion' (found: pixels, usage)"),
    ({"pixels": None}, "missing array 'pixels'"),
    ({"pixels": np.zeros((5, 48, 48), np.float32)}, "array 'pixels' is float32 (5, 48, 48); expected uint8"),
    ({"pixels": np.zeros((5, 32, 32), np.uint8)}, "array 'pixels' is uint8 (5, 32, 32)"),
    ({"emotion": np.array([0, 1, 2, 9, 3])}, "array 'emotion' row 3 is 9; expected 0..6"),
    ({"emotion": np.zeros(4, np.uint8)}, "array 'emotion' has shape (4,); expected (5,)"),
    ({"emotion": np.zeros(5, np.float64)}, "array 'emotion' is float64"),
    ({"usage": np.full(5, 3)}, "array 'usage' row 0 is 3"),
    ({"ferplus_votes": np.zeros((5, 9), np.uint8)}, "array 'ferplus_votes' is uint8 (5, 9)"),
    ({"ids": np.zeros(5, dtype=object)}, "array 'ids' cannot be read"),
])
def test_npz_errors_name_the_file_and_array(tmp_path, overrides, words):
    path = npz_with(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError) as error:
        load_dataset(path)
    assert str(error.value).startswith(str(path)) and words in str(error.value), str(error.value)


def test_corrupt_npz_and_foreign_zip(tmp_path):
    path = npz_with(tmp_path / "cut.npz")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz archive"):
        load_dataset(path)
    foreign = tmp_path / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("pixels", "not an array")
    with pytest.raises(DataError, match=r"foreign\.npz: member 'pixels' is not a numpy array"):
        load_dataset(foreign)


# --------------------------------------------------------------------------------------------------- cache

def forbid_parsing(monkeypatch):
    def fail(path):
        raise AssertionError(f"parsed {path} again instead of using the cache")
    monkeypatch.setattr(data, "_read_csv", fail)
    monkeypatch.setattr(data, "_read_folder", fail)


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "cache"))
    pixels, labels = random_faces(20)
    path = write_kaggle_csv(tmp_path / "fer.csv", pixels, labels, np.zeros(20, int))
    first = load_dataset(path)
    entries = list((tmp_path / "cache").glob("*.npz"))
    assert len(entries) == 1 and not list((tmp_path / "cache").glob("*.tmp"))  # written atomically
    with monkeypatch.context() as patched:
        forbid_parsing(patched)
        second = load_dataset(path)  # a hit: parsing would fail
    np.testing.assert_array_equal(second.pixels, first.pixels)
    assert second.fingerprint() == first.fingerprint() and second.ids.tolist() == first.ids.tolist()

    # A rewrite of the same size with the same mtime is still noticed (the key hashes the file's edges).
    stat = path.stat()
    changed = pixels.copy()
    changed[-1, -1, -1] ^= 1  # 8<->9, 100<->101, ...: same number of digits, so the same file size
    write_kaggle_csv(path, changed, labels, np.zeros(20, int))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = load_dataset(path)
    np.testing.assert_array_equal(third.pixels, changed)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the stale entry is gone

    assert path.stat().st_size == stat.st_size
    assert load_dataset(path, cache=False).fingerprint() == third.fingerprint()


def test_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "cache"))
    pixels, labels = random_faces(10)
    path = write_kaggle_csv(tmp_path / "fer.csv", pixels, labels, np.zeros(10, int))
    load_dataset(path)
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(b"PK\x03\x04 garbage")
    np.testing.assert_array_equal(load_dataset(path).pixels, pixels)
    with np.load(entry) as rebuilt:
        np.testing.assert_array_equal(rebuilt["pixels"], pixels)


def test_unwritable_cache_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(blocker / "cache"))
    pixels, labels = random_faces(3)
    path = write_kaggle_csv(tmp_path / "fer.csv", pixels, labels, [0, 1, 2])
    np.testing.assert_array_equal(load_dataset(path).pixels, pixels)


def test_folder_cache_notices_a_new_image(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "cache"))
    pixels, _ = random_faces(3)
    root = tmp_path / "faces"
    save_image(root / "sad" / "a.png", pixels[0])
    save_image(root / "fear" / "b.png", pixels[1])
    assert len(load_dataset(root)) == 2
    with monkeypatch.context() as patched:
        forbid_parsing(patched)
        assert len(load_dataset(root)) == 2
    save_image(root / "fear" / "c.png", pixels[2])
    assert load_dataset(root).ids.tolist() == ["fear/b.png", "fear/c.png", "sad/a.png"]


# -------------------------------------------------------------------------------------------------- splits

def test_stratified_split_properties():
    labels = np.repeat(np.arange(7), [50, 7, 30, 101, 40, 20, 60])
    mask = stratified_split(labels, 0.1, seed=0)
    per_class = np.bincount(labels[mask], minlength=7)
    assert per_class.tolist() == [5, 1, 3, 10, 4, 2, 6]  # round(0.1 * n) of every class
    assert np.array_equal(mask, stratified_split(labels, 0.1, seed=0))  # seeded
    assert not np.array_equal(mask, stratified_split(labels, 0.1, seed=1))
    assert not stratified_split(labels, 0.0).any()


def test_val_fraction_applies_only_without_a_validation_split(tmp_path):
    pixels, labels = random_faces(70)
    path = write_kaggle_csv(tmp_path / "fer.csv", pixels, labels, np.r_[np.zeros(60, int), np.ones(10, int)])
    assert (load_dataset(path, val_fraction=0.5).split == PUBLIC_TEST).sum() == 10  # the file's Usage wins
    only_train = write_kaggle_csv(tmp_path / "train_only.csv", pixels, labels, np.zeros(70, int))
    assert (load_dataset(only_train, val_fraction=0.3).split == PUBLIC_TEST).sum() == 21
    assert (load_dataset(only_train, val_fraction=0).split == TRAINING).all()
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset(only_train, val_fraction=1.0)


# ------------------------------------------------------------------------------------------------- dataset

def test_dataset_subset_select_and_fingerprint(tmp_path):
    pixels, labels = random_faces(9)
    ds = FerDataset(pixels, labels, np.arange(9) % 3, np.arange(9), source="mem")
    assert len(ds) == 9 and ds.ids.tolist()[:2] == ["0", "1"]
    public = ds.select_split("PublicTest")
    assert public.ids.tolist() == ["1", "4", "7"] and public.select_split(PUBLIC_TEST).ids.tolist() == ["1", "4", "7"]
    picked = ds.subset([8, 0])
    np.testing.assert_array_equal(picked.pixels, pixels[[8, 0]])
    assert picked.labels.tolist() == [labels[8], labels[0]]
    assert ds.subset(ds.labels == 3).ids.tolist() == ["3"]
    again = FerDataset(pixels.copy(), labels.copy(), np.arange(9) % 3, np.arange(9))
    assert ds.fingerprint() == again.fingerprint() and len(ds.fingerprint()) == 16
    relabelled = labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 7
    assert FerDataset(pixels, relabelled, np.arange(9) % 3, np.arange(9)).fingerprint() != ds.fingerprint()
    assert FerDataset(pixels, None, np.arange(9) % 3, np.arange(9)).fingerprint() != ds.fingerprint()
    for row, y, x in [(0, 0, 0), (8, 47, 47), (4, 20, 33)]:  # any single grey level anywhere changes it
        touched = pixels.copy()
        touched[row, y, x] ^= 1
        assert FerDataset(touched, labels, np.arange(9) % 3, np.arange(9)).fingerprint() != ds.fingerprint()
    assert ds.subset(np.arange(9)[::-1]).fingerprint() != ds.fingerprint()  # order matters
    with pytest.raises(ValueError, match="pixels must be uint8"):
        FerDataset(pixels.astype(np.float32), labels, np.zeros(9), np.arange(9))


# ---------------------------------------------------------------------------------------- the shipped file

SHIPPED_COUNTS = {  # ../shared/data/SOURCE.md, per class Angry..Neutral
    PUBLIC_TEST: [467, 56, 496, 895, 653, 415, 607],
    PRIVATE_TEST: [491, 55, 528, 879, 594, 416, 626],
}


def test_shipped_default_data():
    ds = load_dataset(None)
    assert ds.source == str(DEFAULT_DATA_PATH) and len(ds) == 7178
    assert not (ds.split == TRAINING).any()
    for code, counts in SHIPPED_COUNTS.items():
        assert np.bincount(ds.labels[ds.split == code], minlength=7).tolist() == counts
    assert ds.ids.tolist() == [str(i) for i in range(28709, 35887)]  # the original fer2013.csv row numbers
    assert ds.ferplus_votes.shape == (7178, 10) and ds.ferplus_votes.dtype == np.uint8
    assert (ds.ferplus_votes.sum(axis=1) >= 9).all()
    start = time.perf_counter()
    key = ds.fingerprint()
    assert time.perf_counter() - start < 1.0 and key == load_dataset(None).fingerprint()


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason="needs ../shared/data/fer2013.npz")
def test_shipped_rows_equal_the_full_file():
    with np.load(SHARED_NPZ) as full:
        rows = np.flatnonzero(full["usage"] != TRAINING)
        ds = load_dataset(None)
        np.testing.assert_array_equal(ds.pixels, full["pixels"][rows])
        np.testing.assert_array_equal(ds.labels, full["emotion"][rows])
        np.testing.assert_array_equal(ds.split, full["usage"][rows])
        np.testing.assert_array_equal(ds.ferplus_votes, full["ferplus_votes"][rows])
        assert ds.ids.astype(int).tolist() == rows.tolist()


def test_unknown_class_folder_inside_a_split_folder(tmp_path):
    root = tmp_path / "nested"
    save_image(root / "train" / "happy" / "a.png", random_faces(1)[0][0])
    save_image(root / "test" / "joy" / "b.png", random_faces(1)[0][0])
    with pytest.raises(DataError, match=r"nested/test/joy: unknown class folder"):
        load_dataset(root)


def test_split_rows_are_the_positions_select_split_takes():
    if not DEFAULT_DATA_PATH.exists():
        pytest.skip(f"needs {DEFAULT_DATA_PATH}")
    data = load_dataset(DEFAULT_DATA_PATH)
    rows = data.split_rows("PrivateTest")
    assert rows.dtype == np.int64 and len(rows) > 0 and np.all(np.diff(rows) > 0)
    assert np.array_equal(data.pixels[rows], data.select_split("PrivateTest").pixels)
    assert np.array_equal(data.split_rows(None), np.arange(len(data)))
    assert len(data.split_rows("Training")) == 0  # the shipped file holds the two test splits only
