"""Image parameterisations (Lucid's): what gradient ascent actually changes, and how it becomes an image.

Each holds one leaf tensor `tensor` (the optimiser's variable) for a batch of images and gives them back in the
model's input space with `images(rows)`, differentiably:

    "pixel"     the pixels themselves, clipped back into the value range after every step. A first layer's
                response is linear in the pixels, so the optimum sits on the range's bounds: mostly black and
                white squares.
    "sigmoid"   lo + (hi - lo) * sigmoid(z): always strictly inside the range, and a pixel's gradient fades as it
                nears a bound, so pixels the objective does not care about keep their start values.
    "spectral"  z of "sigmoid" built from Fourier coefficients scaled by 1 / frequency (Olah et al. 2017, Lucid's
                fft_image): equal steps on every coefficient favour low frequencies, so deep layers' images come
                out as shapes instead of high-frequency noise.

All three start from the same images (`from_images`), so a setting changes the path, not the start. `decay_` and
`blur_` are the in-place regularisers (towards mid-range, smoothing); both act before the squashing, where the
parameterisation has one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .transforms import gaussian_blur

# |z| is kept below this: sigmoid(10) = 1 - 4.5e-5, so a squashed pixel is never on a bound in float32.
LOGIT_LIMIT = 10.0


class PixelImage:
    """The pixels, projected back into value_range after every step."""
    lr_scale_by_range = True  # Adam's step is a fraction of the range

    def __init__(self, start: torch.Tensor, value_range: tuple[float, float]):
        self.value_range = value_range
        self.tensor = start.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def images(self, rows: slice = slice(None)) -> torch.Tensor:
        return self.tensor[rows]

    def decay_(self, fraction: float) -> None:
        middle = sum(self.value_range) / 2
        self.tensor.data.sub_(middle).mul_(1 - fraction).add_(middle)

    def blur_(self, sigma: float) -> None:
        self.tensor.data.copy_(gaussian_blur(self.tensor.data, sigma))

    def project_(self) -> None:
        self.tensor.data.clamp_(*self.value_range)


class SigmoidImage:
    """lo + (hi - lo) * sigmoid(z): strictly inside the range."""
    lr_scale_by_range = False  # z is in logits whatever the range

    def __init__(self, start: torch.Tensor, value_range: tuple[float, float]):
        self.value_range = value_range
        self.tensor = self._to_latent(_logit(start, value_range)).requires_grad_(True)

    def _to_latent(self, z: torch.Tensor) -> torch.Tensor:
        return z.contiguous(memory_format=torch.channels_last)

    def _logits(self, rows: slice) -> torch.Tensor:
        return self.tensor[rows]

    def images(self, rows: slice = slice(None)) -> torch.Tensor:
        lo, hi = self.value_range
        return lo + (hi - lo) * torch.sigmoid(self._logits(rows))

    def decay_(self, fraction: float) -> None:
        self.tensor.data.mul_(1 - fraction)  # z = 0 is mid-range

    def blur_(self, sigma: float) -> None:
        self.tensor.data.copy_(gaussian_blur(self.tensor.data, sigma))

    def project_(self) -> None:
        self.tensor.data.clamp_(-LOGIT_LIMIT, LOGIT_LIMIT)


class SpectralImage(SigmoidImage):
    """SigmoidImage whose logits are the inverse real FFT of 1/frequency-scaled coefficients (Lucid's fft_image).

    The DC term's scale is capped at the image size, as in Lucid. `tensor` holds the coefficients as real pairs
    (N, C, H, W // 2 + 1, 2)."""

    def __init__(self, start: torch.Tensor, value_range: tuple[float, float], decay_power: float = 1.0):
        height, width = start.shape[-2:]
        frequencies = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.rfftfreq(width)[None] ** 2)
        self.scale = torch.from_numpy(1.0 / np.maximum(frequencies, 1.0 / max(height, width)) ** decay_power).float()
        self.frequencies = torch.from_numpy(frequencies).float()
        self.hw = (height, width)
        super().__init__(start, value_range)

    def _to_latent(self, z: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(torch.fft.rfft2(z, norm="ortho") / self.scale).contiguous()

    def _logits(self, rows: slice) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.tensor[rows]) * self.scale
        return torch.fft.irfft2(spectrum, s=self.hw, norm="ortho").contiguous(memory_format=torch.channels_last)

    def decay_(self, fraction: float) -> None:
        self.tensor.data.mul_(1 - fraction)  # linear: shrinks the logits towards 0 alike

    def blur_(self, sigma: float) -> None:
        # A Gaussian blur multiplies each frequency f (cycles per pixel) by exp(-2 pi^2 sigma^2 f^2) (periodic
        # borders, as the FFT's).
        transfer = torch.exp(-2 * math.pi ** 2 * sigma ** 2 * self.frequencies ** 2)
        self.tensor.data.mul_(transfer[..., None])

    def project_(self) -> None:
        # The logits' bound, applied where the pixels are: a coefficient clamp would not bound them.
        with torch.no_grad():
            logits = self._logits(slice(None))
            if logits.abs().max() > LOGIT_LIMIT:
                self.tensor.data.copy_(self._to_latent(logits.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)))


PARAMETERISATIONS = {"pixel": PixelImage, "sigmoid": SigmoidImage, "spectral": SpectralImage}


def from_images(name: str, start: torch.Tensor, value_range: tuple[float, float]):
    """The parameterisation `name` holding the given images (N, C, H, W) (inside value_range)."""
    if name not in PARAMETERISATIONS:
        raise ValueError(f"unknown parameterisation {name!r}: use one of {', '.join(PARAMETERISATIONS)}")
    return PARAMETERISATIONS[name](start, value_range)


def _logit(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = value_range
    fraction = ((images - lo) / (hi - lo)).clamp(1e-4, 1 - 1e-4)
    return torch.log(fraction) - torch.log1p(-fraction)
