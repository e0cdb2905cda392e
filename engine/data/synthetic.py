"""A built-in procedural image data set: ten shape and texture families in random colours.

Every image is a soft mask (one of ten families: oriented stripes, checkers, rings, a
grid, blobs, a cross, a square frame, a triangle) painted with a random foreground
colour over a random background colour, plus pixel noise. Position, scale, period,
phase and orientation jitter are random per image, so a network has to read the shape;
foreground and background colours are drawn from the same distribution for every class,
so the mean colour of an image says next to nothing about its class.

Generation is vectorised numpy, takes well under a second for 6,000 images and depends
only on the seed (train and test draw from independent child streams, so the size of
one split never changes the other).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SIDE = 32  # image side in pixels
CHANNELS = 3
_CHUNK = 512  # images composed at a time

CLASSES: tuple[str, ...] = (
    "stripes-h",
    "stripes-v",
    "stripes-diag",
    "checker",
    "rings",
    "grid",
    "blobs",
    "cross",
    "frame",
    "triangle",
)

_Mask = Callable[[np.random.Generator, int, np.ndarray, np.ndarray], np.ndarray]

# Pixel-centre coordinates relative to the image centre, shaped (1, SIDE, SIDE) to
# broadcast against per-image parameters shaped (n, 1, 1).
_COORDS = np.arange(SIDE, dtype=np.float32) + 0.5 - SIDE / 2
_Y = _COORDS[None, :, None] * np.ones((1, 1, SIDE), np.float32)
_X = _COORDS[None, None, :] * np.ones((1, SIDE, 1), np.float32)


def generate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws `n` images with exactly balanced classes (up to `n % 10`) in random order.

    Args:
        n: number of images.
        rng: the only source of randomness.

    Returns:
        uint8 images shaped (n, 3, 32, 32) and int64 labels shaped (n,).
    """
    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASSES))
    mask = np.empty((n, SIDE, SIDE), np.float32)
    for label, draw in enumerate(_FAMILIES):
        where = np.flatnonzero(labels == label)
        if where.size:
            mask[where] = draw(rng, where.size, _X, _Y)

    background = rng.random((n, CHANNELS), dtype=np.float32)
    foreground = rng.random((n, CHANNELS), dtype=np.float32)
    # Too little contrast would make the shape invisible; shifting every channel by half
    # the range keeps the foreground uniformly distributed, so colour stays uninformative.
    faint = np.linalg.norm(foreground - background, axis=1) < 0.35
    foreground[faint] = (background[faint] + 0.5) % 1.0
    noise_level = rng.uniform(0.03, 0.12, n).astype(np.float32)

    images = np.empty((n, CHANNELS, SIDE, SIDE), np.uint8)
    # Chunks keep the float intermediates in cache: half the time of one big array.
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        back = background[part, :, None, None]
        pixels = back + mask[part, None] * (foreground[part, :, None, None] - back)
        noise = rng.standard_normal(pixels.shape, dtype=np.float32)
        pixels += noise_level[part, None, None, None] * noise
        pixels *= 255.0
        pixels += 0.5  # the uint8 cast truncates, so this rounds to nearest
        np.clip(pixels, 0.0, 255.0, out=pixels)
        images[part] = pixels
    return images, labels


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased inside test: 1 inside, 0 outside, a one-pixel ramp at the edge."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _wave(phase: np.ndarray) -> np.ndarray:
    """A square wave with soft edges, so stripes look painted rather than sinusoidal."""
    return np.clip(0.5 + 1.5 * np.sin(phase), 0.0, 1.0)


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image parameters (n,) shaped to broadcast against (1, SIDE, SIDE) grids."""
    return values.astype(np.float32)[:, None, None]


def _rotated(
    rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray, angle: np.ndarray, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, SIDE, SIDE) in a frame rotated by `angle` around a random centre."""
    cx = _col(rng.uniform(-shift, shift, n))
    cy = _col(rng.uniform(-shift, shift, n))
    cos, sin = _col(np.cos(angle)), _col(np.sin(angle))
    dx, dy = x - cx, y - cy
    return cos * dx + sin * dy, cos * dy - sin * dx


