"""The built-in phantom dataset: deterministic synthetic LA-like LGE-MRI volumes, written in the LA layout.

Each case is drawn from its own seed ``(seed, split, index)`` (adding cases never changes earlier ones):

- the labeled left atrium: a body of 3-5 smoothly merged ellipsoids deformed by a smooth random field, an
  appendage and 3-5 pulmonary-vein tubes, in a random pose (rotation about z up to 30 deg, tilts up to 10 deg) and
  size; one connected component, about 9 % of the crop (LA: about 9 %);
- the same bright blood signal in structures that are NOT labeled and touch or nearly touch the atrium (gap 0-2.5
  voxels): the left ventricle, the right atrium, the ascending and the descending aorta, and each vein's
  continuation beyond the label's cut (the LA labels also stop the veins somewhere);
- a patchy atrial wall (partly enhanced, as scar in LGE), bright fat blobs, dark lungs, textured tissue;
- a smooth multiplicative bias field, Rician noise, then an affine intensity normalisation so that the crop's mean is
  about 0.9 and its std about 1 (the LA release: z-score of the whole scan, then a crop around the label);
- the crop: the label's bounding box plus a random margin of 10-20 voxels in x and y (scaled with `shape`), every
  slice kept: H and W vary per case around `shape` (about +-15 %), D = ``shape[2]``.

`ensure_phantom_dataset` caches the dataset under ``$SASSNET_TF_CACHE`` (else ``~/.cache/sassnet_tf``) in
``phantom-<hash of the parameters>``, built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sassnet_tf.data.errors import DataError

log = logging.getLogger("sassnet_tf")

PHANTOM_VERSION = 1  # bump when the generator's output changes: it is part of the cache key
NOMINAL_SHAPE = (176, 144, 88)  # world units are voxels of a case of this size
MARKER = "phantom.json"  # written last: its presence means the dataset is complete
_FAR = np.float32(1e3)  # "far outside" value of implicit fields outside a primitive's box
_SPLIT_CODE = {"train": 0, "test": 1}


# ------------------------------------------------------------------------------------------------ primitives


def _rot(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _random_rotation(rng: np.random.Generator, degrees=(10.0, 10.0, 30.0)) -> np.ndarray:
    return _rot(2, rng.uniform(-degrees[2], degrees[2])) @ _rot(1, rng.uniform(-degrees[1], degrees[1])) @ \
        _rot(0, rng.uniform(-degrees[0], degrees[0]))


@dataclass
class _Ellipsoid:
    center: np.ndarray  # world (3,)
    rotation: np.ndarray  # columns: the ellipsoid's axes in world coordinates
    axes: np.ndarray  # semi-axes (3,)

    def transformed(self, rotation: np.ndarray) -> "_Ellipsoid":
        return _Ellipsoid(rotation @ self.center, rotation @ self.rotation, self.axes)

    def bbox(self) -> tuple:
        half = np.sqrt(((self.rotation * self.axes[None, :]) ** 2).sum(axis=1))
        return self.center - half, self.center + half

    def radius_along(self, direction: np.ndarray) -> float:
        local = self.rotation.T @ (direction / np.linalg.norm(direction))
        return float(1.0 / np.sqrt(((local / self.axes) ** 2).sum()))

    def field(self, x, y, z) -> np.ndarray:
        # Python floats: a numpy float64 scalar would turn the float32 grids into float64 (NumPy 2 promotion).
        c = [float(v) for v in self.center]
        d = (x - c[0], y - c[1], z - c[2])
        q = None
        for k in range(3):
            r = [float(v) / float(self.axes[k]) for v in self.rotation[:, k]]
            term = r[0] * d[0] + r[1] * d[1] + r[2] * d[2]
            term *= term
            q = term if q is None else q + term
        # Scaled so that the value approximates a distance (exact for a sphere).
        out = np.sqrt(q)
        out -= 1.0
        out *= float(self.axes.min())
        return out


@dataclass
class _Segment:
    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def transformed(self, rotation: np.ndarray) -> "_Segment":
        return _Segment(rotation @ self.a, rotation @ self.b, self.ra, self.rb)

    def bbox(self) -> tuple:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def field(self, x, y, z) -> np.ndarray:
        a = [float(v) for v in self.a]
        ab = [float(v) for v in self.b - self.a]
        d = (x - a[0], y - a[1], z - a[2])
        inv = 1.0 / max(ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2, 1e-9)
        t = np.clip((d[0] * (ab[0] * inv) + d[1] * (ab[1] * inv)) + d[2] * (ab[2] * inv), 0.0, 1.0)
        dist = np.sqrt((d[0] - t * ab[0]) ** 2 + (d[1] - t * ab[1]) ** 2 + (d[2] - t * ab[2]) ** 2)
        dist -= float(self.ra) + t * float(self.rb - self.ra)
        return dist


def _tube(points, radii) -> list:
    """A tube through `points` with radii interpolated between them, as capsule-like segments."""
    return [_Segment(np.asarray(points[i], float), np.asarray(points[i + 1], float), radii[i], radii[i + 1])
            for i in range(len(points) - 1)]


class _Grid:
    """World coordinates of voxel indices: ``world = (index - offset) / scale`` per axis."""

    def __init__(self, shape, scale, offset):
        self.shape = tuple(int(s) for s in shape)
        self.scale = np.asarray(scale, float)
        self.offset = np.asarray(offset, float)
        self.coords = [((np.arange(n) - o) / s).astype(np.float32) for n, s, o in zip(self.shape, scale, offset)]

    def box(self, lo, hi, margin: float):
        sl = []
        for c, a, b in zip(self.coords, lo, hi):
            i0, i1 = np.searchsorted(c, a - margin), np.searchsorted(c, b + margin, side="right")
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        return tuple(sl)

    def paint(self, field: np.ndarray, primitive, margin: float, smooth: float = 0.0):
        """``field = min(field, primitive)`` (a smooth minimum of width `smooth` if > 0) inside its box.

        Returns the box (a tuple of slices) or None when the primitive lies outside the grid.
        """
        lo, hi = primitive.bbox()
        box = self.box(lo, hi, margin + smooth)
        if box is None:
            return None
        x = self.coords[0][box[0]][:, None, None]
        y = self.coords[1][box[1]][None, :, None]
        z = self.coords[2][box[2]][None, None, :]
        value = primitive.field(x, y, z)
        old = field[box]
        if smooth > 0:
            h = np.clip(smooth - np.abs(old - value), 0.0, None) / smooth
            field[box] = np.minimum(old, value) - h * h * (smooth / 4.0)
        else:
            np.minimum(old, value, out=old)
        return box


class _SmoothNoise:
    """A smooth random function of world coordinates: Gaussian bumps on a coarse lattice spanning [lo, hi],
    about zero mean and unit std over that box. Separable, so a grid costs a few small matrix products.
    """

    def __init__(self, rng: np.random.Generator, lo, hi, cells):
        self.coarse = rng.standard_normal(tuple(cells)).astype(np.float32)
        span = np.asarray(hi, float) - np.asarray(lo, float)
        # The lattice overhangs the box a little so that its edges are as random as its middle.
        self.centres = [np.linspace(l - 0.1 * d, h + 0.1 * d, c).astype(np.float32)
                        for l, h, d, c in zip(lo, hi, span, cells)]
        self.sigmas = [max(1.2 * d / max(c - 1, 1), 1e-3) for d, c in zip(span, cells)]
        self.mean, self.std = 0.0, 1.0
        probe = self(*[np.linspace(l, h, 16, dtype=np.float32) for l, h in zip(lo, hi)])
        self.mean, self.std = float(probe.mean()), max(float(probe.std()), 1e-6)

    def __call__(self, x, y, z) -> np.ndarray:
        """Values on the grid spanned by the 1-D world coordinate vectors x, y, z (float32 [len(x), ...])."""
        basis = [np.exp(-0.5 * ((np.asarray(v, np.float32)[:, None] - c[None, :]) / s) ** 2)
                 for v, c, s in zip((x, y, z), self.centres, self.sigmas)]
        bx, by, bz = basis
        t = np.matmul(by, np.tensordot(bx, self.coarse, axes=(1, 0)))  # [X, Y, cz]
        out = (t.reshape(-1, t.shape[-1]) @ bz.T).reshape(len(bx), len(by), len(bz))
        out -= self.mean
        out *= 1.0 / self.std
        return out


def _grid_noise(rng: np.random.Generator, shape, cells) -> np.ndarray:
    """A smooth random field of unit std over a voxel grid of `shape` (`cells` bumps per axis)."""
    noise = _SmoothNoise(rng, [0.0] * 3, [float(n - 1) for n in shape], cells)
    return noise(*[np.arange(n, dtype=np.float32) for n in shape])


# ------------------------------------------------------------------------------------------------ anatomy


def _anatomy(rng: np.random.Generator) -> dict:
    """Primitives in world units (voxels of a nominal case), before the pose rotation."""
    main = _Ellipsoid(np.zeros(3), _random_rotation(rng, (12, 12, 20)),
                      np.array([rng.uniform(32, 42), rng.uniform(22, 29), rng.uniform(16, 22)]))
    body = [main]
    for _ in range(rng.integers(2, 5)):  # lobes merged into the body
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.5])
        direction /= np.linalg.norm(direction)
        centre = direction * main.radius_along(direction) * rng.uniform(0.35, 0.65)
        body.append(_Ellipsoid(centre, _random_rotation(rng, (40, 40, 90)), main.axes * rng.uniform(0.45, 0.75, 3)))

    # Appendage: a tapering, bent tube leaving the anterior-left side.
    d = np.array([-1.0, rng.uniform(0.4, 1.0), rng.uniform(0.0, 0.5)])
    d /= np.linalg.norm(d)
    base = d * main.radius_along(d) * 0.7
    tip = base + d * rng.uniform(14, 24) + rng.normal(size=3) * 4
    mid = (base + tip) / 2 + rng.normal(size=3) * 3
    appendage = _tube([base, mid, tip], [rng.uniform(6, 9), rng.uniform(4, 7), rng.uniform(2.5, 4)])

    # Pulmonary veins leave the posterior (+x) half: two left, two right, sometimes merged or with an extra one.
    angles = [rng.uniform(25, 45), rng.uniform(55, 75), -rng.uniform(25, 45), -rng.uniform(55, 75)]
    heights = [0.45, -0.35, 0.45, -0.35]
    n_veins = int(rng.choice([3, 4, 4, 5]))
    if n_veins == 3:
        drop = int(rng.integers(4))
        angles.pop(drop)
        heights.pop(drop)
    elif n_veins == 5:
        angles.append(rng.uniform(-20, 20))
        heights.append(rng.uniform(-0.2, 0.2))
    veins, continuations = [], []
    for angle, height in zip(angles, heights):
        a = np.radians(angle + rng.uniform(-10, 10))
        direction = np.array([np.cos(a), np.sin(a), height + rng.uniform(-0.15, 0.15)])
        direction /= np.linalg.norm(direction)
        radius = rng.uniform(4.0, 7.5)
        start = direction * main.radius_along(direction) * 0.6
        cut = direction * (main.radius_along(direction) + rng.uniform(6, 18))
        veins += _tube([start, cut], [radius * 1.2, radius])
        bend = direction + rng.normal(size=3) * 0.35
        bend /= np.linalg.norm(bend)
        far = cut + bend * rng.uniform(15, 30)
        continuations += _tube([cut, (cut + far) / 2 + rng.normal(size=3) * 2, far],
                               [radius, radius * 0.95, radius * 0.85])

    # Unlabeled bright neighbours, placed to touch the atrium (the carve leaves a 0-2.5 voxel gap).
    confounders = []
    d_lv = np.array([-1.0, rng.uniform(-0.4, 0.4), -rng.uniform(0.3, 0.8)])
    d_lv /= np.linalg.norm(d_lv)
    lv = _Ellipsoid(np.zeros(3), _random_rotation(rng, (25, 25, 45)),
                    np.array([rng.uniform(28, 38), rng.uniform(22, 28), rng.uniform(20, 26)]))
    lv.center = d_lv * (main.radius_along(d_lv) + rng.uniform(0.4, 0.8) * lv.radius_along(-d_lv))
    confounders.append(("left ventricle", [lv]))
    d_ra = np.array([rng.uniform(-0.6, 0.0), -1.0, rng.uniform(-0.3, 0.3)])
    d_ra /= np.linalg.norm(d_ra)
    ra = _Ellipsoid(np.zeros(3), _random_rotation(rng, (20, 20, 40)),
                    np.array([rng.uniform(22, 30), rng.uniform(16, 22), rng.uniform(18, 24)]))
    ra.center = d_ra * (main.radius_along(d_ra) + rng.uniform(0.4, 0.85) * ra.radius_along(-d_ra))
    confounders.append(("right atrium", [ra]))
    r_ao = rng.uniform(8, 12)
    y_ao = rng.uniform(-12, 12)
    x_front = -main.radius_along(np.array([-1.0, 0, 0])) - r_ao * rng.uniform(0.0, 1.0)
    ascending = _tube(
        [[x_front + 6, y_ao, -main.axes[2] - 15], [x_front, y_ao + rng.uniform(-5, 5), 0.0],
         [x_front + rng.uniform(-4, 4), y_ao, main.axes[2] + 12], [0.0, y_ao * 0.5, main.axes[2] + 28]],
        [r_ao] * 4)
    confounders.append(("ascending aorta", ascending))
    r_da = rng.uniform(7, 11)
    x_back = main.radius_along(np.array([1.0, 0, 0])) + r_da * rng.uniform(0.2, 1.2)
    y_da = rng.uniform(-15, 15)
    descending = _tube([[x_back, y_da, -70.0], [x_back + rng.uniform(-4, 4), y_da + rng.uniform(-4, 4), 70.0]],
                       [r_da, r_da])
    confounders.append(("descending aorta", descending))
    keep = rng.random(len(confounders)) < 0.85
    if keep.sum() < 2:
        keep[rng.choice(len(confounders), 2, replace=False)] = True
    confounders = [c for c, k in zip(confounders, keep) if k]
    return {"body": body, "tubes": appendage + veins, "continuations": continuations, "confounders": confounders}


def _posed(anatomy: dict, rotation: np.ndarray) -> dict:
    def tr(items):
        return [p.transformed(rotation) for p in items]

    return {"body": tr(anatomy["body"]), "tubes": tr(anatomy["tubes"]),
            "continuations": tr(anatomy["continuations"]),
            "confounders": [(name, tr(parts)) for name, parts in anatomy["confounders"]]}


def _bbox(primitives) -> tuple:
    boxes = [p.bbox() for p in primitives]
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def _label_field(grid: _Grid, anatomy: dict, noise: _SmoothNoise, amplitude: float, smooth: float) -> np.ndarray:
    """Implicit field of the labeled atrium (< 0 inside): the body deformed by `amplitude` x `noise` (world
    units), then the appendage and veins merged in undeformed (a deformation as large as a vein's radius would cut
    it into islands)."""
    field = np.full(grid.shape, _FAR, np.float32)
    margin = amplitude * 2.5 + 4.0
    for p in anatomy["body"]:
        grid.paint(field, p, margin, smooth=smooth)
    field += amplitude * np.clip(noise(*grid.coords), -2.5, 2.5)
    for p in anatomy["tubes"]:
        grid.paint(field, p, 4.0, smooth=smooth / 2)
    return field


def _label_box(field: np.ndarray) -> list:
    inside = field < 0
    return [np.flatnonzero(inside.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]


# ------------------------------------------------------------------------------------------------ one case


def phantom_case(shape=NOMINAL_SHAPE, seed=0, return_parts: bool = False, field_of_view=None):
    """Generate one phantom case.

    Args:
        shape: median (H, W, D); H and W of the case vary around it, D is kept.
        seed: an int or a sequence of ints (the dataset uses ``(seed, split, index)``).
        return_parts: also return a dict: ``confounders`` (mask of the bright unlabeled structures: neighbours and
            vein continuations), ``names`` (the neighbours present), ``wall`` (mask), ``crop`` (the crop's
            (start, stop) per axis in the returned grid).
        field_of_view: None (the crop, as the LA release) or (H, W): the same anatomy rendered on the scan's whole
            field of view, like a user's uncropped scan: the crop at a random place in it, the heart's neighbours
            and vein continuations beyond the crop, more lung, fat and tissue, a body outline with a bright
            subcutaneous fat layer, air outside, and the crop's own intensity normalisation (so the crop's region
            looks as the crop would). Sizes smaller than the crop are raised to it. The crop mode's output does
            not depend on this option's existence (same draws).

    Returns:
        ``(image float32 [H, W, D], label uint8 [H, W, D])`` (+ parts).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise DataError(f"phantom shape {shape}: expected three sizes >= 8")
    rng = np.random.default_rng([int(s) for s in np.atleast_1d(seed)])
    anatomy = _posed(_anatomy(rng), _random_rotation(rng))
    relative = np.array(shape, float) / np.array(NOMINAL_SHAPE, float)
    amplitude = rng.uniform(1.5, 3.5)  # world units of the body's boundary deformation
    smooth = 6.0
    lo, hi = _bbox(anatomy["body"] + anatomy["tubes"])
    reach = amplitude * 2.5 + 3.0
    noise = _SmoothNoise(rng, lo - reach, hi + reach, (9, 8, 5))

    # 1) The label's true world box, from a coarse render (1.5 world units a voxel, coarser for small shapes).
    step = 1.5 * max(1.0, 1.0 / float(relative[:2].mean()))
    coarse = _Grid(np.ceil((hi - lo + 2 * reach) / step).astype(int) + 1, [1 / step] * 3, (reach - lo) / step)
    idx = _label_box(_label_field(coarse, anatomy, noise, amplitude, smooth))
    if not all(len(i) for i in idx):
        raise DataError(f"phantom seed {seed}: empty label (generator bug)")
    # A full coarse voxel of slack: thin tips between coarse samples must stay inside the margins.
    box_lo = np.array([coarse.coords[a][idx[a][0]] for a in range(3)]) - step
    box_hi = np.array([coarse.coords[a][idx[a][-1]] for a in range(3)]) + step
    extent = box_hi - box_lo

    # 2) Scale and crop: box + a 10-20 voxel margin per side in x, y (H, W within about +-15 % of the median);
    #    all D slices, the label's centre near the middle.
    margins = rng.uniform(10, 20, size=(2, 2)) * relative[:2, None]  # (axis, side), voxels
    target = np.array(shape[:2], float) * rng.uniform(0.85, 1.15, 2) - margins.sum(axis=1)
    scale_xy = np.maximum(target, 4.0) / extent[:2]
    mean_xy = np.sqrt(scale_xy.prod())
    ratio = np.clip(scale_xy[0] / scale_xy[1], 0.75, 1.35)  # bounded anisotropy: bounded distortion
    depth = shape[2]
    scale = np.array([mean_xy * np.sqrt(ratio), mean_xy / np.sqrt(ratio),
                      min(relative[2] * rng.uniform(0.7, 0.95), (depth - 6) / extent[2])])
    size = np.array([int(round(extent[0] * scale[0] + margins[0].sum())),
                     int(round(extent[1] * scale[1] + margins[1].sum())), depth])
    centre_z = (box_lo[2] + box_hi[2]) / 2 * scale[2]
    room = max(depth - extent[2] * scale[2] - 6, 0.0) / 2
    offset = np.array([margins[0, 0] - box_lo[0] * scale[0], margins[1, 0] - box_lo[1] * scale[1],
                       depth / 2 - centre_z + rng.uniform(-1, 1) * min(room, 0.08 * depth)])
    crop_size = size.copy()
    place = np.zeros(3, int)  # the crop's start in the rendered grid
    if field_of_view is not None:
        fov = [int(v) for v in field_of_view]
        if len(fov) != 2 or min(fov) < 1:
            raise DataError(f"phantom field_of_view {field_of_view}: expected (H, W) voxels")
        size = np.array([max(fov[0], size[0]), max(fov[1], size[1]), depth])
        for a in range(2):  # the heart near the middle of the chest: the crop's centre within +-20 % of it
            centre = size[a] / 2 + rng.uniform(-0.2, 0.2) * size[a]
            place[a] = int(np.clip(round(centre - crop_size[a] / 2), 0, size[a] - crop_size[a]))
        offset = offset + place
    crop = [(int(p), int(p + n)) for p, n in zip(place, crop_size)]
    grid = _Grid(size, scale, offset)
    voxel = float(scale.mean())  # voxels per world unit, for soft edges and gaps

    f_label = _label_field(grid, anatomy, noise, amplitude, smooth)
    label = f_label < 0

    def occupancy(field):
        return np.clip(0.5 - field * voxel, 0.0, 1.0)

    # 3) Unlabeled bright structures, each carved to keep a 0-2.5 voxel gap to the label, merged into one field
    #    with a per-voxel brightness (work stays inside each structure's boxes).
    shp = tuple(int(n) for n in size)
    f_conf = np.full(shp, _FAR, np.float32)
    level = np.ones(shp, np.float32)
    names = []
    for name, parts in anatomy["confounders"]:
        f = np.full(shp, _FAR, np.float32)
        boxes = [b for b in (grid.paint(f, p, 4.0) for p in parts) if b is not None]
        if not boxes:
            continue
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        part = np.maximum(f[box], max(rng.uniform(-1.0, 2.5), 0.0) / voxel - f_label[box])
        closer = part < f_conf[box]
        if not (part < 0).any():
            continue
        names.append(name)
        level[box][closer] = rng.uniform(0.85, 1.15)
        f_conf[box] = np.where(closer, part, f_conf[box])
    # Vein continuations: the label wins where they meet (the cut).
    for p in anatomy["continuations"]:
        grid.paint(f_conf, p, 4.0)
    np.maximum(f_conf, -f_label, out=f_conf)
    heart = np.minimum(f_label, f_conf)

    def cells(base):  # the same texture scale in a larger field of view
        return tuple(int(np.ceil(c * n / m)) for c, n, m in zip(base, shp, crop_size))

    # 4) Intensities (blood about 1): tissue, lungs, fat, a patchy wall with scar, neighbours, label.
    tissue = rng.uniform(0.28, 0.4)
    image = _grid_noise(rng, shp, cells((14, 12, 7)))
    image *= 0.12 * tissue  # +-12 % texture
    image += tissue
    lungs = (_grid_noise(rng, shp, cells((5, 5, 3))) > rng.uniform(0.5, 1.0)) & (heart > 12.0 / voxel)
    image[lungs] = rng.uniform(0.04, 0.1)
    fat = np.clip((_grid_noise(rng, shp, cells((16, 14, 8))) - 1.6) * 2.0, 0.0, 1.0)
    fat[heart < 2.0 / voxel] = 0.0
    image += fat * (rng.uniform(0.6, 0.85) - image)
    patches = _grid_noise(rng, shp, cells((9, 8, 5)))
    wall = (f_label > 0) & (f_label < rng.uniform(1.5, 3.0) / voxel) & (patches > -0.3)
    image[wall] = rng.uniform(0.3, 0.45)
    image[wall & (patches > 1.0)] = rng.uniform(0.9, 1.2)
    blood = _grid_noise(rng, shp, cells((8, 7, 5)))
    blood *= 0.08
    blood += 1.0
    image += occupancy(f_conf) * (level * blood - image)
    image += occupancy(f_label) * (blood - image)
    if field_of_view is not None:
        _body_outline(rng, image, crop)

    # 5) Acquisition: bias field, Rician noise; normalisation like the LA release's crops.
    image *= np.exp(rng.uniform(0.1, 0.3) * _grid_noise(rng, shp, cells((3, 3, 3))))
    sigma = rng.uniform(0.07, 0.14)
    real = rng.standard_normal(shp, dtype=np.float32)
    real *= sigma
    real += image
    imag = rng.standard_normal(shp, dtype=np.float32)
    imag *= sigma
    image = np.sqrt(real * real + imag * imag)
    region = tuple(slice(a, b) for a, b in crop)  # the crop's statistics, also in a whole field of view
    sample = image[region][::3, ::3, ::2]  # statistics of a subsample: as good, much faster
    image -= sample.mean()
    image *= rng.uniform(0.8, 1.2) / max(float(sample.std()), 1e-6)
    image += rng.uniform(0.6, 1.2)
    label = label.astype(np.uint8)
    if not return_parts:
        return image, label
    return image, label, {"confounders": f_conf < 0, "names": names, "wall": wall, "crop": crop}


