"""The homework's five questions answered for one checkpoint, as one self-contained HTML page.

    html = build_report(load_model("checkpoints/hw3"), load_dataset("data/fer2013_test.npz"))
    Path("report.html").write_text(html, encoding="utf-8")

The page needs nothing but itself: figures are PNGs inlined as base64 `data:` URIs, the CSS is inline, and there
is no script and no link to the network, so it can be mailed, projected offline or printed. Each question is an
`<h2>` with a stable id, q1 ... q5, in the homework's order:

  q1  the architecture (fercore.models.summary), the training recipe (fercore.compare.recipe), the learning curves
      (one table row per epoch) and the accuracy on each split (fercore.evaluation.split_accuracies);
  q2  the runs given in `compare`, side by side with the checkpoint (fercore.compare.compare_runs);
  q3  the confusion matrix (rows true, columns predicted), its most confused pair, per-class precision / recall;
  q4  one face: original, heatmap, mask and overlay at fercore.render's defaults, and the class probabilities;
  q5  the first conv layer: gradient-ascent images (fercore.filters.visualize_filters' defaults in the model's input
      range, LoadedModel.input_range), its kernels and its outputs for the same face.

Every figure comes from the same library call, with the same defaults, as the dashboard page that shows it first,
so the report and the app never disagree. Every string read from a file (paths, names, settings) is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fercore import render
from fercore.labels import CLASS_NAMES, NUM_CLASSES

# A progress callback: (steps done, steps in all, what runs next).
OnSection = Callable[[int, int, str], None]

SECTIONS = {
    "q1": "1. The network, its training and its accuracy",
    "q2": "2. What normalization, BatchNorm and augmentation did",
    "q3": "3. Which classes the model mixes up",
    "q4": "4. Where the model looks: saliency",
    "q5": "5. What the first conv layer's filters respond to",
}
REPORT_FILE = "report.html"  # what `python -m fercore report ... --out DIR` writes into DIR
FACE_SCALE = 4  # 48x48 faces drawn 192 px wide: the features of a face read on a projector
KERNEL_SCALE = 2  # render.kernel_grid's 3x3 kernels at 24 px a weight: as wide as the grids around them

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 62em;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; }
table.confusion td { min-width: 3.2em; text-align: center; }
.note { color: #555; font-size: 0.92em; }
figure { display: inline-block; margin: 0.4em 1em 0.4em 0; vertical-align: top; }
figcaption { text-align: center; font-size: 0.9em; color: #444; }
img { image-rendering: pixelated; max-width: 100%; }
.bar { display: inline-block; height: 0.8em; background: #1f77b4; vertical-align: middle; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


# ----------------------------------------------------------------------------------------------------------------
# HTML pieces

def escape(value) -> str:
    """Any value as HTML text, quotes included (strings from files go through here, never into markup raw)."""
    return html.escape(str(value), quote=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_share(column: str) -> bool:
    """Columns of fractions shown as percentages (accuracy, recall), as the homework quotes them."""
    return "accuracy" in column or "recall" in column


def _cell(value, share: bool = False) -> str:
    """A table value as text: ints with thousands separators, floats to 3 decimals (shares as 60.3%), shapes as
    64 x 48 x 48, nothing for None or NaN."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.1%}" if share else f"{float(value):.3f}"
    if isinstance(value, (tuple, list)):
        return " x ".join(str(v) for v in value)
    return "" if value is None else str(value)


def table(rows: Sequence[dict], css_class: str = "") -> str:
    """An HTML table of dicts, one row each, the first row's keys as the header; numbers right-aligned."""
    if not rows:
        return '<p class="note">(nothing to show)</p>'
    columns = list(rows[0])
    numeric = {c: _is_number(rows[0].get(c)) for c in columns}
    align = lambda c: " class=num" if numeric[c] else ""  # noqa: E731
    head = "".join(f"<th{align(c)}>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td{align(c)}>{escape(_cell(row.get(c), _is_share(c)))}</td>"
                                    for c in columns) + "</tr>" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def transposed_table(rows: Sequence[dict]) -> str:
    """One column per row (headed by its first value, e.g. a run's name) and one line per field: how a few runs
    with many fields fit a page's width."""
    if not rows:
        return '<p class="note">(nothing to show)</p>'
    first, *fields = list(rows[0])
    head = "<th></th>" + "".join(f"<th>{escape(_cell(row.get(first)))}</th>" for row in rows)
    lines = []
    for field in fields:
        values = [row.get(field) for row in rows]
        align = " class=num" if all(_is_number(v) for v in values) else ""
        lines.append(f"<tr><th>{escape(field)}</th>" + "".join(
            f"<td{align}>{escape(_cell(v, _is_share(field)))}</td>" for v in values) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def image_tag(image: np.ndarray, alt: str, scale: int = 1) -> str:
    """An <img> holding `image` (uint8 gray or RGB) as an inline PNG, enlarged `scale` times without blurring."""
    pixels = render.upscale(image, scale) if scale > 1 else image
    data = base64.b64encode(render.png_bytes(pixels)).decode("ascii")
    height, width = pixels.shape[:2]
    return f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="{escape(alt)}">'


def figure(image: np.ndarray, caption: str, scale: int = 1) -> str:
    return f"<figure>{image_tag(image, caption, scale)}<figcaption>{escape(caption)}</figcaption></figure>"


def section(key: str, body: str) -> str:
    return f'<section><h2 id="{key}">{escape(SECTIONS[key])}</h2>\n{body}\n</section>'


def paragraph(text: str, css_class: str = "", code: bool = False) -> str:
    """A paragraph of plain text (escaped); with `code`, `backquoted` commands in it are set as code."""
    attribute = f' class="{css_class}"' if css_class else ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)) if code else escape(text)
    return f"<p{attribute}>{body}</p>"


