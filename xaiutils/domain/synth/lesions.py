"""Synthetic lesions drawn into 2-D slices: the class-related features whose masks are the ground truth.

Two shape generators share one size distribution:

- ``regular``: a smooth ellipse with equivalent radius ``r`` (area π r²), aspect ratio in ``[1, max_aspect]`` and a
  random orientation;
- ``irregular``: the same ellipse whose boundary radius is modulated by smooth random noise (a random sum of
  angular harmonics 3 … 7 with a fixed RMS amplitude ``irregularity``), rescaled so that its expected area is again
  π r². Lobes and dents make it non-convex, which a shape statistic such as :func:`solidity` picks up.

Appearance: a lesion adds ``(contrast + texture) × soft mask`` to the slice, in units of the slice's brain intensity
range (0 = darkest, 1 = brightest brain tissue). ``contrast`` is drawn per lesion: negative gives hypo-intense lesions
(darker than the tissue they replace, like T1 "black holes" of multiple sclerosis or necrotic tumour cores), near
zero iso-intense ones (visible only by their texture and edges), positive hyper-intense ones. ``texture`` is a smooth
random field (Gaussian noise smoothed over ``texture_scale`` pixels, rescaled to standard deviation ``texture``) drawn
per lesion: heterogeneous lesion tissue. A hypo-intense lesion never takes a pixel below 0 (a magnitude image has no
negative intensities): each lesion pixel keeps at least ``min(its value before, 0)``.

A lesion's soft mask is ``clip(0.5 + d / edge_softness, 0, 1)``, with ``d`` the signed radial distance (pixels) to
its boundary, so the mask binarised at 0.5 is exactly the hard shape. Lesions are placed one by one at random inside
an allowed region (brain mask, or its white matter), so that every pixel of their soft support lies inside the
region and at least ``min_gap`` pixels away from the other lesions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from xaiutils.domain.mri.brain import otsu_thresholds_3

SHAPES = ("regular", "irregular")
HARMONICS = np.arange(3, 8)  # angular frequencies of the irregular boundary noise
PLACEMENTS = ("brain", "white_matter")


def _pair(value, name: str, cast=float) -> tuple:
    """``(low, high)`` of finite numbers (integers when ``cast`` is ``int``: 2.7 is refused, not cut to 2)."""
    try:
        low, high = value
        numbers = [float(v) for v in (low, high)]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if any(isinstance(v, bool) for v in (low, high)) or not all(np.isfinite(numbers)):
        raise ValueError(f"{name} must be a pair of finite numbers (low, high), got {value!r}")
    if cast is int and not all(float(v).is_integer() for v in numbers):
        raise ValueError(f"{name} must be a pair of whole numbers (low, high), got {value!r}")
    low, high = cast(numbers[0]), cast(numbers[1])
    if low > high:
        raise ValueError(f"{name} must satisfy low <= high, got {value!r}")
    return low, high


def _finite(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class LesionParams:
    """How lesions look and where they go. Sizes are in pixels of the output image; contrast is an additive
    offset in units of the slice's robust brain intensity range (0 = darkest, 1 = brightest brain tissue)."""

    n_lesions: tuple[int, int] = (1, 3)  # lesions per image, inclusive range
    radius_range: tuple[float, float] = (4.0, 8.0)  # equivalent radius sqrt(area / pi), pixels
    max_aspect: float = 1.5  # ellipse aspect ratios are drawn from [1, max_aspect]
    irregularity: float = 0.25  # RMS relative modulation of the irregular boundary radius
    contrast_range: tuple[float, float] = (0.3, 0.6)  # additive intensity offset, drawn per lesion
    texture: float = 0.0  # standard deviation of the smooth random texture inside a lesion; 0 = uniform lesions
    texture_scale: float = 1.5  # correlation length (Gaussian sigma, pixels) of that texture
    edge_softness: float = 1.0  # width (pixels) of the linear ramp of the soft mask; 0 = hard edge
    min_gap: float = 2.0  # minimum distance (pixels) between the soft supports of two lesions
    placement: str = "brain"  # "brain" (inside the brain mask) or "white_matter"
    max_tries: int = 60  # position tries per lesion before an image's lesions are redrawn
    max_redraws: int = 20  # redraws of an image's lesions before giving up with an error

    def __post_init__(self):
        n_low, n_high = _pair(self.n_lesions, "n_lesions", int)
        if n_low < 1:
            raise ValueError(f"n_lesions must be >= 1, got {self.n_lesions!r}")
        r_low, r_high = _pair(self.radius_range, "radius_range")
        if r_low < 1.0:
            raise ValueError(f"radius_range must be >= 1 pixel, got {self.radius_range!r}")
        c_low, c_high = _pair(self.contrast_range, "contrast_range")
        for name in ("max_aspect", "irregularity", "edge_softness", "min_gap", "texture", "texture_scale"):
            object.__setattr__(self, name, _finite(getattr(self, name), name))
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect!r}")
        if not 0.0 < self.irregularity < 1.0:
            raise ValueError(f"irregularity must lie in (0, 1), got {self.irregularity!r}")
        if self.edge_softness < 0 or self.min_gap < 0:
            raise ValueError(
                f"edge_softness and min_gap must be >= 0, got {self.edge_softness!r} and {self.min_gap!r}"
            )
        if self.texture < 0 or self.texture_scale <= 0:
            raise ValueError(f"texture must be >= 0 and texture_scale > 0 pixels, got {self.texture!r} and "
                             f"{self.texture_scale!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; valid placements: {', '.join(PLACEMENTS)}")
        object.__setattr__(self, "n_lesions", (n_low, n_high))
        object.__setattr__(self, "radius_range", (r_low, r_high))
        object.__setattr__(self, "contrast_range", (c_low, c_high))


