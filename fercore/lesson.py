"""A lesson computed before class: every result the app's pages compute when a class clicks through them, for
each checkpoint (and, if asked, each epoch snapshot its run kept), stored in fercore's disk cache
(fercore.disk_cache), where every app server on the same cache folder reads it instead of computing.

    summary = precompute(["checkpoints/fernet_wide", "checkpoints/hw3"], data=None, snapshots=True)

The parts, per model and split of the data (PrivateTest and PublicTest where present):

- the evaluation with and without flip TTA (the Confusion page's matrix; a cell's ranked faces come from it);
- every confusion cell's mean face and mean saliency, with and without TTA (fercore.evaluation.cell_means);
- every face's first view, the vanilla gradient of the predicted class (fercore.saliency.first_views: the
  Confusion page's Inspect quick look and the Inspect page);
- each conv layer's gradient-ascent grid at the Filters page's defaults (fercore.filters.cached_visualize_filters)
  and every filter's top faces (fercore.filters.cached_top_activating).

A part already cached is skipped without being read, and a model whose whole lesson is stored (its manifest
lists the entries, all on disk) is not even taken apart, so a second run over a precomputed lesson takes seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fercore import disk_cache, runs
from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.evaluation import MEAN_SALIENCY_LIMIT, cell_means, cell_means_meta, evaluate_checkpoint, result_meta
from fercore.filters import cached_top_activating, cached_visualize_filters, default_settings, filters_meta
from fercore.filters.exemplars import top_activating_meta
from fercore.labels import NUM_CLASSES
from fercore.models import conv_layers
from fercore.saliency import first_views, first_views_meta
from fercore.snapshots import model_at_epoch

LESSON_SPLITS = ("PrivateTest", "PublicTest")
PAGES = ("confusion", "filters")  # the Confusion page's parts (its Inspect quick look and the Inspect page too)
TOP_FACES = 8  # the Filters page shows a filter's eight top faces
LESSON_FORMAT = "fercore-lesson/1"
OnProgress = Callable[[int, int, str], None]  # (parts done, parts in all, the part that runs now)


@dataclass(frozen=True)
class Part:
    """One cached result of the lesson: `run()` makes sure it is on disk and returns (whether it computed, the
    entry's path, or None when there is nothing to store)."""
    what: str
    page: str
    run: Callable[[], tuple[bool, Path | None]]


@dataclass
class LessonSummary:
    parts: int
    computed: int
    seconds: float
    cache_dir: str

    @property
    def cached(self) -> int:
        return self.parts - self.computed

    def describe(self) -> str:
        """'312 parts: 12 computed, 300 already cached, in 4.1 s (cache: ~/.cache/fercore)'."""
        if self.computed == 0:
            return f"all {self.parts} parts already cached ({self.seconds:.1f} s, cache: {self.cache_dir})"
        return (f"{self.parts} parts: {self.computed} computed, {self.cached} already cached, in "
                f"{self.seconds:.1f} s (cache: {self.cache_dir})")


def lesson_models(checkpoint, snapshots: bool = False) -> Iterator[tuple[str, object]]:
    """(label, LoadedModel): the checkpoint's model, then (with snapshots) one per epoch snapshot its run kept,
    oldest first, as the sidebar's Epoch slider loads them."""
    yield str(checkpoint), load_model(checkpoint)
    for epoch in runs.snapshot_epochs(checkpoint) if snapshots else ():
        yield f"{checkpoint} epoch {epoch}", model_at_epoch(checkpoint, epoch)


def _unless_cached(meta: dict, compute: Callable[[], object]) -> tuple[bool, Path]:
    computed = not disk_cache.is_cached(meta)
    if computed:
        compute()
    return computed, disk_cache.entry_path(meta)


def model_parts(loaded, dataset, name: str = "", splits: Sequence[str] = LESSON_SPLITS,
                pages: Sequence[str] = PAGES) -> list[Part]:
    """The lesson's parts for one model on the given splits of a data set (those it has), for the given pages."""
    name = name or loaded.model_name
    settings: dict[str, dict] = {}  # each layer's default ascent settings, measured once for every split
    parts: list[Part] = []
    for split in splits:
        data = dataset.select_split(split)  # the app evaluates the split's own rows, keyed as this is
        if len(data) == 0:
            continue
        if "confusion" in pages:
            parts += _evaluation_parts(loaded, data, f"{name} {split}")
            parts.append(Part(f"{name} {split}: first views", "confusion", lambda data=data: _unless_cached(
                first_views_meta(loaded.key, data.fingerprint()), lambda: first_views(loaded, data))))
        if "filters" in pages:
            parts += _filter_parts(loaded, data, f"{name} {split}", settings)
    return parts


def _evaluation_parts(loaded, data, where: str) -> list[Part]:
    parts = []
    for tta in (False, True):
        parts.append(Part(f"{where}: evaluation{' (TTA)' * tta}", "confusion",
                          lambda tta=tta: _evaluation_part(loaded, data, tta)))
        if data.labels is None:
            continue
        for true in range(NUM_CLASSES):
            for pred in range(NUM_CLASSES):
                parts.append(Part(f"{where}: cell ({true}, {pred}){' (TTA)' * tta} means", "confusion",
                                  lambda tta=tta, true=true, pred=pred: _cell_part(loaded, data, tta, true, pred)))
    return parts


def _evaluation_part(loaded, data, tta: bool) -> tuple[bool, Path]:
    result = evaluate_checkpoint(loaded, data, tta=tta)
    return not result.from_cache, disk_cache.entry_path(result_meta(result))


def _cell_part(loaded, data, tta: bool, true: int, pred: int) -> tuple[bool, Path | None]:
    result = evaluate_checkpoint(loaded, data, tta=tta)  # cached by its own part just before
    if not result.cell(true, pred).indices.size:
        return False, None  # an empty cell has nothing to store
    return _unless_cached(cell_means_meta(result, true, pred, MEAN_SALIENCY_LIMIT),
                          lambda: cell_means(result, loaded.model, loaded.normalizer, data, true, pred))


def _filter_parts(loaded, data, where: str, settings: dict) -> list[Part]:
    parts = []
    value_range = loaded.input_range(data.pixels)  # as the app's Filters page bounds the ascent for this split
    for layer in conv_layers(loaded.model):
        def grid(layer=layer) -> tuple[bool, Path]:
            if layer not in settings:  # measuring the receptive field takes seconds for a deep layer
                settings[layer] = default_settings(loaded.model, layer)
            options = dict(model_key=loaded.key, value_range=value_range, **settings[layer])
            return _unless_cached(filters_meta(loaded.model, layer, **options),
                                  lambda: cached_visualize_filters(loaded.model, layer, **options))

        def top(layer=layer) -> tuple[bool, Path]:
            meta = top_activating_meta(loaded.key, data.fingerprint(), layer, TOP_FACES, "pre_relu")
            return _unless_cached(meta, lambda: cached_top_activating(
                loaded.model, loaded.preprocess(data.pixels), layer, 0, TOP_FACES, model_key=loaded.key,
                data_fingerprint=data.fingerprint()))

        parts += [Part(f"{where}: filters of {layer}", "filters", grid),
                  Part(f"{where}: top faces of {layer}", "filters", top)]
    return parts


def _manifest_meta(loaded, dataset, splits, pages) -> dict:
    """The entry that lists the entries of one model's lesson, written once all of them are: a second run checks
    that those files are there instead of measuring what each part's key needs (receptive fields take seconds)."""
    return {"format": LESSON_FORMAT, "model_key": loaded.key, "data": dataset.fingerprint(), "splits": list(splits),
            "pages": list(pages), "mean_saliency_limit": MEAN_SALIENCY_LIMIT, "top_faces": TOP_FACES}


def _manifest_complete(meta: dict) -> int | None:
    """The number of parts a model's stored lesson has when all its entries are on disk, else None."""
    manifest = disk_cache.read(meta)
    if manifest is None:
        return None
    root = runs.cache_dir()
    return int(manifest["parts"]) if all((root / name).is_file() for name in manifest["entries"]) else None


def precompute(checkpoints: Sequence, data=None, *, snapshots: bool = False, splits: Sequence[str] = LESSON_SPLITS,
               pages: Sequence[str] = PAGES, on_progress: OnProgress | None = None) -> LessonSummary:
    """Compute every part of the lesson (model_parts) for each checkpoint (a run folder or .pt file) and, with
    snapshots, each epoch snapshot of its run, on `data` (a path; None: the shipped data file), into the disk
    cache ($FERCORE_CACHE_DIR, else ~/.cache/fercore). on_progress(done, total, what) follows along."""
    started = time.perf_counter()
    dataset = load_dataset(data)
    stored, todo = 0, []  # (manifest meta, parts) of the models whose lesson is not all on disk
    for checkpoint in checkpoints:
        for label, loaded in lesson_models(checkpoint, snapshots):
            meta = _manifest_meta(loaded, dataset, splits, pages)
            complete = _manifest_complete(meta)
            if complete is not None:
                stored += complete
            else:
                todo.append((meta, model_parts(loaded, dataset, label, splits, pages)))
    total = stored + sum(len(parts) for _, parts in todo)
    done, computed = stored, 0
    for meta, parts in todo:
        entries = []
        for part in parts:
            if on_progress is not None:
                on_progress(done, total, part.what)
            made, path = part.run()
            computed += made
            done += 1
            if path is not None:
                entries.append(str(path.relative_to(runs.cache_dir())))
        disk_cache.write(meta, {"entries": np.array(entries), "parts": np.int64(len(parts))})
    if on_progress is not None:
        on_progress(total, total, "done")
    return LessonSummary(total, computed, time.perf_counter() - started, str(runs.cache_dir()))
