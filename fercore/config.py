"""TrainConfig: every setting of a training run, with its default, help text and allowed values, in one block.

The command line's `train` options, the Train page's widgets and the job that runs `python -m fercore train` in
the background are all built from these fields, so a setting is added, documented or changed here once.
Torch-free on purpose: `python -m fercore --help` and the Train page's form need no torch.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace

SCHEDULES = ("constant", "cosine", "onecycle")
BALANCE_MODES = ("none", "weights", "sampler")
NORMALIZE_MODES = ("none", "scale255", "standardize", "per_image")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def _setting(default, help: str, *, choices: tuple | None = None, factory=None):
    """A TrainConfig field: its default, its help text and, where the values are a fixed set, its choices."""
    metadata = {"help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults follow the homework: Adam, lr 1e-3, batch 128, /255."""

    model: str = _setting("hw3", "architecture name (`python -m fercore models` lists them)")
    epochs: int = _setting(10, "the total number of epochs")
    batch_size: int = _setting(128, "images per optimizer step")
    lr: float = _setting(1e-3, "Adam's learning rate (the peak of a cosine or one-cycle schedule)")
    weight_decay: float = _setting(0.0, "Adam's L2 weight decay")
    schedule: str = _setting("constant", "learning-rate schedule: onecycle warms up over 30%% then decays",
                             choices=SCHEDULES)
    label_smoothing: float = _setting(0.0, "label smoothing of the cross-entropy loss (0.1: 90%% on the label)")
    normalize: str = _setting("scale255", "input normalization: scale255 is the homework's /255",
                              choices=NORMALIZE_MODES)
    # Stored as AugmentConfig.to_dict(); the command line and the Train page write it as text (augment_text).
    augment: dict = _setting(None, "'none', 'homework' (flip, shift 0.1, rotate 10, zoom 0.1), or e.g. "
                                   "'flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25'", factory=dict)
    balance: str = _setting("none", "class balance: weights (loss weights) or sampler (balanced batches)",
                            choices=BALANCE_MODES)
    # Knowledge distillation (fercore.distillation): the loss also follows trained checkpoints' answers.
    teachers: list = _setting(None, "checkpoints (files or run folders, comma-separated) whose mean answers on each "
                                    "training image the loss also follows: knowledge distillation", factory=list)
    distill_weight: float = _setting(0.7, "with teachers: the loss's share that follows them (the rest: the labels)")
    distill_temperature: float = _setting(2.0, "with teachers: the softmax temperature their answers and the model's "
                                               "are compared at")
    seed: int = _setting(0, "seed of the weights, the shuffling, augmentation and dropout")
    threads: int = _setting(2, "torch CPU threads: 2 uses both cores of a 2-core laptop, 1 leaves one to the app")
    device: str = _setting("auto", "auto (CUDA when present), cpu or cuda", choices=DEVICES)
    precision: str = _setting("auto", "auto: bf16 autocast where the CPU or GPU runs bf16 natively, else fp32",
                              choices=PRECISIONS)
    sync_batchnorm: bool = _setting(False, "with several processes (torchrun) on CUDA: BatchNorm statistics over "
                                           "the whole batch, not each process's rows")
    data: str | None = _setting(None, "fer2013.csv, train.csv, an image folder or .npz (none: the shipped demo data)")
    val_fraction: float = _setting(0.1, "validation share when the data has no Usage column (seeded, stratified)")

    def validate(self) -> None:
        """Raise a ValueError naming the setting and its allowed values for anything that cannot be trained."""
        from fercore.models import build_model
        from fercore.transforms import AugmentConfig

        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            # a device may also be a numbered GPU (cuda:1)
            if choices and value not in choices and not (f.name == "device" and str(value).startswith("cuda:")):
                raise ValueError(f"unknown {f.name} {value!r}: choose one of {', '.join(choices)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch size must be at least 1 and lr above 0")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill weight must be between 0 and 1 and distill temperature above 0")
        if not isinstance(self.teachers, list) or not all(isinstance(t, str) and t for t in self.teachers):
            raise ValueError(f"teachers must be a list of checkpoint paths, not {self.teachers!r}")
        build_model(self.model)  # raises a ValueError naming the known models
        AugmentConfig.from_dict(self.augment)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from its asdict() form (config.json, a checkpoint), ignoring keys it does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_augment(text: str) -> dict:
    """The stored form of an augmentation given as text ('none', 'homework', 'flip=0.5,shift=0.1', ...)."""
    from fercore.transforms import AugmentConfig

    return AugmentConfig.parse(text).to_dict()


