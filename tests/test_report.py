"""The homework report (`fercore.report`, `python -m fercore report`): real trained checkpoints, real data files,
the HTML parsed back and checked against the evaluation, and the page rendered in Chromium from a file:// URL.
Screenshots go to tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.labels import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST
from fercore.report import REPORT_FILE, SECTIONS, build_report, most_confused

from bad_inputs import snapshot
from fixtures import ROOT, learnable_faces, train_on_faces
from test_bad_inputs import cli_error, corpus, of_kind  # noqa: F401 -- the malformed-input corpus and its checks

SHIPPED_DATA = ROOT / "data" / "fer2013_test.npz"
SHIPPED_FERNET = ROOT / "checkpoints" / "fernet_wide"
SHOTS = ROOT / "tests" / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: a small checkpoint really trained, in a folder whose name needs escaping

@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """Faces with PublicTest / PrivateTest rows and a fernet trained one epoch on them, in a run folder named
    with HTML's special characters (a report must escape every path it prints)."""
    root = tmp_path_factory.mktemp("report")
    pixels, labels = learnable_faces(204, seed=1)
    usage = np.array([PUBLIC_TEST] * 64 + [PRIVATE_TEST] * 140, dtype=np.uint8)
    run, other = root / 'run <b>&"q"', root / "other"
    data_path = train_on_faces(root, pixels, labels, usage, run)
    train_on_faces(root, pixels, labels, usage, other, lr=3e-3)
    return {"root": root, "data": data_path, "run": run, "other": other}


class Page(HTMLParser):
    """What a test reads back from a report: h2 ids in order, every src/href, the confusion table's cells, text."""

    def __init__(self, text: str):
        super().__init__()
        self.headings, self.links, self.images, self.confusion, self.text = [], [], [], [], []
        self._in_confusion = self._in_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.headings.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.links += [attrs[name] for name in ("src", "href") if name in attrs]
        if tag == "table" and attrs.get("class") == "confusion":
            self._in_confusion = True
        if self._in_confusion and tag == "tr":
            self.confusion.append([])
        self._in_cell = self._in_confusion and tag == "td"

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_confusion = False
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.confusion[-1].append(int(data.replace(",", "")))

    @property
    def counts(self) -> np.ndarray:
        """The confusion table's 7x7 counts (its last column, the row totals, dropped)."""
        return np.array([row[:7] for row in self.confusion if row])

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def check_self_contained(text: str, page: Page) -> None:
    """Every image an inline PNG that decodes, every link an anchor in the page, no script, nothing external."""
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for src in page.images:
        payload = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert payload.startswith(PNG_SIGNATURE)
        assert min(Image.open(io.BytesIO(payload)).size) > 0
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in page.links), page.links
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # base64 holds '/' and letters
    assert "<script" not in markup.lower() and "//" not in markup and "http" not in markup.lower()


def brute_force_confusion(loaded, dataset, split: int) -> np.ndarray:
    rows = np.flatnonzero(dataset.split == split)
    with torch.no_grad():
        predicted = loaded.model(loaded.preprocess(dataset.pixels[rows])).argmax(1).numpy()
    confusion = np.zeros((7, 7), dtype=np.int64)
    np.add.at(confusion, (dataset.labels[rows], predicted), 1)
    return confusion


@pytest.fixture(scope="module")
def tiny_report(classroom):
    loaded, dataset = load_model(classroom["run"]), load_dataset(classroom["data"])
    steps = []
    text = build_report(loaded, dataset, image=3, compare=[load_model(classroom["other"])],
                        on_progress=lambda done, total, what: steps.append((done, total, what)))
    return {"text": text, "page": Page(text), "loaded": loaded, "dataset": dataset, "steps": steps}


# ----------------------------------------------------------------------------------------------------------------
# The report on a small trained checkpoint

def test_the_five_questions_come_in_order(tiny_report):
    assert tiny_report["page"].headings == ["q1", "q2", "q3", "q4", "q5"] == list(SECTIONS)
    text = tiny_report["text"]
    assert [text.index(f'id="{key}"') for key in SECTIONS] == sorted(text.index(f'id="{key}"') for key in SECTIONS)


