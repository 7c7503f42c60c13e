"""Train: start a run or resume one in the background, and follow it live (also from another tab, or later)."""

from pathlib import Path

import streamlit as st

from fercore import jobs
from fercore.config import DEFAULT_RECIPE
from fercore.runs import best_record, can_resume, copy_run, list_runs, run_config, run_history
from ui import keys, settings, sidebar, train_form
from ui.errors import show_error, shown_errors

st.title("Train")
st.caption("A run trains in a background process at low priority, on one CPU thread unless you choose more, so the "
           "rest of the app stays responsive. Leave this page or close the tab: it goes on, and its curves are "
           "here when you come back.")
selection = sidebar.selection()
RECIPE_KEY = "w_train_recipe"


def start_new_run(name: str, config) -> None:
    run_dir = jobs.safe_run_dir(settings.runs_root(), name)
    if not jobs.is_running(run_dir) and can_resume(run_dir):
        raise jobs.JobError(f"a run named {name!r} already exists: resume it on the right, or choose another name")
    jobs.start_training(run_dir, config, threads=config.threads,
                        processes=st.session_state.get(train_form.PROCESSES_KEY, 1))
    st.session_state[keys.TRAIN_RUN] = str(run_dir)


def check_data(choice) -> bool:
    """Refuse data that cannot be trained on now, rather than in the background job's log. True when the data has
    a Training split (not only the shipped demo's PublicTest and PrivateTest)."""
    from fercore.training import has_training_split, split_roles
    from ui import loaders

    dataset = loaders.dataset(choice)
    note = split_roles(dataset)[2]
    st.caption(f"Data: {choice.label}. {note[0].upper()}{note[1:]}.")
    return has_training_split(dataset)


def fill_form() -> None:
    """Show the chosen recipe's settings in the form."""
    st.session_state.update(train_form.form_values(train_form.recipes()[st.session_state[RECIPE_KEY]].config()))


def recipe_picker() -> None:
    if RECIPE_KEY not in st.session_state or train_form.FORM_KEYS["model"] not in st.session_state:
        st.session_state.setdefault(RECIPE_KEY, DEFAULT_RECIPE)
        fill_form()
    recipes = train_form.recipes()
    recipe = st.selectbox("Recipe", list(recipes), key=RECIPE_KEY, format_func=lambda k: recipes[k].label,
                          on_change=fill_form, help="Fills the form below; change any field after.")
    st.caption(f"{recipes[recipe].expect} Times are for 2 CPU threads; a run on 1 (the form's **CPU threads**), "
               "which leaves a core to the app's pages, takes about 1.9x as long.")


