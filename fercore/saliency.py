"""Saliency maps: which pixels of a face drive a class score, with one calling convention for every method.

    method(model, images, target, **options) -> np.ndarray float32 (N, 48, 48)

`model` is any classifier nn.Module taking float (N, 1, 48, 48) and returning logits (N, C); `images` are already
preprocessed (normalized) float tensors. A map is non-negative importance by default (`absolute=True`); pass
`absolute=False` to the gradient methods for signed attributions (IG's then sum to score(x) - score(baseline)).
Colormaps, masks and overlays are fercore.render's job.

Scores are logits, not softmax probabilities (as in Captum, which differentiates the model output): a logit's
gradient says what moves this class's evidence, while a probability's gradient also mixes in every other class.

The target says which score to explain, resolved per image (see `Target`): the predicted class, the true class,
any class, or a contrast of two ("why Fear and not Sad?" is the gradient of logit_Fear - logit_Sad).

Every call leaves the model as it found it (see `analysis_mode`): inside the call the model runs in eval mode, its
parameters not differentiated (which also skips their gradient work) and its conv weights in channels_last (faster
oneDNN kernels); on exit each module's mode, each parameter's requires_grad and original tensor are restored and
hooks removed, also when the call raises. A lock serialises calls, so a model shared between threads (Streamlit
sessions) is safe.

Sanity checks: `cascading_randomization` (Adebayo et al. 2018) and `deletion_curve` / `insertion_curve`
(Petsiuk et al. 2018).
"""

import copy
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore.filters.transforms import gaussian_blur as _blur
from fercore import disk_cache
from fercore.analysis_mode import analysis_mode
from fercore.models import conv_layers, summary

# Rows (images x samples or steps) per forward/backward pass: bounds memory (hw3 keeps ~3 MB of activations per
# row for the backward pass) while staying large enough for oneDNN to run its convolutions efficiently.
DEFAULT_BATCH_SIZE = 128


# ----------------------------------------------------------------------------------------------------------------
# Targets

@dataclass(frozen=True, eq=False)
class Target:
    """Which score to explain, resolved per image into a weight row over the logits (score = logits @ weights).

    Build with Target.predicted(), Target.cls(k) (k an int or one class per image), Target.true(labels) or
    Target.contrast(a, b) (a, b: anything `as_target` takes, e.g. contrast(Target.predicted(), Target.true(y))
    explains "why the predicted class and not the true one"). A plain int, a sequence / array / tensor of ints,
    or None (= predicted) are accepted wherever a target is.

    Target.true() without labels stands for "each image's own label" until `with_labels` supplies them, so a
    target can be chosen before the image is (as a page's controls do). Targets compare and hash by value, so
    they can key caches.
    """
    kind: str                                   # "predicted" | "class" | "true" | "contrast" | "weights"
    classes: Union[int, torch.Tensor, None] = None
    parts: tuple = ()
    matrix: Union[torch.Tensor, None] = None

    @staticmethod
    def predicted() -> "Target":
        return Target("predicted")

    @staticmethod
    def cls(k) -> "Target":
        return Target("class", classes=_class_indices(k))

    @staticmethod
    def true(labels=None) -> "Target":
        return Target("true") if labels is None else Target.cls(labels)

    @staticmethod
    def contrast(a, b) -> "Target":
        return Target("contrast", parts=(as_target(a), as_target(b)))

    def with_labels(self, labels) -> "Target":
        """This target with Target.true() placeholders replaced by the images' labels (None: unlabeled images,
        a ValueError if a placeholder needs them)."""
        if self.kind == "true":
            if labels is None:
                raise ValueError("this image has no label: choose another target than its true class")
            return Target.cls(labels)
        if self.kind == "contrast":
            return Target("contrast", parts=tuple(part.with_labels(labels) for part in self.parts))
        return self

    @property
    def needs_logits(self) -> bool:
        """Whether resolving this target needs the model's prediction on the (clean) images."""
        return self.kind == "predicted" or any(part.needs_logits for part in self.parts)

    def weights(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) weights with score_i = sum_c logits[i, c] * weights[i, c]; `logits` of the clean images."""
        n, num_classes = logits.shape
        if self.kind == "predicted":
            return F.one_hot(logits.argmax(1), num_classes).to(logits.dtype)
        if self.kind == "true":
            raise ValueError("Target.true() needs the images' labels: use Target.true(labels) or .with_labels")
        if self.kind == "class":
            k = torch.as_tensor(self.classes, device=logits.device).expand(n) if isinstance(self.classes, int) \
                else self.classes.to(logits.device)
            if k.shape != (n,):
                raise ValueError(f"target has {k.numel()} classes for {n} images")
            if k.min() < 0 or k.max() >= num_classes:
                raise ValueError(f"target class outside 0..{num_classes - 1}: {k.tolist()}")
            return F.one_hot(k, num_classes).to(logits.dtype)
        if self.kind == "contrast":
            a, b = self.parts
            return a.weights(logits) - b.weights(logits)
        if self.matrix.shape != (n, num_classes):
            raise ValueError(f"target weights of shape {tuple(self.matrix.shape)} for logits {(n, num_classes)}")
        return self.matrix.to(device=logits.device, dtype=logits.dtype)

    def resolve(self, logits: torch.Tensor) -> "Target":
        """This target fixed to concrete weights, e.g. the trained model's predictions for a randomised copy."""
        return Target("weights", matrix=self.weights(logits.detach()))

    def _value(self) -> tuple:
        """The target as plain Python values: what equality and hashing compare (tensors by their contents)."""
        def plain(t):
            return (tuple(t.shape), tuple(t.flatten().tolist())) if isinstance(t, torch.Tensor) else t

        return self.kind, plain(self.classes), tuple(part._value() for part in self.parts), plain(self.matrix)

    def __eq__(self, other) -> bool:
        return isinstance(other, Target) and self._value() == other._value()

    def __hash__(self) -> int:
        return hash(self._value())