def test_the_confusion_table_is_the_evaluation(tiny_report):
    truth = brute_force_confusion(tiny_report["loaded"], tiny_report["dataset"], PRIVATE_TEST)
    assert truth.sum() == 140
    np.testing.assert_array_equal(tiny_report["page"].counts, truth)


def test_the_most_confused_pair_is_named(tiny_report):
    truth = brute_force_confusion(tiny_report["loaded"], tiny_report["dataset"], PRIVATE_TEST)
    mistakes = truth.copy()
    np.fill_diagonal(mistakes, -1)
    true, pred = np.unravel_index(mistakes.argmax(), mistakes.shape)
    expected = (f"{CLASS_NAMES[true]} is most often taken for {CLASS_NAMES[pred]}: {truth[true, pred]} of "
                f"{truth[true].sum()} {CLASS_NAMES[true]} images")
    assert expected in tiny_report["page"].plain


def test_the_report_is_self_contained(tiny_report):
    check_self_contained(tiny_report["text"], tiny_report["page"])
    # original, heatmap, mask, overlay; filter images, kernels, layer outputs
    assert len(tiny_report["page"].images) == 7


def test_paths_from_files_are_escaped(tiny_report):
    text = tiny_report["text"]
    assert '<b>&"q"' not in text and "&lt;b&gt;&amp;&quot;q&quot;" in text


def test_question2_compares_the_given_run(tiny_report, classroom):
    from fercore.evaluation import evaluate_checkpoint

    plain = tiny_report["page"].plain
    assert "Settings that differ between these runs: learning rate" in plain
    assert "other" in plain and "Disgust recall" in plain
    other = evaluate_checkpoint(load_model(classroom["other"]), tiny_report["dataset"], split="PrivateTest")
    assert f"accuracy {tiny_report['page'].counts.trace() / 140:.1%} {other.accuracy:.1%}" in plain


def test_progress_reaches_the_end(tiny_report):
    steps = tiny_report["steps"]
    assert [done for done, _, _ in steps] == list(range(len(steps)))
    assert steps[-1][0] == steps[-1][1] and steps[-1][2] == "done"


def test_the_face_is_the_one_asked_for(tiny_report):
    dataset = tiny_report["dataset"]
    row = np.flatnonzero(dataset.split == PRIVATE_TEST)[3]
    assert f"Face 3 of PrivateTest (id {dataset.ids[row]})" in tiny_report["page"].plain
    assert f"true {CLASS_NAMES[dataset.labels[row]]}" in tiny_report["page"].plain


def test_without_runs_to_compare_it_says_how(classroom):
    text = build_report(load_model(classroom["run"]), load_dataset(classroom["data"]), split="PublicTest")
    assert "--compare runs/q2/q2_1_raw" in Page(text).plain
    assert Page(text).counts.sum() == 64


def test_a_report_on_every_row(classroom):
    text = build_report(load_model(classroom["run"]), load_dataset(classroom["data"]), split=None, image=150)
    assert Page(text).counts.sum() == 204 and "Face 150 of all" in Page(text).plain


def test_bad_requests_are_refused_before_any_work(classroom):
    loaded, dataset = load_model(classroom["run"]), load_dataset(classroom["data"])
    calls = []
    with pytest.raises(ValueError, match=r"image 140 is not in split PrivateTest \(140 images: 0 to 139\)"):
        build_report(loaded, dataset, image=140, on_progress=lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="no Training rows"):
        build_report(loaded, dataset, split="Training", on_progress=lambda *a: calls.append(a))
    unlabeled = dataset.subset(np.arange(10))
    unlabeled.labels = None
    with pytest.raises(ValueError, match="no labels"):
        build_report(loaded, unlabeled)
    assert calls == []


