"""A registry of CNNs for 48x48 grayscale faces, by name.

Every model takes float32 (N, 1, 48, 48), already normalized, and returns logits (N, 7).
Each is a flat nn.Sequential built from an OrderedDict, so every layer has a stable readable name
("conv1", "bn1", "relu1", ...): hooks, saliency and filter visualisation address layers by these names.
Every activation is its own nn.ReLU() (never in-place, never shared), because hooks on a shared or in-place
module would see or overwrite the wrong tensor.

The registry:
  hw3          the homework's Keras network, layer for layer: 2,619,975 parameters, 432 MFLOP per image.
  hw3_nobn     hw3 without BatchNorm, the homework's starting point (for its question 2).
  fernet       VGG-style with BN and global average pooling, built for accuracy per CPU-second:
               1.17M parameters, 191 MFLOP per image (benchmarks/bench_train.py measures its training speed).
  fernet_wide  a 4.7M-parameter VGG (0.94 GFLOP per image): the most accurate model, in bf16 on a CPU or on a GPU.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from fercore.dropout import Dropout
from fercore.labels import NUM_CLASSES

IMAGE_SIZE = 48


def _keras_conv(cin: int, cout: int) -> nn.Conv2d:
    """Keras Conv2D(cout, 3, padding='same'): with a bias, Glorot-uniform weights, zero bias."""
    return _keras_init(nn.Conv2d(cin, cout, kernel_size=3, padding=1))


def _keras_dense(fin: int, fout: int) -> nn.Linear:
    return _keras_init(nn.Linear(fin, fout))


def _keras_init(layer):
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _keras_bn(channels: int, kind=nn.BatchNorm2d) -> nn.Module:
    """Keras BatchNormalization defaults: momentum 0.99 (PyTorch's 0.01) and epsilon 1e-3."""
    return kind(channels, eps=1e-3, momentum=0.01)


def hw3(conv_dropout: float = 0.25, dense_dropout: float = 0.5, batchnorm: bool = True) -> nn.Sequential:
    """The homework's Keras network, layer for layer.

    conv3x3 64 (same), BN, ReLU, conv3x3 64, ReLU, maxpool 2, dropout;
    conv3x3 128, BN, ReLU, conv3x3 128, ReLU, maxpool 2;
    flatten (12*12*128 = 18,432), dense 128, BN, ReLU, dropout, dense 7.

    The homework does not state its dropout rates (Keras has no default), so we use the common 0.25 after the
    conv block and 0.5 after the dense layer. Everything else follows Keras' defaults: convs and dense layers have
    biases (even where BatchNorm follows), Glorot-uniform weights and zero biases, BatchNorm with momentum 0.99 and
    epsilon 1e-3. Parameters: 2,619,975 (Keras' summary shows 2,620,615: it also counts BN's 640 moving averages).
    """
    flat = 128 * (IMAGE_SIZE // 4) ** 2
    layers = [
        ("conv1", _keras_conv(1, 64)), ("bn1", _keras_bn(64)), ("relu1", nn.ReLU()),
        ("conv2", _keras_conv(64, 64)), ("relu2", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)), ("drop1", Dropout(conv_dropout)),
        ("conv3", _keras_conv(64, 128)), ("bn3", _keras_bn(128)), ("relu3", nn.ReLU()),
        ("conv4", _keras_conv(128, 128)), ("relu4", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", _keras_dense(flat, 128)), ("bn_fc1", _keras_bn(128, nn.BatchNorm1d)), ("relu_fc1", nn.ReLU()),
        ("drop_fc", Dropout(dense_dropout)),
        ("fc2", _keras_dense(128, NUM_CLASSES)),
    ]
    if not batchnorm:
        layers = [(name, layer) for name, layer in layers if not name.startswith("bn")]
    return nn.Sequential(OrderedDict(layers))


def hw3_nobn() -> nn.Sequential:
    """The homework's network before its BatchNorm step (question 2's first rows): hw3 without its three BN layers."""
    return hw3(batchnorm=False)


def _vgg(stages: list[list[int]], dropout: float, stem_stride: int = 1) -> nn.Sequential:
    """A plain VGG-style net: stages of conv3x3-BN-ReLU, 2x2 max pooling between stages, global average pooling,
    dropout and one linear classifier. Layers are numbered through the whole net (conv1, bn1, relu1, conv2, ...).

    stem_stride=2 makes the first conv (the only one in the first stage) downsample 48x48 to 24x24 itself, in place
    of the pooling after it: see fernet for why.
    """
    layers: list[tuple[str, nn.Module]] = []
    cin, index, pools = 1, 0, 0
    for stage, widths in enumerate(stages):
        if stage > 1 or (stage == 1 and stem_stride == 1):
            pools += 1
            layers.append((f"pool{pools}", nn.MaxPool2d(2)))
        for cout in widths:
            index += 1
            stride = stem_stride if index == 1 else 1
            layers += [(f"conv{index}", nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)),
                       (f"bn{index}", nn.BatchNorm2d(cout)),
                       (f"relu{index}", nn.ReLU())]
            cin = cout
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("drop_fc", Dropout(dropout)), ("fc", nn.Linear(cin, NUM_CLASSES))]
    model = nn.Sequential(OrderedDict(layers))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):  # He init for ReLU nets, as torchvision's VGG and ResNet
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def fernet() -> nn.Sequential:
    """VGG-style net for accuracy per CPU-second on 48x48 faces: 1.17M parameters, 191 MFLOP per image.

    conv1 3x3 stride 2 (1 -> 32, 48x48 -> 24x24) | 24x24: conv 64, 64 | pool, 12x12: conv 128, 128 |
    pool, 6x6: conv 256, 256 | global average pool, dropout 0.3, linear 7. Every conv is followed by BN and ReLU.

    Why this shape (measured with benchmarks/bench_train.py): 64-256 channel 3x3 convs run near the machine's matmul
    rate with channels_last, while a conv with 1 input channel runs at ~3% of it, and BN, ReLU and pooling on 48x48
    activations are memory-bound. A full-resolution first stage (conv 1->32 at 48x48, then pool) cost ~8% of the
    training step for <1% of the FLOPs; the stride-2 first conv still sees every pixel (its 3x3 windows overlap) and
    removes that cost. Global average pooling instead of a large dense layer keeps parameters low and regularises.
    """
    return _vgg([[32], [64, 64], [128, 128], [256, 256]], dropout=0.3, stem_stride=2)