TargetLike = Union[Target, int, Sequence[int], np.ndarray, torch.Tensor, None]


def as_target(spec: TargetLike) -> Target:
    """A Target from a Target, None (the predicted class), an int or one int per image."""
    if isinstance(spec, Target):
        return spec
    if spec is None:
        return Target.predicted()
    return Target.cls(spec)


def _class_indices(k) -> Union[int, torch.Tensor]:
    if isinstance(k, (int, np.integer)):
        return int(k)
    k = torch.as_tensor(np.asarray(k) if not isinstance(k, torch.Tensor) else k)
    if k.dtype.is_floating_point or k.dtype == torch.bool:
        raise ValueError(f"target classes must be integers, got {k.dtype}")
    return int(k) if k.ndim == 0 else k.reshape(-1).long()


def _target_weights(model: nn.Module, images: torch.Tensor, target: TargetLike) -> torch.Tensor:
    """(N, C) target weights; runs the model on the clean images only when the target needs its prediction."""
    target = as_target(target)
    if target.needs_logits:
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in images.split(DEFAULT_BATCH_SIZE)])
    else:
        with torch.no_grad():  # only the logits' shape is needed
            logits = model(images[:1]).expand(len(images), -1)
    return target.weights(logits)


# ----------------------------------------------------------------------------------------------------------------
# Running the model without leaving traces

def _as_batch(model: nn.Module, images) -> torch.Tensor:
    """images as a float (N, 1, H, W) tensor on the model's device, detached from any caller graph."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, 1, H, W) or (N, H, W), got shape {tuple(images.shape)}")
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else images.device
    with torch.inference_mode(False):  # a normal tensor even when the caller sits in inference_mode()
        return images.detach().to(device=device, dtype=dtype).clone()


def _input_gradients(model: nn.Module, inputs: torch.Tensor, weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """d(sum_i logits_i . weights_i) / d inputs, one forward + backward per chunk of `batch_size` rows.
    Rows are independent in eval mode, so summing the scores gives every row its own gradient."""
    grads = []
    for x, w in zip(inputs.split(batch_size), weights.split(batch_size)):
        x = x.detach().requires_grad_(True)
        score = (model(x) * w).sum()
        grads.append(torch.autograd.grad(score, x)[0])
    return torch.cat(grads)


def _to_map(attribution: torch.Tensor, absolute: bool) -> torch.Tensor:
    """(M, C, H, W) attribution -> (M, H, W): largest |value| over channels, or the signed channel sum."""
    return attribution.abs().amax(1) if absolute else attribution.sum(1)


def _numpy(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().cpu().numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# Reference images (IG baselines, deletion / insertion canvases)

def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, edges replicated (no dark border, any sigma): the filters'
    blur with replicate padding."""
    return _blur(images, sigma, padding="replicate")


