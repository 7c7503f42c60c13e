"""Question 2's tables in the model card are what `scripts/question2.py table` prints from the shipped results, so
a reader can rebuild them, and the card cannot drift from the json beside it."""

import importlib.util

import pytest

from fixtures import ROOT

CARD_LINES = (ROOT / "checkpoints" / "README.md").read_text().replace("**", "").splitlines()  # bold for emphasis
SHIPPED = sorted((ROOT / "checkpoints").glob("question2_*epochs.json"))


def load_script():
    spec = importlib.util.spec_from_file_location("question2", ROOT / "scripts" / "question2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


question2 = load_script()


def test_curves_up_to_twenty_epochs_are_printed_epoch_by_epoch():
    table = question2.curve_table({"a": [0.5] * 19 + [0.7], "b": [0.25] * 10})
    head, _, row_a, row_b = table.splitlines()
    assert head == "| row | " + " | ".join(str(epoch) for epoch in range(1, 21)) + " |"
    assert row_a.endswith("| 50.0% | 70.0% |") and row_b.count("%") == 10


def test_longer_curves_are_printed_as_ten_epoch_means():
    curve = [epoch / 100 for epoch in range(1, 26)]  # 1%, 2%, ... 25%
    head, rule, row = question2.curve_table({"a": curve}).splitlines()
    assert head == "| PublicTest, mean of epochs | 1-10 | 11-20 | 21-25 |" and rule == "|---|---|---|---|"
    assert row == "| a | 5.5% | 15.5% | 23.0% |"


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda path: path.name)
def test_the_model_cards_tables_are_the_scripts_output(shipped):
    # Row 4's curve is the shipped hw3's history. The card prints ten-epoch means whole, beside it, and only chosen
    # columns of shorter, epoch-by-epoch curves: of those, the results table alone is compared.
    table = question2.tables(shipped, row4_run=ROOT / "checkpoints" / "hw3")
    printed = table if "mean of epochs" in table else table.split("\n\n")[0]
    missing = [line for line in printed.splitlines() if line not in CARD_LINES]
    assert not missing, f"{shipped.name}: the model card lacks these lines of the script's tables: {missing}"
