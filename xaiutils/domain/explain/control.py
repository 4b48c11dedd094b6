"""Model-free control maps: what the images alone give (edges, blobs, intensity) and noise, the chance level.
A method that does not beat them on a score has not shown that it explains the model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from xaiutils.domain.explain.base import ControlMap


class _PerChannel(ControlMap):
    """A filter applied to each image and channel in float64."""

    def filtered(self, image: np.ndarray, signed: bool) -> np.ndarray:
        raise NotImplementedError

    def control_map(self, images, signed, rng):
        out = np.empty_like(images, dtype=np.float64)
        for index in np.ndindex(*images.shape[:2]):
            out[index] = self.filtered(images[index].astype(np.float64), signed)
        return out


class Sobel(_PerChannel):
    name = "sobel"
    label = "Sobel"
    caveats = "Model-free: image gradient magnitude (edges). Lesion borders are edges, so it is a strong baseline."

    def filtered(self, image, signed):
        return np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))


class Laplace(_PerChannel):
    name = "laplace"
    label = "Laplace"
    caveats = "Model-free: absolute Laplacian of the image (edges and blobs)."

    def filtered(self, image, signed):
        laplacian = ndimage.laplace(image)
        return laplacian if signed else np.abs(laplacian)


class Random(ControlMap):
    name = "random"
    label = "Random"
    stochastic = True
    caveats = "Model-free: seeded uniform noise; the chance level of every score."

    def control_map(self, images, signed, rng):
        return rng.uniform(-1.0 if signed else 0.0, 1.0, size=images.shape)


class Input(ControlMap):
    name = "input"
    label = "Input"
    caveats = "Model-free: the image itself (absolute): bright tissue scores, lesions only by contrast."

    def control_map(self, images, signed, rng):
        return images if signed else np.abs(images)
