"""A corpus of malformed inputs, one of each kind a user can feed fercore: data files and folders, checkpoints, run
names. `build_corpus(folder)` writes them and returns one BadInput per case, with words its error must contain.

They are generated rather than committed so that each one's defect is readable here, next to its name, and git
cannot change their bytes (line endings, encodings, binary content).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fixtures import learnable_faces

MARKER = "code-ran.txt"  # the malicious checkpoint would create this file beside itself when unpickled


@dataclass(frozen=True)
class BadInput:
    name: str
    kind: str  # "data", "checkpoint" or "run name"
    target: str  # the path (or the run name)
    words: str  # what its error message must say


def _rows(n: int = 3) -> list[str]:
    pixels, labels = learnable_faces(n, seed=3)
    return [f"{label},{' '.join(map(str, image.ravel().tolist()))},Training" for image, label in zip(pixels, labels)]


def _csv(folder: Path, name: str, lines: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _with_pixels(values: list[str], label: str = "3") -> str:
    return f"{label},{' '.join(values)},Training"


def _npz(folder: Path, name: str, **overrides) -> Path:
    pixels, labels = learnable_faces(5, seed=4)
    arrays = {"pixels": pixels, "emotion": labels.astype(np.uint8), "usage": np.zeros(5, np.uint8), **overrides}
    path = folder / name
    with open(path, "wb") as f:  # np.savez would add ".npz" to names without it
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def data_corpus(folder: Path) -> list[BadInput]:
    folder.mkdir(parents=True, exist_ok=True)
    good = _rows(1)[0].split(",")[1].split()
    header = "emotion,pixels,Usage"
    cases: list[tuple[str, Path, str]] = []

    def csv_case(name, lines, words):
        cases.append((name, _csv(folder, name.replace(" ", "_") + ".csv", lines), words))

    csv_case("wrong header", ["emotion,image,Usage", *_rows()], "unrecognised header")
    csv_case("2303 pixels", [header, *_rows(), _with_pixels(good[:-1])], "line 5: expected 2304 pixel values")
    csv_case("2305 pixels", [header, _with_pixels(good + ["7"])], "line 2: expected 2304 pixel values")
    csv_case("pixel 256", [header, _with_pixels(["256", *good[1:]])], "outside 0..255")
    csv_case("pixel -1", [header, _with_pixels(["-1", *good[1:]])], "line 2")
    csv_case("pixel abc", [header, _with_pixels([*good[:5], "abc", *good[6:]])], "'abc', not an integer")
    csv_case("label 7", [header, _with_pixels(good, label="7")], "expected an integer 0-6")
    csv_case("usage unknown", [header, f"3,{' '.join(good)},Validation"], "Usage is 'Validation'")
    csv_case("header only", [header], "no data rows")
    csv_case("course test.csv without a header", [f"0,{' '.join(good)}"], "line 1")
    truncated = _csv(folder, "truncated.csv", [header, *_rows(4)])
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) - 3000])
    cases.append(("truncated CSV", truncated, "line 5"))
    (folder / "empty.csv").write_bytes(b"")
    cases.append(("empty file", folder / "empty.csv", "empty file"))
    (folder / "utf16.csv").write_bytes("\n".join([header, *_rows(1)]).encode("utf-16"))
    cases.append(("UTF-16 text", folder / "utf16.csv", "UTF-16"))
    (folder / "binary.csv").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases.append(("binary file", folder / "binary.csv", "binary"))
    enormous = folder / "enormous_line.csv"
    with open(enormous, "w") as f:  # one 24 MB line: 12 million pixel values in one row, no newline
        f.write(header + "\n3,")
        f.write("1 " * 12_000_000)
        f.write(",Training")
    cases.append(("one enormous line", enormous, "line 2: expected 2304 pixel values"))
    cases.append(("missing file", folder / "does_not_exist.csv", "no such file"))

    pixels, _ = learnable_faces(2, seed=5)
    stray = folder / "folder_with_text_file"
    _image(stray / "happy" / "a.png", pixels[0])
    (stray / "happy" / "notes.txt").write_text("not an image")
    cases.append(("folder holding a non-image file", stray, "notes.txt"))
    zero = folder / "folder_with_empty_png"
    _image(zero / "sad" / "a.png", pixels[0])
    (zero / "sad" / "b.png").write_bytes(b"")
    cases.append(("folder holding a 0-byte PNG", zero, "b.png: empty image file"))
    unknown = folder / "folder_with_unknown_class"
    _image(unknown / "smiling" / "a.png", pixels[1])
    cases.append(("folder with an unknown class name", unknown, "unknown folder name"))
    (folder / "empty_folder").mkdir(exist_ok=True)
    cases.append(("empty folder", folder / "empty_folder", "no class folders"))

    cases.append(("npz missing an array", _npz(folder, "no_emotion.npz", emotion=None), "missing array 'emotion'"))
    cases.append(("npz with the wrong dtype", _npz(folder, "float_pixels.npz",
                                                   pixels=np.zeros((5, 48, 48), np.float32)), "expected uint8"))
    cases.append(("npz with the wrong shape", _npz(folder, "small_pixels.npz",
                                                   pixels=np.zeros((5, 47, 47), np.uint8)), "array 'pixels'"))
    cut = _npz(folder, "truncated.npz")
    cut.write_bytes(cut.read_bytes()[:400])
    cases.append(("truncated npz", cut, "not a readable .npz"))
    pickled = folder / "object_array.npz"
    with open(pickled, "wb") as f:
        np.savez(f, pixels=np.zeros((5, 48, 48), np.uint8), emotion=np.zeros(5, np.uint8),
                 usage=np.array([os.getcwd()] * 5, dtype=object))  # an object array would need unpickling
    cases.append(("npz whose array needs unpickling", pickled, "array 'usage'"))
    return [BadInput(name, "data", str(path), words) for name, path, words in cases]


class RunsCode:
    """Unpickling this object would call os.system and leave MARKER behind: what a hostile .pt could do."""

    def __init__(self, folder: Path):
        self.command = f"touch {folder / MARKER}"

    def __reduce__(self):
        return (os.system, (self.command,))


def checkpoint_corpus(folder: Path, good_checkpoint: Path) -> list[BadInput]:
    """Bad checkpoints, made from a real one (`good_checkpoint`, a fernet last.pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = torch.load(good_checkpoint, weights_only=True)
    cases: list[tuple[str, Path, str]] = []

    def save(name, value, words):
        path = folder / name
        torch.save(value, path)
        cases.append((name.replace("_", " ").removesuffix(".pt"), path, words))

    raw = good_checkpoint.read_bytes()
    (folder / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    cases.append(("truncated checkpoint", folder / "truncated.pt", "truncated.pt"))
    (folder / "empty.pt").write_bytes(b"")
    cases.append(("empty checkpoint", folder / "empty.pt", "empty.pt"))
    (folder / "text.pt").write_text("this is not a checkpoint\n")
    cases.append(("text file as a checkpoint", folder / "text.pt", "text.pt"))
    save("hostile_pickle.pt", {"model_state": RunsCode(folder)}, "hostile_pickle.pt")
    save("foreign_state_dict.pt", {"weight": torch.zeros(3, 3)}, "foreign_state_dict.pt")
    save("other_architecture.pt", {**state, "model_name": "hw3", "architecture": None}, "do not fit architecture")
    save("changed_definition.pt", {**state, "architecture": "0123456789abcdef"}, "another definition")
    save("unknown_model.pt", {**state, "model_name": "resnet9000"}, "unknown model 'resnet9000'")
    with zipfile.ZipFile(folder / "zip_not_torch.pt", "w") as archive:
        archive.writestr("hello.txt", "a zip, not a torch file")
    cases.append(("zip that is no torch file", folder / "zip_not_torch.pt", "zip_not_torch.pt"))
    (folder / "empty_run").mkdir(exist_ok=True)
    cases.append(("run folder without a checkpoint", folder / "empty_run", "holds no best.pt or last.pt"))
    return [BadInput(name, "checkpoint", str(path), words) for name, path, words in cases]


RUN_NAMES = ["../escape", "..", "/etc/cron.d/x", "a/b", "name with spaces", "-rf", ".hidden", "x" * 65]


def run_name_corpus() -> list[BadInput]:
    return [BadInput(f"run name {name[:20]!r}", "run name", name, "is not allowed") for name in RUN_NAMES]


def snapshot(paths) -> dict[str, tuple[int, int, bytes]]:
    """(size, mtime, first bytes) of every file under `paths`: compared before and after to prove nothing changed."""
    seen = {}
    for root in paths:
        root = Path(root)
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            stat = path.stat()
            with open(path, "rb") as f:
                seen[str(path)] = (stat.st_size, stat.st_mtime_ns, f.read(1 << 16))
    return seen