# ----------------------------------------------------------------------------------------------------------------
# What the report says

@dataclass(frozen=True)
class ConfusedPair:
    """The largest off-diagonal cell of a confusion matrix: `count` of the `support` images of class `true` were
    predicted `pred`."""

    true: int
    pred: int
    count: int
    support: int

    def sentence(self) -> str:
        """'Fear is most often taken for Sad: 123 of 528 Fear images (23%).'"""
        share = self.count / self.support if self.support else 0.0
        return (f"{CLASS_NAMES[self.true]} is most often taken for {CLASS_NAMES[self.pred]}: {self.count:,} of "
                f"{self.support:,} {CLASS_NAMES[self.true]} images ({share:.0%}).")


def most_confused(confusion: np.ndarray) -> ConfusedPair:
    """The most frequent mistake of a (7, 7) count matrix (rows true, columns predicted); on a tie, the first in
    row order. A matrix without mistakes gives count 0."""
    counts = np.asarray(confusion, dtype=np.int64)
    mistakes = counts.copy()
    np.fill_diagonal(mistakes, -1)
    true, pred = divmod(int(mistakes.argmax()), counts.shape[1])
    return ConfusedPair(true, pred, max(int(mistakes[true, pred]), 0), int(counts[true].sum()))


def confusion_table(confusion: np.ndarray) -> str:
    """The count matrix as an HTML table, rows true and columns predicted, each cell shaded by its row share."""
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    lut = render.colormap("blues")
    head = '<tr><th>true \\ predicted</th>' + "".join(f"<th>{escape(n)}</th>" for n in CLASS_NAMES)
    head += "<th>images</th></tr>"
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        cells = []
        for j in range(NUM_CLASSES):
            rgb = lut[int(round(shares[i, j] * 255))]
            style = f"background: rgb({rgb[0]},{rgb[1]},{rgb[2]}); color: {render._text_color(rgb)}"
            cells.append(f'<td style="{style}" title="{shares[i, j]:.0%} of {escape(name)}">{counts[i, j]:,}</td>')
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}<td>{int(totals[i, 0]):,}</td></tr>")
    return f'<table class="confusion">{head}{"".join(rows)}</table>'


def probability_table(probabilities: np.ndarray, label: int | None) -> str:
    """The 7 probabilities as a table with a bar each; the predicted class in bold, the true class marked."""
    predicted = int(np.argmax(probabilities))
    rows = []
    for k, name in enumerate(CLASS_NAMES):
        text = escape(name) + (" (true)" if label is not None and k == int(label) else "")
        text = f"<b>{text}</b>" if k == predicted else text
        p = float(probabilities[k])
        rows.append(f'<tr><td>{text}</td><td class=num>{p:.1%}</td>'
                    f'<td><span class="bar" style="width: {10 * p:.2f}em"></span></td></tr>')
    return f"<table><tr><th>class</th><th class=num>probability</th><th></th></tr>{''.join(rows)}</table>"


HISTORY_ROWS = 25  # epochs in the learning-curve table at most: a 250-epoch run would fill pages


def shown_epochs(history: list[dict], limit: int = HISTORY_ROWS) -> list[int]:
    """Positions in `history` for the table: every epoch up to `limit`, else `limit` evenly spaced ones from the
    first to the last, plus the best validation epoch."""
    count = len(history)
    if count <= limit:
        return list(range(count))
    picks = set(np.linspace(0, count - 1, limit).round().astype(int).tolist())
    scores = [(r.get("val_acc") if isinstance(r.get("val_acc"), (int, float)) else -1.0) for r in history]
    picks.add(int(np.argmax(scores)))
    return sorted(picks)


