"""Procedural street scenes: a label map of the 19 Cityscapes train classes and its image.

A scene is painted back to front with rectangles and ellipses in a road
perspective (objects nearer the bottom are larger), which gives the classes
roughly the imbalance of real street data: road, building, vegetation and sky
large; poles, signs, cars and persons small but several per image; riders,
motorcycles, bicycles, traffic lights and trains small and rare. Each class
has its own colour, noise and texture so a tiny CNN can tell them apart.
Everything is numpy-vectorised per shape, so a 256x128 scene takes a few
milliseconds and a 2048x1024 one well under a second.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# train ids, in Cityscapes order
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)
HOOD = 19  # the ego vehicle's hood: its own look, written as "ignore"

# Per class (and hood): base colour, fine noise, blotchy noise, texture and its strength.
# Textures: 0 none, 1 tiles, 2 windows, 3 lattice, 4 vertical gradient, 5 horizontal stripes.
# fmt: off
_LOOK = np.array([
    # r    g    b   fine coarse tex  amp
    [ 85,  80,  90,   8,   6,   0,    0],  # road: dark, smooth asphalt
    [175, 135, 160,   6,   4,   1,  -45],  # sidewalk: pink tiles
    [125, 100,  80,   7,  14,   2,  -55],  # building: brown, windows
    [165, 160, 125,   5,  18,   0,    0],  # wall: pale, blotchy
    [ 95, 125,  90,   6,   4,   3,  -50],  # fence: lattice
    [160, 160, 170,   3,   2,   0,    0],  # pole: grey metal
    [ 35,  35,  20,   5,   3,   5,   60],  # traffic light: dark with bright bands
    [230, 205,  30,   4,   3,   0,    0],  # traffic sign: yellow
    [ 55, 125,  35,  28,  18,   0,    0],  # vegetation: green, very noisy leaves
    [150, 175,  75,  14,   8,   0,    0],  # terrain: yellow-green grass
    [140, 185, 235,   2,   5,   4,   30],  # sky: blue, brighter at the horizon
    [205,  50,  60,   8,   6,   0,    0],  # person: red
    [245, 125,  20,   8,   6,   0,    0],  # rider: orange
    [ 25,  45, 150,   5,   5,   0,    0],  # car: blue
    [ 35, 100, 105,   6,  10,   5,  -25],  # truck: teal with stripes
    [215, 170,  70,   5,   5,   5,  -70],  # bus: ochre with a band of windows
    [115,  35, 135,   5,   5,   5,  -60],  # train: purple with windows
    [200,  25, 200,   6,   4,   0,    0],  # motorcycle: magenta
    [110, 235, 215,   6,   4,   0,    0],  # bicycle: cyan
    [ 30,  30,  35,   4,   2,   0,    0],  # hood: near black
], dtype=np.float32)
# fmt: on
BASE, FINE, COARSE, TEXTURE, AMP = _LOOK[:, :3], _LOOK[:, 3], _LOOK[:, 4], _LOOK[:, 5].astype(np.int64), _LOOK[:, 6]


class Scene:
    """A label map (appearance indices 0..19) with a brightness map and light sources, painted in place."""

    def __init__(self, height: int, width: int, horizon: int):
        self.h, self.w, self.horizon = height, width, horizon
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.shade = np.ones((height, width), dtype=np.float32)  # per-object brightness variation
        self.lights: list[tuple[float, float, float, tuple[int, int, int]]] = []  # (y, x, radius, rgb) for night

    def scale(self, y: float) -> float:
        """Apparent size of an object standing on row y: 0 at the horizon, 1 at the bottom."""
        return max((y - self.horizon) / (self.h - self.horizon), 0.02)

    def rect(self, y0, y1, x0, x1, cls: int, shade: float = 1.0) -> None:
        y0, y1 = int(np.clip(round(y0), 0, self.h)), int(np.clip(round(y1), 0, self.h))
        x0, x1 = int(np.clip(round(x0), 0, self.w)), int(np.clip(round(x1), 0, self.w))
        if y1 <= y0 and y0 < self.h:
            y1 = y0 + 1  # thin things stay at least one pixel
        if x1 <= x0 and x0 < self.w:
            x1 = x0 + 1
        self.label[y0:y1, x0:x1] = cls
        self.shade[y0:y1, x0:x1] = shade

    def ellipse(self, cy, cx, ry, rx, cls: int, shade: float = 1.0) -> None:
        ry, rx = max(ry, 0.6), max(rx, 0.6)
        y0, y1 = int(max(np.floor(cy - ry), 0)), int(min(np.ceil(cy + ry) + 1, self.h))
        x0, x1 = int(max(np.floor(cx - rx), 0)), int(min(np.ceil(cx + rx) + 1, self.w))
        if y1 <= y0 or x1 <= x0:
            return
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        self.label[y0:y1, x0:x1][inside] = cls
        self.shade[y0:y1, x0:x1][inside] = shade


def _street(scene: Scene, rng: np.random.Generator) -> dict:
    """Road, sidewalks and what lies beyond them, in perspective; returns the edges per row."""
    h, w, hz = scene.h, scene.w, scene.horizon
    vx = w * rng.uniform(0.4, 0.6)
    t = np.clip((np.arange(h, dtype=np.float32) - hz) / (h - hz), 0, None)[:, None]  # 0 horizon .. 1 bottom
    edges = {
        "road_l": vx + (w * rng.uniform(-0.15, 0.12) - vx) * t,
        "road_r": vx + (w * rng.uniform(0.88, 1.15) - vx) * t,
    }
    edges["side_l"] = edges["road_l"] - w * rng.uniform(0.25, 0.6) * t
    edges["side_r"] = edges["road_r"] + w * rng.uniform(0.25, 0.6) * t
    x = np.arange(w, dtype=np.float32)[None, :]
    below = t > 0
    beyond = TERRAIN if rng.random() < 0.35 else BUILDING  # grass verge or facades down to the ground
    scene.label[below[:, 0]] = beyond
    sidewalk = below & (x >= edges["side_l"]) & (x < edges["side_r"])
    scene.label[sidewalk] = SIDEWALK
    road = below & (x >= edges["road_l"]) & (x < edges["road_r"])
    scene.label[road] = ROAD
    return edges


def _skyline(scene: Scene, rng: np.random.Generator) -> None:
    h, w, hz = scene.h, scene.w, scene.horizon
    x = 0.0
    while x < w:
        width = w * rng.uniform(0.05, 0.2)
        if rng.random() > 0.12:  # some gaps show the sky down to the horizon
            scene.rect(hz - h * rng.uniform(0.08, 0.42), hz + 1, x, x + width, BUILDING, rng.uniform(0.75, 1.25))
        x += width
    for _ in range(rng.integers(2, 7)):  # trees at the sides, trunks count as vegetation
        cx = w * (rng.uniform(0, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 1.0))
        ry = h * rng.uniform(0.06, 0.16)
        cy = hz - h * rng.uniform(0.04, 0.2)
        scene.rect(cy, hz + h * 0.02, cx - ry * 0.12, cx + ry * 0.12, VEGETATION, 0.6)
        scene.ellipse(cy, cx, ry, ry * rng.uniform(1.0, 1.8), VEGETATION, rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:  # a hedge along the horizon
        x0 = w * rng.uniform(0, 0.7)
        scene.rect(hz - h * rng.uniform(0.02, 0.06), hz + h * 0.01, x0, x0 + w * rng.uniform(0.1, 0.3), VEGETATION)
    for cls, p in ((WALL, 0.5), (FENCE, 0.55)):
        if rng.random() < p:
            x0 = w * rng.uniform(0, 0.8)
            scene.rect(hz - h * rng.uniform(0.03, 0.08), hz + h * 0.01, x0, x0 + w * rng.uniform(0.06, 0.22), cls)


def _on(rng, edges: dict, y: int, where: str) -> float:
    """A column on the road or on a sidewalk at row y."""
    rl, rr, sl, sr = (float(edges[k][y, 0]) for k in ("road_l", "road_r", "side_l", "side_r"))
    if where == "road":
        return rng.uniform(rl + 0.1 * (rr - rl), rr - 0.1 * (rr - rl))
    if where == "road_edge":
        return rng.uniform(rl, rl + 0.25 * (rr - rl)) if rng.random() < 0.5 else rng.uniform(rr - 0.25 * (rr - rl), rr)
    return rng.uniform(sl, rl) if rng.random() < 0.5 else rng.uniform(rr, sr)


def _car(scene: Scene, rng, y, x, cls: int) -> None:
    s = scene.scale(y)
    sizes = {CAR: (0.2, 0.2), TRUCK: (0.28, 0.42), BUS: (0.42, 0.4)}
    cw = scene.w * sizes[cls][0] * s * rng.uniform(0.85, 1.15)
    ch = scene.h * sizes[cls][1] * s * rng.uniform(0.9, 1.1)
    shade = rng.uniform(0.6, 1.4)
    if cls == CAR:
        scene.rect(y - ch, y - 0.55 * ch, x - 0.35 * cw, x + 0.35 * cw, cls, shade * 0.7)  # cabin
        scene.rect(y - 0.55 * ch, y - 0.1 * ch, x - cw / 2, x + cw / 2, cls, shade)
    else:
        scene.rect(y - ch, y - 0.1 * ch, x - cw / 2, x + cw / 2, cls, shade)
    for wx in (x - 0.33 * cw, x + 0.33 * cw):
        scene.ellipse(y - 0.1 * ch, wx, 0.12 * ch, 0.08 * cw, cls, 0.3)  # wheels
    for lx in (x - 0.4 * cw, x + 0.4 * cw):
        colour = (255, 240, 200) if rng.random() < 0.5 else (255, 60, 40)  # head or tail lights
        scene.lights.append((y - 0.35 * ch, lx, max(0.05 * ch, 1.0), colour))


def _train(scene: Scene, rng) -> None:
    y = scene.horizon + (scene.h - scene.horizon) * rng.uniform(0.03, 0.1)
    length, height = scene.w * rng.uniform(0.12, 0.3), scene.h * rng.uniform(0.04, 0.07)
    x0 = scene.w * rng.uniform(0, 1) - length / 2
    scene.rect(y - height, y, x0, x0 + length, TRAIN, rng.uniform(0.8, 1.2))


def _person(scene: Scene, rng, y, x, cls=PERSON) -> None:
    ph = scene.h * 0.4 * scene.scale(y) * rng.uniform(0.85, 1.15)
    pw = ph * 0.3
    shade = rng.uniform(0.75, 1.25)
    scene.rect(y - 0.45 * ph, y, x - 0.4 * pw, x - 0.05 * pw, cls, shade * 0.8)  # legs
    scene.rect(y - 0.45 * ph, y, x + 0.05 * pw, x + 0.4 * pw, cls, shade * 0.8)
    scene.rect(y - 0.82 * ph, y - 0.45 * ph, x - 0.5 * pw, x + 0.5 * pw, cls, shade)  # torso
    scene.ellipse(y - 0.9 * ph, x, 0.09 * ph, 0.09 * ph * 1.6, cls, shade * 1.1)  # head


def _two_wheeler(scene: Scene, rng, y, x, cls: int, rider: bool) -> None:
    s = scene.scale(y)
    r = scene.h * (0.07 if cls == BICYCLE else 0.08) * s
    length = r * (4.5 if cls == BICYCLE else 5.5)
    for wx in (x - length / 2 + r, x + length / 2 - r):
        scene.ellipse(y - r, wx, r, r, cls, 0.8)
    body = 0.3 if cls == BICYCLE else 1.0  # a motorcycle has a heavy body, a bicycle a thin frame
    scene.rect(y - r * (1.3 + body), y - r * 1.0, x - length / 2 + r, x + length / 2 - r, cls, 1.1)
    if rider:
        _person(scene, rng, y - r * 1.2, x, RIDER)


def _pole(scene: Scene, rng, y, x) -> None:
    s = scene.scale(y)
    height, width = scene.h * s * rng.uniform(0.8, 1.3), max(scene.w * s * 0.007, 1.0)
    top = y - height
    scene.rect(top, y, x - width / 2, x + width / 2, POLE, rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:  # a street lamp lights up at night
        scene.lights.append((top, x, max(scene.h * s * 0.025, 1.0), (255, 200, 120)))
    if rng.random() < 0.55:
        sy, size = top + height * rng.uniform(0.05, 0.3), scene.h * s * 0.07
        if rng.random() < 0.5:
            scene.ellipse(sy, x, size / 2, size / 2 * 1.1, SIGN, rng.uniform(0.8, 1.2))
        else:
            scene.rect(sy - size / 2, sy + size / 2, x - size * 0.6, x + size * 0.6, SIGN, rng.uniform(0.8, 1.2))
    if rng.random() < 0.3:
        ly, lh, lw = top + height * rng.uniform(0.0, 0.15), scene.h * s * 0.1, max(scene.w * s * 0.013, 1.0)
        scene.rect(ly, ly + lh, x + width / 2, x + width / 2 + lw, LIGHT)
        colour = (255, 40, 30) if rng.random() < 0.5 else (60, 255, 90)
        scene.lights.append((ly + lh * 0.2, x + width / 2 + lw / 2, max(lw, 1.0), colour))


def _objects(scene: Scene, rng, edges: dict) -> None:
    """Things standing on the street, painted far to near so nearer ones cover farther ones."""
    h, hz = scene.h, scene.horizon
    placed = []  # (row, painter, painter's arguments after scene and rng)

    def place(lo: float, hi: float, where: str, paint, *args) -> None:
        y = int(hz + (h - hz) * rng.uniform(lo, hi))
        placed.append((y, paint, (y, _on(rng, edges, y, where), *args)))

    for _ in range(rng.integers(3, 8)):
        place(0.06, 0.75, "road", _car, CAR)
    for cls, p in ((TRUCK, 0.3), (BUS, 0.22)):
        if rng.random() < p:
            place(0.05, 0.5, "road", _car, cls)
    if rng.random() < 0.15:
        placed.append((hz, _train, ()))
    for _ in range(rng.integers(2, 8)):
        place(0.08, 0.8, "side", _person, PERSON)
    if rng.random() < 0.4:  # a rider on a bicycle or a motorcycle
        place(0.1, 0.7, "road_edge", _two_wheeler, BICYCLE if rng.random() < 0.6 else MOTORCYCLE, True)
    for cls, p in ((BICYCLE, 0.35), (MOTORCYCLE, 0.15)):  # parked ones
        if rng.random() < p:
            place(0.1, 0.7, "side", _two_wheeler, cls, False)
    for _ in range(rng.integers(3, 8)):
        place(0.03, 0.7, "side", _pole)
    for _, paint, args in sorted(placed, key=lambda item: item[0]):
        paint(scene, rng, *args)


def _hood(scene: Scene, rng) -> None:
    if rng.random() < 0.5:
        x = np.linspace(-1, 1, scene.w, dtype=np.float32)
        top = scene.h * (1 - rng.uniform(0.04, 0.09) + 0.04 * x**2)
        scene.label[np.arange(scene.h)[:, None] >= top[None, :]] = HOOD


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """The label side of a street scene (appearance indices; 19 = hood)."""
    scene = Scene(height, width, horizon=int(height * rng.uniform(0.36, 0.48)))
    edges = _street(scene, rng)
    _skyline(scene, rng)
    _objects(scene, rng, edges)
    _hood(scene, rng)
    return scene


def _textures(h: int, w: int, horizon: int) -> np.ndarray:
    """The texture fields (see `_LOOK`), each h x w in -1..1, in image coordinates."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    p = max(h // 24, 3)  # pattern period grows with the image, so it survives resizing
    tiles = ((yy % p < 1) | (xx % (2 * p) < 1)).astype(np.float32)
    windows = ((yy % (2 * p) < p) & (xx % (2 * p) < p)).astype(np.float32)
    lattice = (((yy + xx) % p < 1) | ((yy - xx) % p < 1)).astype(np.float32)
    gradient = np.clip(1 - np.abs(yy - horizon) / max(horizon, 1), 0, 1)
    stripes = (yy % (2 * p) < p).astype(np.float32)
    return np.stack([np.zeros_like(yy), tiles, windows, lattice, gradient, stripes])


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene's image, float32 h x w x 3 in 0..255 (before any weather)."""
    h, w, idx = scene.h, scene.w, scene.label
    fine = rng.standard_normal((h, w, 3), dtype=np.float32)
    small = rng.standard_normal((h // 8 + 2, w // 8 + 2), dtype=np.float32)
    coarse = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BILINEAR))[..., None]
    texture = np.take_along_axis(_textures(h, w, scene.horizon), TEXTURE[idx][None], axis=0)[0]
    image = BASE[idx] * scene.shade[..., None]
    image += (AMP[idx] * texture)[..., None]
    image += FINE[idx][..., None] * fine + COARSE[idx][..., None] * coarse
    return image


def train_ids(scene: Scene) -> np.ndarray:
    """The label in train ids: the hood is ignored (255)."""
    return np.where(scene.label == HOOD, 255, scene.label).astype(np.uint8)
