"""Synthetic anatomy for the demo: an axial chest CT (body outline with fat and muscle, lungs and
their vessels, heart, aorta, liver, spine, ribs, sternum) and a T1 brain MR (scalp, skull, grey and
white matter, ventricles, eyes), so that a newcomer sees what the workstation does with a study
that looks like a patient's. Shapes are ellipses and rings in coordinates normalised to ±1 across
the image (x to the patient's left, y posterior), changing with the slice's height ``t``
(0 = first slice, 1 = last); values are realistic HU for CT and T1-like signal for MR.
Deterministic: the same call gives the same pixels.
"""

from __future__ import annotations

import numpy as np

from app.demo.studies import Phantom

AIR, LUNG, FAT, WATER, SOFT, LIVER, MARROW, CORTEX = -1000, -860, -100, 10, 40, 60, 250, 750
CT_INTERCEPT = -1024


class _Grid:
    """Normalised coordinates of one square slice, and the ellipses drawn on it."""

    def __init__(self, size: int) -> None:
        self.y, self.x = (np.mgrid[:size, :size] + 0.5) / size * 2 - 1

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        if rx <= 0 or ry <= 0:
            return np.zeros(self.x.shape, bool)
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 < 1

    def radius(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return np.hypot((self.x - cx) / rx, (self.y - cy) / ry)


def _rise(t: float, start: float, end: float) -> float:
    """0 before ``start``, 1 after ``end``, a smooth quarter-sine between."""
    return float(np.sin(np.pi / 2 * np.clip((t - start) / (end - start), 0, 1)))


def _chest_walls(g: _Grid, hu: np.ndarray, t: float) -> None:
    """Body outline, subcutaneous fat, chest-wall muscle, ribs, sternum, scapulae and spine."""
    hu[g.ellipse(0, 0.05, 0.82, 0.60)] = FAT
    hu[g.ellipse(0, 0.05, 0.75, 0.53)] = SOFT
    hu[g.ellipse(0, 0.05, 0.69, 0.47)] = FAT  # fat inside the wall, around the organs
    for side in (-1, 1):
        for angle in np.linspace(0.25, np.pi - 0.25, 7):
            cx, cy = side * 0.70 * np.cos(angle - np.pi / 2 + 0.2 * t), 0.05 - 0.49 * np.cos(angle)
            hu[g.ellipse(cx, cy, 0.045, 0.028)] = CORTEX
            hu[g.ellipse(cx, cy, 0.025, 0.014)] = MARROW
        if t < 0.45:
            hu[g.ellipse(side * 0.5, 0.38, 0.13, 0.025)] = CORTEX  # scapula
    if 0.1 < t < 0.75:
        hu[g.ellipse(0, -0.45, 0.07, 0.035)] = 500  # sternum
    disc = (t * 97) % 10 < 1.6  # an intervertebral disc every few slices
    hu[g.ellipse(0, 0.33, 0.11, 0.10)] = 90 if disc else CORTEX
    if not disc:
        hu[g.ellipse(0, 0.33, 0.09, 0.08)] = MARROW
    hu[g.ellipse(0, 0.50, 0.08, 0.035)] = CORTEX  # lamina
    hu[g.ellipse(0, 0.57, 0.02, 0.05)] = CORTEX  # spinous process
    hu[g.ellipse(0, 0.455, 0.04, 0.035)] = WATER  # spinal canal


def _chest_organs(g: _Grid, hu: np.ndarray, t: float, vessels: np.ndarray) -> None:
    """Lungs with vessels, mediastinum, heart, great vessels, trachea, liver and stomach."""
    grow = 0.45 + 0.55 * _rise(t, 0, 0.3)
    for side in (-1, 1):
        lung = g.ellipse(side * 0.34, 0.02, 0.27 * grow, 0.38 * grow)
        hu[lung] = LUNG
        for vx, vy, vr in vessels:
            hu[lung & g.ellipse(side * (0.34 + vx * 0.2), 0.02 + vy * 0.3, vr, vr)] = SOFT
    liver = _rise(t, 0.6, 0.95)  # the diaphragm's dome, under the heart
    hu[g.ellipse(-0.3, 0.02, 0.46 * liver, 0.42 * liver)] = LIVER
    heart = _rise(t, 0.35, 0.55) * (1 - _rise(t, 0.8, 0.95))
    hu[g.ellipse(0.1, -0.08, 0.30 * heart, 0.25 * heart)] = FAT  # pericardial fat
    hu[g.ellipse(0.1, -0.08, 0.26 * heart, 0.22 * heart)] = SOFT
    if t < 0.45:
        hu[g.ellipse(0.04, -0.1, 0.07, 0.07)] = SOFT  # ascending aorta
        hu[g.ellipse(-0.1, -0.12, 0.05, 0.05)] = SOFT  # superior vena cava
    hu[g.ellipse(0.1, 0.2, 0.06, 0.06)] = SOFT  # descending aorta
    if t < 0.35:
        hu[g.ellipse(0, -0.08, 0.07, 0.06)] = 20  # tracheal wall
        hu[g.ellipse(0, -0.08, 0.055, 0.045)] = AIR
    stomach = _rise(t, 0.72, 1.0)
    hu[g.ellipse(0.35, -0.05, 0.25 * stomach, 0.2 * stomach)] = SOFT
    hu[g.ellipse(0.35, -0.12, 0.18 * stomach, 0.09 * stomach)] = AIR  # gas in the fundus


def chest_ct(slices: int, *, nodule_mm: float = 0) -> Phantom:
    """A chest CT of ``slices`` slices from the lung apices to the upper abdomen, as stored values
    (rescale intercept -1024), with a little noise; ``nodule_mm`` puts a round nodule of that
    diameter in the right lung (350 mm across the image), for a current study to differ from its prior."""
    vessels = np.random.default_rng(7).uniform((-0.8, -0.8, 0.008), (0.8, 0.8, 0.02), (24, 3))

    def slice_(size: int, index: int) -> np.ndarray:
        t = index / max(slices - 1, 1)
        g = _Grid(size)
        hu = np.full((size, size), AIR, np.float32)
        _chest_walls(g, hu, t)
        _chest_organs(g, hu, t, vessels)
        # Height above the nodule's centre (2.5 mm slices; 175 mm is one unit of the ±1 grid).
        height = (t - 0.45) * max(slices - 1, 1) * 2.5 / 175
        across = (nodule_mm / 350) ** 2 - height ** 2
        if across > 0:
            hu[g.ellipse(-0.42, -0.05, np.sqrt(across), np.sqrt(across))] = SOFT
        hu += np.random.default_rng(index).normal(0, 12, hu.shape)
        return np.clip(hu - CT_INTERCEPT, 0, 4095).astype(np.int16)

    return slice_


def brain_mr(slices: int) -> Phantom:
    """A T1 axial brain MR of ``slices`` slices from the orbits to the vertex."""

    def slice_(size: int, index: int) -> np.ndarray:
        t = index / max(slices - 1, 1)
        g = _Grid(size)
        c = float(np.sqrt(max(1 - ((t - 0.3) / 0.78) ** 2, 0.05)))  # the head narrows to the vertex
        r = g.radius(0, 0, 0.78 * c, 0.92 * c)
        angle = np.arctan2(g.y, g.x)
        signal = np.zeros((size, size), np.float32)
        signal[r < 1] = 900  # scalp fat
        signal[r < 0.95] = 60  # skull
        signal[r < 0.89] = 220  # CSF over the brain
        gyri = 0.84 + 0.03 * np.cos(14 * angle + 2 * t)
        signal[r < gyri] = 520  # grey matter
        sulci = (r < gyri) & (r > 0.62) & (np.abs(np.cos(19 * angle + 6 * r)) > 0.96)
        signal[sulci] = 220
        signal[r < 0.66 + 0.04 * np.cos(9 * angle)] = 720  # white matter
        signal[(np.abs(g.x) < 0.012) & (r < 0.89) & (g.y < -0.25)] = 220  # interhemispheric fissure
        ventricles = _rise(t, 0.3, 0.45) * (1 - _rise(t, 0.6, 0.75))
        for side in (-1, 1):
            signal[g.ellipse(side * 0.2, 0.05, 0.09 * ventricles, 0.16 * ventricles)] = 560  # thalamus
            signal[g.ellipse(side * 0.09, -0.02, 0.05 * ventricles, 0.26 * ventricles)] = 180
            if t < 0.25:
                signal[g.ellipse(side * 0.25, -0.62, 0.15, 0.13)] = 850  # orbital fat
                signal[g.ellipse(side * 0.25, -0.64, 0.1, 0.1)] = 160  # globe
        signal += np.random.default_rng(index).normal(0, 15, signal.shape) * (signal > 0)
        return np.clip(signal, 0, 4095).astype(np.uint16)

    return slice_