def history_rows(history: list[dict], limit: int = HISTORY_ROWS) -> list[dict]:
    """The learning curves (what the Model page plots), one row per shown epoch (`shown_epochs`)."""
    columns = {"epoch": "epoch", "train_loss": "train loss", "train_acc": "train accuracy", "val_loss": "val loss",
               "val_acc": "val accuracy", "lr": "learning rate", "seconds": "seconds"}
    rows = []
    for position in shown_epochs(history, limit):
        row = {title: history[position].get(key) for key, title in columns.items()}
        if row["learning rate"] is not None:
            row["learning rate"] = f"{row['learning rate']:.2e}"
        if row["seconds"] is not None:
            row["seconds"] = round(float(row["seconds"]))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# The five sections

def q1_network(loaded, accuracies: list[dict]) -> str:
    """Question 1: layer table with totals, training recipe, learning curves, accuracy per split."""
    from fercore.compare import recipe
    from fercore.models import summary

    model_summary = summary(loaded.model)
    totals = (f"{model_summary.total_params:,} parameters ({model_summary.trainable_params:,} trainable, "
              f"{model_summary.non_trainable_params:,} not); {model_summary.mflops:,.0f} MFLOP per image "
              "(one forward pass, 2 FLOP per multiply-add).")
    settings = [{"setting": name, "value": value} for name, value in recipe(loaded.config, loaded.history).items()]
    curves = history_rows(loaded.history)
    return "\n".join([
        paragraph(f"{loaded.model_name}, {loaded.epoch} epoch(s) trained, from {loaded.path}."),
        "<h3>Architecture</h3>", table(model_summary.rows()), paragraph(totals),
        "<h3>Training recipe</h3>", table(settings),
        "<h3>Learning curves</h3>", table(curves),
        *([paragraph(f"{len(curves)} of {loaded.epoch} epochs shown: evenly spaced, with the best validation "
                     "epoch.", "note")] if len(curves) < loaded.epoch else []),
        "<h3>Accuracy per split</h3>", table(accuracies),
    ])


QUESTION2_HOWTO = ("To answer it with runs of your own: train one change per run, e.g. `python scripts/question2.py "
                   "run --data fer2013.csv --out runs/q2 --epochs 30` (no normalization, /255, + BatchNorm, + "
                   "augmentation, ...), then `python -m fercore report CHECKPOINT --compare runs/q2/q2_1_raw "
                   "runs/q2/q2_2_scale255 ...` puts them side by side here.")


def q2_comparison(comparison) -> str:
    """Question 2: the compared runs, one row each with only the settings that differ; or how to make them."""
    intro = paragraph("The homework added one change at a time: /255 normalization, then BatchNorm, then "
                      "augmentation (58% -> 60% -> 66% in its runs).")
    if comparison is None:
        howto = paragraph("No runs were given to compare. " + QUESTION2_HOWTO, "note", code=True)
        return "\n".join([intro, howto])
    differing = ", ".join(comparison.settings) or "none"
    return "\n".join([intro, paragraph(f"Settings that differ between these runs: {differing}."),
                      transposed_table(comparison.rows()),
                      paragraph("Accuracy is on the report's split; best validation accuracy is the run's own "
                                "best epoch.", "note")])


def q3_confusion(evaluation, model_name: str, split: str) -> str:
    """Question 3: the confusion matrix, its most confused pair, per-class metrics and Disgust's support."""
    disgust = CLASS_NAMES.index("Disgust")
    support = int(evaluation.support[disgust])
    rows = [{"class": r["cls"], "precision": r["precision"], "recall": r["recall"], "F1": r["f1"],
             "images": r["support"]} for r in evaluation.per_class()]
    return "\n".join([
        paragraph(f"{model_name} on {split}: {len(evaluation):,} images, accuracy {evaluation.accuracy:.1%}, macro F1 "
                  f"{evaluation.macro_f1:.3f}, {evaluation.tta_note}."),
        f"<p><b>{escape(most_confused(evaluation.confusion).sentence())}</b></p>",
        paragraph(f"Disgust is rare: {support:,} of {len(evaluation):,} images "
                  f"({support / max(len(evaluation), 1):.1%}), recall {evaluation.recall[disgust]:.0%}."),
        "<h3>Confusion matrix (rows true, columns predicted)</h3>", confusion_table(evaluation.confusion),
        "<h3>Per class</h3>", table(rows),
    ])


