"""Compare: checkpoints on the same images, one row each with only the settings that differ; for two, the
difference of their confusion matrices and their per-class recall side by side (the homework's question 2)."""

import pandas as pd
import streamlit as st

from ui import analysis, guards, keys, loaders, sidebar, sources
from ui.errors import shown_errors
from ui.sidebar import Selection

st.title("Compare")
selection = sidebar.selection()
guards.need_checkpoint(selection)
guards.need_data(selection, labels=True)

from fercore import compare, render  # noqa: E402 -- after the first paint
from fercore.labels import CLASS_NAMES  # noqa: E402

def default_picks(options: list[str]) -> list[str]:
    """Every shipped checkpoint, topped up with the other options to two when fewer are shipped."""
    picks = [path for path in options if sources.is_shipped(path)]
    return picks + [path for path in options if path not in picks][:max(0, 2 - len(picks))]


def evaluated_picks(picks: list[str]):
    """(labels, LoadedModels, Evaluations) of the picks that load and evaluate; each one that fails gets its own red
    box naming it, and the rest are still compared."""
    labels, runs, evaluations = [], [], []
    for path in picks:
        label = sources.checkpoint_label(path)
        with shown_errors(f"compare {label}"):
            loaded = loaders.model(path)  # a checkpoint that does not load gets its red box here
            with st.spinner(f"Evaluating {label} on {selection.split} (once per checkpoint and data)…"):
                result = analysis.evaluation(Selection(path, selection.data, selection.split), False)
            labels.append(label)
            runs.append(loaded)
            evaluations.append(result)
    return labels, runs, evaluations


options = sources.checkpoint_options()
picked = st.session_state.get(keys.COMPARE_RUNS)
if picked is None:
    st.session_state[keys.COMPARE_RUNS] = default_picks(options)
else:  # a run folder deleted since: drop it rather than fail the widget
    st.session_state[keys.COMPARE_RUNS] = [path for path in picked if path in options]
picks = st.multiselect("Checkpoints to compare", options, key=keys.COMPARE_RUNS,
                       format_func=sources.checkpoint_label,
                       help="The first is A and the second B in the difference below; runs come from runs/.")
if not picks:
    st.info("Pick two or more checkpoints above.", icon=":material/info:")
    st.stop()

labels, runs, evaluations = evaluated_picks(picks)
if not runs:
    st.stop()

table = compare.compare_runs(runs, evaluations, labels)
st.caption(f"On {selection.data.label}, {selection.split}: {len(evaluations[0]):,} images, no test-time "
           "augmentation. " + (f"Settings that differ: {', '.join(table.settings)}; the rest are the same."
                               if table.settings else "Every setting is the same."))
# One column per run, so a handful of runs read side by side on a projector without scrolling.
shown = pd.DataFrame(table.rows()).set_index("run")
percents = ["best validation accuracy", "accuracy", *(f"{name} recall" for name in CLASS_NAMES)]
shown[percents] = shown[percents].map(lambda value: f"{value:.1%}")
st.table(shown.T.rename_axis(None, axis=1))
if len(runs) > 1:
    st.markdown(table.ensemble_text())
st.caption("To answer the homework's question 2, `python scripts/question2.py run --data fer2013.npz --out runs "
           "--epochs N` trains six runs at one budget, each one change on the row above: no normalization and no "
           "BatchNorm (q2_1_raw), /255 (q2_2_scale255), + BatchNorm, the homework's network (q2_3_batchnorm), + the "
           "homework's augmentation (q2_4_augment), + class-balanced loss weights (q2_5_weights), class-balanced "
           "sampling instead (q2_6_sampler). Pick them here to see what each change did.")
st.download_button("Comparison (CSV)", table.to_csv(), file_name="comparison.csv", mime="text/csv",
                   icon=":material/download:")

if len(runs) == 2:
    a, b = labels
    matrix_column, recall_column = st.columns([3, 2], gap="large")
    with matrix_column:
        st.subheader(f"Confusion: {b} - {a}")
        difference = compare.confusion_difference(*evaluations)
        st.plotly_chart(render.confusion_difference_figure(difference, names=(a, b)), width="content",
                        config={"displayModeBar": False})
        st.caption("Row-normalized matrices, B minus A, in percentage points of each true class. Blue: B puts more "
                   "of the class's faces in that cell, red: fewer; on the diagonal, blue is recall gained.")
    with recall_column:
        st.subheader("Recall per class")
        st.plotly_chart(render.recall_bars({label: e.recall for label, e in zip(labels, evaluations)}),
                        config={"displayModeBar": False})
elif len(runs) > 2:
    st.caption("Pick exactly two checkpoints to see their confusion difference and recall side by side.")
