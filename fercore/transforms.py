"""Normalization and augmentation of batches of 48x48 grayscale faces, plus class balancing for the rare Disgust class.

Normalization turns uint8 pixels into the float32 (N, 1, 48, 48) input every model takes. Augmentation works on such
batches on whatever device they live: one batched affine sampling grid + grid_sample does flip, shift, rotation and
zoom at once, and random erasing is a batched mask, so a 128-image batch takes about 10 ms on one CPU thread,
~100x less than a training step (benchmarks/bench_train.py).
All randomness comes from the torch.Generator passed in, so a resumed run replays exactly the same augmentations.
"""

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from fercore.config import NORMALIZE_MODES  # noqa: F401 -- the choices live with TrainConfig's other settings
from fercore.labels import NUM_CLASSES

# per_image: an almost flat image is divided by at least one grey level, not blown up to noise.
_MIN_IMAGE_STD = 1.0


def _as_float_batch(pixels) -> torch.Tensor:
    """uint8 or float pixels (N, H, W) or (N, 1, H, W), numpy or torch, as float32 (N, 1, H, W) on the 0..255 scale."""
    x = torch.as_tensor(pixels)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected pixels shaped (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    return x.float()


def _pixel_mean_std(pixels) -> tuple[float, float]:
    """Mean and std of uint8 pixels, exact and in constant memory via a 256-bin histogram."""
    values = np.asarray(pixels)
    if values.dtype != np.uint8:
        raise ValueError(f"Normalizer.fit expects uint8 pixels, got {values.dtype}")
    if values.size == 0:
        raise ValueError("Normalizer.fit got no pixels")
    counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    mean = float((counts * levels).sum() / counts.sum())
    var = float((counts * (levels - mean) ** 2).sum() / counts.sum())
    return mean, max(math.sqrt(var), _MIN_IMAGE_STD)


@dataclass(frozen=True)
class Normalizer:
    """Maps uint8 pixels to model input. mean/std are on the 0..255 scale and used by 'standardize' only.

    none        float pixel values, 0..255
    scale255    x / 255, the homework's
    standardize (x - mean) / std with the training pixels' mean and std (see fit)
    per_image   each image to zero mean and unit std on its own (removes brightness and contrast)
    """
    mode: str = "scale255"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.mode not in NORMALIZE_MODES:
            raise ValueError(f"unknown normalization {self.mode!r}: expected one of {', '.join(NORMALIZE_MODES)}")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"normalization needs a finite mean and a positive std, got {self.mean}, {self.std}")

    @classmethod
    def fit(cls, mode: str, pixels_uint8) -> "Normalizer":
        """A normalizer for `mode`; 'standardize' takes its statistics from these (training) pixels."""
        if mode == "standardize":
            mean, std = _pixel_mean_std(pixels_uint8)
            return cls(mode, mean, std)
        return cls(mode)

    def __call__(self, pixels) -> torch.Tensor:
        """uint8 or float pixels on the 0..255 scale, (N, 48, 48) or (N, 1, 48, 48) -> float32 (N, 1, 48, 48)."""
        x = _as_float_batch(pixels)
        if self.mode == "scale255":
            return x / 255.0
        if self.mode == "standardize":
            return (x - self.mean) / self.std
        if self.mode == "per_image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(_MIN_IMAGE_STD)
            return (x - mean) / std
        return x

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            return cls(str(d["mode"]), float(d.get("mean", 0.0)), float(d.get("std", 1.0)))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a normalizer description: {d!r}") from error


# Each augmentation's strength: (meaning, largest allowed value). 0 turns it off.
_AUGMENT_LIMITS = {
    "flip": ("probability of a horizontal flip", 1.0),
    "shift": ("largest shift, as a fraction of the image size", 0.5),
    "rotate": ("largest rotation in degrees", 180.0),
    "zoom": ("largest zoom in or out, as a fraction (0.1: scale 0.9..1.1)", 0.5),
    "erase": ("probability of erasing one random rectangle", 1.0),
}


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strongly; every field 0 means off. See _AUGMENT_LIMITS for the meanings."""
    flip: float = 0.0
    shift: float = 0.0
    rotate: float = 0.0
    zoom: float = 0.0
    erase: float = 0.0

    def __post_init__(self):
        for name, (meaning, limit) in _AUGMENT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"augmentation {name}={value!r}: expected a number ({meaning})")
            if not 0.0 <= value <= limit:
                raise ValueError(f"augmentation {name}={value}: must be between 0 and {limit:g} ({meaning})")
            object.__setattr__(self, name, float(value))

    @classmethod
    def homework(cls) -> "AugmentConfig":
        """The homework's Keras ImageDataGenerator: horizontal_flip, 10% shifts, 10 degree rotations, 10% zoom."""
        return cls(flip=0.5, shift=0.1, rotate=10.0, zoom=0.1)

    @classmethod
    def parse(cls, text: str) -> "AugmentConfig":
        """'flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25', or a name of AUGMENT_PRESETS ('' is 'none')."""
        text = (text or "").strip()
        preset = AUGMENT_PRESETS.get(text.lower() or "none")
        if preset is not None:
            return preset()
        values: dict[str, float] = {}
        for item in text.split(","):
            key, sep, value = (part.strip() for part in item.partition("="))
            if key not in _AUGMENT_LIMITS:
                raise ValueError(f"unknown augmentation {key!r} in {text!r}: known are {', '.join(_AUGMENT_LIMITS)}"
                                 f" (or {', '.join(map(repr, AUGMENT_PRESETS))})")
            if not sep or not value:
                raise ValueError(f"augmentation {key!r} needs a strength, e.g. {key}=0.1")
            if key in values:
                raise ValueError(f"augmentation {key!r} given twice in {text!r}")
            try:
                values[key] = float(value)
            except ValueError:
                raise ValueError(f"augmentation {key}={value!r}: not a number") from None
        return cls(**values)

    def __str__(self) -> str:
        """The parse() form of this config, only the augmentations that are on ('none' when none is)."""
        on = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self) if getattr(self, f.name) > 0]
        return ",".join(on) or "none"

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))

    @property
    def geometric(self) -> bool:
        """Whether a resampling transform (shift, rotation, zoom) is on; flips alone are done exactly."""
        return self.shift > 0 or self.rotate > 0 or self.zoom > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        unknown = set(d) - set(_AUGMENT_LIMITS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}: known are {', '.join(_AUGMENT_LIMITS)}")
        return cls(**d)


