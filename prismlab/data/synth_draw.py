"""Drawing one image of the synthetic set (prismlab.data.synth): a textured, rotated object of the
class on a graded background, behind it up to two smaller distractors, then brightness jitter and
noise. The palette's consecutive colours are isoluminant pairs."""

from __future__ import annotations

import numpy as np

from prismlab.data.channels import LUMA

SHAPES = ("disc", "square", "triangle", "cross", "ring", "star")
TEXTURES = ("solid", "stripes", "checker", "dots")
# Consecutive entries (0,1), (2,3), ... are isoluminant pairs: their BT.601 luma agree within 1.
COLOURS = {
    "red": (210, 40, 40),
    "blue": (40, 85, 255),
    "green": (40, 170, 40),
    "magenta": (204, 51, 220),
    "yellow": (200, 190, 30),
    "cyan": (70, 215, 240),
    "orange": (235, 120, 20),
    "purple": (140, 125, 250),
}
COLOUR_NAMES = tuple(COLOURS)
_SUPERSAMPLE = 2  # render at 2x and average down: anti-aliased edges at no real cost


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in the shape's own frame, where the shape fits in the unit disc."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if shape == "disc":
        return r <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if shape == "triangle":
        # regular polygon: distance along the nearest side's normal <= apothem
        sector = 2 * np.pi / 3
        return r * np.cos(np.mod(theta, sector) - sector / 2) <= 0.5
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "star":
        return r <= 0.6 + 0.38 * np.cos(5 * theta)
    raise ValueError(shape)


def _texture(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness factor of the foreground: 1 on the pattern's light parts, darker elsewhere."""
    dark = 0.45
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        on = np.floor(u * 2.0) % 2 == 0
    elif texture == "checker":
        on = (np.floor(u * 2.0) + np.floor(v * 2.0)) % 2 == 0
    elif texture == "dots":
        # dark dots on a 0.7-unit grid
        du = np.mod(u, 0.7) - 0.35
        dv = np.mod(v, 0.7) - 0.35
        on = np.hypot(du, dv) > 0.2
    else:
        raise ValueError(texture)
    return np.where(on, 1.0, dark)


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] of the supersampled canvas, as (y, x)."""
    n = size * _SUPERSAMPLE
    coords = ((np.arange(n) + 0.5) / n).astype(np.float32)
    return np.meshgrid(coords, coords, indexing="ij")


def _jittered_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    """The palette colour with a little per-channel noise, as float32 RGB."""
    return np.clip(np.array(COLOURS[colour]) + rng.normal(0, 18, 3), 0, 255).astype(np.float32)


def _draw_object(img, grid, shape, texture, fg, centre, radius, rng) -> None:
    """Paint one textured, rotated object of colour fg into img (in place)."""
    y, x = grid
    angle = rng.uniform(0, 2 * np.pi)
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = (x - centre[0]) / radius, (y - centre[1]) / radius
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    phase = rng.uniform(0, 1, 2)  # the texture moves with the shape but starts anywhere
    mask = _shape_mask(shape, u, v)
    shade = _texture(texture, u[mask] + phase[0], v[mask] + phase[1])
    img[mask] = shade[:, None] * fg[None, :]


def render(spec: tuple[str, str, str], size: int, rng: np.random.Generator, grid=None) -> np.ndarray:
    """One RGB image [size, size, 3] uint8 of the class `spec`, with random nuisances from rng.

    The class object is the largest one; up to two smaller distractor objects of any design sit
    behind it, as other things do in a photo.
    """
    y, x = grid if grid is not None else pixel_grid(size)
    shape, texture, colour = spec
    fg = _jittered_colour(colour, rng)
    # background: a tinted gray with a linear gradient, lighter or darker than the object so
    # that its shape shows in gray too (as real objects mostly differ from their surroundings)
    level = np.clip(float(fg @ LUMA) + rng.choice((-1, 1)) * rng.uniform(40, 110), 15, 240)
    tint = rng.normal(0, 22, 3)
    gdir = rng.uniform(0, 2 * np.pi)
    gamp = rng.uniform(-40, 40)
    grad = gamp * ((x - 0.5) * np.cos(gdir) + (y - 0.5) * np.sin(gdir))
    img = (grad[:, :, None] + (level + tint).astype(np.float32)[None, None, :]).astype(np.float32)

    radius = rng.uniform(0.18, 0.36)
    for _ in range(rng.choice(3, p=[0.4, 0.4, 0.2])):
        d_shape = SHAPES[rng.integers(len(SHAPES))]
        d_texture = TEXTURES[rng.integers(len(TEXTURES))]
        d_fg = _jittered_colour(COLOUR_NAMES[rng.integers(len(COLOURS))], rng)
        d_centre, d_radius = rng.uniform(0.05, 0.95, 2), radius * rng.uniform(0.3, 0.6)
        _draw_object(img, (y, x), d_shape, d_texture, d_fg, d_centre, d_radius, rng)
    margin = (0.5 - radius) * 0.8
    _draw_object(img, (y, x), shape, texture, fg, rng.uniform(0.5 - margin, 0.5 + margin, 2), radius, rng)

    img *= rng.uniform(0.75, 1.25)  # brightness jitter keeps luminance from naming a colour
    s = _SUPERSAMPLE
    img = sum(img[i::s, j::s] for i in range(s) for j in range(s)) / (s * s)
    img += rng.normal(0, rng.uniform(3, 14), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