def _stripes(base_angle: float | None) -> _Mask:
    """Stripes whose intensity varies along `base_angle` (None: either diagonal)."""

    def draw(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if base_angle is None:
            angle = rng.choice([np.pi / 4, 3 * np.pi / 4], n)
        else:
            angle = np.full(n, base_angle)
        angle = _col(angle + rng.uniform(-0.3, 0.3, n))
        period = _col(rng.uniform(4.0, 9.0, n))
        phase = _col(rng.uniform(0.0, 2 * np.pi, n))
        along = np.cos(angle) * x + np.sin(angle) * y
        return _wave(2 * np.pi * along / period + phase)

    return draw


def _checker(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, rng.uniform(0.0, np.pi / 2, n), SIDE / 2)
    period = _col(rng.uniform(5.0, 10.0, n))
    product = np.sin(2 * np.pi * a / period) * np.sin(2 * np.pi * b / period)
    return np.clip(0.5 + 3.0 * product, 0.0, 1.0)


def _rings(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, np.zeros(n), 8.0)
    period = _col(rng.uniform(4.0, 9.0, n))
    phase = _col(rng.uniform(0.0, 2 * np.pi, n))
    return _wave(2 * np.pi * np.hypot(a, b) / period + phase)


def _grid(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, rng.uniform(-0.3, 0.3, n), SIDE / 2)
    period = _col(rng.uniform(6.0, 11.0, n))
    half_width = _col(rng.uniform(0.6, 1.3, n))
    # Distance to the nearest line of each family (lines sit where a / period is whole).
    to_line_a = period * np.abs(a / period - np.round(a / period))
    to_line_b = period * np.abs(b / period - np.round(b / period))
    return _soft(half_width - np.minimum(to_line_a, to_line_b))


def _blobs(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mask = np.zeros((n, SIDE, SIDE), np.float32)
    for blob in range(4):
        cx = _col(rng.uniform(-11.0, 11.0, n))
        cy = _col(rng.uniform(-11.0, 11.0, n))
        radius = rng.uniform(2.5, 6.0, n)
        if blob >= 2:  # two to four blobs per image
            radius[rng.random(n) < 0.5] = 0.0
        np.maximum(mask, _soft(_col(radius) - np.hypot(x - cx, y - cy)), out=mask)
    return mask


def _cross(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, rng.uniform(-0.4, 0.4, n), 6.0)
    arm = _col(rng.uniform(6.0, 12.0, n))
    half_width = _col(rng.uniform(1.0, 2.5, n))
    bar_a = np.minimum(half_width - np.abs(a), arm - np.abs(b))
    bar_b = np.minimum(half_width - np.abs(b), arm - np.abs(a))
    return _soft(np.maximum(bar_a, bar_b))


def _frame(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, rng.uniform(-0.4, 0.4, n), 5.0)
    outer = _col(rng.uniform(6.0, 12.0, n))
    thickness = _col(rng.uniform(1.5, 3.0, n))
    radius = np.maximum(np.abs(a), np.abs(b))
    return _soft(np.minimum(outer - radius, radius - (outer - thickness)))


def _triangle(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = _rotated(rng, n, x, y, rng.uniform(0.0, 2 * np.pi, n), 5.0)
    circumradius = _col(rng.uniform(7.0, 13.0, n))
    # An equilateral triangle is where all three edge-normal projections stay below
    # the inradius (half the circumradius).
    farthest = np.maximum.reduce(
        [np.cos(t) * a + np.sin(t) * b for t in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)]
    )
    return _soft(circumradius / 2 - farthest)


_FAMILIES: tuple[_Mask, ...] = (
    _stripes(np.pi / 2),
    _stripes(0.0),
    _stripes(None),
    _checker,
    _rings,
    _grid,
    _blobs,
    _cross,
    _frame,
    _triangle,
)
assert len(_FAMILIES) == len(CLASSES)