@dataclass
class Lesion:
    """One lesion: its shape parameters and, once placed, its centre (row, col) in pixels."""

    shape: str
    radius: float  # equivalent radius of the intended area, pixels
    aspect: float
    angle: float  # orientation of the long axis, radians
    contrast: float
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (cos, sin) coefficient pairs
    offset: tuple[float, float] = (0.0, 0.0)  # sub-pixel offset of the centre from its pixel, in [-0.5, 0.5)
    position: tuple[int, int] | None = None  # pixel (row, col) the lesion is centred on, once placed
    texture: np.ndarray | None = None  # intensity texture on the lesion's local window (see local_mask); None: flat

    @property
    def center(self) -> tuple[float, float]:
        """Centre (row, col) in pixels; NaN while the lesion is not placed."""
        if self.position is None:
            return (float("nan"), float("nan"))
        return (self.position[0] + self.offset[0], self.position[1] + self.offset[1])

    def boundary_radius(self, theta: np.ndarray) -> np.ndarray:
        """Distance (pixels) from the centre to the boundary along direction ``theta`` (radians, from +col
        towards +row)."""
        phi = np.asarray(theta) - self.angle
        scale = 1.0
        noise = 0.0
        if self.shape == "irregular":
            k = HARMONICS[:, None]
            noise = (self.harmonics[:, :1] * np.cos(k * phi.ravel()) + self.harmonics[:, 1:] * np.sin(k * phi.ravel()))
            noise = noise.sum(axis=0).reshape(phi.shape)
            # mean of (1 + noise)^2 over the circle is 1 + rms^2: scale so that the expected area is pi r^2
            scale = 1.0 / np.sqrt(1.0 + 0.5 * float(np.sum(self.harmonics**2)))
        a = self.radius * np.sqrt(self.aspect) * scale
        b = self.radius / np.sqrt(self.aspect) * scale
        ellipse = 1.0 / np.sqrt((np.cos(phi) / a) ** 2 + (np.sin(phi) / b) ** 2)
        return ellipse * np.maximum(1.0 + noise, 0.25)

    def max_radius(self) -> float:
        return float(self.boundary_radius(np.linspace(0, 2 * np.pi, 721)).max())

    def min_radius(self) -> float:
        return float(self.boundary_radius(np.linspace(0, 2 * np.pi, 721)).min())


