"""`python -m fercore`: train, resume, evaluate, predict and report from the command line.

Every failure a user can cause (bad data, a bad checkpoint, a bad option) ends in one readable line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from dataclasses import fields

from fercore.config import TrainConfig, add_arguments, config_from_args
from fercore.labels import CLASS_NAMES, NUM_CLASSES, SPLIT_NAMES
from fercore.runs import atomic_write

# What resume may change (fercore.training.resumed_run): the total, where the data lives, and how it computes.
RESUME_OPTIONS = ("epochs", "data", "threads", "device", "precision")
EPILOG = "CHECKPOINT is a run folder (its best.pt) or a .pt file. With no --data, the shipped data/ file is used."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fercore", description=__doc__.splitlines()[0], epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="start a new training run", epilog=EPILOG)
    train.add_argument("--out", required=True, help="run folder to create (holds last.pt, best.pt, history.json)")
    add_arguments(train, [f.name for f in fields(TrainConfig)])
    _add_run_options(train)

    resume = commands.add_parser("resume", help="continue a run from its last.pt", epilog=EPILOG)
    resume.add_argument("run", metavar="DIR")
    # Left out, each keeps the run's recorded value: with the same threads and precision, resuming is bit-exact.
    add_arguments(resume, RESUME_OPTIONS, keep_run_values=True)
    _add_run_options(resume)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix", epilog=EPILOG)
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT")
    evaluate.add_argument("--data")
    evaluate.add_argument("--split", default="PrivateTest", help=f"{', '.join(SPLIT_NAMES)} or all")
    evaluate.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(evaluate, ["precision"])

    predict = commands.add_parser("predict", help="write the course's submission file (id,label)", epilog=EPILOG)
    predict.add_argument("checkpoint", metavar="CHECKPOINT")
    predict.add_argument("--data", required=True, help="the course's test.csv (id,feature) or any other format")
    predict.add_argument("--out", required=True, help="submission CSV to write")
    predict.add_argument("--tta", action="store_true")

    report = commands.add_parser("report", help="the homework's five questions as one self-contained HTML file",
                                 epilog=EPILOG)
    report.add_argument("checkpoint", metavar="CHECKPOINT")
    report.add_argument("--data")
    report.add_argument("--split", default="PrivateTest", help=f"{', '.join(SPLIT_NAMES)} or all")
    report.add_argument("--image", type=int, default=0,
                        help="the face for saliency and layer outputs: its position in the split (default 0)")
    report.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                        help="run folders or .pt files to set beside CHECKPOINT in question 2")
    report.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for report.html (created if needed)")
    report.add_argument("--quiet", action="store_true", help="no progress bar")

    precompute = commands.add_parser("precompute", epilog=EPILOG,
                                     help="compute before class everything a lesson clicks on, into the disk cache")
    precompute.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    precompute.add_argument("--data")
    precompute.add_argument("--snapshots", action="store_true",
                            help="also every epoch snapshot the checkpoints' runs kept (the sidebar's Epoch slider)")
    precompute.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("models", help="list the registered architectures")
    return parser


def _add_run_options(parser) -> None:
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # stop after N epochs in total (tests)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def progress_printer(quiet: bool):
    """A training progress callback: a tqdm bar per epoch and one summary line per finished epoch."""
    from tqdm import tqdm

    bar, bar_epoch = None, None

    def on_progress(p):  # called about twice a second and at each epoch's end
        nonlocal bar, bar_epoch
        if quiet:
            if p.epoch_done:
                print(epoch_line(p.record, p.epochs), flush=True)
            return
        if bar is None or bar_epoch != p.epoch:
            bar_epoch = p.epoch
            bar = tqdm(total=p.batches, desc=f"epoch {p.epoch}/{p.epochs}", unit="batch", leave=False,
                       file=sys.stderr)
        bar.n = p.batch
        bar.set_postfix(loss=f"{p.train_loss:.3f}", acc=f"{p.train_acc:.3f}", refresh=False)
        bar.refresh()
        if p.epoch_done:
            bar.close()
            tqdm.write(epoch_line(p.record, p.epochs))
    return on_progress


def epoch_line(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  lr {r['lr']:.2e}  {r['seconds']:.1f}s")


def cmd_train(args) -> int:
    from fercore import distributed
    from fercore.training import new_run

    config = config_from_args(args)
    say = main_printer(distributed.current_world())
    if config.teachers:  # they answer for every training image before the run can say anything else
        say(f"teachers: {', '.join(config.teachers)} answer for each training image first (once, minutes on a CPU)")
    trainer = new_run(config, args.out, on_progress=progress_printer(args.quiet))
    say(trainer.precision.describe())
    say(f"{trainer.split_note}; model {config.model} on {trainer.device}{processes(trainer)}, {config.epochs} epochs "
        f"-> {args.out}")
    return run_to_end(trainer, args.stop_after)


def cmd_resume(args) -> int:
    from fercore.training import resumed_run

    overrides = {name: getattr(args, name) for name in RESUME_OPTIONS if getattr(args, name) is not None}
    epochs = overrides.pop("epochs", None)
    if "data" in overrides:
        overrides["data"] = os.path.abspath(overrides["data"])
    trainer = resumed_run(args.run, epochs=epochs, overrides=overrides, on_progress=progress_printer(args.quiet))
    done, total = len(trainer.history), trainer.config.epochs
    say = main_printer(trainer.world)
    if done >= total:
        say(f"{args.run} already has {done} of {total} epochs: pass --epochs N (the new total) to go on")
        return 0
    say(trainer.precision.describe())
    say(f"resuming {args.run} at epoch {done + 1} of {total}{processes(trainer)}; {trainer.split_note}")
    return run_to_end(trainer, args.stop_after)


def main_printer(world):
    """print for the process that speaks for the run (rank 0 of several started by torchrun), silent for others."""
    def say(text: str) -> None:
        if world.is_main:
            print(text, flush=True)
    return say


def processes(trainer) -> str:
    """' x N processes' when torchrun started several, else nothing."""
    n = trainer.world.size
    return f" x {n} processes (global batch {trainer.config.batch_size}, {trainer.config.batch_size // n} each)" \
        if n > 1 else ""


def run_to_end(trainer, stop_after) -> int:
    from fercore import distributed

    trainer.fit(stop_after=stop_after)
    distributed.teardown()
    main_printer(trainer.world)(f"done: best val acc {trainer.best_val_acc:.4f}; checkpoints in {trainer.run_dir}")
    return 0


def _dataset_and_split(data, split_name):
    """The data set and the split to use (None for all rows), checked to be non-empty."""
    from fercore.data import load_dataset
    from fercore.labels import split_index

    dataset = load_dataset(data)
    if split_name.lower() == "all":
        return dataset, None
    code = split_index(split_name)
    if not (dataset.split == code).any():
        raise ValueError(f"{dataset.source} has no {SPLIT_NAMES[code]} rows (try --split all)")
    return dataset, code


def cmd_evaluate(args) -> int:
    from fercore.checkpoints import load_model
    from fercore.evaluation import evaluate_checkpoint

    loaded = load_model(args.checkpoint)
    dataset, split = _dataset_and_split(args.data, args.split)
    if dataset.labels is None:
        raise ValueError(f"{dataset.source} has no labels: use `predict` for unlabeled data")
    result = evaluate_checkpoint(loaded, dataset, split=split, tta=args.tta, precision=args.precision)
    if args.json:
        print(json.dumps({"checkpoint": loaded.path, **result.to_dict()}))
        return 0
    print(f"precision: {result.computed_in}\n{loaded.path} on {dataset.source}\n{result.describe()}")
    print()
    print(f"{'class':<9} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for k in range(NUM_CLASSES):
        print(f"{CLASS_NAMES[k]:<9} {result.precision[k]:9.3f} {result.recall[k]:7.3f} {result.f1[k]:6.3f} "
              f"{int(result.support[k]):8d}")
    print("\nconfusion (rows true, columns predicted)")
    print(" " * 9 + "".join(f"{n[:7]:>8}" for n in CLASS_NAMES))
    for k, row in enumerate(result.confusion):
        print(f"{CLASS_NAMES[k]:<9}" + "".join(f"{int(v):8d}" for v in row))
    return 0


def cmd_predict(args) -> int:
    from fercore.checkpoints import load_model
    from fercore.evaluation import evaluate_checkpoint

    loaded = load_model(args.checkpoint)
    dataset, _ = _dataset_and_split(args.data, "all")
    predictions = evaluate_checkpoint(loaded, dataset, tta=args.tta).predictions
    out = Path(args.out)
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["id", "label"])
    writer.writerows(zip(dataset.ids.tolist(), predictions.tolist()))
    atomic_write(out, rows.getvalue())
    print(f"wrote {len(dataset)} predictions to {out}")
    return 0


def step_printer(quiet: bool):
    """A progress callback for a few long steps: one tqdm bar, described by the step that runs."""
    from tqdm import tqdm

    bar = None

    def on_progress(done: int, total: int, what: str):
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = tqdm(total=total, unit="step", leave=False, file=sys.stderr)
        bar.set_description(what, refresh=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close():  # clears the bar's line when a step fails, so the error stands on a line of its own
        if bar is not None:
            bar.close()
    on_progress.close = close
    return on_progress


def cmd_report(args) -> int:
    from fercore.checkpoints import load_model
    from fercore.report import REPORT_FILE, build_report

    loaded = load_model(args.checkpoint)
    compare = [load_model(run) for run in args.compare]
    dataset, split = _dataset_and_split(args.data, args.split)
    progress = step_printer(args.quiet)
    try:
        page = build_report(loaded, dataset, split=split, image=args.image, compare=compare, tta=args.tta,
                            on_progress=progress)
    finally:
        progress.close()
    out = Path(args.out) / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page)
    print(f"wrote {out}")
    return 0


def cmd_precompute(args) -> int:
    from fercore.lesson import precompute

    progress = step_printer(args.quiet)
    try:
        summary = precompute(args.checkpoints, args.data, snapshots=args.snapshots, on_progress=progress)
    finally:
        progress.close()
    print(summary.describe())
    return 0


def cmd_models(args) -> int:
    from fercore.models import build_model, model_names

    for name in model_names():
        model = build_model(name)
        print(f"{name:<16} {sum(p.numel() for p in model.parameters()):>10,d} parameters")
    return 0


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "report": cmd_report, "precompute": cmd_precompute, "models": cmd_models}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fercore.checkpoints import CheckpointError
    from fercore.data import DataError

    try:
        return COMMANDS[args.command](args)
    except (DataError, CheckpointError, ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is saved in last.pt", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m fercore models | head`: the reader left; say nothing more (Python's advice)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