# Named augmentations, wherever an augmentation is given as text (command line, Train page, recipes).
AUGMENT_PRESETS = {"none": AugmentConfig, "off": AugmentConfig, "homework": AugmentConfig.homework}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _affine_thetas(n: int, config: AugmentConfig, flips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices mapping output to input coordinates (normalized to -1..1).

    A zoom factor s > 1 magnifies (crops), s < 1 shrinks; border pixels fill what comes into view (Keras 'nearest').
    """
    angle = _uniform(n, -config.rotate, config.rotate, generator) * (math.pi / 180.0)
    scale = _uniform(n, 1.0 - config.zoom, 1.0 + config.zoom, generator)
    shift = _uniform(2 * n, -2.0 * config.shift, 2.0 * config.shift, generator).view(2, n)  # 2.0 = image width
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    mirror = torch.where(flips, -1.0, 1.0).double()  # applied to the output x coordinate first
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, shift[0]], dim=1),
        torch.stack([sin * mirror, cos, shift[1]], dim=1),
    ], dim=1)
    return theta.float()


def _sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(theta, (N, C, H, W), align_corners=False), 30x faster: a 2x3 affine map is a sum of a term
    along x and a term along y, so two small products and one broadcast add in (N, 2, H, W) layout suffice."""
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    along_x = theta[:, :, 0, None, None] * xs.view(1, 1, 1, width)
    along_y = theta[:, :, 1, None, None] * ys.view(1, 1, height, 1) + theta[:, :, 2, None, None]
    return (along_x + along_y).permute(0, 2, 3, 1)


def _erase_masks(n: int, height: int, width: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) boolean masks, each either empty or one rectangle (Zhong et al. 2017: 2-25% of the area,
    aspect ratio 0.3..3.3 log-uniform)."""
    chosen = torch.rand(n, generator=generator) < probability
    area = _uniform(n, 0.02, 0.25, generator) * height * width
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(1 / 0.3), generator))
    h = torch.sqrt(area * aspect).round().clamp(1, height).long()
    w = torch.sqrt(area / aspect).round().clamp(1, width).long()
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (height - h + 1)).floor().long().view(n, 1)
    left = (torch.rand(n, generator=generator, dtype=torch.float64) * (width - w + 1)).floor().long().view(n, 1)
    rows, cols = torch.arange(height), torch.arange(width)
    in_rows = (rows >= top) & (rows < top + h.view(n, 1)) & chosen.view(n, 1)
    in_cols = (cols >= left) & (cols < left + w.view(n, 1))
    return in_rows.view(n, 1, height, 1) & in_cols.view(n, 1, 1, width)


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a float batch (N, 1, H, W), normalized or not; returns a new tensor of the same shape, dtype
    and device. Random numbers are drawn on the CPU from `generator`, so results do not depend on the device.

    Flip, shift, rotation and zoom are one affine resampling (bilinear, border fill); with flips alone the flip is an
    exact mirror. Erasing fills its rectangle with the image's mean, which is right under every normalization.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"augment_batch expects a float batch (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    n, _, height, width = x.shape
    if n == 0 or not config.enabled:
        return x.clone()
    flips = torch.rand(n, generator=generator) < config.flip if config.flip > 0 else torch.zeros(n, dtype=torch.bool)
    if config.geometric:
        theta = _affine_thetas(n, config, flips, generator).to(x.device, x.dtype)
        grid = _sampling_grid(theta, height, width)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif config.flip > 0:
        out = torch.where(flips.to(x.device).view(n, 1, 1, 1), x.flip(-1), x)
    else:
        out = x.clone()
    if config.erase > 0:
        mask = _erase_masks(n, height, width, config.erase, generator).to(x.device)
        out = torch.where(mask, out.mean(dim=(1, 2, 3), keepdim=True), out)
    return out


def _class_counts(labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return y, torch.bincount(y, minlength=num_classes).double()


def class_weights(labels, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Inverse-frequency loss weights N / (K * n_c), float32 (K,): 1 for every class when balanced; Disgust gets
    ~9.4 on FER2013's Training split. A class absent from `labels` gets 0 (no example of it is weighted)."""
    y, counts = _class_counts(labels, num_classes)
    weights = torch.where(counts > 0, y.numel() / (num_classes * counts.clamp_min(1)), 0.0)
    return weights.float()


def balanced_sample_weights(labels, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Per-example float64 weights for torch.utils.data.WeightedRandomSampler: every class is drawn equally often."""
    y, _ = _class_counts(labels, num_classes)
    return class_weights(y, num_classes).double()[y]