def reference_image(images: torch.Tensor, spec, blur_sigma: float = 4.0) -> torch.Tensor:
    """A reference per image, (N, C, H, W): "zero", "mean" (each image's mean, as a flat image), "blur" (Gaussian
    blur, `blur_sigma` pixels), a number (a flat image) or a tensor broadcastable to the images (e.g. the
    preprocessed all-black picture, `loaded.preprocess(np.zeros((1, 48, 48), np.uint8))`)."""
    if isinstance(spec, str):
        if spec == "zero":
            return torch.zeros_like(images)
        if spec == "mean":
            return images.mean((1, 2, 3), keepdim=True).expand_as(images).clone()
        if spec == "blur":
            return gaussian_blur(images, blur_sigma)
        raise ValueError(f"unknown reference {spec!r}: use 'zero', 'mean', 'blur', a number or a tensor")
    if isinstance(spec, (int, float)):
        return torch.full_like(images, float(spec))
    reference = torch.as_tensor(spec, dtype=images.dtype, device=images.device)
    if reference.ndim == 3:
        reference = reference.unsqueeze(1)
    return reference.expand_as(images).clone()


# ----------------------------------------------------------------------------------------------------------------
# Methods

def gradient(model: nn.Module, images, target: TargetLike = None, *, absolute: bool = True,
             batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Vanilla gradient (Simonyan et al. 2014): |d score / d x|, (N, 48, 48)."""
    x = _as_batch(model, images)
    target = as_target(target)
    grads = []
    with analysis_mode(model):
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size].detach().requires_grad_(True)
            logits = model(chunk)  # one pass: a predicted-class target reads its class from these logits
            score = (logits * _slice_weights(target, logits, start, len(x))).sum()
            grads.append(torch.autograd.grad(score, chunk)[0])
    return _numpy(_to_map(torch.cat(grads), absolute))


def smoothgrad(model: nn.Module, images, target: TargetLike = None, *, samples: int = 25,
               noise_level: float = 0.15, stdev: Union[float, None] = None, seed: int = 0,
               generator: Union[torch.Generator, None] = None, absolute: bool = True,
               batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the mean of |gradient| over `samples` noisy copies of each image.

    Noise is Gaussian with standard deviation noise_level * (max - min) of each image (the paper's "noise level"),
    or `stdev` in preprocessed units when given. All N * samples copies go through the model in batched passes
    (chunks of `batch_size` rows). Noise comes from `generator` (default: a fresh one seeded with `seed`), drawn as
    one randn((N * samples, 1, H, W)) with each image's copies contiguous, which is exactly how Captum's
    NoiseTunnel draws from the global generator: torch.manual_seed(s) there equals generator seed s here.
    """
    x = _as_batch(model, images)
    with analysis_mode(model):
        weights = _target_weights(model, x, target)  # the clean image's class, not each noisy copy's
        if stdev is None:
            flat = x.flatten(1)
            sigma = noise_level * (flat.amax(1) - flat.amin(1)).view(-1, 1, 1, 1)
        else:
            sigma = torch.full((len(x), 1, 1, 1), float(stdev), dtype=x.dtype, device=x.device)
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        noise = torch.randn((len(x) * samples, *x.shape[1:]), generator=generator, dtype=x.dtype,
                            device=generator.device).to(x.device)
        noisy = x.repeat_interleave(samples, 0) + noise * sigma.repeat_interleave(samples, 0)
        grads = _input_gradients(model, noisy, weights.repeat_interleave(samples, 0), batch_size)
    maps = _to_map(grads, absolute)
    return _numpy(maps.reshape(len(x), samples, *maps.shape[1:]).mean(1))


IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def ig_quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] along the path and their weights, as Captum's approximation_methods defines them."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1 + nodes), 0.5 * weights
    if method not in IG_METHODS:
        raise ValueError(f"unknown integration method {method!r}: use one of {', '.join(IG_METHODS)}")
    if steps < 2:
        raise ValueError("Riemann integration needs at least 2 steps")
    weights = np.full(steps, 1 / steps)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, steps), weights
    start = {"riemann_left": 0, "riemann_right": 1 / steps, "riemann_middle": 1 / (2 * steps)}[method]
    return np.linspace(start, start + 1 - 1 / steps, steps), weights


