"""Train: start a run or resume one in the background, and follow it live (also from another tab, or later)."""

from pathlib import Path

import streamlit as st

from fercore import jobs
from fercore.runs import can_resume, copy_run, list_runs, run_config, run_history
from ui import keys, runs, settings, sidebar
from ui.errors import show_error, shown_errors

st.title("Train")
st.caption("A run trains in a background process with one CPU thread, so the rest of the app stays responsive. "
           "Leave this page or close the tab: it goes on, and its curves are here when you come back.")
selection = sidebar.selection()


def start_new_run(name: str, args: list[str]) -> None:
    run_dir = jobs.safe_run_dir(settings.runs_root(), name)
    if not jobs.is_running(run_dir) and can_resume(run_dir):
        raise jobs.JobError(f"a run named {name!r} already exists: resume it on the right, or choose another name")
    jobs.start_training(run_dir, args, threads=settings.JOB_THREADS)
    st.session_state[keys.TRAIN_RUN] = str(run_dir)


def check_data(choice) -> None:
    """Refuse data that cannot be trained on now, rather than in the background job's log."""
    from fercore.training import split_roles
    from ui import loaders

    note = split_roles(loaders.dataset(choice))[2]
    st.caption(f"Data: {choice.label}. {note[0].upper()}{note[1:]}.")


def new_run_form() -> None:
    from fercore.models import model_names
    from fercore.training import BALANCE_MODES, SCHEDULES
    from fercore.transforms import NORMALIZE_MODES

    st.subheader("New run")
    if selection.data is None:
        st.warning("Choose the data in the sidebar first.")
        return
    try:
        check_data(selection.data)
    except Exception as error:  # noqa: BLE001 -- shown; no form for data that cannot be trained on
        show_error(error, "train on this data")
        return
    with st.form("new_run", border=True):
        names = model_names()
        model = st.selectbox("Model", names, index=names.index("fernet") if "fernet" in names else 0,
                             key="w_train_model",
                             help="hw3: the homework's network. fernet: faster and more accurate per CPU second.")
        name = st.text_input("Run name", key="w_train_name", placeholder=runs.default_run_name(model),
                             help="A folder under runs/; empty: model name and time")
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", 1, 500, 10, key="w_train_epochs")
        batch_size = c2.number_input("Batch size", 8, 1024, 128, step=8, key="w_train_batch")
        lr = c1.number_input("Learning rate", 1e-5, 1.0, 1e-3, step=1e-4, format="%.5f", key="w_train_lr")
        schedule = c2.selectbox("Schedule", SCHEDULES, key="w_train_schedule")
        normalize = c1.selectbox("Normalization", NORMALIZE_MODES, index=NORMALIZE_MODES.index("scale255"),
                                 key="w_train_normalize", help="scale255 is the homework's /255")
        balance = c2.selectbox("Class balance", BALANCE_MODES, key="w_train_balance",
                               help="weights: loss weights; sampler: class-balanced batches")
        augment = c1.text_input("Augmentation", "none", key="w_train_augment",
                                help="none, homework, or e.g. flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="w_train_seed")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if submitted:
        args = runs.train_args(model=model, epochs=int(epochs), lr=lr, batch_size=int(batch_size),
                               normalize=normalize, augment=augment.strip(), balance=balance, schedule=schedule,
                               seed=int(seed), data_args=selection.data.train_args())
        with shown_errors("start the run"):
            start_new_run(name.strip() or runs.default_run_name(model), args)
            st.rerun()


def run_picker() -> Path | None:
    folders = runs.run_folders()
    if not folders:
        st.info("No runs yet: start one on the left. Runs are kept in "
                f"`{settings.runs_root()}`.", icon=":material/info:")
        return None
    options = [str(p) for p in folders]
    chosen = st.session_state.get(keys.TRAIN_RUN)
    st.session_state["w_train_run"] = chosen if chosen in options else options[0]
    picked = st.selectbox("Run", options, key="w_train_run", format_func=lambda p: Path(p).name)
    st.session_state[keys.TRAIN_RUN] = picked
    return Path(picked)


def live_status(run_dir: Path, was_running: bool) -> None:
    """Status, progress and curves, read from the run folder (so every tab sees the same)."""
    from fercore import render

    status = jobs.status(run_dir)
    if status.running != was_running:  # started or ended elsewhere: redraw the whole page (buttons, lists)
        st.rerun()
    best = max(status.history, key=lambda h: h.get("val_acc", 0)) if status.history else None
    best_text = f" · best validation accuracy {best['val_acc']:.1%} at epoch {best['epoch']}" if best else ""
    if status.running:
        st.progress(runs.progress_fraction(status.progress), text=runs.progress_text(status.progress))
        if st.button("Stop", key="w_train_stop", icon=":material/stop:"):
            with shown_errors("stop the run"):
                jobs.stop(run_dir)
                st.rerun()
        st.caption(f"Running{best_text}")
    else:
        failure = runs.failure_line(status.log_tail)
        if failure:
            st.error(f"The last job of this run failed: {failure}", icon=":material/error:")
        done = len(status.history)
        st.caption(f"Not running · {done} epoch{'s' if done != 1 else ''} done{best_text}")
    if status.history:
        st.plotly_chart(render.learning_curves(status.history), key="train_curves")
    else:
        st.caption("The loss and accuracy curves appear when the first epoch ends.")
    with st.expander("Log"):
        st.code(status.log_tail or "(empty)", language=None)


def resume_controls(run_dir: Path) -> None:
    if not can_resume(run_dir):
        return
    config = run_config(run_dir)
    data, note = runs.resume_data(config.get("data"), selection.data)
    if note:
        st.caption(note)
    done = len(run_history(run_dir))
    planned = int(config.get("epochs", done))
    target = planned if done < planned else done + 5
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    epochs = c1.number_input("Train until epoch", done + 1, 1000, target, key="w_resume_epochs",
                             help="The new total number of epochs")
    if c2.button("Resume", key="w_train_resume", icon=":material/replay:"):
        with shown_errors("resume the run"):
            jobs.start_resume(run_dir, int(epochs), threads=settings.JOB_THREADS, data=data)
            st.rerun()


def continue_shipped() -> None:
    """Copy a shipped checkpoint into runs/ and resume it there: the shipped files are never written to."""
    shipped = list_runs(settings.checkpoints_root())
    if not shipped:
        return
    with st.expander("Continue training a shipped checkpoint"):
        source = st.selectbox("Shipped checkpoint", shipped, key="w_continue_source", format_func=lambda p: p.name)
        name = st.text_input("New run name", key="w_continue_name", placeholder=f"{source.name}-continued")
        if st.button("Copy into runs/", key="w_continue_copy", icon=":material/content_copy:"):
            with shown_errors("copy the checkpoint"):
                target = copy_run(source, jobs.safe_run_dir(settings.runs_root(),
                                                            name.strip() or f"{source.name}-continued"))
                st.session_state[keys.TRAIN_RUN] = str(target)
                st.rerun()
        st.caption("The copy appears under Runs, where **Resume** continues it.")


left, right = st.columns([1, 2], gap="large")
with left:
    new_run_form()
    continue_shipped()
with right:
    st.subheader("Runs")
    run_dir = run_picker()
    if run_dir is not None:
        running = jobs.is_running(run_dir)
        # Poll the run folder while it trains; slowly otherwise, to notice a run started from another tab.
        st.fragment(live_status, run_every=1.5 if running else 5.0)(run_dir, running)
        if not running:
            resume_controls(run_dir)