def fernet_wide() -> nn.Sequential:
    """A VGG for accuracy (4.7M parameters, 0.94 GFLOP per image; the shipped default, trained in bf16 on 2 CPU
    cores): two 3x3 convs with BN at each of 48x48 (64), 24x24 (128), 12x12 (256) and 6x6 (512), max pooling between,
    global average pooling, dropout 0.4.
    The stage widths of Khaireddin & Chen's (2021) FER2013 VGG, with a GAP head instead of their 4096-wide dense ones.
    """
    return _vgg([[64, 64], [128, 128], [256, 256], [512, 512]], dropout=0.4)


def fernet_fullres() -> nn.Sequential:
    """fernet with a full-resolution first conv (1 -> 32 at 48x48, stride 1) and 2x2 max pooling after it, in place
    of the stride-2 first conv: clean saliency maps, the default for training.

    A stride-2 conv reads its input in four 2x2 phases, and its gradients through the layers above come back
    different on each: fernet's SmoothGrad maps carry a 2x2 checkerboard, 16% of their variance
    (fercore.saliency.checkerboard_share), which a blur of the input before that conv does not remove (12%: the
    rectified map still folds the pattern back). Full resolution first, pooling after, as hw3 does, leaves 0.1%.
    It costs a 48x48 activation (memory-bound BN and ReLU), and learns faster per epoch.
    """
    return _vgg([[32], [64, 64], [128, 128], [256, 256]], dropout=0.3)


_REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "hw3": hw3,
    "hw3_nobn": hw3_nobn,
    "fernet": fernet,
    "fernet_fullres": fernet_fullres,
    "fernet_wide": fernet_wide,
}


def model_names() -> list[str]:
    return list(_REGISTRY)


