"""Sliding-window inference over a whole volume, in pure TensorFlow (traceable with dynamic ``[None, None, None]``).

Protocol (the reference's evaluation, REFERENCE.md "Evaluation protocol"):

- a volume smaller than the patch on an axis is zero-padded on that axis, symmetrically (pad ``w = patch - size``,
  ``w // 2`` before and ``w - w // 2`` after), and the outputs are cropped back afterwards;
- windows per axis: ``ceil((size - patch) / stride) + 1``, window ``i`` starting at ``min(stride * i, size - patch)``
  so the last one is flush with the edge; all combinations of the per-axis starts are run;
- the sigmoid probabilities (and the SDM) of overlapping windows are averaged (optionally Gaussian-weighted);
- label = probability > threshold (strictly greater).

Windows run through ``predict_fn`` in batches of ``batch_size`` (the last batch is smaller, never padded with
repeated windows). Overlaps are accumulated by zero-padding each window's output to the padded volume's shape and
adding it: exact, and cheap next to the network's forward pass. With the plain average the number of windows
covering a voxel is not accumulated but computed: the windows form a grid, so it is the product of the per-axis
counts (a third less stitching; docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from sassnet_tf.inference.settings import check_count, check_stride, int_triple

# Gaussian importance weights are normalised to a peak of 1 and floored at this value, so that a voxel covered only
# by window borders still has a clearly non-zero weight sum (no 0/0, no denormals).
GAUSSIAN_SIGMA_SCALE = 0.125  # sigma = patch / 8, as nnU-Net and MONAI
GAUSSIAN_FLOOR = 1e-3


def window_starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Start offsets of the windows along one axis, in the (padded) volume.

    Args:
        size: the volume's size on this axis (before padding).
        patch: the window size on this axis.
        stride: the step between window starts.

    Returns:
        int array of ``ceil((max(size, patch) - patch) / stride) + 1`` starts; the last equals
        ``max(size, patch) - patch``.
    """
    if size <= 0 or patch <= 0 or stride <= 0:
        raise ValueError(f"window_starts: size, patch and stride must be positive, got {size}, {patch}, {stride}")
    size = max(size, patch)  # smaller volumes are padded up to the patch
    count = math.ceil((size - patch) / stride) + 1
    return np.array([min(stride * i, size - patch) for i in range(count)], dtype=np.int64)


def importance_map(patch_size: Sequence[int], gaussian: bool) -> np.ndarray:
    """Per-voxel weight of a window's output: all ones, or a separable Gaussian (sigma = patch / 8, peak 1).

    Args:
        patch_size: (ph, pw, pd).
        gaussian: False for a plain average.

    Returns:
        float32 array of shape ``patch_size``.
    """
    patch = int_triple(patch_size, "patch_size")
    if not gaussian:
        return np.ones(patch, dtype=np.float32)
    axes = []
    for p in patch:
        centre = (p - 1) / 2.0  # symmetric, so flipped windows weigh the same
        sigma = p * GAUSSIAN_SIGMA_SCALE
        x = np.arange(p, dtype=np.float64)
        axes.append(np.exp(-0.5 * ((x - centre) / sigma) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    return np.maximum(weights, GAUSSIAN_FLOOR).astype(np.float32)


def _axis_starts(padded_shape: tf.Tensor, patch: tuple, stride: tuple) -> list:
    """Window starts per axis (three int32 vectors) for a padded volume of dynamic shape."""
    per_axis = []
    for axis in range(3):
        size = padded_shape[axis]
        count = (size - patch[axis] + stride[axis] - 1) // stride[axis] + 1
        per_axis.append(tf.minimum(tf.range(count, dtype=tf.int32) * stride[axis], size - patch[axis]))
    return per_axis


def _window_origins(per_axis: list) -> tf.Tensor:
    """All window origins ``[N, 3]`` (int32) from the per-axis starts, x slowest, z fastest."""
    gx, gy, gz = tf.meshgrid(per_axis[0], per_axis[1], per_axis[2], indexing="ij")
    return tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1]), tf.reshape(gz, [-1])], axis=1)


def _coverage(padded_shape: tf.Tensor, origins_per_axis: list, patch: tuple) -> tf.Tensor:
    """How many windows cover each voxel ``[H, W, D]`` (float32): the outer product of the per-axis counts."""
    counts = []
    for axis, starts in enumerate(origins_per_axis):
        position = tf.range(padded_shape[axis], dtype=tf.int32)[tf.newaxis, :]
        inside = (position >= starts[:, tf.newaxis]) & (position < starts[:, tf.newaxis] + patch[axis])
        counts.append(tf.reduce_sum(tf.cast(inside, tf.float32), axis=0))
    return counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]


def _unpack_outputs(outputs: Mapping[str, tf.Tensor], patch: tuple) -> tuple[tf.Tensor, tf.Tensor]:
    """Probability and SDM ``[N, ph, pw, pd]`` float32 from predict_fn's dict (``seg`` logits or ``probability``)."""
    if not isinstance(outputs, Mapping):
        raise ValueError(
            "predict_fn must return a dict with 'seg' (logits) or 'probability', and 'sdm'; "
            f"got {type(outputs).__name__}"
        )
    if "probability" in outputs:
        probability = tf.cast(outputs["probability"], tf.float32)
    elif "seg" in outputs:
        probability = tf.sigmoid(tf.cast(outputs["seg"], tf.float32))
    else:
        raise ValueError(f"predict_fn output has keys {sorted(outputs)}; expected 'seg' (logits) or 'probability'")
    if "sdm" not in outputs:
        raise ValueError(f"predict_fn output has keys {sorted(outputs)}; expected an 'sdm' entry as well")
    sdm = tf.cast(outputs["sdm"], tf.float32)
    # [N, ph, pw, pd, 1] -> [N, ph, pw, pd]; a missing channel axis is accepted as well.
    shape = [-1, patch[0], patch[1], patch[2]]
    return tf.reshape(probability, shape), tf.reshape(sdm, shape)


