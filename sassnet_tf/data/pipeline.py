"""tf.data pipelines: random training patches (labeled + unlabeled streams) and centre-crop validation batches.

Training elements follow the reference's augmentation, in its order: a random rot90 in the x-y plane
(k in 0..3), a random flip along x or y, then a random crop of ``patch_size`` -- zero-padded first (centred) where
the volume is smaller than the patch; the reference adds 3 extra voxels of padding per side, we pad just enough.
The ground-truth SDM is computed from the cropped label inside the pipeline (`sassnet_tf.data.sdm.compute_sdm`).

Randomness is stateless. Element ``slot`` of batch ``step`` of a stream (labeled = 0, unlabeled = 1) draws its
rotation, flip and crop from ``numpy.random.default_rng([seed, stream, step, slot])``; its case is position
``i mod n`` of epoch ``i // n`` (``i = step * batch + slot``, ``n`` cases) of that stream, each epoch an independent
permutation drawn from ``(seed, stream, epoch)``. So parallel workers never share random draws, the labeled and
unlabeled streams are independent, and ``start_step=k`` yields exactly the batches an uninterrupted pipeline yields
from step k on.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import numpy as np

from sassnet_tf.data.errors import DataError
from sassnet_tf.data.io import Case
from sassnet_tf.data.sdm import compute_sdm

log = logging.getLogger("sassnet_tf")

LABELED_STREAM, UNLABELED_STREAM = 0, 1
_EPOCH_TAG = 0x5EED  # keeps the epoch permutations' seeds apart from the element seeds
_warned_small: set = set()


# ------------------------------------------------------------------------------------------------ numpy side


def check_patch_size(patch_size) -> tuple:
    """Return `patch_size` as a tuple of three positive ints (`inference.settings.int_triple`'s rule); DataError
    otherwise."""
    from sassnet_tf.inference.settings import InferenceSettingsError, int_triple

    try:
        return int_triple(patch_size, "patch_size")
    except InferenceSettingsError as err:
        raise DataError(f"{err} (H, W, D)") from None


def pad_to(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad `volume` (centred) to at least `shape` per axis; returned unchanged when already large enough."""
    pads = [(0, 0)] * volume.ndim
    for axis, (size, target) in enumerate(zip(volume.shape, shape)):
        if size < target:
            before = (target - size) // 2
            pads[axis] = (before, target - size - before)
    if all(p == (0, 0) for p in pads):
        return volume
    return np.pad(volume, pads, mode="constant", constant_values=0)


def augment_crop(image: np.ndarray, label: Optional[np.ndarray], patch: Sequence[int],
                 rng: np.random.Generator) -> tuple:
    """The reference's augmentation of one element: rot90 in x-y, flip along x or y, pad, random crop.

    Args:
        image: ``[H, W, D]`` volume.
        label: the same shape, or None.
        patch: (ph, pw, pd).
        rng: draws, in this order, k (0..3), the flip axis (0..1), then the crop start along H, W, D.

    Returns:
        ``(image_patch float32, label_patch float32 or None)``, each ``patch``-shaped and C-contiguous.
    """
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    volumes = [v for v in (image, label) if v is not None]
    volumes = [np.flip(np.rot90(v, k, axes=(0, 1)), axis=axis) for v in volumes]  # views, no copy yet
    volumes = [pad_to(v, patch) for v in volumes]
    starts = [int(rng.integers(0, s - p + 1)) for s, p in zip(volumes[0].shape, patch)]
    box = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    out = [np.ascontiguousarray(v[box], dtype=np.float32) for v in volumes]
    return out[0], (out[1] if label is not None else None)


def centre_crop(volume: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Zero-pad to at least `patch` (centred), then take the centre ``patch``-sized block."""
    volume = pad_to(volume, patch)
    starts = [(s - p) // 2 for s, p in zip(volume.shape, patch)]
    return volume[tuple(slice(s, s + p) for s, p in zip(starts, patch))]


def epoch_order(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    """The case permutation of one epoch of one stream."""
    return np.random.default_rng([seed, stream, _EPOCH_TAG, epoch]).permutation(n)


class _PatchSampler:
    """Callable ``index -> arrays`` for one stream (used through tf.numpy_function; thread-safe, stateless)."""

    def __init__(self, cases: list, patch: tuple, seed: int, stream: int, batch: int, with_label: bool,
                 intensity_scale: tuple = (1.0, 1.0)):
        self.images = [c.image for c in cases]
        self.labels = [c.label for c in cases] if with_label else None
        self.patch, self.seed, self.stream, self.batch = patch, seed, stream, batch
        self.intensity_scale = intensity_scale

    def case_index(self, index: int) -> int:
        n = len(self.images)
        return int(epoch_order(self.seed, self.stream, index // n, n)[index % n])

    def __call__(self, index):
        index = int(index)
        step, slot = divmod(index, self.batch)
        rng = np.random.default_rng([self.seed, self.stream, step, slot])
        c = self.case_index(index)
        image, label = augment_crop(self.images[c], self.labels[c] if self.labels is not None else None,
                                    self.patch, rng)
        if self.intensity_scale != (1.0, 1.0):  # drawn after the reference's draws, which stay as they were
            low, high = np.log(self.intensity_scale[0]), np.log(self.intensity_scale[1])
            image = image * np.float32(np.exp(rng.uniform(low, high)))  # a new array: never the case's own
        if label is None:
            return image[..., None]
        return image[..., None], label[..., None], compute_sdm(label)[..., None]


def _check_cases(cases, what: str, need_label: bool) -> list:
    cases = list(cases or [])
    for case in cases:
        if not isinstance(case, Case):
            raise DataError(f"{what}: expected sassnet_tf.data.io.Case objects, got {type(case).__name__}")
        if case.image.ndim != 3:
            raise DataError(f"{what}: case {case.case_id!r} ({case.path}): image shape {case.image.shape}, "
                            "expected [H, W, D]")
        if need_label:
            if case.label is None:
                raise DataError(f"{what}: case {case.case_id!r} ({case.path}) has no label; read it with "
                                "read_label=True")
            if case.label.shape != case.image.shape:
                raise DataError(f"{what}: case {case.case_id!r} ({case.path}): label shape {case.label.shape} "
                                f"!= image shape {case.image.shape}")
    return cases


def _warn_if_small(cases: list, patch: tuple, rotated: bool) -> None:
    """Log once per case (and patch size) when the volume, in some orientation, is smaller than the patch."""
    ph, pw, pd = patch
    for case in cases:
        h, w, d = case.image.shape
        small = (min(h, w) < max(ph, pw)) if rotated else (h < ph or w < pw)
        if not small and d >= pd:
            continue
        key = (case.case_id, case.path, case.image.shape, patch, rotated)
        if key in _warned_small:
            continue
        _warned_small.add(key)
        why = " (x and y swap under the rot90 augmentation)" if rotated else ""
        log.warning("case %r: volume %s is smaller than the patch %s along some axis%s: its patches are "
                    "zero-padded", case.case_id, tuple(case.image.shape), patch, why)


def check_intensity_scale(value) -> tuple:
    """`value` as a (lo, hi) pair of floats with 0 < lo <= hi (the one rule, also `config.validate`'s); DataError
    otherwise."""
    try:
        scale = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"intensity_scale: expected (lo, hi) numbers, got {value!r}") from None
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise DataError(f"intensity_scale: expected (lo, hi) with 0 < lo <= hi, got {value!r}")
    return scale


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------ tf.data


def make_train_dataset(labeled_cases, unlabeled_cases, patch_size=(112, 112, 80), labeled_bs: int = 2,
                       unlabeled_bs: int = 2, seed: int = 1337, start_step: int = 0, num_parallel_calls=2,
                       prefetch: int = 2, intensity_scale=(1.0, 1.0)):
    """The infinite training dataset (DESIGN.md contract).

    Each element is one step's batch, a dict of float32 tensors: ``labeled_image``, ``label`` (0/1), ``sdm``
    ``[labeled_bs, ph, pw, pd, 1]`` and ``unlabeled_image`` ``[unlabeled_bs, ph, pw, pd, 1]``. With
    ``unlabeled_bs=0`` (supervised training) ``unlabeled_image`` is an empty ``[0, ph, pw, pd, 1]`` tensor, so the
    structure never changes.

    Args:
        labeled_cases: in-memory `Case` objects with labels (each read once by the caller).
        unlabeled_cases: `Case` objects (labels ignored); may be empty when ``unlabeled_bs == 0``.
        patch_size: (ph, pw, pd).
        labeled_bs: labeled patches per batch (>= 1).
        unlabeled_bs: unlabeled patches per batch (>= 0).
        seed: non-negative int; every random draw derives from it (see the module docstring).
        start_step: first batch to yield; ``start_step=k`` continues an interrupted pipeline exactly.
        num_parallel_calls: parallel element workers per stream (0, None or tf.data.AUTOTUNE: autotune).
        prefetch: batches prefetched (0: none; negative: autotune).
        intensity_scale: (lo, hi): each patch's image is multiplied by ``exp(U(ln lo, ln hi))`` (an option, not the
            reference's augmentation: scans z-scored before the release's crop differ in contrast, findings.md);
            (1, 1) draws nothing, so the reference's rotations, flips and crops are unchanged.
    """
    import tensorflow as tf

    patch = check_patch_size(patch_size)
    labeled_bs = _check_int(labeled_bs, "labeled_bs", 1)
    unlabeled_bs = _check_int(unlabeled_bs, "unlabeled_bs", 0)
    seed = _check_int(seed, "seed", 0)
    intensity_scale = check_intensity_scale(intensity_scale)
    start_step = _check_int(start_step, "start_step", 0)
    labeled = _check_cases(labeled_cases, "labeled cases", need_label=True)
    unlabeled = _check_cases(unlabeled_cases, "unlabeled cases", need_label=False)
    if not labeled:
        raise DataError("labeled cases: none given; training needs at least one labeled case")
    if unlabeled_bs and not unlabeled:
        raise DataError(f"unlabeled cases: none given but unlabeled_bs is {unlabeled_bs}")
    _warn_if_small(labeled + (unlabeled if unlabeled_bs else []), patch, rotated=True)
    parallel = tf.data.AUTOTUNE if not num_parallel_calls else num_parallel_calls
    shape = [*patch, 1]

    def stream(sampler: _PatchSampler, batch: int, n_outputs: int):
        def element(index):
            outs = tf.numpy_function(sampler, [index], [tf.float32] * n_outputs, name="random_patch")
            for t in outs:
                t.set_shape(shape)
            return tuple(outs)

        ds = tf.data.Dataset.counter(start=start_step * batch, dtype=tf.int64)
        ds = ds.map(element, num_parallel_calls=parallel, deterministic=True)
        return ds.batch(batch, drop_remainder=True)

    lab = stream(_PatchSampler(labeled, patch, seed, LABELED_STREAM, labeled_bs, True, intensity_scale), labeled_bs, 3)
    if unlabeled_bs:
        unl = stream(_PatchSampler(unlabeled, patch, seed, UNLABELED_STREAM, unlabeled_bs, False, intensity_scale),
                     unlabeled_bs, 1)
        ds = tf.data.Dataset.zip((lab, unl)).map(
            lambda l, u: {"labeled_image": l[0], "label": l[1], "sdm": l[2], "unlabeled_image": u[0]})
    else:
        ds = lab.map(lambda image, label, sdm: {"labeled_image": image, "label": label, "sdm": sdm,
                                                "unlabeled_image": tf.zeros([0, *shape], tf.float32)})
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)
    return ds


def make_validation_dataset(cases, patch_size, batch_size: int = 2):
    """A finite dataset of centre crops of labeled cases (zero-padded where the volume is smaller).

    Elements are dicts ``{"labeled_image", "label"}`` of float32 ``[<=batch_size, ph, pw, pd, 1]``, in case order.

    Args:
        cases: `Case` objects with labels.
        patch_size: (ph, pw, pd).
        batch_size: crops per batch (the last batch may be smaller).
    """
    import tensorflow as tf

    patch = check_patch_size(patch_size)
    batch_size = _check_int(batch_size, "batch_size", 1)
    cases = _check_cases(cases, "validation cases", need_label=True)
    if not cases:
        raise DataError("validation cases: none given")
    _warn_if_small(cases, patch, rotated=False)
    images = np.stack([centre_crop(c.image, patch) for c in cases]).astype(np.float32)[..., None]
    labels = np.stack([centre_crop(c.label, patch) for c in cases]).astype(np.float32)[..., None]
    return tf.data.Dataset.from_tensor_slices({"labeled_image": images, "label": labels}).batch(batch_size)


# ------------------------------------------------------------------------------------------------ reading


def load_cases(layout, ids: Sequence[str], read_label: bool = True) -> list:
    """Read every case of `ids` once into memory.

    Every case is tried; if any fail, one DataError lists each bad case with its own reason.

    Args:
        layout: a `DatasetLayout`.
        ids: case IDs.
        read_label: False for unlabeled cases (their labels are never opened).
    """
    tick = time.perf_counter()
    cases, errors = [], []
    for case_id in ids:
        try:
            cases.append(layout.load(case_id, read_label=read_label))
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        raise DataError(f"{len(errors)} of {len(ids)} cases could not be read:\n  " + "\n  ".join(errors))
    if cases:
        megabytes = sum(c.image.nbytes + (c.label.nbytes if c.label is not None else 0) for c in cases) / 2 ** 20
        log.info("read %d cases (%s) from %s in %.1f s, %.0f MiB", len(cases),
                 "labeled" if read_label else "unlabeled", layout.root, time.perf_counter() - tick, megabytes)
    return cases