def build_model(name: str) -> nn.Module:
    """A freshly initialised model by registry name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def relus_in_place(model: nn.Module) -> nn.Module:
    """The model with every ReLU overwriting its input, for training: the same numbers (ReLU's gradient reads its
    output's sign, which is its input's), a pass less over each activation; hw3 trains 8% (fp32) to 11% (bf16)
    faster on a 2-core CPU. Only for training: a hook that reads a layer's output before its ReLU (the Filters
    page's "before the ReLU", saliency's layer methods) would see it after, so the app's models keep theirs."""
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
    return model


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The model's conv layers, input to output, keyed by qualified module name (e.g. 'conv1')."""
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def count_flops(model: nn.Module) -> int:
    """Forward FLOPs for one 1x1x48x48 image (2 per multiply-add), of convs and linear layers.

    Counted from the real output shapes by a forward pass with hooks, so it works for any registered model.
    Elementwise work (BN, ReLU, pooling) is left out: it is memory-bound and small next to the convolutions.
    """
    flops = 0

    def count(module: nn.Module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            kernel_macs = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            flops += 2 * kernel_macs * output[0].numel()
        elif isinstance(module, nn.Linear):
            flops += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return flops


# ----------------------------------------------------------------------------------------------------------------
# Summary (Keras' model.summary(), the homework's question 1)

@dataclass(frozen=True)
class LayerRow:
    """One leaf layer of a model: its output for one image and the parameters it holds."""

    name: str                 # qualified module name, e.g. "conv1"
    kind: str                 # module class, e.g. "Conv2d"
    output_shape: tuple       # without the batch, e.g. (64, 48, 48)
    params: int
    trainable: int


@dataclass(frozen=True)
class ModelSummary:
    """A model layer by layer, as Keras' model.summary() shows it, plus its forward cost.

    Parameters are nn.Parameters only. BatchNorm's running mean and variance are buffers here (updated by the
    forward pass, not by the optimizer), so they are in `running_stats`, not in the parameter counts; Keras' summary
    counts them as non-trainable parameters (hw3: 2,619,975 here, 2,620,615 = 2,619,975 + 640 in Keras).
    """

    layers: list[LayerRow]
    running_stats: int        # BatchNorm running means and variances (Keras' "non-trainable params")
    flops: int                # forward FLOPs per image (count_flops)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def mflops(self) -> float:
        """Forward MFLOP per image (2 per multiply-add, convs and linear layers)."""
        return self.flops / 1e6

    def rows(self) -> list[dict]:
        """One dict per layer (layer, type, output shape as '64 x 48 x 48', parameters, trainable): a table."""
        return [{"layer": layer.name, "type": layer.kind, "output shape": " x ".join(map(str, layer.output_shape)),
                 "parameters": layer.params, "trainable": layer.trainable} for layer in self.layers]

    def to_csv(self) -> str:
        from fercore.compare import csv_text

        return csv_text(self.rows())


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((item for item in output if isinstance(item, torch.Tensor)), None)
    return None


def summary(model: nn.Module, image_shape: tuple = (1, IMAGE_SIZE, IMAGE_SIZE)) -> ModelSummary:
    """The model's leaf layers in the order they run on one zero image, with their output shapes (batch left out)
    and parameter counts, its BatchNorm running statistics, and its forward FLOPs per image.

    The model runs in eval mode under no_grad (so BatchNorm's statistics and dropout are untouched) and is put back
    in the mode it was in. A layer that runs twice is listed once, with the shape of its last call.
    """
    shapes: dict[str, tuple] = {}
    leaves = {name: module for name, module in model.named_modules() if not any(True for _ in module.children())}

    def hook(name):
        def record(module, inputs, output):
            tensor = _first_tensor(output)
            shapes.pop(name, None)  # re-insert: the dict keeps the order of the (last) calls
            shapes[name] = tuple(tensor.shape[1:]) if tensor is not None else ()
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in leaves.items()]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    layers = []
    for name in [*shapes, *(name for name in leaves if name not in shapes)]:  # layers never called come last
        params = list(leaves[name].parameters())
        layers.append(LayerRow(name, type(leaves[name]).__name__, shapes.get(name, ()),
                               sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    running = sum(buffer.numel() for name, buffer in model.named_buffers()
                  if name.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
    return ModelSummary(layers, running, count_flops(model))
