"""Evaluate a model on a data set: predictions, probabilities, confusion matrix, per-class metrics, the images of
each confusion cell ranked by confidence, and per-cell aggregates (mean face, mean saliency).

    result = evaluate_checkpoint(load_model("checkpoints/hw3"), dataset, split="PrivateTest", tta=True)
    result.accuracy, result.confusion, result.f1
    cell = result.cell(true=2, pred=4)          # Fear predicted as Sad, most confident first
    cell.indices, cell.probabilities            # dataset rows, (K, 7) probabilities

Results are cached on disk (fercore.disk_cache) per (checkpoint key, data fingerprint, split, options), so a
second call (reopening the app, another server on the same cache folder) reads a few kilobytes instead of running
the network; so are a cell's mean face and saliency (`cell_means`). Evaluation itself runs a
copy of the model made for inference (BatchNorm folded into the conv before it, ReLUs in place, channels_last
weights) under inference_mode in batches of 256, where oneDNN's convolutions run near the machine's matmul rate
(benchmarks/bench_eval.py); the caller's model is never modified.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from fercore import disk_cache
from fercore.labels import CLASS_NAMES, NUM_CLASSES, SPLIT_NAMES, split_index
from fercore.threads import threads_for_call

CACHE_FORMAT = "fercore-evaluation/1"  # bump when the cached arrays change meaning
CELL_MEANS_FORMAT = "fercore-cell-means/1"
MEAN_SALIENCY_LIMIT = 128  # the cell's most confident images in its mean saliency (a backward pass each)
DEFAULT_BATCH_SIZE = 256

# A saliency method as evaluation uses it: (model, preprocessed images (N,1,48,48), target class) -> (N, 48, 48).
SaliencyFn = Callable[[nn.Module, torch.Tensor, int], np.ndarray]


# ----------------------------------------------------------------------------------------------------------------
# Results

@dataclass(frozen=True)
class CellImages:
    """The images of one confusion cell (or of one predicted class), most confident first."""

    true: int | None               # None: any true class (unlabeled data)
    pred: int
    indices: np.ndarray            # int64 (K,) rows of the evaluated dataset
    probabilities: np.ndarray      # float32 (K, 7)

    @property
    def confidence(self) -> np.ndarray:
        """float32 (K,): the model's probability of the predicted class, descending."""
        return self.probabilities[:, self.pred]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(eq=False)
