"""FER2013 in every format users have, read into one in-memory FerDataset.

Formats, detected from the content rather than the file name:
  - Kaggle's fer2013.csv (emotion,pixels,Usage), the course's train.csv (label,feature) and test.csv (id,feature);
  - class folders of PNG/JPEG images (angry/ ... neutral/ or 0/ ... 6/), optionally inside train/ val/ test/ folders;
  - .npz archives with the arrays of ../shared/data/fer2013.npz (pixels, emotion, usage, optional ferplus_votes, ids).
Every problem a user can cause ends in one DataError naming the file, the line (1-based, header = line 1) or the
image, and what is wrong. A parsed CSV or folder is cached as an uncompressed .npz, so the second load is instant.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from fercore.labels import (CLASS_NAMES, NUM_CLASSES, PRIVATE_TEST, PUBLIC_TEST, SPLIT_NAMES, TRAINING,
                            class_index, split_index)
from fercore.runs import atomic_write, cache_dir

IMAGE_SIZE = 48
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
DEFAULT_DATA_PATH = Path(__file__).resolve().parent.parent / "data" / "fer2013_test.npz"

CACHE_VERSION = 1  # bump when the parsed arrays change meaning, so old cache entries are never used
_CHUNK_ROWS = 128  # rows parsed per vectorised step: ~1 MB of text, so the temporaries stay in cache
_PARSE_THREADS = min(4, os.cpu_count() or 1)
_EDGE_BYTES = 64 * 1024  # the cache key hashes this much of the file's start and end
# 288 odd 64-bit weights for the per-image digest in FerDataset.fingerprint; derived from sha256, so never changing.
_FINGERPRINT_WEIGHTS = np.frombuffer(b"".join(hashlib.sha256(b"fercore fingerprint %d" % i).digest()
                                              for i in range(NUM_PIXELS // 32)), dtype="<u8") | np.uint64(1)


class DataError(ValueError):
    """A data file the user gave is missing or wrong; the message names the file, the line or image, and what.

    `path` and `line` (1-based file line, header = 1; None when not about one line) are kept for programs.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path, self.line = path, line


def _fail(path, what: str, line: int | None = None) -> DataError:
    where = f"{path}: line {line}" if line is not None else f"{path}"
    return DataError(f"{where}: {what}", str(path), line)


@dataclass(eq=False)
class FerDataset:
    pixels: np.ndarray                # uint8 (N, 48, 48)
    labels: np.ndarray | None         # int64 (N,) in 0..6; None when unlabeled
    split: np.ndarray                 # uint8 (N,) codes into SPLIT_NAMES
    ids: np.ndarray                   # str (N,): CSV row number, the file's id, or image path
    ferplus_votes: np.ndarray | None = None  # uint8 (N, 10) or None
    source: str = ""
    _fingerprint: tuple | None = field(default=None, init=False, repr=False)  # (array ids, key)

    def __post_init__(self):
        self.pixels = np.asarray(self.pixels)
        if self.pixels.ndim == 2 and self.pixels.shape[1] == NUM_PIXELS:
            self.pixels = self.pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        if self.pixels.dtype != np.uint8 or self.pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"pixels must be uint8 (N, 48, 48), got {self.pixels.dtype} {self.pixels.shape}")
        n = len(self.pixels)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=np.uint8)
        self.ids = np.asarray(self.ids).astype(str)
        if self.ferplus_votes is not None:
            self.ferplus_votes = np.asarray(self.ferplus_votes, dtype=np.uint8)
        for name in ("labels", "split", "ids", "ferplus_votes"):
            array = getattr(self, name)
            if array is not None and len(array) != n:
                raise ValueError(f"{name} has {len(array)} rows but pixels has {n}")

    def __len__(self) -> int:
        return len(self.pixels)

    def subset(self, indices_or_mask) -> FerDataset:
        """A new dataset holding the chosen rows (a boolean mask or integer indices), in that order."""
        index = np.asarray(indices_or_mask)
        if index.dtype != np.bool_:
            index = index.astype(np.int64)
        labels = None if self.labels is None else self.labels[index]
        votes = None if self.ferplus_votes is None else self.ferplus_votes[index]
        return FerDataset(self.pixels[index], labels, self.split[index], self.ids[index], votes, self.source)

    def split_rows(self, name_or_code=None) -> np.ndarray:
        """int64 positions of a split's rows (a name or code), in dataset order; None: every row."""
        if name_or_code is None:
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(self.split == split_index(name_or_code)).astype(np.int64)

    def select_split(self, name_or_code) -> FerDataset:
        return self.subset(self.split_rows(name_or_code))

    def fingerprint(self) -> str:
        """Short sha256 hex of pixels, labels and split: equal data gives an equal key in checkpoints and caches.

        Pixels enter as one 64-bit digest per image (its bytes as 288 words, summed with fixed odd weights mod 2^64,
        so a change within any one word always shows), which takes ~4x less time than sha256 over all the bytes:
        ~15 ms for 36k images. Remembered until an array is replaced; arrays are treated as read-only.
        """
        arrays = (id(self.pixels), id(self.labels), id(self.split))
        if self._fingerprint is None or self._fingerprint[0] != arrays:
            words = np.ascontiguousarray(self.pixels).reshape(len(self.pixels), -1).view("<u8")
            digest = hashlib.sha256(f"{self.pixels.shape}".encode())
            digest.update(words @ _FINGERPRINT_WEIGHTS)
            digest.update(b"no labels" if self.labels is None else np.ascontiguousarray(self.labels, "<i8"))
            digest.update(np.ascontiguousarray(self.split))
            self._fingerprint = (arrays, digest.hexdigest()[:16])
        return self._fingerprint[1]