def _body_outline(rng: np.random.Generator, image: np.ndarray, crop) -> None:
    """In place: an elliptical body section holding the crop, a bright subcutaneous fat layer inside its edge, air
    (0) outside; the ellipse wobbles slowly along the slices."""
    h, w, d = image.shape
    centre = np.array([h, w], float) / 2 + rng.uniform(-0.03, 0.03, 2) * np.array([h, w])
    semi = np.array([h, w], float) * rng.uniform(0.4, 0.47, 2)
    corners = np.array([[a, b] for a in crop[0] for b in crop[1]], float)
    reach = np.sqrt((((corners - centre) / semi) ** 2).sum(axis=1)).max()
    semi *= max(1.0, reach * 1.08)  # the crop (the heart) lies well inside the body
    x = (np.arange(h, dtype=np.float32)[:, None] - centre[0]) / semi[0]
    y = (np.arange(w, dtype=np.float32)[None, :] - centre[1]) / semi[1]
    radius = np.sqrt(x * x + y * y)[:, :, None] * (1.0 + 0.03 * _grid_noise(rng, (1, 1, d), (1, 1, 3)))
    thickness = rng.uniform(0.04, 0.08)
    fat = (radius <= 1.0) & (radius > 1.0 - thickness)
    image[fat] = rng.uniform(0.7, 0.9)
    image[radius > 1.0] = 0.0