class Evaluation:
    """One model's outputs on one data set (or split), and everything derived from them.

    Every per-image array is aligned with `rows`, the dataset rows evaluated (all rows, or one split's);
    indices handed out (cell(...).indices) are dataset rows, so `dataset.pixels[indices]` are the images.
    """

    probabilities: np.ndarray      # float32 (N, 7) softmax (mean over image and mirror image with TTA)
    predictions: np.ndarray        # int64 (N,) argmax of probabilities
    labels: np.ndarray | None      # int64 (N,), None for unlabeled data
    rows: np.ndarray               # int64 (N,) dataset rows
    tta: bool                      # test-time augmentation: probabilities averaged over the image and its mirror
    data_fingerprint: str
    split: str | None = None       # split name when one split was evaluated
    model_key: str | None = None   # checkpoint key the cache is keyed on
    model_name: str = ""
    seconds: float = 0.0           # time the forward passes took when computed
    from_cache: bool = False
    computed_in: str = "fp32"      # the forward passes' precision, fp32 or bf16 (not `precision`: per-class metric)
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def _require_labels(self, what: str) -> np.ndarray:
        if self.labels is None:
            raise ValueError(f"{what} needs labels, but the evaluated data set is unlabeled")
        return self.labels

    # ---- metrics -------------------------------------------------------------------------------------------

    @cached_property
    def confusion(self) -> np.ndarray:
        """int64 (7, 7) counts: rows the true class, columns the predicted class."""
        labels = self._require_labels("a confusion matrix")
        flat = np.bincount(labels * NUM_CLASSES + self.predictions, minlength=NUM_CLASSES * NUM_CLASSES)
        return flat.reshape(NUM_CLASSES, NUM_CLASSES)

    @property
    def confusion_normalized(self) -> np.ndarray:
        """float64 (7, 7): each row divided by its total (the share of class i predicted as j); empty rows 0."""
        counts = self.confusion.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    @property
    def accuracy(self) -> float:
        labels = self._require_labels("accuracy")
        return float(np.mean(self.predictions == labels)) if len(labels) else float("nan")

    @property
    def support(self) -> np.ndarray:
        """int64 (7,): images of each true class."""
        return self.confusion.sum(axis=1)

    @property
    def precision(self) -> np.ndarray:
        """float64 (7,): of the images predicted c, the share that are c (0 when nothing is predicted c)."""
        predicted = self.confusion.sum(axis=0)
        return _safe_divide(np.diag(self.confusion), predicted)

    @property
    def recall(self) -> np.ndarray:
        """float64 (7,): of the images of class c, the share predicted c (0 for an absent class)."""
        return _safe_divide(np.diag(self.confusion), self.support)

    @property
    def f1(self) -> np.ndarray:
        """float64 (7,): harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.recall
        return _safe_divide(2 * p * r, p + r)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes present in the data."""
        present = self.support > 0
        return float(self.f1[present].mean()) if present.any() else float("nan")

    def per_class(self) -> list[dict]:
        """One row per class (class, precision, recall, f1, support), plain floats and ints."""
        return [dict(cls=name, precision=float(p), recall=float(r), f1=float(f), support=int(s))
                for name, p, r, f, s in zip(CLASS_NAMES, self.precision, self.recall, self.f1, self.support)]

    def confusion_rows(self) -> list[dict]:
        """The confusion matrix as table rows: one per true class, the image count of each predicted class."""
        return [{"true \\ predicted": name, **{p: int(n) for p, n in zip(CLASS_NAMES, row)}}
                for name, row in zip(CLASS_NAMES, self.confusion)]

    # ---- cells ---------------------------------------------------------------------------------------------

    def cell_positions(self, true: int | None, pred: int) -> np.ndarray:
        """Positions (into this result's arrays) of cell (true, pred), ranked by probability of `pred`, descending;
        ties keep dataset order. true=None takes every image predicted `pred` (works on unlabeled data)."""
        pred = int(pred)
        mask = self.predictions == pred
        if true is not None:
            mask &= self._require_labels("a confusion cell") == int(true)
        positions = np.flatnonzero(mask)
        confidence = self.probabilities[positions, pred]
        return positions[np.lexsort((positions, -confidence))]

    def cell(self, true: int | None, pred: int) -> CellImages:
        """The images the model predicted `pred` whose true class is `true`, most confident first."""
        key = ("cell", None if true is None else int(true), int(pred))
        if key not in self._cache:
            positions = self.cell_positions(true, pred)
            self._cache[key] = CellImages(key[1], key[2], self.rows[positions], self.probabilities[positions])
        return self._cache[key]

    # ---- description ---------------------------------------------------------------------------------------

    @property
    def tta_note(self) -> str:
        return "TTA: mean of each image and its mirror image" if self.tta else "no test-time augmentation"

    def describe(self) -> str:
        """One line for captions, e.g. 'hw3 on PrivateTest: 3,589 images, accuracy 64.2%, macro F1 0.621,
        TTA: mean of each image and its mirror image'."""
        head = f"{self.model_name} on " if self.model_name else ""
        where = self.split or "all rows"
        parts = [f"{head}{where}: {len(self):,} images"]
        if self.labeled and len(self):
            parts.append(f"accuracy {self.accuracy:.1%}, macro F1 {self.macro_f1:.3f}")
        elif not self.labeled:
            parts.append("unlabeled")
        parts.append(self.tta_note)
        return ", ".join(parts)


    def to_dict(self) -> dict:
        """A JSON-able summary (no per-image arrays): what `python -m fercore evaluate --json` prints (with the
        checkpoint's path). Rows of `confusion` are true classes, columns predicted."""
        summary = dict(n=len(self), tta=self.tta, computed_in=self.computed_in, split=self.split,
                       model_name=self.model_name, model_key=self.model_key, data_fingerprint=self.data_fingerprint,
                       description=self.describe(),
                       predicted_counts=np.bincount(self.predictions, minlength=NUM_CLASSES).tolist())
        if self.labeled:
            summary.update(accuracy=self.accuracy, macro_f1=self.macro_f1, classes=list(CLASS_NAMES),
                           confusion=self.confusion.tolist(), per_class=self.per_class())
        return summary


def _safe_divide(numerator, denominator) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


# ----------------------------------------------------------------------------------------------------------------
# Running the model

def _fold_batchnorm(module: nn.Module) -> None:
    """In place, in eval mode: fold each BatchNorm that directly follows a conv / linear layer in an nn.Sequential
    into that layer's weights, and replace it with Identity (one memory pass less over large activation maps)."""
    for child in module.children():
        _fold_batchnorm(child)
    if not isinstance(module, nn.Sequential):
        return
    names = list(module._modules)
    for first, second in zip(names, names[1:]):
        layer, norm = module._modules[first], module._modules[second]
        if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) or norm.running_mean is None:
            continue
        if isinstance(layer, nn.Conv2d) and not isinstance(norm, nn.BatchNorm1d):
            module._modules[first] = fuse_conv_bn_eval(layer, norm)
        elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
            module._modules[first] = fuse_linear_bn_eval(layer, norm)
        else:
            continue
        module._modules[second] = nn.Identity()