def parse_paths(text: str) -> list[str]:
    """Comma-separated paths ('none': no path) as absolute paths: a background job runs in another folder."""
    if text.strip() == "none":
        return []
    return [os.path.abspath(part.strip()) for part in text.split(",") if part.strip()]


def paths_text(paths: list[str]) -> str:
    """The text form of a list of paths, the inverse of parse_paths ('none' when empty)."""
    return ",".join(paths) or "none"


def augment_text(augment: dict) -> str:
    """The text form of a stored augmentation, the inverse of parse_augment ('none' when none is on)."""
    from fercore.transforms import AugmentConfig

    return str(AugmentConfig.from_dict(augment or {}))


def default(name: str):
    """TrainConfig's default of field `name`."""
    return getattr(TrainConfig(), name)


def choices(name: str) -> tuple | None:
    return _field(name).metadata.get("choices")


def help_text(name: str) -> str:
    """The field's help as a sentence for a page (argparse's %% escapes undone)."""
    return _field(name).metadata["help"].replace("%%", "%")


def _field(name: str):
    for f in fields(TrainConfig):
        if f.name == name:
            return f
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------------
# The command line: `--batch-size` for batch_size, and so on. Text in, TrainConfig out, and back again for jobs.

_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "dict": str, "list": str, "bool": bool}
# The fields given as text but stored as something else: (text -> value, value -> text), 'none' meaning empty.
_TEXT_FORMS = {"augment": (parse_augment, augment_text), "teachers": (parse_paths, paths_text)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, names, *, keep_run_values: bool = False) -> None:
    """Add `--flag` options for TrainConfig fields `names`. With keep_run_values (resume) every default is None:
    an option left out keeps the run's recorded value."""
    for name in names:
        f = _field(name)
        shown = "none" if name in _TEXT_FORMS else f.default  # a text form shows its empty value
        value_help, allowed = f.metadata["help"], f.metadata.get("choices")
        if keep_run_values:
            value_help += " (default: the run's own)"
        elif shown is not None:
            value_help += f" (default: {shown})"
        if f.type == "bool":  # a switch: --sync-batchnorm on, --no-sync-batchnorm off
            parser.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, help=value_help,
                                default=None if keep_run_values else shown)
            continue
        parser.add_argument(flag(name), dest=name, type=_TYPES[str(f.type)], help=value_help,
                            default=None if keep_run_values else shown,
                            metavar="{" + ",".join(allowed) + "}" if allowed else name.upper())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `train` options (a relative --data becomes absolute: jobs run elsewhere)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    for name, (parse, _) in _TEXT_FORMS.items():
        values[name] = parse(values.get(name) or "none")
    if values.get("data"):
        values["data"] = os.path.abspath(values["data"])
    return TrainConfig(**values)


def config_argv(config: TrainConfig) -> list[str]:
    """`python -m fercore train` options that rebuild `config` exactly (config_from_args of them == config)."""
    argv = []
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [flag(f.name) if value else "--no-" + flag(f.name)[2:]]
            continue
        argv += [flag(f.name), _option_text(f.name, value)]
    return argv


def _option_text(name: str, value) -> str:
    """A field's value as the text of its `train` option, which config_from_args reads back."""
    if name in _TEXT_FORMS:
        return _TEXT_FORMS[name][1](value)
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# Recipes: whole configs the Train page offers, with what the model card measured for them.