# Loops are explicit tf.while_loop calls: skipping AutoGraph's source conversion saves seconds per trace.
@tf.autograph.experimental.do_not_convert
def sliding_window_inference(
    volume,
    predict_fn: Callable[[tf.Tensor], Mapping[str, tf.Tensor]],
    patch_size: Sequence[int] = (112, 112, 80),
    stride: Sequence[int] = (18, 18, 4),
    batch_size: int = 4,
    gaussian: bool = False,
    threshold: float = 0.5,
) -> dict:
    """Segment a whole volume window by window and stitch the outputs.

    Args:
        volume: float32 ``[H, W, D]`` tensor or array of any size (already preprocessed).
        predict_fn: called with ``patches`` float32 ``[N, ph, pw, pd, 1]`` (N <= batch_size); returns a dict with
            ``"seg"`` (logits) or ``"probability"`` (sigmoid already applied), and ``"sdm"``, each
            ``[N, ph, pw, pd, 1]``. Call the network in inference mode inside it (``training=False``).
        patch_size: window size (ph, pw, pd).
        stride: step between windows per axis, 1..patch (the last window is flush with the edge).
        batch_size: windows per predict_fn call.
        gaussian: weight each window's output with a Gaussian importance map (sigma = patch / 8) instead of a
            plain average.
        threshold: label = probability > threshold.

    Returns:
        ``{"probability": float32, "label": uint8, "sdm": float32}``, each ``[H, W, D]``.
    """
    patch = int_triple(patch_size, "patch_size")
    step = check_stride(stride, patch)
    batch_size = check_count(batch_size, "batch_size")

    volume = tf.convert_to_tensor(volume, dtype=tf.float32)
    if volume.shape.rank is not None and volume.shape.rank != 3:
        raise ValueError(f"volume: expected a 3-D [H, W, D] array, got shape {volume.shape}")
    shape = tf.shape(volume, out_type=tf.int32)
    patch_t = tf.constant(patch, dtype=tf.int32)
    pad_total = tf.maximum(patch_t - shape, 0)
    pad_before = pad_total // 2
    padded = tf.pad(volume, tf.stack([pad_before, pad_total - pad_before], axis=1))
    padded_shape = shape + pad_total

    starts = _axis_starts(padded_shape, patch, step)
    origins = _window_origins(starts)
    n_windows = tf.shape(origins)[0]
    n_batches = (n_windows + batch_size - 1) // batch_size
    weights = tf.constant(importance_map(patch, gaussian))
    # Channels: weighted probability, weighted SDM and, for Gaussian weights only, their sum (a plain average's
    # weight sum is the window count, computed from the grid instead).
    channels = 3 if gaussian else 2
    accumulator = tf.zeros(tf.concat([padded_shape, [channels]], axis=0), dtype=tf.float32)

    def extract(origin):
        return tf.slice(padded, origin, patch)

    def run_batch(b, acc):
        first = b * batch_size
        batch_origins = origins[first : tf.minimum(first + batch_size, n_windows)]
        patches = tf.map_fn(extract, batch_origins, fn_output_signature=tf.TensorSpec(patch, tf.float32))
        probability, sdm = _unpack_outputs(predict_fn(patches[..., tf.newaxis]), patch)
        if gaussian:
            weight = tf.broadcast_to(weights, tf.shape(probability))
            contributions = tf.stack([probability * weight, sdm * weight, weight], axis=-1)
        else:
            contributions = tf.stack([probability, sdm], axis=-1)

        def add_window(j, acc_inner):
            origin = batch_origins[j]
            paddings = tf.stack([origin, padded_shape - origin - patch_t], axis=1)
            paddings = tf.concat([paddings, tf.zeros([1, 2], tf.int32)], axis=0)
            return j + 1, acc_inner + tf.pad(contributions[j], paddings)

        _, acc = tf.while_loop(
            lambda j, _: j < tf.shape(batch_origins)[0], add_window, [tf.constant(0), acc], parallel_iterations=1
        )
        return b + 1, acc

    # parallel_iterations=1: one batch of windows in flight bounds memory on big volumes.
    _, accumulator = tf.while_loop(
        lambda b, _: b < n_batches, run_batch, [tf.constant(0), accumulator], parallel_iterations=1
    )
    if gaussian:
        weight_sum = accumulator[..., 2]
    else:
        weight_sum = _coverage(padded_shape, starts, patch)
    accumulator = tf.slice(accumulator, tf.concat([pad_before, [0]], 0), tf.concat([shape, [2]], 0))
    weight_sum = tf.slice(weight_sum, pad_before, shape)
    probability = accumulator[..., 0] / weight_sum
    sdm = accumulator[..., 1] / weight_sum
    label = tf.cast(probability > threshold, tf.uint8)
    return {"probability": probability, "label": label, "sdm": sdm}


def keras_predict_fn(model) -> Callable[[tf.Tensor], dict]:
    """Wrap a dual-head network (``model(x, training=False) -> {"seg", "sdm"}``) as a predict_fn.

    Args:
        model: a Keras model following the DESIGN.md network contract.
    """

    def predict(patches: tf.Tensor) -> dict:
        outputs = model(patches, training=False)
        return {"seg": tf.cast(outputs["seg"], tf.float32), "sdm": tf.cast(outputs["sdm"], tf.float32)}

    return predict