@dataclass
class Face:
    """The report's chosen face and what the model makes of it."""

    index: int                 # position in the split
    image_id: str
    pixels: np.ndarray         # uint8 (48, 48)
    label: int | None
    probabilities: np.ndarray  # float32 (7,)
    saliency: np.ndarray       # float32 (48, 48)

    def summary(self, split: str) -> str:
        predicted = int(self.probabilities.argmax())
        text = (f"Face {self.index} of {split} (id {self.image_id}): predicted {CLASS_NAMES[predicted]} "
                f"({self.probabilities[predicted]:.0%})")
        return text + (f", true {CLASS_NAMES[self.label]}." if self.label is not None else ".")


def q4_saliency(face: Face, split: str) -> str:
    """Question 4: the face, its heatmap, mask and overlay at fercore.render's defaults, and its probabilities."""
    pictures = {"Original": face.pixels, "Heatmap": render.heatmap(face.saliency),
                "Mask": render.saliency_mask(face.pixels, face.saliency),
                "Overlay": render.overlay(face.pixels, face.saliency)}
    return "\n".join([
        paragraph(face.summary(split)),
        "<div>" + "".join(figure(image, title, FACE_SCALE) for title, image in pictures.items()) + "</div>",
        paragraph("Saliency: the magnitude of the gradient of the predicted class's score with respect to each "
                  "pixel, as the Inspect page shows it first. The heatmap colours it from blue (low) to red (high). "
                  + render.describe_mask(), "note"),
        "<h3>Probabilities</h3>", probability_table(face.probabilities, face.label),
    ])


def _tile_scale(height: int, target: int = 96) -> int:
    """Enlargement that draws a tile about `target` pixels high (a 24x24 map as large as a 48x48 one)."""
    return max(1, target // max(height, 1))


# What gradient ascent maximised, by fercore.filters' objective name.
ASCENT_TARGET = {"neuron": "one filter's centre unit (so the pattern sits in that unit's small field, mid-image)",
                 "channel": "one filter's mean response over the whole image"}
ASCENT_STAGE = {"activation": " after its ReLU", "pre_relu": " before its ReLU"}


def q5_filters(layer: str, visualization, kernels: np.ndarray, outputs: np.ndarray, face: Face) -> str:
    """Question 5: the first conv layer's gradient-ascent images, its kernels (out, kh, kw) and its outputs
    (C, H, W) for the face."""
    dead = int(np.count_nonzero(visualization.dead))
    return "\n".join([
        paragraph(f"Layer {layer}: {len(kernels)} filters of {kernels.shape[1]}x{kernels.shape[2]} pixels. Each "
                  f"image below is an input that excites {ASCENT_TARGET.get(visualization.objective, 'one filter')}"
                  f"{ASCENT_STAGE.get(visualization.stage, '')} most (gradient ascent from noise, at the Filters "
                  f"page's defaults). Filters that respond nowhere (dead): {dead}."),
        figure(render.grid(visualization.images, ncols=8), f"{layer}: what each filter responds to (filter 0 top "
               "left)", _tile_scale(visualization.images.shape[1])),
        "<h3>Kernels</h3>",
        figure(render.kernel_grid(kernels), f"{layer}'s kernels in the same order: blue negative, white 0, red "
               "positive, one scale for all", KERNEL_SCALE),
        "<h3>Outputs for the face</h3>",
        figure(render.grid(outputs, ncols=8), f"{layer}'s {len(outputs)} output maps for face {face.index} (each "
               "scaled on its own)", _tile_scale(outputs.shape[1])),
    ])


# ----------------------------------------------------------------------------------------------------------------
# The report

def split_positions(dataset, split) -> np.ndarray:
    """The dataset rows of `split` (a name or code; None: every row), in order: face k of the split is row [k].
    ValueError when the data has no such rows."""
    rows = dataset.split_rows(split)
    if len(rows) == 0:
        raise ValueError(f"{dataset.source or 'the data'} has no {split_name(split)} rows")
    return rows


def split_name(split) -> str:
    """'PrivateTest' for 2 or 'privatetest'; 'all' for None."""
    from fercore.labels import SPLIT_NAMES, split_index

    return "all" if split is None else SPLIT_NAMES[split_index(split)]


def check_image(rows: np.ndarray, image: int, split) -> int:
    """The dataset row of face `image` of the split; ValueError naming the valid range otherwise."""
    if not 0 <= image < len(rows):
        raise ValueError(f"image {image} is not in split {split_name(split)} ({len(rows):,} images: "
                         f"0 to {len(rows) - 1})")
    return int(rows[image])


def chosen_face(loaded, dataset, row: int, image: int) -> Face:
    """Dataset row `row` (face `image` of its split) with its probabilities and saliency map, as the Inspect page
    has it first."""
    from fercore.saliency import explain_faces

    pixels = np.asarray(dataset.pixels[row])
    probabilities, saliency = explain_faces(loaded, pixels)
    label = None if dataset.labels is None else int(dataset.labels[row])
    return Face(image, str(dataset.ids[row]), pixels, label, probabilities[0], saliency[0])


def _progress(on_progress: OnSection | None, steps: list[str]):
    """advance(): report that the next step starts (steps done, steps in all, its name)."""
    done = -1

    def advance() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, len(steps), steps[done] if done < len(steps) else "done")
    return advance