@dataclass(frozen=True)
class Recipe:
    label: str
    settings: dict  # TrainConfig fields that differ from its defaults; augment as text
    expect: str     # the accuracy and time to expect, from checkpoints/README.md
    # Where training runs in bf16 (a CPU with native bf16 trains about 3x faster): the settings that change so the
    # recipe keeps its time budget, and what to expect then.
    bf16_settings: dict = field(default_factory=dict)
    bf16_expect: str = ""

    def config(self, **overrides) -> TrainConfig:
        values = {**self.settings, **overrides}
        values["augment"] = parse_augment(values.get("augment", "none"))
        return TrainConfig(**values)

    def in_precision(self, precision: str) -> Recipe:
        """The recipe as offered where `auto` trains in `precision` (fp32 or bf16)."""
        if precision != "bf16":
            return self
        return replace(self, settings={**self.settings, **self.bf16_settings}, expect=self.bf16_expect or self.expect)


RECIPES = {
    "demo": Recipe(
        "Class demo (about 15 minutes)",
        {"model": "fernet_fullres", "epochs": 4, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4,
         "schedule": "onecycle", "label_smoothing": 0.1, "augment": "flip=0.5,shift=0.1"},
        "fernet_fullres with light augmentation: 60.7% on PrivateTest after 4 epochs on the full Training split, "
        "about 16 minutes on a 2-core AMD EPYC CPU (about 4 minutes an epoch).",
        bf16_settings={"epochs": 16},
        bf16_expect="On a CPU with native bf16 an epoch takes about 50 seconds, so the 15 minutes hold 16 epochs: "
                    "67.4-67.9% on PrivateTest after 14 minutes (two seeds) on a 2-core AMD EPYC with AVX-512 "
                    "BF16, past the homework's 66% after 250 epochs. (On a 2-core Intel Xeon with AMX, 12 epochs "
                    "reached 66.1% in 13 minutes.)"),
    "homework": Recipe(
        "The homework's recipe",
        {"model": "hw3", "epochs": 250, "batch_size": 128, "lr": 1e-3, "schedule": "constant", "augment": "homework"},
        "The homework's network and settings: about 11 minutes an epoch on a 2-core CPU, so 250 epochs take about "
        "46 hours. The shipped hw3 reached 69.5% on PrivateTest after all 250 (in bf16); the homework "
        "reached about 66%.",
        bf16_expect="The homework's network and settings: on a CPU with native bf16 about 2 minutes an epoch on 2 "
                    "cores (AMD EPYC with AVX-512 BF16; 2.5 on an Intel Xeon with AMX), so 250 epochs take 8-10 "
                    "hours. The shipped hw3 reached 69.5% on PrivateTest after all 250 (10 h 41 min, pauses included); "
                    "the homework reached about 66%."),
    "accurate": Recipe(
        "Most accurate (long)",
        {"model": "fernet_fullres", "epochs": 40, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4,
         "schedule": "onecycle", "label_smoothing": 0.1, "augment": "flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25"},
        "Long: the demo's recipe with the full augmentation, for 40 epochs, about 2 hours 40 minutes on a 2-core "
        "AMD EPYC CPU. Not measured on such a CPU; on one with native bf16, 55 epochs of it reached 68.8% on "
        "PrivateTest in 61 minutes (the homework: about 66% after 250 epochs).",
        # Where bf16 is native the two hours hold the 4x wider fernet_wide; in fp32 (78 img/s on 2 AMD EPYC Zen 4
        # cores, slower on AVX2) its 35 epochs would take about 3.6 hours.
        bf16_settings={"model": "fernet_wide", "epochs": 35, "lr": 2e-3},
        bf16_expect="Long: the 4.7M-parameter fernet_wide with the full augmentation, 35 epochs: the shipped "
                    "fernet_wide, 70.7% on PrivateTest (71.5% with flip TTA, past the 2013 winner's 71.2%) after "
                    "121 minutes on a 2-core AMD EPYC with AVX-512 BF16; the homework: about 66% after 250 epochs."),
    "custom": Recipe("Custom", {}, "Your own settings: the form starts from fercore's defaults."),
}
DEFAULT_RECIPE = "demo"