def integrated_gradients(model: nn.Module, images, target: TargetLike = None, *, baseline="zero",
                         steps: int = 32, method: str = "gausslegendre", blur_sigma: float = 4.0,
                         absolute: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017): (x - b) * integral_0^1 grad(b + a (x - b)) da.

    baseline b: "zero" (zeros in preprocessed space), "mean" (each image's mean), "blur" (Gaussian blur of
    `blur_sigma` px), a number, or a tensor such as the preprocessed all-black picture (see `reference_image`).
    The integral uses `steps` points of `method` (Captum's default Gauss-Legendre, or a Riemann rule), all
    N * steps path points in batched passes. With absolute=False the map sums to score(x) - score(b) up to the
    quadrature error.
    """
    x = _as_batch(model, images)
    alphas, step_weights = ig_quadrature(method, steps)
    alphas = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).view(1, steps, 1, 1, 1)
    step_weights = torch.as_tensor(step_weights, dtype=x.dtype, device=x.device).view(1, steps, 1, 1, 1)
    with analysis_mode(model):
        weights = _target_weights(model, x, target)  # the image's class, not each path point's
        base = reference_image(x, baseline, blur_sigma)
        delta = x - base
        path = (base.unsqueeze(1) + alphas * delta.unsqueeze(1)).flatten(0, 1)  # each image's steps contiguous
        grads = _input_gradients(model, path, weights.repeat_interleave(steps, 0), batch_size)
    avg_grads = (grads.reshape(len(x), steps, *x.shape[1:]) * step_weights).sum(1)
    return _numpy(_to_map(delta * avg_grads, absolute))


# Grad-CAM's default layer is the deepest whose map is at least this many pixels a side: deeper layers are more
# class-specific, but a 6x6 map (fernet's last) paints one blob over half the face, while 12x12 still puts the
# eyes, the nose and the mouth in different cells.
GRADCAM_MIN_MAP = 12


def conv_map_sizes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Each conv layer's output map (H, W) for one 48x48 face, input to output (fercore.models.summary's shapes)."""
    with analysis_mode(model):  # summary hooks into the modules: not while another thread runs the model
        shapes = {row.name: row.output_shape for row in summary(model).layers}
    return {name: tuple(shapes[name][-2:]) for name in conv_layers(model)}


def default_gradcam_layer(model: nn.Module, min_size: int = GRADCAM_MIN_MAP) -> str:
    """The conv layer Grad-CAM uses unless told: the deepest whose map is at least min_size x min_size (hw3: conv4,
    24x24; fernet: conv5, 12x12), or the one with the largest map when none is that large."""
    sizes = conv_map_sizes(model)
    if not sizes:
        raise ValueError("model has no conv layer: name the layer for Grad-CAM")
    fine = [name for name, (height, width) in sizes.items() if min(height, width) >= min_size]
    return fine[-1] if fine else max(sizes, key=lambda name: sizes[name][0] * sizes[name][1])


def _find_layer(model: nn.Module, layer: Union[str, nn.Module, None]) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    if layer is None:
        layer = default_gradcam_layer(model)
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        raise ValueError(f"no layer {layer!r}: conv layers are {', '.join(conv_layers(model))}")
    return modules[layer]


def gradcam(model: nn.Module, images, target: TargetLike = None, *, layer: Union[str, nn.Module, None] = None,
            batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at `layer` (a module name such as "conv4"; default
    `default_gradcam_layer`): ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of d score / d A_k, upsampled
    bilinearly to the input size. Equals Captum's LayerGradCam(relu_attributions=True) +
    LayerAttribution.interpolate(bilinear)."""
    x = _as_batch(model, images)
    module = _find_layer(model, layer)
    activations = []

    def capture(_module, _inputs, output):
        # a fresh leaf: the backward pass stops here instead of running down to the input
        output = output.detach().requires_grad_(True)
        activations.append(output)
        return output

    target = as_target(target)
    cams = []
    with analysis_mode(model):  # the hook goes in under the lock: another thread's forward must not meet it
        handle = module.register_forward_hook(capture)
        try:
            for start in range(0, len(x), batch_size):
                activations.clear()
                logits = model(x[start:start + batch_size])
                if len(activations) != 1:
                    raise ValueError(f"layer ran {len(activations)} times in one forward pass; Grad-CAM needs once")
                if activations[0].ndim != 4:
                    raise ValueError(f"layer outputs shape {tuple(activations[0].shape)}; Grad-CAM needs feature "
                                     f"maps (N, C, H, W): use a conv layer ({', '.join(conv_layers(model))})")
                weights = _slice_weights(target, logits, start, len(x))
                grads = torch.autograd.grad((logits * weights).sum(), activations[0])[0]
                alpha = grads.mean((2, 3), keepdim=True)
                cams.append(F.relu((alpha * activations[0].detach()).sum(1, keepdim=True)))
        finally:
            handle.remove()
    cam = F.interpolate(torch.cat(cams), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _numpy(cam[:, 0])


def _slice_weights(target: Target, logits: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """Weights for rows start..start+len(logits) of a `total`-image batch: per-image classes are sliced, the
    predicted class is read from these rows' own logits."""
    sliced = _slice_target(target, start, len(logits), total)
    return sliced.weights(logits.detach())


def _slice_target(target: Target, start: int, count: int, total: int) -> Target:
    if target.kind == "class" and isinstance(target.classes, torch.Tensor):
        if len(target.classes) != total:
            raise ValueError(f"target has {len(target.classes)} classes for {total} images")
        return Target("class", classes=target.classes[start:start + count])
    if target.kind == "weights":
        if len(target.matrix) != total:
            raise ValueError(f"target weights have {len(target.matrix)} rows for {total} images")
        return Target("weights", matrix=target.matrix[start:start + count])
    if target.kind == "contrast":
        return Target("contrast", parts=tuple(_slice_target(p, start, count, total) for p in target.parts))
    return target


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "gradient": gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "gradcam": gradcam,
}


def compute_saliency(name: str, model: nn.Module, images, target: TargetLike = None, **options) -> np.ndarray:
    """The saliency maps of method `name` (a key of METHODS), (N, 48, 48) float32."""
    if name not in METHODS:
        raise ValueError(f"unknown saliency method {name!r}: known methods are {', '.join(METHODS)}")
    return METHODS[name](model, images, target, **options)


DEFAULT_METHOD = "gradient"  # a face's first view: the vanilla gradient of the predicted class, as the homework


def explain(model: nn.Module, images, method: str = DEFAULT_METHOD, target: TargetLike = None,
            **options) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities (N, C), saliency maps (N, 48, 48)), both float32, of preprocessed images: what a
    face's inspection shows. With only the model and the images: the Inspect page's first view (and the report's)."""
    x = _as_batch(model, images)
    with analysis_mode(model), torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)
    return _numpy(probabilities), compute_saliency(method, model, x, target, **options)