def new_run_form() -> None:
    from fercore.config import choices, help_text
    from fercore.models import model_names

    st.subheader("New run")
    if selection.data is None:
        st.warning("Choose the data in the sidebar first.")
        return
    try:
        full_data = check_data(selection.data)
    except Exception as error:  # noqa: BLE001 -- shown; no form for data that cannot be trained on
        show_error(error, "train on this data")
        return
    recipe_picker()
    if not full_data:
        st.info("The shipped demo data holds only PublicTest and PrivateTest, so a run on it trains on PublicTest's "
                "3,589 faces and gets far less than the figures above. A real run needs your own `fer2013.csv` "
                "(Kaggle) or the course's `train.csv`: in the sidebar's **Data**, choose **A file or folder on this "
                "computer** and type its path (or **Upload a CSV** of at most 50 MB; fer2013.csv is about 290 MB, "
                "so give its path).", icon=":material/info:")
    k = train_form.FORM_KEYS
    with st.form("new_run", border=True):
        model = st.selectbox("Model", model_names(), key=k["model"], help=help_text("model"))
        name = st.text_input("Run name", key="w_train_name", placeholder=train_form.default_run_name(model),
                             help="A folder under runs/; empty: model name and time")
        c1, c2 = st.columns(2)
        c1.number_input("Epochs", 1, 500, key=k["epochs"], help=help_text("epochs"))
        c2.number_input("Batch size", 8, 1024, step=8, key=k["batch_size"], help=help_text("batch_size"))
        c1.number_input("Learning rate", 1e-5, 1.0, step=1e-4, format="%.5f", key=k["lr"], help=help_text("lr"))
        c2.selectbox("Schedule", choices("schedule"), key=k["schedule"], help=help_text("schedule"))
        c1.number_input("Weight decay", 0.0, 1.0, step=1e-5, format="%.5f", key=k["weight_decay"],
                        help=help_text("weight_decay"))
        c2.number_input("Label smoothing", 0.0, 0.5, step=0.05, key=k["label_smoothing"],
                        help=help_text("label_smoothing"))
        c1.selectbox("Normalization", choices("normalize"), key=k["normalize"], help=help_text("normalize"))
        c2.selectbox("Class balance", choices("balance"), key=k["balance"], help=help_text("balance"))
        c1.text_input("Augmentation", key=k["augment"], help=help_text("augment"))
        c2.number_input("Seed", 0, 2**31 - 1, key=k["seed"], help=help_text("seed"))
        c1.selectbox("Precision", choices("precision"), key=k["precision"], help=help_text("precision"))
        c2.caption(train_form.auto_precision_note())
        st.session_state.setdefault(train_form.THREADS_KEY, settings.JOB_THREADS)
        c1.selectbox("CPU threads", train_form.thread_choices(), key=train_form.THREADS_KEY,
                     help=train_form.THREADS_HELP)
        if gpus := train_form.process_choices():  # asked only where there are several GPUs
            c1.selectbox("GPUs", gpus, key=train_form.PROCESSES_KEY,
                         help="Processes, one per GPU, started by torchrun; the batch size is split over them")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if submitted:
        with shown_errors("start the run"):
            config = train_form.form_config(st.session_state, data=selection.data.path)
            start_new_run(name.strip() or train_form.default_run_name(model), config)
            st.rerun()


def run_picker() -> Path | None:
    folders = train_form.run_folders()
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
    best = best_record(status.history)
    best_text = f" · best validation accuracy {best['val_acc']:.1%} at epoch {best['epoch']}" if best else ""
    if status.history and "precision" in status.history[-1]:
        best_text += f" · computing in {status.history[-1]['precision']}"
    if status.running:
        st.progress(train_form.progress_fraction(status.progress), text=train_form.progress_text(status.progress))
        if st.button("Stop", key="w_train_stop", icon=":material/stop:"):
            with shown_errors("stop the run"):
                jobs.stop(run_dir)
                st.rerun()
        st.caption(f"Running{best_text}")
    else:
        failure = train_form.failure_line(status.log_tail)
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
    data, note = train_form.resume_data(config.get("data"), selection.data)
    if note:
        st.caption(note)
    done = len(run_history(run_dir))
    planned = int(config.get("epochs", done))
    target = planned if done < planned else done + 5
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    epochs = c1.number_input("Train until epoch", done + 1, 1000, target, key="w_resume_epochs",
                             help="The new total number of epochs")
    choices = train_form.thread_choices()
    threads = c2.selectbox("CPU threads", choices, index=choices.index(train_form.resume_threads(config)),
                           key=f"w_resume_threads_{run_dir.name}",
                           help=f"{train_form.THREADS_HELP} It starts at the threads the run trained on: the same "
                                "threads continue it exactly as if it had never stopped.")
    if c3.button("Resume", key="w_train_resume", icon=":material/replay:"):
        with shown_errors("resume the run"):
            jobs.start_resume(run_dir, int(epochs), threads=threads, data=data)
            st.rerun()


def continue_shipped() -> None:
    """Copy a shipped checkpoint into runs/ and resume it there: the shipped files are never written to."""
    shipped = [run for run in list_runs(settings.checkpoints_root()) if can_resume(run)]  # not a best.pt alone
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