# ------------------------------------------------------------------------------------------------ datasets


def phantom_ids(n: int, split: str) -> list:
    return [f"phantom-{split}-{i:03d}" for i in range(n)]


def generate_phantom_dataset(root: str, n_train: int = 24, n_test: int = 4, shape=NOMINAL_SHAPE,
                             seed: int = 0) -> str:
    """Write a phantom dataset in the LA layout into `root` (created; existing case files are replaced).

    ``root/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` (gzip-compressed ``image`` float32, ``label`` uint8),
    ``train.list`` (``n_train`` IDs), ``test.list`` (``n_test`` IDs, volumes present -- unlike the real LA
    release) and ``phantom.json`` (parameters, per-case shapes and label fractions; written last).

    Args:
        root: target folder.
        n_train: training cases (>= 1).
        n_test: test cases (>= 0; 0 writes no test.list).
        shape: median (H, W, D).
        seed: dataset seed (>= 0).

    Returns:
        `root`.
    """
    import h5py

    from sassnet_tf.data.dataset_layout import LA_FILE, LA_TRAINING_FOLDER
    from sassnet_tf.utils.atomic import atomic_path, atomic_write_text

    if n_train < 1 or n_test < 0 or seed < 0:
        raise DataError(f"phantom: n_train must be >= 1, n_test >= 0 and seed >= 0; got {n_train}, {n_test}, {seed}")
    root = os.fspath(root)
    tick = time.perf_counter()
    cases = []
    for split, n in (("train", n_train), ("test", n_test)):
        for index, case_id in enumerate(phantom_ids(n, split)):
            image, label = phantom_case(shape, seed=(seed, _SPLIT_CODE[split], index))
            path = os.path.join(root, LA_TRAINING_FOLDER, case_id, LA_FILE)
            with atomic_path(path, suffix=".h5") as tmp:
                with h5py.File(tmp, "w") as fh:
                    fh.create_dataset("image", data=image, compression="gzip", compression_opts=1, chunks=True)
                    fh.create_dataset("label", data=label, compression="gzip", compression_opts=1, chunks=True)
            cases.append({"id": case_id, "split": split, "shape": list(image.shape),
                          "label_fraction": round(float(label.mean()), 5)})
    atomic_write_text(os.path.join(root, "train.list"), "\n".join(phantom_ids(n_train, "train")) + "\n")
    if n_test:
        atomic_write_text(os.path.join(root, "test.list"), "\n".join(phantom_ids(n_test, "test")) + "\n")
    meta = {"generator": "sassnet_tf.data.phantom", **_params(n_train, n_test, shape, seed),
            "seconds": round(time.perf_counter() - tick, 2), "cases": cases}
    atomic_write_text(os.path.join(root, MARKER), json.dumps(meta, indent=1) + "\n")
    return root