def sample_lesion(shape: str, params: LesionParams, rng: np.random.Generator) -> Lesion:
    """Draw one lesion's shape, size and contrast (not yet placed). Both shapes draw size, aspect and contrast
    from the same distributions."""
    if shape not in SHAPES:
        raise ValueError(f"unknown lesion shape {shape!r}; valid shapes: {', '.join(SHAPES)}")
    radius = rng.uniform(*params.radius_range)
    aspect = rng.uniform(1.0, params.max_aspect)
    angle = rng.uniform(0.0, np.pi)
    contrast = rng.uniform(*params.contrast_range)
    offset = rng.uniform(-0.5, 0.5, size=2)
    coefficients = rng.normal(size=(len(HARMONICS), 2))
    if shape == "irregular":
        # fixed RMS amplitude: sqrt(mean over the circle of noise^2) = irregularity
        coefficients *= params.irregularity / np.sqrt(0.5 * np.sum(coefficients**2))
    else:
        coefficients = np.zeros((0, 2))
    lesion = Lesion(shape, float(radius), float(aspect), float(angle), float(contrast), coefficients,
                    (float(offset[0]), float(offset[1])))
    if params.texture > 0:  # drawn only when asked for, so that flat lesions keep their random stream
        half, local = local_mask(lesion, params.edge_softness)
        field = ndimage.gaussian_filter(rng.normal(size=local.shape), params.texture_scale, mode="reflect")
        # standard deviation over the lesion's own pixels, so that the stated texture is what the lesion shows
        inside = local >= 0.5
        spread = field[inside].std() if inside.sum() > 1 else field.std()
        lesion.texture = (params.texture * (field - field[inside].mean()) / max(spread, 1e-12)).astype(np.float64)
    return lesion


def soft_mask(lesion: Lesion, shape: tuple[int, int], center: tuple[float, float],
              edge_softness: float = 1.0) -> np.ndarray:
    """The lesion's soft mask (float32 in [0, 1]) on a grid of ``shape`` with the lesion centred at ``center``
    (row, col). Pixel ``(i, j)`` has its centre at ``(i, j)``."""
    cy, cx = center
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    dy = rows - cy
    dx = cols - cx
    distance = lesion.boundary_radius(np.arctan2(dy, dx)) - np.hypot(dy, dx)
    if edge_softness > 0:
        mask = np.clip(0.5 + distance / edge_softness, 0.0, 1.0)
    else:
        mask = (distance >= 0).astype(float)
    return mask.astype(np.float32)


def local_mask(lesion: Lesion, edge_softness: float) -> tuple[int, np.ndarray]:
    """The lesion's soft mask on a square window of side ``2 * half + 1`` that holds its whole support, centred on
    pixel ``(half, half)`` plus the lesion's sub-pixel offset. Returns ``(half, mask)``."""
    half = int(np.ceil(lesion.max_radius() + 0.5 * edge_softness + 1.0))
    center = (half + lesion.offset[0], half + lesion.offset[1])
    return half, soft_mask(lesion, (2 * half + 1, 2 * half + 1), center, edge_softness)


def _window(lesion: Lesion, half: int) -> tuple[slice, slice]:
    row, col = lesion.position
    return slice(row - half, row + half + 1), slice(col - half, col + half + 1)


def white_matter_region(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Bright tissue inside the brain (white matter on T1): brain pixels of the lightly smoothed image above the
    upper of the two three-class Otsu thresholds (CSF | grey | white matter), opened once to drop speckles."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        raise ValueError("brain mask of the slice is empty")
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=float), 0.7)
    _, upper = otsu_thresholds_3(smooth[brain])
    return ndimage.binary_opening(brain & (smooth > upper))