# Modules that may hand back their input itself (or a view of it): an in-place op after them would write into it.
_PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout)


def _relu_in_place(module: nn.Module) -> None:
    """In place: make each ReLU of an nn.Sequential in-place when its input was computed inside that Sequential
    (so nothing else reads it): no fresh activation buffer per layer, which saves allocation and page faults."""
    for child in module.children():
        _relu_in_place(child)
    if not isinstance(module, nn.Sequential):
        return
    fresh = False  # is the running tensor one this Sequential computed (not its input or a view of it)?
    for child in module.children():
        if isinstance(child, nn.ReLU) and fresh:
            child.inplace = True
        elif not isinstance(child, _PASS_THROUGH):
            fresh = True


def _inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy for fast inference, leaving the caller's model (shared with saliency in the app) untouched:
    BatchNorm folded into the layer before it, ReLUs in place, weights channels_last (oneDNN runs NHWC
    convolutions about twice as fast on CPU). Module forward hooks come along with the copied modules."""
    copied = copy.deepcopy(model).eval()
    _fold_batchnorm(copied)
    _relu_in_place(copied)
    return copied.to(memory_format=torch.channels_last)


def predict_probabilities(model: nn.Module, normalizer: Callable, pixels: np.ndarray, *, tta: bool = False,
                          batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None,
                          precision: str = "fp32") -> np.ndarray:
    """Softmax probabilities, float32 (N, 7), for uint8 faces (N, 48, 48).

    normalizer maps a uint8 tensor (B, 48, 48) to the model's float input (B, 1, 48, 48). With tta the
    probabilities are the mean over each image and its horizontal mirror. precision: fp32 or bf16 (autocast).
    """
    from fercore.precision import PrecisionChoice, autocast

    pixels = np.asarray(pixels)
    out = np.empty((len(pixels), NUM_CLASSES), dtype=np.float32)
    fast = _inference_copy(model)
    with threads_for_call(threads), torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size]))
            x = normalizer(batch).float().contiguous(memory_format=torch.channels_last)
            mirror = torch.flip(x, dims=[3]).contiguous(memory_format=torch.channels_last) if tta else None
            with autocast(x.device, PrecisionChoice(precision, "")):
                probs = torch.softmax(fast(x).float(), dim=1)
                if tta:
                    probs = 0.5 * (probs + torch.softmax(fast(mirror).float(), dim=1))
            out[start:start + len(batch)] = probs.numpy()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Disk cache

def cache_meta(model_key: str, fingerprint: str, split: str | None, tta: bool, computed_in: str = "fp32") -> dict:
    """What a cached result is valid for; stored in the file and checked on every read."""
    meta = {"format": CACHE_FORMAT, "model_key": str(model_key), "data": fingerprint, "split": split,
            "tta": bool(tta)}
    if computed_in != "fp32":  # fp32 results keep the cache files they had before precision was a choice
        meta["precision"] = computed_in
    return meta


def result_meta(result: Evaluation) -> dict:
    """The cache meta an evaluation was (or would be) stored under."""
    return cache_meta(result.model_key, result.data_fingerprint, result.split, result.tta, result.computed_in)


def _valid_probabilities(n_rows: int):
    """A cached evaluation is used only with float32 finite probabilities for exactly the rows asked for."""
    def valid(arrays: dict) -> bool:
        probs = arrays.get("probabilities")
        return probs is not None and probs.dtype == np.float32 and probs.shape == (n_rows, NUM_CLASSES) \
            and bool(np.all(np.isfinite(probs)))
    return valid


# ----------------------------------------------------------------------------------------------------------------
# Evaluate

def evaluate(model: nn.Module, normalizer: Callable, dataset, *, split=None, tta: bool = False,
             batch_size: int = DEFAULT_BATCH_SIZE, cache_key: str | None = None, cache_dir=None,
             threads: int | None = None, model_name: str = "", precision: str = "fp32") -> Evaluation:
    """Evaluate `model` on a FerDataset (all rows, or one `split`: a name or code).

    normalizer: uint8 tensor (B, 48, 48) -> float (B, 1, 48, 48), e.g. a fercore.transforms.Normalizer.
    cache_key identifies the model's weights (LoadedModel.key); with it the result is cached on disk under
    cache_dir (default: $FERCORE_CACHE_DIR or ~/.cache/fercore) per (key, data fingerprint, split, tta), and an
    unreadable or mismatching cache file is recomputed. Without it nothing is cached.
    threads: torch threads for this call (restored after); None keeps the current setting.
    precision: auto, fp32 or bf16, as fercore.precision.choose_precision decides on the model's device. fp32 by
    default, so a face's probabilities here are those its saliency map (always fp32) explains: in bf16 a few
    borderline faces change class, and the app would show them in one cell and predicted as another. The CLI's
    `evaluate` asks for auto.
    """
    from fercore.precision import choose_precision

    device = next(model.parameters(), torch.empty(0)).device  # a parameter-free model runs on the CPU
    computes_in = choose_precision(precision, device).name
    rows = dataset.split_rows(split)
    split_name = None if split is None else SPLIT_NAMES[split_index(split)]
    labels = None if dataset.labels is None else np.asarray(dataset.labels, dtype=np.int64)[rows]
    fingerprint = dataset.fingerprint()
    common = dict(labels=labels, rows=rows, tta=bool(tta), data_fingerprint=fingerprint, split=split_name,
                  model_key=cache_key, model_name=model_name, computed_in=computes_in)

    def compute() -> dict:
        started = time.perf_counter()
        probs = predict_probabilities(model, normalizer, np.asarray(dataset.pixels)[rows], tta=tta,
                                      batch_size=batch_size, threads=threads, precision=computes_in)
        return {"probabilities": probs, "seconds": np.float64(time.perf_counter() - started)}

    if cache_key is None:
        arrays, from_cache = compute(), False
    else:
        meta = cache_meta(cache_key, fingerprint, split_name, tta, computes_in)
        arrays, from_cache = disk_cache.get_or_compute(meta, compute, cache_dir, _valid_probabilities(len(rows)))
    probs, seconds = arrays["probabilities"], float(arrays.get("seconds", 0.0))
    return Evaluation(probs, probs.argmax(1).astype(np.int64), seconds=seconds, from_cache=from_cache, **common)


def evaluate_checkpoint(loaded, dataset, *, split=None, tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                        cache_dir=None, use_cache: bool = True, threads: int | None = None,
                        precision: str = "fp32") -> Evaluation:
    """evaluate() for a fercore.checkpoints.LoadedModel, cached under its content key."""
    return evaluate(loaded.model, loaded.normalizer, dataset, split=split, tta=tta, batch_size=batch_size,
                    cache_key=loaded.key if use_cache and loaded.key else None, cache_dir=cache_dir,
                    threads=threads, model_name=loaded.model_name, precision=precision)


# ----------------------------------------------------------------------------------------------------------------
# Per-cell aggregates

def _check_dataset(result: Evaluation, dataset) -> None:
    if dataset.fingerprint() != result.data_fingerprint:
        raise ValueError("this data set is not the one the evaluation was computed on "
                         f"(fingerprint {dataset.fingerprint()} != {result.data_fingerprint})")


def cell_mean_face(result: Evaluation, dataset, true: int | None, pred: int) -> np.ndarray | None:
    """float32 (48, 48): the mean of the cell's uint8 faces in 0..255; None for an empty cell."""
    _check_dataset(result, dataset)
    indices = result.cell(true, pred).indices
    if len(indices) == 0:
        return None
    return np.asarray(dataset.pixels)[indices].mean(axis=0, dtype=np.float64).astype(np.float32)