def baseline_for(loaded, name):
    """Integrated Gradients' baseline `name` for a LoadedModel: "black" is the all-black face as this model's
    normalizer sees it (a tensor); any other name ("zero", "mean", "blur") or value is `reference_image`'s own."""
    if isinstance(name, str) and name == "black":
        return loaded.preprocess(np.zeros((1, 48, 48), np.uint8))
    return name


def explain_faces(loaded, pixels, method: str = DEFAULT_METHOD, target: TargetLike = None,
                  **options) -> tuple[np.ndarray, np.ndarray]:
    """`explain` of raw uint8 faces (N, 48, 48) or one face (48, 48) with a LoadedModel: preprocessed with its
    normalizer, a named IG baseline resolved by `baseline_for`. Any face works, from a data set or an upload."""
    faces = np.asarray(pixels, dtype=np.uint8).reshape(-1, 48, 48)
    if "baseline" in options:
        options["baseline"] = baseline_for(loaded, options["baseline"])
    return explain(loaded.model, loaded.preprocess(faces), method, target, **options)


FIRST_VIEWS_FORMAT = "fercore-first-views/1"
FIRST_VIEWS_BATCH = 256  # faces per forward and backward pass: activations of a few hundred faces fit in cache


def first_views_meta(model_key: str, data_fingerprint: str) -> dict:
    """What a data set's cached first views (first_views) are valid for."""
    return {"format": FIRST_VIEWS_FORMAT, "model_key": str(model_key), "data": data_fingerprint,
            "method": DEFAULT_METHOD}