def test_filter_images_stay_in_the_models_input_range(classroom):
    """Question 5's gradient ascent runs in the model's own input range (as the Filters page's): (0, 1) for /255,
    0..255 for no normalization, the faces' own extremes per image."""
    from dataclasses import replace

    from fercore.filters import visualize_filters
    from fercore.transforms import Normalizer

    loaded, faces = load_model(classroom["run"]), load_dataset(classroom["data"]).pixels
    assert loaded.input_range(faces) == (0.0, 1.0)
    raw = replace(loaded, normalizer=Normalizer("none"))
    assert raw.input_range(faces) == (0.0, 255.0)
    per_image = replace(loaded, normalizer=Normalizer("per_image")).input_range(faces)
    expected = Normalizer("per_image")(torch.as_tensor(faces[:256]))
    assert per_image[0] <= float(expected.min()) and per_image[1] >= float(expected.max())
    images = visualize_filters(raw.model, "conv1", [0, 1], steps=5, value_range=raw.input_range(faces)).images
    assert images.max() > 1.5 and images.min() >= 0.0 and images.max() <= 255.0


def test_a_long_run_shows_evenly_spaced_epochs_and_its_best():
    from fercore.report import history_rows

    history = [{"epoch": k + 1, "val_acc": 0.5 + 0.001 * k} for k in range(250)]
    history[137]["val_acc"] = 0.9
    epochs = [row["epoch"] for row in history_rows(history, limit=25)]
    assert epochs[0] == 1 and epochs[-1] == 250 and 138 in epochs and len(epochs) == 26
    assert epochs == sorted(set(epochs))
    assert [row["epoch"] for row in history_rows(history[:25], limit=25)] == list(range(1, 26))


def test_most_confused_takes_the_largest_mistake_and_the_first_on_a_tie():
    confusion = np.diag([50] * 7)
    confusion[2, 4] = confusion[4, 2] = 9
    pair = most_confused(confusion)
    assert (pair.true, pair.pred, pair.count, pair.support) == (2, 4, 9, 59)
    assert pair.sentence() == "Fear is most often taken for Sad: 9 of 59 Fear images (15%)."
    assert most_confused(np.diag([5] * 7)).count == 0


def test_the_apps_report_is_fercores_on_the_sidebars_choice(classroom, monkeypatch):
    """ui.analysis.report_html (the Model page's download): the same page as build_report for that checkpoint,
    data, split and face, built once per server, with each split's evaluation from the Confusion page's cache."""
    from fercore import evaluation
    from ui import analysis
    from ui.sidebar import Selection
    from ui.sources import DataChoice

    passes = []
    forward = evaluation.predict_probabilities
    monkeypatch.setattr(evaluation, "predict_probabilities", lambda *a, **k: passes.append(1) or forward(*a, **k))
    scope = Selection(str(classroom["run"]), DataChoice(str(classroom["data"]), "faces"), "PrivateTest")
    text = analysis.report_html(scope, 5)
    page, loaded, dataset = Page(text), load_model(classroom["run"]), load_dataset(classroom["data"])
    assert page.headings == list(SECTIONS) and "Face 5 of PrivateTest" in page.plain
    np.testing.assert_array_equal(page.counts, brute_force_confusion(loaded, dataset, PRIVATE_TEST))
    assert len(passes) == 2  # PublicTest and PrivateTest, once each
    assert analysis.report_html(scope, 5) is text
    assert analysis.evaluation(scope, False).confusion.sum() == 140 and len(passes) == 2  # the Confusion page's, shared


# ----------------------------------------------------------------------------------------------------------------
# The command line