def _params(n_train, n_test, shape, seed) -> dict:
    return {"version": PHANTOM_VERSION, "n_train": int(n_train), "n_test": int(n_test),
            "shape": [int(s) for s in shape], "seed": int(seed)}


def phantom_cache_root(n_train: int = 24, n_test: int = 4, shape=NOMINAL_SHAPE, seed: int = 0,
                       cache_dir: Optional[str] = None) -> str:
    """Where `ensure_phantom_dataset` keeps this parameter set: ``<cache>/phantom-<hash>``."""
    base = cache_dir or os.environ.get("SASSNET_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                            "sassnet_tf")
    key = hashlib.sha256(json.dumps(_params(n_train, n_test, shape, seed), sort_keys=True).encode()).hexdigest()
    return os.path.join(os.path.abspath(base), f"phantom-{key[:12]}")


def ensure_phantom_dataset(n_train: int = 24, n_test: int = 4, shape=NOMINAL_SHAPE, seed: int = 0,
                           cache_dir: Optional[str] = None) -> str:
    """Return the root of the cached phantom dataset for these parameters, generating it the first time.

    Built in a temporary folder beside the target and renamed into place, so a reader never sees a partial
    dataset; if another process finishes first, its dataset is used.

    Args:
        n_train, n_test, shape, seed: as `generate_phantom_dataset`.
        cache_dir: base folder; default ``$SASSNET_TF_CACHE``, else ``~/.cache/sassnet_tf``.
    """
    from sassnet_tf.utils.atomic import atomic_dir

    root = phantom_cache_root(n_train, n_test, shape, seed, cache_dir)
    marker = os.path.join(root, MARKER)
    if os.path.isfile(marker):
        log.info("using the built-in phantom dataset (%d train, %d test cases, shape %s) at %s", n_train, n_test,
                 tuple(shape), root)
        return root
    if os.path.exists(root):
        raise DataError(f"{root}: exists but holds no {MARKER} (an incomplete phantom dataset); delete the folder")
    log.info("generating the built-in phantom dataset (%d train, %d test cases, shape %s) into %s", n_train,
             n_test, tuple(shape), root)
    tick = time.perf_counter()
    try:
        with atomic_dir(root) as tmp:
            generate_phantom_dataset(tmp, n_train=n_train, n_test=n_test, shape=shape, seed=seed)
    except OSError:  # FileExistsError or a failed rename: another process may have won the race
        if not os.path.isfile(marker):
            raise
        log.info("another process generated the phantom dataset first; using it")
    else:
        log.info("phantom dataset ready at %s (%.1f s)", root, time.perf_counter() - tick)
    return root