def first_views(loaded, dataset, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities float32 (N, C), saliency float32 (N, 48, 48)): explain_faces at its defaults (the vanilla
    gradient of the predicted class) for every face of a FerDataset, what the Confusion page's quick look and the
    Inspect page show first. Cached on disk (fercore.disk_cache) under the model's key and the data's
    fingerprint, so a precomputed lesson answers those clicks by reading."""
    def compute() -> dict:
        pixels = np.asarray(dataset.pixels)
        parts = [explain_faces(loaded, pixels[start:start + FIRST_VIEWS_BATCH])
                 for start in range(0, len(pixels), FIRST_VIEWS_BATCH)]
        return {"probabilities": np.concatenate([p for p, _ in parts]),
                "saliency": np.concatenate([m for _, m in parts])}

    arrays, _ = disk_cache.get_or_compute(first_views_meta(loaded.key, dataset.fingerprint()), compute, cache_dir)
    return arrays["probabilities"], arrays["saliency"]


# ----------------------------------------------------------------------------------------------------------------
# Sanity checks

def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks (1..n) along the last axis, ties sharing their average rank (scipy.stats.rankdata's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1, values.shape[-1])
    ranks = np.empty_like(flat)
    for row, out in zip(flat, ranks):
        order = np.argsort(row, kind="stable")
        sorted_row = row[order]
        # tie groups: runs of equal values in sorted order; each gets the mean of the positions it spans
        starts = np.flatnonzero(np.r_[True, sorted_row[1:] != sorted_row[:-1]])
        ends = np.r_[starts[1:], len(row)]
        group_rank = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
        out[order] = np.repeat(group_rank, ends - starts)
    return ranks.reshape(values.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, (N, ...) x (N, ...) -> (N,).

    A constant map has no ranking: it correlates 0 with a varying map; two constant maps count as agreeing (1)."""
    a = rankdata(np.asarray(a).reshape(len(a), -1))
    b = rankdata(np.asarray(b).reshape(len(b), -1))
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    norm = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    both_constant = ((a == 0).all(1) & (b == 0).all(1))
    rho = np.divide((a * b).sum(1), norm, out=np.zeros(len(a)), where=norm > 0)
    return np.where(both_constant, 1.0, rho)