def fercore(*args):
    return subprocess.run([sys.executable, "-m", "fercore", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_the_cli_writes_report_html(classroom, tmp_path):
    out = tmp_path / "out"
    result = fercore("report", classroom["run"], "--data", classroom["data"], "--image", 1, "--out", out,
                     "--compare", classroom["other"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"wrote {out / REPORT_FILE}")
    page = Page((out / REPORT_FILE).read_text(encoding="utf-8"))
    assert page.headings == list(SECTIONS) and "Face 1 of PrivateTest" in page.plain
    assert [p.name for p in out.iterdir()] == [REPORT_FILE]  # no temporary file left


@pytest.mark.parametrize("args, message", [
    (["report", "no/such/run", "--out", "{tmp}"], "does not exist"),
    (["report", "{run}", "--data", "{data}", "--image", "500", "--out", "{tmp}"], "image 500 is not in split"),
    (["report", "{run}", "--data", "{data}", "--compare", "no/such/run", "--out", "{tmp}"], "no/such/run"),
    (["report", "{run}", "--data", "{tmp}/missing.csv", "--out", "{tmp}"], "missing.csv"),
])
def test_cli_errors_are_one_line(classroom, tmp_path, args, message):
    values = {"run": classroom["run"], "data": classroom["data"], "tmp": tmp_path}
    result = fercore(*[arg.format(**values) for arg in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / REPORT_FILE).exists()


def test_the_report_refuses_each_bad_input_of_the_corpus(corpus, capsys, tmp_path):
    """tests/bad_inputs.py's corpus as the report's data, checkpoint and compared run: one line, exit 2, nothing
    written, no input changed and no code run (the hostile pickle)."""
    out = tmp_path / "out"
    good = ["--data", str(corpus["data"]), "--out", str(out)]
    for case in of_kind(corpus, "data"):
        err = cli_error(capsys, ["report", str(corpus["checkpoint"]), "--data", case.target, "--out", str(out)])
        assert case.words in err and Path(case.target).name in err, (case.name, err)
    for case in of_kind(corpus, "checkpoint"):
        for argv in (["report", case.target], ["report", str(corpus["checkpoint"]), "--compare", case.target]):
            err = cli_error(capsys, argv + good)
            assert case.words in err and Path(case.target).name in err, (case.name, err)
    assert not out.exists() and snapshot([corpus["root"]]) == corpus["before"]


# ----------------------------------------------------------------------------------------------------------------
# The shipped checkpoint on the shipped data, read back and shown in Chromium

@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory):
    if not (SHIPPED_FERNET.is_dir() and SHIPPED_DATA.is_file()):
        pytest.skip("the shipped checkpoints/fernet_wide or data/fer2013_test.npz is absent")
    torch.set_num_threads(1)
    loaded, dataset = load_model(SHIPPED_FERNET), load_dataset(SHIPPED_DATA)
    text = build_report(loaded, dataset)
    path = tmp_path_factory.mktemp("shipped-report") / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return {"text": text, "page": Page(text), "path": path, "loaded": loaded, "dataset": dataset}


def test_the_shipped_report_matches_its_evaluation(shipped_report):
    from fercore.evaluation import evaluate_checkpoint

    page = shipped_report["page"]
    evaluation = evaluate_checkpoint(shipped_report["loaded"], shipped_report["dataset"], split="PrivateTest")
    assert page.headings == list(SECTIONS)
    np.testing.assert_array_equal(page.counts, evaluation.confusion)
    assert most_confused(evaluation.confusion).sentence() in page.plain
    assert f"accuracy {evaluation.accuracy:.1%}" in page.plain
    check_self_contained(shipped_report["text"], page)


def test_the_shipped_report_renders_in_chromium(shipped_report):
    from browser_kit import CHROMIUM, CHROMIUM_ARGS
    from test_browser import missing

    if not CHROMIUM.exists():
        missing("Chromium is not installed: `apt-get install chromium` (Debian), then run the tests again")
    from playwright.sync_api import sync_playwright

    requested = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(shipped_report["path"].as_uri())
            page.wait_for_load_state("load")
            for key, title in SECTIONS.items():
                heading = page.locator(f"h2#{key}")
                assert heading.is_visible() and heading.inner_text() == title
            images = page.evaluate("""() => Array.from(document.images).map(
                image => ({complete: image.complete, width: image.naturalWidth}))""")
            assert len(images) == 7 and all(image["complete"] and image["width"] > 0 for image in images)
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "report_fernet.png"), full_page=True)
        finally:
            browser.close()
    assert all(url.startswith(("file://", "data:")) for url in requested), requested


def test_report_has_help():
    out = fercore("report", "--help")
    assert out.returncode == 0 and "--compare" in out.stdout and "--image" in out.stdout
