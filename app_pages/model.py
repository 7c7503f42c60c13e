"""Model: the checkpoint's layers as Keras' model.summary() shows them, its training recipe, learning curves and
accuracy on each split of the sidebar's data (the homework's question 1)."""

import pandas as pd
import streamlit as st

from ui import analysis, guards, keys, loaders, sidebar, sources
from ui.errors import shown_errors

st.title("Model")
selection = sidebar.selection()
loaded = guards.need_model(selection)

from fercore import compare, render  # noqa: E402 -- after the first paint

PERCENT = st.column_config.NumberColumn(format="percent")

st.caption(f"{sources.checkpoint_label(selection.checkpoint)}: architecture `{loaded.model_name}`, "
           f"{loaded.epoch} epoch{'s' * (loaded.epoch != 1)} trained, `{loaded.path}`")

layers_column, recipe_column = st.columns([3, 2], gap="large")
summary = None
with layers_column, shown_errors("summarise the model"):
    st.subheader("Layers")
    summary = analysis.model_summary(selection)
    st.dataframe(summary.rows(), hide_index=True, width="stretch", height="content",
                 column_config={"parameters": st.column_config.NumberColumn(format="localized"),
                                "trainable": st.column_config.NumberColumn(format="localized")})
    st.markdown(f"**{summary.total_params:,} parameters** ({summary.trainable_params:,} trainable, "
                f"{summary.non_trainable_params:,} not); **{summary.mflops:,.0f} MFLOP** per image, forward.")
    st.caption(f"Output shapes are channels x height x width for one image. BatchNorm's {summary.running_stats:,} "
               "running means and variances are buffers here, not parameters: Keras' model.summary() counts them as "
               f"non-trainable parameters, so it would show {summary.total_params + summary.running_stats:,}. "
               "MFLOP counts convolutions and dense layers, 2 per multiply-add.")

with recipe_column:
    st.subheader("Recipe")
    recipe = compare.recipe(loaded.config, loaded.history)
    st.table(pd.DataFrame({"value": list(recipe.values())}, index=list(recipe)))
    st.caption(f"Trained on {compare.training_data_text(loaded.config)}. The optimizer's weight decay is Adam's "
               "L2 term; the wall time is the sum of the epochs' own times."
               + (" Its loss also followed its teachers' answers for each training image (knowledge distillation)."
                  if "teachers" in recipe else ""))

st.subheader("Learning curves")
st.plotly_chart(render.learning_curves(loaded.history), config={"displayModeBar": False})
st.caption("Train loss and accuracy are the running means over each epoch in train mode (dropout and augmentation "
           "on); validation is measured after the epoch in eval mode.")

st.subheader("Accuracy on each split")
if selection.data is None:
    st.info("Choose the data in the sidebar: give a path or upload a CSV.", icon=":material/info:")
else:
    with shown_errors("evaluate the checkpoint on each split"):
        data = loaders.dataset(selection.data)
        with st.spinner(f"Evaluating on {len(data):,} images, split by split (once per checkpoint and data)…"):
            accuracies = analysis.split_accuracies(selection, False)
        st.dataframe(accuracies, hide_index=True, column_config={"accuracy": PERCENT,
                                                                 "images": st.column_config.NumberColumn(
                                                                     format="localized")})
        if not any("without" in row["split"] for row in accuracies):
            st.caption(f"{selection.data.label} has no Training split, so the rows without Training duplicates "
                       "(FER2013 repeats some faces across splits, which flatters test accuracy) cannot be made: "
                       "choose the full fer2013 in the sidebar to see them.")
        else:
            st.caption("'without Training duplicates': only the test faces with no byte-identical copy in Training.")

st.subheader("Downloads")
summary_column, history_column, report_column = st.columns(3)  # report_column: the whole report's download
if summary is not None:
    summary_column.download_button("Layers (CSV)", summary.to_csv(), file_name=f"{loaded.model_name}_layers.csv",
                                   mime="text/csv", icon=":material/download:")
history_column.download_button("Learning curves (CSV)", compare.csv_text(loaded.history),
                               file_name=f"{compare.run_label(loaded.path)}_history.csv", mime="text/csv",
                               icon=":material/download:", disabled=not loaded.history)
with report_column, shown_errors("prepare the report"):
    labeled = selection.data is not None and loaders.dataset(selection.data).labels is not None
    face = st.session_state.get(keys.IMAGE) or 0
    # Built when clicked (a callable), on its own thread: gradient ascent and saliency take seconds on a CPU.
    st.download_button("Report: the five questions (HTML)",
                       (lambda: analysis.report_html(selection, face)) if labeled else "",
                       file_name=f"report_{compare.run_label(loaded.path)}_{selection.split}.html",
                       mime="text/html", icon=":material/download:", on_click="ignore", disabled=not labeled,
                       key="w_model_report",
                       help=f"One self-contained page in the homework's order, on {selection.split}, with face "
                            f"{face} (choose it on the Inspect page) for questions 4 and 5; also "
                            "`python -m fercore report`")