def parameter_layers(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters, in the order a forward pass calls them (input to output)."""
    order: list[str] = []
    named = [(name, module) for name, module in model.named_modules()
             if name and any(True for _ in module.parameters(recurse=False))]

    def hook_for(name):
        return lambda *_: order.append(name) if name not in order else None

    with analysis_mode(model), torch.no_grad():
        handles = [module.register_forward_hook(hook_for(name)) for name, module in named]
        try:
            model(_as_batch(model, images)[:1])
        finally:
            for handle in handles:
                handle.remove()
    return order + [name for name, _ in named if name not in order]  # never-called layers go last


def _reinitialize(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()  # the layer's own init; BatchNorm also resets its running statistics
    else:
        for param in module.parameters(recurse=False):
            nn.init.normal_(param, std=0.02)


def cascading_randomization(model: nn.Module, images, target: TargetLike = None, method: str = "gradient", *,
                            seed: int = 0, **options) -> list[tuple[str, float]]:
    """Model-parameter randomisation test (Adebayo et al. 2018, cascading).

    On a deep copy, re-initialises the layers that own parameters from the output down, cumulatively; after each,
    the mean over images of the Spearman rank correlation between the trained model's maps and the copy's.
    The first row, ("original", rho), compares the trained model with its unchanged copy (1.0 for a deterministic
    method). The target is fixed to the trained model's resolution (e.g. its predicted classes), so every row
    explains the same class. A method whose maps barely change as layers are randomised is not explaining the model.
    """
    x = _as_batch(model, images)
    if isinstance(options.get("layer"), nn.Module):  # the copy has its own modules: address the layer by name
        options["layer"] = next(name for name, m in model.named_modules() if m is options["layer"])
    with analysis_mode(model), torch.no_grad():
        target = as_target(target).resolve(torch.cat([model(chunk) for chunk in x.split(DEFAULT_BATCH_SIZE)]))
    reference = compute_saliency(method, model, x, target, **options)
    randomized = copy.deepcopy(model)
    rows = [("original", float(spearman(reference, compute_saliency(method, randomized, x, target, **options)).mean()))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in reversed(parameter_layers(randomized, x)):
            _reinitialize(randomized.get_submodule(name))
            maps = compute_saliency(method, randomized, x, target, **options)
            rows.append((name, float(spearman(reference, maps).mean())))
    return rows


@dataclass
class PerturbationCurve:
    """How the target-class probability changes as pixels are changed in order of saliency."""
    fractions: np.ndarray  # (steps + 1,) share of the pixels changed, 0 .. 1
    scores: np.ndarray     # (N, steps + 1) target probability at each step
    auc: np.ndarray        # (N,) area under each curve (trapezoid rule over fractions)

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())


def deletion_curve(model: nn.Module, images, maps, target: TargetLike = None, *, steps: int = 32,
                   canvas="zero", blur_sigma: float = 4.0, batch_size: int = 256) -> PerturbationCurve:
    """Deletion (Petsiuk et al. 2018): replace the most salient pixels first by the canvas (see
    `reference_image`: "zero", "mean", "blur", a number or a tensor), in `steps` equal steps. A good map makes the
    target probability fall fast: lower AUC is better."""
    return _perturbation_curve(model, images, maps, target, steps, canvas, blur_sigma, batch_size, insert=False)


def insertion_curve(model: nn.Module, images, maps, target: TargetLike = None, *, steps: int = 32,
                    canvas="blur", blur_sigma: float = 4.0, batch_size: int = 256) -> PerturbationCurve:
    """Insertion (Petsiuk et al. 2018): start from the canvas (default a blurred copy) and put back the most
    salient pixels first. A good map makes the target probability rise fast: higher AUC is better."""
    return _perturbation_curve(model, images, maps, target, steps, canvas, blur_sigma, batch_size, insert=True)


def _perturbation_curve(model, images, maps, target, steps, canvas, blur_sigma, batch_size, insert):
    """Target probability (softmax; for a contrast, p_a - p_b) of every step's image, all steps batched."""
    x = _as_batch(model, images)
    maps = torch.as_tensor(np.asarray(maps), dtype=torch.float32, device=x.device).reshape(len(x), -1)
    pixels = maps.shape[1]
    if pixels != x[0, 0].numel():
        raise ValueError(f"maps of {pixels} pixels for images of {x[0, 0].numel()}")
    order = torch.argsort(maps, dim=1, descending=True, stable=True)
    position = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=x.device).expand_as(order))
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=x.device)).long()
    changed = (position.unsqueeze(1) < counts.view(1, -1, 1)).view(len(x), steps + 1, 1, *x.shape[-2:])
    background = reference_image(x, canvas, blur_sigma).unsqueeze(1)
    start, end = (background, x.unsqueeze(1)) if insert else (x.unsqueeze(1), background)
    perturbed = torch.where(changed, end, start).flatten(0, 1)  # (N * (steps + 1), C, H, W)
    with analysis_mode(model), torch.no_grad():
        weights = _target_weights(model, x, target).repeat_interleave(steps + 1, 0)
        probs = torch.cat([F.softmax(model(chunk), 1) for chunk in perturbed.split(batch_size)])
    scores = (probs * weights).sum(1).view(len(x), steps + 1).cpu().numpy()
    fractions = (counts.float() / pixels).cpu().numpy()
    return PerturbationCurve(fractions, scores, np.trapezoid(scores, fractions, axis=1))


def checkerboard_share(maps) -> np.ndarray:
    """The share of each map's variance that sits in its 2x2-periodic pattern (N,) for maps (N, H, W), H and W even.

    A stride-2 layer computes each output from a 2x2 phase of its input, so its gradients can differ from one phase
    to the next: a checkerboard laid over the map. The 2x2-periodic part of a map is the mean of each of its four
    phases (even/odd row, even/odd column) repeated over it; its variance over the map's is 0 for a smooth map and 1
    for a pure checkerboard."""
    maps = np.asarray(maps, dtype=np.float64)
    centred = maps - maps.mean(axis=(1, 2), keepdims=True)
    n, h, w = centred.shape
    phases = centred.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # (N, 2, 2): each phase's mean
    periodic = (phases ** 2).mean(axis=(1, 2))  # the periodic part's variance over the map
    total = (centred ** 2).mean(axis=(1, 2))
    return np.divide(periodic, total, out=np.zeros_like(total), where=total > 0)