def load_dataset(path=None, *, val_fraction: float = 0.1, seed: int = 0, cache: bool = True) -> FerDataset:
    """Read any supported file or folder (None: the shipped DEFAULT_DATA_PATH).

    Splits come from the file (Usage column, usage array, train/val/test folders). When labelled data has Training
    rows but no PublicTest rows, a seeded, stratified `val_fraction` of the Training rows becomes PublicTest.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    path = Path(DEFAULT_DATA_PATH if path is None else path).expanduser()
    kind = detect_format(path)
    try:
        if kind == "npz":
            arrays = _read_npz(path)
        else:
            reader = _read_folder if kind == "folder" else _read_csv
            arrays = _cached(path, kind, reader) if cache else reader(path)
    except OSError as e:  # permissions, a file vanishing mid-read, ...
        raise _fail(e.filename or path, f"cannot read: {e.strerror or e}") from None
    labels = arrays.get("labels")
    split = _assign_splits(len(arrays["pixels"]), labels, arrays.get("usage"), val_fraction, seed)
    return FerDataset(arrays["pixels"], labels, split, arrays["ids"], arrays.get("ferplus_votes"), str(path))


def detect_format(path) -> str:
    """'csv', 'npz' or 'folder', from what the path holds (not its name); DataError for anything else."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise _fail(path, "no such file or folder")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise _fail(path, f"cannot read: {e.strerror or e}") from None
    if not head:
        raise _fail(path, "empty file (0 bytes)")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        raise _fail(path, "a single .npy array; expected a .npz archive with pixels, emotion and usage arrays")
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        raise _fail(path, "a single image; pass the folder that holds the class folders (angry/, happy/, ...)")
    if head.startswith(b"\x1f\x8b"):
        raise _fail(path, "gzip-compressed; extract it first (tar xzf / gunzip) and pass the .csv")
    return "csv"


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask choosing round(fraction * n_c) rows of every class c, at random but fixed by `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        n_val = int(np.floor(len(rows) * fraction + 0.5))
        chosen[rng.permutation(rows)[:n_val]] = True
    return chosen


def _assign_splits(n: int, labels, usage, val_fraction: float, seed: int) -> np.ndarray:
    if usage is None:  # no split in the file: labelled rows train, unlabelled ones are a test set
        usage = np.full(n, TRAINING if labels is not None else PRIVATE_TEST, dtype=np.uint8)
    split = np.array(usage, dtype=np.uint8)
    training = np.flatnonzero(split == TRAINING)
    if labels is not None and val_fraction > 0 and len(training) and not (split == PUBLIC_TEST).any():
        split[training[stratified_split(labels[training], val_fraction, seed)]] = PUBLIC_TEST
    return split


# ----------------------------------------------------------------------------------------------------- CSV

# Header names (case-insensitive) and the role each column plays.
_COLUMN_ROLES = {"emotion": "label", "label": "label", "pixels": "pixels", "feature": "pixels",
                 "usage": "usage", "id": "id"}
_KNOWN_HEADERS = ("emotion,pixels,Usage (Kaggle fer2013.csv), label,feature (course train.csv) "
                  "or id,feature (course test.csv)")
_LABEL_CODES = {str(k).encode(): k for k in range(NUM_CLASSES)}
_USAGE_CODES = {name.encode(): k for k, name in enumerate(SPLIT_NAMES)}


def _read_csv(path: Path) -> dict:
    """Parse a CSV into the arrays pixels, ids and, when the file has them, labels and usage."""
    data = path.read_bytes()
    start = _check_text(path, data)
    columns, body = _parse_header(path, data, start)
    table = _locate_fields(path, data, body, columns)
    # Each column is checked on its own; of the problems found, the user hears about the earliest line's.
    problems = [table["problem"]] if table["problem"] else []
    arrays = {}

    def check(name, parse, *args):
        try:
            arrays[name] = parse(path, data, table, *args)
        except DataError as problem:
            problems.append(problem)

    check("pixels", _parse_pixels)
    for role, column, values in zip(table["roles"], columns, table["small"]):
        if role == "label":
            check("labels", _parse_codes, values, _LABEL_CODES, column, f"an integer 0-6 ({', '.join(CLASS_NAMES)})")
        elif role == "usage":
            check("usage", _parse_codes, values, _USAGE_CODES, column, "one of " + ", ".join(SPLIT_NAMES))
        elif role == "id":
            check("ids", _parse_ids, values)
    if problems:
        raise min(problems, key=lambda problem: problem.line)
    if "usage" in arrays:
        arrays["usage"] = arrays["usage"].astype(np.uint8)
    arrays.setdefault("ids", _row_numbers(len(arrays["pixels"])))
    return arrays


def _row_numbers(n: int) -> np.ndarray:
    return np.arange(n).astype(f"U{len(str(n))}")


def _check_text(path, data: bytes) -> int:
    """Reject empty and binary files; return where the text starts (after a UTF-8 byte-order mark)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _fail(path, "UTF-16 encoded text; save it as UTF-8 (or ASCII) CSV")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _fail(path, "binary file (NUL byte), not CSV text", _line_of(data, nul))
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _fail(path, f"not UTF-8 text (byte 0x{data[e.start]:02x}); is it a binary file?",
                        _line_of(data, e.start)) from None
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if len(data) == start or (data if start == 0 else data[start:]).isspace():  # isspace stops at the first text
        raise _fail(path, "empty file (no header, no rows)")
    return start


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _unquote(raw: bytes) -> bytes:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == 0x22:  # "..."
        raw = raw[1:-1].strip()
    return raw


def _shown(raw: bytes, limit: int = 30) -> str:
    text = raw.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse_header(path, data: bytes, start: int) -> tuple[list[str], int]:
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    header = data[start:end].rstrip(b"\r")
    columns = [_unquote(c).decode("utf-8", "replace") for c in header.split(b",")]
    roles = [_COLUMN_ROLES.get(c.lower()) for c in columns]
    if None in roles or "pixels" not in roles or len(set(roles)) != len(roles):
        raise _fail(path, f"unrecognised header {_shown(header, 60)}; expected {_KNOWN_HEADERS}", 1)
    return columns, end + 1


def _locate_fields(path, data: bytes, pos: int, columns: list[str]) -> dict:
    """Locate every row's fields without copying the big pixel field: its (start, end) offsets are kept.

    A row with too few fields ends the scan; it is kept as table["problem"], and the rows before it are returned.
    """
    roles = [_COLUMN_ROLES[c.lower()] for c in columns]
    pixel_col = roles.index("pixels")
    n_left, n_right = pixel_col, len(columns) - 1 - pixel_col
    row_starts, pixel_starts, pixel_ends = [], [], []
    left = [[] for _ in range(n_left)]
    right = [[] for _ in range(n_right)]
    size, problem = len(data), None
    while pos < size:
        newline = data.find(b"\n", pos)
        newline = size if newline < 0 else newline
        end = newline - 1 if newline > pos and data[newline - 1] == 0x0D else newline
        if end == pos:  # blank line
            pos = newline + 1
            continue
        fields = _outer_fields(data, pos, end, n_left, n_right)
        if fields is None:
            problem = _field_count_error(path, data, pos, end, columns)
            break
        s, e, left_values, right_values = fields
        for values, value in zip(left, left_values):
            values.append(value)
        for values, value in zip(right, right_values):
            values.append(value)
        if e - s >= 2 and data[s] == 0x22 and data[e - 1] == 0x22:  # "quoted pixels"
            s, e = s + 1, e - 1
        row_starts.append(pos)
        pixel_starts.append(s)
        pixel_ends.append(e)
        pos = newline + 1
    if not row_starts and problem is None:
        raise _fail(path, "no data rows after the header")
    small = left + [None] + right[::-1]  # right-hand fields were collected from the end of the line
    return {"row_starts": row_starts, "pixel_starts": pixel_starts, "pixel_ends": pixel_ends,
            "small": small, "columns": columns, "roles": roles, "problem": problem}


def _outer_fields(data: bytes, start: int, end: int, n_left: int, n_right: int):
    """The fields left and right of the pixel field (which may be long), and where the pixel field lies."""
    left, right = [], []
    for _ in range(n_left):
        comma = data.find(b",", start, end)
        if comma < 0:
            return None
        left.append(data[start:comma])
        start = comma + 1
    for _ in range(n_right):
        comma = data.rfind(b",", start, end)
        if comma < 0:
            return None
        right.append(data[comma + 1:end])
        end = comma
    return start, end, left, right


def _field_count_error(path, data: bytes, row_start: int, row_end: int, columns) -> DataError:
    found = data.count(b",", row_start, row_end) + 1
    return _fail(path, f"expected {len(columns)} comma-separated fields ({','.join(columns)}), found {found}",
                 _line_of(data, row_start))


def _parse_codes(path, data: bytes, table: dict, values, codes: dict, column: str, expected: str) -> np.ndarray:
    """Map short fields (labels, usage) through `codes`, reporting the first bad one with its line."""
    out = np.fromiter((codes.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    for i in np.flatnonzero(out < 0):  # slow path: quoted, padded or wrong values
        raw = _unquote(values[i])
        code = codes.get(raw, _lookup_name(codes, raw))
        if code < 0:
            raise _fail(path, f"{column} is {_shown(raw)}, expected {expected}", _line_of(data, table["row_starts"][i]))
        out[i] = code
    return out


def _lookup_name(codes: dict, raw: bytes) -> int:
    lowered = {k.lower(): v for k, v in codes.items()}
    return lowered.get(raw.lower(), -1)


def _parse_ids(path, data: bytes, table: dict, values) -> np.ndarray:
    ids = [_unquote(v).decode("utf-8") for v in values]
    for i, text in enumerate(ids):
        if not text:
            raise _fail(path, "empty id", _line_of(data, table["row_starts"][i]))
    return np.array(ids, dtype=str)


def _parse_pixels(path, data: bytes, table: dict) -> np.ndarray:
    """All pixel fields into uint8 (N, 48, 48): a vectorised pass per chunk, a precise per-line scan on trouble.

    Chunks run on a few threads: numpy releases the GIL, so an idle 2-core machine parses ~1.5x faster.
    """
    starts, ends = table["pixel_starts"], table["pixel_ends"]
    n = len(starts)
    out = np.empty((n, NUM_PIXELS), dtype=np.uint8)
    view = memoryview(data)

    def parse_chunk(first: int) -> None:
        last = min(first + _CHUNK_ROWS, n)
        fields = [view[s:e] for s, e in zip(starts[first:last], ends[first:last])]
        values = _parse_pixel_chunk(fields)
        if values is None:  # something is off in this chunk: find the first bad line and say what is wrong
            values = np.stack([_parse_pixel_field_precisely(path, data, table, first + k, bytes(f))
                               for k, f in enumerate(fields)])
        out[first:last] = values

    firsts = range(0, n, _CHUNK_ROWS)
    if len(firsts) < 4:
        for first in firsts:
            parse_chunk(first)
    else:
        with ThreadPoolExecutor(_PARSE_THREADS) as pool:
            for _ in pool.map(parse_chunk, firsts):  # re-raises the earliest chunk's DataError
                pass
    return out.reshape(n, IMAGE_SIZE, IMAGE_SIZE)


def _parse_pixel_chunk(fields) -> np.ndarray | None:
    """Rows of exactly 2304 single-space-separated integers 0..255, parsed at numpy speed; None if anything is off.

    The fields are joined with newlines, two in front and one at the end, so a token is a maximal run of digits and
    each is preceded by a separator. Given only digits, spaces and newlines (the byte counts add up), T tokens with
    T == spaces + rows means every separator but the first and last is followed by a digit: no empty field, no
    doubled or trailing space. A newline after every 2304th token means 2304 tokens per row; the digit count equal
    to the sum of min(length, 3) over tokens means no token is longer than 3 digits.
    """
    rows = len(fields)
    text = b"\n".join(chain((b"\n",), fields, (b"",)))
    buf = np.frombuffer(text, dtype=np.uint8)
    digit = buf - np.uint8(48)  # 0..9 for digits, >= 10 for separators
    is_digit = digit < 10
    n_digits = int(np.count_nonzero(is_digit))
    n_spaces = int(np.count_nonzero(buf == 32))
    n_tokens = rows * NUM_PIXELS
    if n_digits + n_spaces + rows + 2 != len(text) or n_spaces + rows != n_tokens:
        return None
    end = np.flatnonzero(is_digit[2:-1] > is_digit[3:])  # token ends at end + 2 (a digit, then a separator)
    if len(end) != n_tokens or not (buf[3:].take(end[NUM_PIXELS - 1::NUM_PIXELS]) == 10).all():
        return None
    has_tens = is_digit[1:].take(end)
    has_hundreds = is_digit.take(end) & has_tens
    if n_digits != n_tokens + int(np.count_nonzero(has_tens)) + int(np.count_nonzero(has_hundreds)):
        return None  # a token of 4+ digits (maybe leading zeros): the precise scan decides
    values = digit[2:].take(end).astype(np.uint16)
    values += digit[1:].take(end) * has_tens * np.uint8(10)
    values += np.multiply(digit.take(end) * has_hundreds, 100, dtype=np.uint16)
    if values.max(initial=0) > 255:
        return None
    return values.reshape(rows, NUM_PIXELS)


def _parse_pixel_field_precisely(path, data: bytes, table: dict, row: int, raw: bytes) -> np.ndarray:
    line = _line_of(data, table["row_starts"][row])
    columns = table["columns"]
    column = columns[table["small"].index(None)]
    if b"," in raw:
        found = raw.count(b",") + len(columns)
        raise _fail(path, f"expected {len(columns)} comma-separated fields ({','.join(columns)}), found {found}", line)
    tokens = raw.split()
    if len(tokens) != NUM_PIXELS:
        raise _fail(path, f"expected {NUM_PIXELS} pixel values in {column}, found {len(tokens)}", line)
    for k, token in enumerate(tokens):
        if not token.isdigit():
            raise _fail(path, f"{column} value {k + 1} is {_shown(token)}, not an integer 0..255", line)
        if int(token) > 255:
            raise _fail(path, f"{column} value {k + 1} is {int(token)}, outside 0..255", line)
    return np.array([int(t) for t in tokens], dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- folders

_IMAGE_IGNORED = {"thumbs.db", "desktop.ini"}
_SPLIT_FOLDERS = {"train": TRAINING, "training": TRAINING,
                  "val": PUBLIC_TEST, "valid": PUBLIC_TEST, "validation": PUBLIC_TEST, "publictest": PUBLIC_TEST,
                  "test": PRIVATE_TEST, "testing": PRIVATE_TEST, "privatetest": PRIVATE_TEST}


def _visible(entries):
    return [e for e in entries if not e.name.startswith(".") and e.name.lower() not in _IMAGE_IGNORED]


def _class_of_folder(name: str) -> int | None:
    try:
        return class_index(name)
    except ValueError:
        return None


def _list_images(root: Path) -> tuple[list[tuple[str, str, int, int, int | None]], bytes]:
    """(relative path, path, size, class, split or None) of every image; a listing (path, size, mtime) as cache key."""
    subfolders = sorted((e for e in _visible(os.scandir(root)) if e.is_dir()), key=lambda e: e.name)
    if not subfolders:
        raise _fail(root, "no class folders inside; expected angry/ disgust/ fear/ happy/ sad/ surprise/ neutral/ "
                          "(or 0/ ... 6/), optionally inside train/ and test/")
    if all(_class_of_folder(e.name) is not None for e in subfolders):
        groups = [(None, root)]
    elif all(e.name.lower() in _SPLIT_FOLDERS for e in subfolders):
        groups = sorted((_SPLIT_FOLDERS[e.name.lower()], Path(e.path)) for e in subfolders)  # Training first
    else:
        unknown = [e.name for e in subfolders
                   if _class_of_folder(e.name) is None and e.name.lower() not in _SPLIT_FOLDERS]
        what = f"unknown folder name(s) {', '.join(map(repr, unknown))}" if unknown else "class and split folders mixed"
        raise _fail(root, f"{what}; expected class folders ({', '.join(c.lower() for c in CLASS_NAMES)} or 0-6), "
                          f"or split folders (train, val, test) that hold them")
    images, listing = [], []
    for split, folder in groups:
        class_folders = sorted((e for e in _visible(os.scandir(folder)) if e.is_dir()), key=lambda e: e.name)
        for entry in class_folders:
            label = _class_of_folder(entry.name)
            if label is None:
                raise _fail(entry.path, f"unknown class folder; expected {', '.join(c.lower() for c in CLASS_NAMES)} "
                                        f"or 0-6")
            for image in sorted(_visible(os.scandir(entry.path)), key=lambda e: e.name):
                if image.is_dir():
                    raise _fail(image.path, "unexpected folder inside a class folder; expected only images")
                stat = image.stat()
                relative = os.path.relpath(image.path, root).replace(os.sep, "/")
                images.append((relative, image.path, stat.st_size, label, split))
                listing.append(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}")
    if not images:
        raise _fail(root, "no images found in the class folders")
    return images, "\n".join(listing).encode()


def _read_image(path: str, size: int) -> np.ndarray:
    from PIL import Image

    if size == 0:
        raise _fail(path, "empty image file (0 bytes)")
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except Exception as e:  # PIL raises many types for broken files; all mean the same to the user
        raise _fail(path, f"cannot read image ({type(e).__name__}: {e})") from None
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def _read_folder(root: Path) -> dict:
    images, _ = _list_images(root)
    relatives, paths, sizes, labels, splits = zip(*images)
    arrays = {"pixels": np.stack([_read_image(path, size) for path, size in zip(paths, sizes)]),
              "labels": np.array(labels, dtype=np.int64),
              "ids": np.array(relatives, dtype=str)}
    if splits[0] is not None:
        arrays["usage"] = np.array(splits, dtype=np.uint8)
    return arrays


def _folder_listing(root: Path) -> bytes:
    return _list_images(root)[1]


# ----------------------------------------------------------------------------------------------------- npz

def _read_npz(path: Path) -> dict:
    stored, name = {}, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                stored[name] = archive[name]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        what = f"array {name!r} cannot be read" if name else "not a readable .npz archive"
        raise _fail(path, f"{what} ({type(e).__name__}: {e})") from None
    for name, value in stored.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not a .npy file
            raise _fail(path, f"member {name!r} is not a numpy array; expected a .npz written by numpy")
    label_name = "emotion" if "emotion" in stored else "labels" if "labels" in stored else None
    for required in ("pixels", label_name or "emotion"):
        if required not in stored:
            raise _fail(path, f"missing array {required!r} (found: {', '.join(sorted(stored)) or 'none'})")
    pixels = stored["pixels"]
    if pixels.ndim == 2 and pixels.shape[1] == NUM_PIXELS:
        pixels = pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise _fail(path, f"array 'pixels' is {pixels.dtype} {pixels.shape}; expected uint8 (N, 48, 48)")
    n = len(pixels)
    arrays = {"pixels": pixels,
              "labels": _npz_codes(path, stored[label_name], label_name, n, NUM_CLASSES, CLASS_NAMES)}
    if "usage" in stored:
        arrays["usage"] = _npz_codes(path, stored["usage"], "usage", n, len(SPLIT_NAMES), SPLIT_NAMES).astype(np.uint8)
    if "ferplus_votes" in stored:
        votes = stored["ferplus_votes"]
        in_range = votes.dtype.kind in "iu" and 0 <= votes.min(initial=0) and votes.max(initial=0) <= 255
        if not in_range or votes.shape != (n, 10):
            raise _fail(path, f"array 'ferplus_votes' is {votes.dtype} {votes.shape}; "
                              f"expected integers 0..255, shape ({n}, 10)")
        arrays["ferplus_votes"] = votes.astype(np.uint8)
    ids = stored.get("ids")
    if ids is not None and (ids.shape != (n,) or ids.dtype.kind not in "iuU"):
        raise _fail(path, f"array 'ids' is {ids.dtype} {ids.shape}; expected integers or strings, shape ({n},)")
    arrays["ids"] = _row_numbers(n) if ids is None else ids.astype(str)
    return arrays


def _npz_codes(path, array: np.ndarray, name: str, n: int, limit: int, names) -> np.ndarray:
    """Integer codes 0..limit-1 (or their names as strings) into int64, naming the first bad row."""
    if array.shape != (n,):
        raise _fail(path, f"array {name!r} has shape {array.shape}; expected ({n},), one per image")
    if array.dtype.kind == "U":
        lowered = {s.lower(): k for k, s in enumerate(names)}
        codes = np.array([lowered.get(str(v).lower(), -1) for v in array], dtype=np.int64)
    elif array.dtype.kind in "iu":
        codes = array.astype(np.int64)
    else:
        raise _fail(path, f"array {name!r} is {array.dtype}; expected integer codes 0..{limit - 1}")
    bad = np.flatnonzero((codes < 0) | (codes >= limit))
    if len(bad):
        raise _fail(path, f"array {name!r} row {bad[0]} is {array[bad[0]].item()!r}; expected 0..{limit - 1} "
                          f"({', '.join(names)})")
    return codes


# --------------------------------------------------------------------------------------------------- cache

_CACHED_ARRAYS = ("pixels", "labels", "usage", "ids", "ferplus_votes")


def _cache_key(path: Path, kind: str) -> tuple[str, str]:
    """(entry prefix for this path, key that changes when the file or folder changes)."""
    absolute = str(path.resolve())
    digest = hashlib.sha256(f"{CACHE_VERSION}\0{kind}\0{absolute}".encode())
    if kind == "folder":
        digest.update(_folder_listing(path))
    else:
        stat = path.stat()
        digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        with open(path, "rb") as f:  # a same-size rewrite within one mtime tick still changes these bytes
            digest.update(f.read(_EDGE_BYTES))
            f.seek(max(0, stat.st_size - _EDGE_BYTES))
            digest.update(f.read(_EDGE_BYTES))
    prefix = hashlib.sha256(absolute.encode()).hexdigest()[:16]
    return prefix, digest.hexdigest()[:32]


def _cached(path: Path, kind: str, reader) -> dict:
    """The reader's arrays, from the cache when the file is unchanged; a broken cache is rebuilt, never an error."""
    prefix, key = _cache_key(path, kind)
    entry = cache_dir() / f"{prefix}-{key}.npz"
    arrays = _load_cache_entry(entry)
    if arrays is None:
        arrays = reader(path)
        _write_cache_entry(entry, prefix, arrays)
    return arrays


def _load_cache_entry(entry: Path) -> dict | None:
    try:
        with np.load(entry, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if name in _CACHED_ARRAYS}
        n = len(arrays["pixels"])
        ok = arrays["pixels"].dtype == np.uint8 and arrays["pixels"].shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
        ok &= all(len(a) == n for a in arrays.values()) and "ids" in arrays
        return arrays if ok else None
    except Exception:  # missing, truncated or foreign: rebuild it
        return None


def _write_cache_entry(entry: Path, prefix: str, arrays: dict) -> None:
    """Atomic, uncompressed for speed; stale entries of the same path are removed."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, lambda f: np.savez(f, **arrays))
        for stale in entry.parent.glob(f"{prefix}-*.npz"):
            if stale != entry:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full cache folder only costs speed