def _default_saliency() -> SaliencyFn:
    """fercore.saliency's vanilla gradient |d logit_target / d x|, imported only when needed."""
    from fercore.saliency import gradient
    return gradient


def cell_mean_saliency(result: Evaluation, model: nn.Module, normalizer: Callable, dataset, true: int | None,
                       pred: int, *, saliency: SaliencyFn | None = None, limit: int | None = None,
                       normalize_each: bool = True, batch_size: int = 128) -> np.ndarray | None:
    """float32 (48, 48): the mean saliency map of the cell's images for the predicted class `pred`.

    saliency(model, images, target) -> (N, 48, 48), images preprocessed float (N, 1, 48, 48) and target the class
    index; default fercore.saliency.gradient. With normalize_each every map is scaled to sum 1 first, so each image
    weighs the same and the mean is a distribution over pixels ("where the model looks"). limit: use only the
    `limit` most confident images (saliency costs a backward pass per image). None for an empty cell.
    """
    _check_dataset(result, dataset)
    indices = result.cell(true, pred).indices
    if limit is not None:
        indices = indices[:int(limit)]
    if len(indices) == 0:
        return None
    saliency = _default_saliency() if saliency is None else saliency
    pixels = np.asarray(dataset.pixels)
    total = np.zeros((48, 48), dtype=np.float64)
    for start in range(0, len(indices), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(pixels[indices[start:start + batch_size]]))
        maps = np.asarray(saliency(model, normalizer(batch).float(), int(pred)), dtype=np.float64)
        if normalize_each:
            mass = np.abs(maps).sum(axis=(1, 2), keepdims=True)
            maps = np.divide(maps, mass, out=np.zeros_like(maps), where=mass > 0)
        total += maps.sum(axis=0)
    return (total / len(indices)).astype(np.float32)


