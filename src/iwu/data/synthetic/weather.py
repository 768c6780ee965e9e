"""The four ACDC conditions as appearance shifts of a rendered scene (labels unchanged).

fog: contrast fades into a grey haze with distance from the camera;
night: dark, with glowing lamps, car and traffic lights;
rain: darker and bluish, with slanted bright streaks;
snow: washed-out ground and bright speckle.
Each takes a float32 h x w x 3 image in 0..255 and returns one.
"""

from __future__ import annotations

import numpy as np

from iwu.data.synthetic.scenes import SKY, Scene


def _depth(scene: Scene) -> np.ndarray:
    """0 near the camera (bottom) .. 1 at and above the horizon, per row, h x 1 x 1."""
    rows = np.arange(scene.h, dtype=np.float32)
    near = np.clip((rows - scene.horizon) / (scene.h - scene.horizon), 0, 1)
    return (1 - near)[:, None, None]


def fog(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    density = rng.uniform(1.0, 1.6)
    keep = np.exp(-density * _depth(scene) ** 1.5) * 0.85  # far pixels keep little of their own colour
    haze = np.float32(rng.uniform(185, 215))
    return image * keep + haze * (1 - keep)


def night(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    dark = image * np.float32(rng.uniform(0.15, 0.25))
    dark[scene.label == SKY] *= np.float32(0.3)  # no sky glow beyond the lamps
    for y, x, radius, colour in scene.lights:
        r = radius * 3  # the glow reaches beyond the bulb
        y0, y1 = int(max(y - 3 * r, 0)), int(min(y + 3 * r + 1, scene.h))
        x0, x1 = int(max(x - 3 * r, 0)), int(min(x + 3 * r + 1, scene.w))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        glow = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r)).astype(np.float32)
        dark[y0:y1, x0:x1] += glow[..., None] * np.asarray(colour, dtype=np.float32)
    return dark


def _sparse(rng, h: int, w: int, density: float) -> np.ndarray:
    return (rng.random((h, w), dtype=np.float32) < density).astype(np.float32)


def rain(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    h, w = scene.h, scene.w
    drops = _sparse(rng, h, w, 0.004)
    streaks = np.zeros_like(drops)
    length = max(h // 16, 3)
    for step in range(length):  # smear each drop along a slanted line
        streaks += np.roll(drops, (step, step // 3), axis=(0, 1))
    wet = image * np.float32(0.7) + np.asarray([10, 15, 30], dtype=np.float32)
    return wet + np.minimum(streaks, 1)[..., None] * np.float32(90)


def snow(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    h, w = scene.h, scene.w
    grey = image.mean(axis=2, keepdims=True)
    pale = 0.55 * image + 0.25 * grey + np.float32(60)
    flakes = _sparse(rng, h, w, 0.012)
    flakes = np.maximum(flakes, np.roll(flakes, 1, axis=1))  # two-pixel flakes
    return pale * (1 - flakes[..., None]) + np.float32(245) * flakes[..., None]


CONDITIONS = {"fog": fog, "night": night, "rain": rain, "snow": snow}