def place_lesions(region: np.ndarray, shapes: list[str], params: LesionParams, rng: np.random.Generator,
                  where: str = "image") -> tuple[list[Lesion], np.ndarray]:
    """Draw lesions of the given ``shapes`` and place them at random inside ``region`` (2-D bool).

    Every pixel of each lesion's soft support (mask > 0) lies inside ``region``, and supports of different lesions
    are at least ``params.min_gap`` pixels apart. Returns the placed lesions and a label image (int16: 0 outside,
    ``i + 1`` on the support of lesion ``i``). Raises ``ValueError`` naming the parameters when the lesions cannot
    be placed (``where`` describes the image in that message).
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2:
        raise ValueError(f"placement region must be 2-D, got shape {region.shape}")
    if not shapes:
        return [], np.zeros(region.shape, np.int16)
    if not region.any():
        raise ValueError(f"cannot place lesions in {where}: the {params.placement} region is empty")
    inscribed = ndimage.distance_transform_edt(region)
    needed = params.radius_range[0] / np.sqrt(params.max_aspect) * 0.5
    if inscribed.max() < needed:
        raise ValueError(
            f"cannot place lesions in {where}: the widest spot of the {params.placement} region has an inscribed "
            f"radius of {inscribed.max():.1f} px, smaller than lesions with radius_range={params.radius_range} "
            "can fit; lower radius_range or image_size/placement"
        )
    for _ in range(params.max_redraws):
        placed = _try_place(region, inscribed, shapes, params, rng)
        if placed is not None:
            return placed
    raise ValueError(
        f"cannot place {len(shapes)} non-overlapping lesion(s) inside the {params.placement} region of {where} "
        f"after {params.max_redraws} redraws (n_lesions={params.n_lesions}, radius_range={params.radius_range}, "
        f"edge_softness={params.edge_softness}, min_gap={params.min_gap}); use fewer or smaller lesions"
        + (" or placement='brain'" if params.placement == "white_matter" else "")
    )


def _try_place(region, inscribed, shapes, params, rng):
    height, width = region.shape
    labels = np.zeros(region.shape, np.int16)
    free = region.copy()
    lesions = []
    gap = int(np.ceil(params.min_gap))
    for index, shape in enumerate(shapes):
        lesion = sample_lesion(shape, params, rng)
        half, local = local_mask(lesion, params.edge_softness)
        support = local > 0
        # necessary condition: the centre lies at least the lesion's inner radius inside the region
        candidates = np.flatnonzero(inscribed >= max(lesion.min_radius(), 1.0))
        if len(candidates) == 0:
            return None
        for position in rng.choice(candidates, size=min(params.max_tries, len(candidates)), replace=False):
            row, col = divmod(int(position), width)
            top, left = row - half, col - half
            if top < 0 or left < 0 or top + 2 * half + 1 > height or left + 2 * half + 1 > width:
                continue
            window = (slice(top, top + 2 * half + 1), slice(left, left + 2 * half + 1))
            if np.all(free[window][support]):
                lesion.position = (row, col)
                labels[window][support] = index + 1
                lesions.append(lesion)
                # block the support and everything within min_gap of it (a local distance transform)
                outer = (slice(max(top - gap, 0), min(top + 2 * half + 1 + gap, height)),
                         slice(max(left - gap, 0), min(left + 2 * half + 1 + gap, width)))
                own = labels[outer] == index + 1
                near = ndimage.distance_transform_edt(~own) <= params.min_gap if params.min_gap > 0 else own
                free[outer] &= ~near
                break
        else:
            return None
    return lesions, labels


def draw_lesions(image: np.ndarray, lesions: list[Lesion], edge_softness: float) -> tuple[np.ndarray, np.ndarray]:
    """Add placed ``lesions`` to ``image``; return ``(image_with_lesions, soft_mask)`` as float32.

    Each lesion adds ``(contrast + texture) × mask`` to the intensities, and no lesion pixel falls below
    ``min(its value before, 0)``; the soft masks of non-overlapping lesions are summed.
    """
    out = np.array(image, dtype=np.float64)
    total = np.zeros(out.shape, np.float64)
    for lesion in lesions:
        half, local = local_mask(lesion, edge_softness)
        window = _window(lesion, half)
        total[window] += local
        offset = lesion.contrast if lesion.texture is None else lesion.contrast + lesion.texture
        before = out[window]
        out[window] = np.maximum(before + offset * local, np.minimum(before, 0.0))
    return out.astype(np.float32), np.clip(total, 0.0, 1.0).astype(np.float32)


def solidity(mask: np.ndarray) -> float:
    """Area of a binary shape over the area of its convex hull (pixels as unit squares): 1 for convex shapes,
    lower for shapes with dents. NaN for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    area = int(mask.sum())
    if area == 0:
        return float("nan")
    rows, cols = np.nonzero(mask)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)]
    )
    return float(area / ConvexHull(corners).volume)


def lesion_table_rows(lesions: list[Lesion], edge_softness: float) -> list[dict]:
    """Per-lesion properties measured on its binarised mask (area in pixels, solidity) plus drawn parameters."""
    rows = []
    for index, lesion in enumerate(lesions):
        own = local_mask(lesion, edge_softness)[1] >= 0.5
        rows.append({
            "lesion": index,
            "shape": lesion.shape,
            "center_row": lesion.center[0],
            "center_col": lesion.center[1],
            "radius_px": lesion.radius,
            "aspect": lesion.aspect,
            "angle_deg": float(np.degrees(lesion.angle)),
            "contrast": lesion.contrast,
            "area_px": int(own.sum()),
            "solidity": solidity(own),
        })
    return rows