def cell_means_meta(result: Evaluation, true: int | None, pred: int, limit: int | None) -> dict:
    """What a cell's cached means are valid for: the evaluation that ranked the cell, the cell and the limit."""
    return {"format": CELL_MEANS_FORMAT, "model_key": str(result.model_key), "data": result.data_fingerprint,
            "split": result.split, "tta": result.tta, "computed_in": result.computed_in,
            "true": None if true is None else int(true), "pred": int(pred), "limit": limit}


def cell_means(result: Evaluation, model: nn.Module, normalizer: Callable, dataset, true: int | None, pred: int,
               *, limit: int | None = MEAN_SALIENCY_LIMIT,
               cache_dir=None) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """(cell_mean_face, cell_mean_saliency of the `limit` most confident images) of cell (true, pred), what the
    Confusion page shows beside a cell's faces; (None, None) for an empty cell. Cached on disk (fercore.disk_cache)
    under the evaluation's key when it has one, so any server on the same cache folder computes a cell once."""
    face = cell_mean_face(result, dataset, true, pred)
    if face is None:
        return None, None

    def compute() -> dict:
        return {"face": face, "saliency": cell_mean_saliency(result, model, normalizer, dataset, true, pred,
                                                             limit=limit)}

    if result.model_key is None:
        arrays = compute()
    else:
        arrays, _ = disk_cache.get_or_compute(cell_means_meta(result, true, pred, limit), compute, cache_dir)
    return arrays["face"], arrays["saliency"]


# ----------------------------------------------------------------------------------------------------------------
# Accuracy per split

def not_in_training(dataset, split) -> np.ndarray:
    """bool (rows of `split`,), in dataset order: True where the image has no byte-identical copy in the Training
    split (FER2013 repeats some faces across splits, and a copy seen in training flatters test accuracy)."""
    code = split_index(split)
    training = np.asarray(dataset.split) == split_index("Training")
    pixels = np.ascontiguousarray(dataset.pixels)
    seen = {hashlib.sha1(image.tobytes()).digest() for image in pixels[training]}
    rows = pixels[np.asarray(dataset.split) == code]
    return np.array([hashlib.sha1(image.tobytes()).digest() not in seen for image in rows], dtype=bool)


def split_accuracies(loaded, dataset, tta: bool = False,
                     evaluate: Callable[[str], Evaluation] | None = None) -> list[dict]:
    """One row (split, images, accuracy) per split present in a labelled dataset, in the order Training,
    PublicTest, PrivateTest; where the data has a Training split, each test split is followed by a row
    "<split> without Training duplicates" (its images with no byte-identical copy in Training, see not_in_training).

    evaluate(split name) -> Evaluation of that split's rows; default: evaluate_checkpoint on
    dataset.select_split(name) (cached on disk, keyed as the app keys a split), so the app can pass its own cached
    evaluation and a split is evaluated once.
    """
    if dataset.labels is None:
        raise ValueError(f"{dataset.source or 'this data set'} has no labels: accuracy needs labelled data")
    if evaluate is None:
        evaluate = lambda name: evaluate_checkpoint(loaded, dataset.select_split(name), tta=tta)  # noqa: E731
    present = set(np.asarray(dataset.split).tolist())
    has_training = split_index("Training") in present
    rows = []
    for code, name in enumerate(SPLIT_NAMES):
        if code not in present:
            continue
        result = evaluate(name)
        rows.append({"split": name, "images": len(result), "accuracy": result.accuracy})
        if has_training and name != "Training":
            unique = not_in_training(dataset, name)
            correct = result.predictions == result.labels
            rows.append({"split": f"{name} without Training duplicates", "images": int(unique.sum()),
                         "accuracy": float(correct[unique].mean()) if unique.any() else float("nan")})
    return rows