def build_report(loaded, dataset, *, split: str | None = "PrivateTest", image: int = 0, compare: Sequence = (),
                 tta: bool = False, on_progress: OnSection | None = None,
                 evaluate: Callable[[str | None], object] | None = None) -> str:
    """The homework's five answers for `loaded` (a LoadedModel) on `dataset` (a labeled FerDataset), as one HTML page.

    split: the split the confusion matrix, comparison and face come from (None: every row). image: the face's
    position in that split (as the app's face number). compare: LoadedModels to set beside `loaded` in question 2
    (it comes first in the table). tta: flip test-time augmentation for every accuracy. on_progress(done, total,
    next step) is called before each step and once at the end (done == total).
    evaluate(split name or None) -> the Evaluation of `loaded` on that split (as in split_accuracies), for a caller
    with its own cache (the app); default evaluate_checkpoint on `dataset` (cached on disk). Runs in `compare` are
    always evaluated with evaluate_checkpoint(run, dataset, split=split).
    ValueError for unlabeled data, a split the data lacks or an image outside the split.
    """
    from fercore.evaluation import evaluate_checkpoint, split_accuracies
    from fercore.filters import layer_kernels, layer_outputs, visualize_filters
    from fercore.models import conv_layers

    if dataset.labels is None:
        raise ValueError(f"{dataset.source or 'the data'} has no labels: a report needs the true classes")
    rows = split_positions(dataset, split)
    row = check_image(rows, int(image), split)  # before the slow steps
    layer = next(iter(conv_layers(loaded.model)))
    steps = [f"evaluating on {split_name(split)}", "accuracy per split",
             *([f"evaluating {len(compare)} run(s) to compare"] if compare else []),
             "saliency", f"gradient ascent on {layer}"]
    advance = _progress(on_progress, steps)

    if evaluate is None:
        evaluate = lambda name: evaluate_checkpoint(loaded, dataset, split=name, tta=tta)  # noqa: E731
    advance()
    evaluation = evaluate(split_name(split) if split is not None else None)
    advance()
    accuracies = split_accuracies(loaded, dataset, tta=tta, evaluate=evaluate)  # the split above: a cache hit
    comparison = None
    if compare:
        from fercore.compare import compare_runs

        advance()
        others = [evaluate_checkpoint(run, dataset, split=split, tta=tta) for run in compare]
        comparison = compare_runs([loaded, *compare], [evaluation, *others])
    advance()
    face = chosen_face(loaded, dataset, row, int(image))
    advance()
    # The input range on the split's faces, as the Filters page passes it ((0, 1) for the homework's /255)
    visualization = visualize_filters(loaded.model, layer, value_range=loaded.input_range(dataset.pixels[rows]))
    kernels = layer_kernels(loaded.model, layer)
    outputs = layer_outputs(loaded.model, loaded.preprocess(face.pixels[None]), layer)[0]
    where = split_name(split)
    page = html_document(loaded, dataset, evaluation, where, [
        section("q1", q1_network(loaded, accuracies)),
        section("q2", q2_comparison(comparison)),
        section("q3", q3_confusion(evaluation, loaded.model_name, where)),
        section("q4", q4_saliency(face, where)),
        section("q5", q5_filters(layer, visualization, kernels, outputs, face)),
    ])
    advance()
    return page


def html_document(loaded, dataset, evaluation, split: str, sections: list[str]) -> str:
    """The sections in one HTML document with its title, what it was computed on, and the inline CSS."""
    title = f"{loaded.model_name}: the homework's five questions"
    where = (f"Checkpoint {loaded.path} ({loaded.epoch} epochs); data {dataset.source or '(in memory)'}, split "
             f"{split} ({len(evaluation):,} images); {evaluation.tta_note}.")
    contents = "".join(f'<li><a href="#{key}">{escape(name)}</a></li>' for key, name in SECTIONS.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>", paragraph(where, "note"), f"<ul>{contents}</ul>",
        *sections, "</body></html>", ""])
