"""Predictor: load a trained model once (a run folder or an exported SavedModel), then segment volumes.

    predictor = Predictor.from_path("runs/la8")             # or .from_run_dir(...), .from_saved_model(...)
    out = predictor.predict(volume)                         # {"probability", "label", "sdm"} on volume's grid

Evaluation (`sassnet_tf.evaluate`), the batch command `sassnet-predict` and the demo use it; the gRPC client
brings a served model's outputs back to the scan's grid with the same `to_input_grid`. Like nnU-Net's
``nnUNetPredictor``: construct, load a trained folder, predict arrays.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np

from sassnet_tf.inference.resample import resize_linear
from sassnet_tf.inference.settings import InferenceSettings, InferenceSettingsError, check_probability


class ModelLoadError(ValueError):
    """A model path is not a usable run folder or SavedModel; the message names it and what was expected."""


def find_saved_model(path: str) -> Optional[str]:
    """The SavedModel folder for `path`: itself if it holds saved_model.pb, else its newest numbered version.

    Args:
        path: a SavedModel folder or a model base path (``MODELS/sassnet`` with ``1/``, ``2/``, ...).

    Returns:
        the folder, or None when `path` is neither.
    """
    from sassnet_tf.export.versions import existing_versions

    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [v for v in existing_versions(path) if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))]
    return os.path.join(path, str(max(versions))) if versions else None


def to_input_grid(probability: np.ndarray, sdm: np.ndarray, label: Optional[np.ndarray], shape, downsample: int,
                  threshold: float) -> dict:
    """A model's outputs on its (possibly downsampled) grid, brought back to the input's `shape`.

    With `downsample` > 1 the probability and SDM maps are upsampled trilinearly (`resize_linear`) and the label is
    thresholded again at full resolution; otherwise `label` (the model's own) is kept.
    """
    probability = np.asarray(probability, dtype=np.float32)
    sdm = np.asarray(sdm, dtype=np.float32)
    if downsample > 1 or label is None:
        if probability.shape != tuple(shape):
            probability = resize_linear(probability, shape, factor=downsample)
            sdm = resize_linear(sdm, shape, factor=downsample)
        label = probability > threshold
    return {"probability": probability, "label": np.asarray(label, dtype=np.uint8), "sdm": sdm}


class Predictor:
    """A loaded model and its `InferenceSettings`.

    Args:
        load_predict_fn: returns ``predict_fn(patches [N, ph, pw, pd, 1]) -> {"seg" | "probability", "sdm"}``;
            called once, at the first prediction (so settings can be checked before a slow network load).
        settings: how to segment (patch, stride, threshold, ...).
        description: what was loaded (kind, path, weights, precision), for reports.
        config: the training run's config (None for a SavedModel).
    """

    def __init__(self, load_predict_fn: Callable[[], Callable], settings: InferenceSettings, description: dict,
                 config=None):
        self._load_predict_fn = load_predict_fn
        self._predict_fn = None
        self._segment = None
        self._coarse = {}  # stride -> the Predictor of predict_whole_scan's coarse pass
        self.settings = settings
        self.description = description
        self.config = config

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, path: str, weights: str = "best", precision: Optional[str] = None) -> "Predictor":
        """A training run folder: its config now, its V-Net (`weights` best | last) at the first prediction.

        Args:
            path: the run folder (``config.yaml`` + ``weights/``).
            weights: "best" or "last".
            precision: dtype policy (None: the run's own ``train.precision``).
        """
        from sassnet_tf.training.run_dir import RunDir

        config = RunDir(path).read_config()
        description = {"kind": "run_dir", "path": os.path.abspath(path), "weights": weights,
                       "precision": precision or config.train.precision}

        def load():
            from sassnet_tf.inference.sliding_window import keras_predict_fn
            from sassnet_tf.training.run_dir import load_vnet

            vnet, _ = load_vnet(path, weights=weights, precision=precision)
            description["precision"] = vnet.dtype_policy.name  # "auto" resolved
            return keras_predict_fn(vnet)

        return cls(load, InferenceSettings.from_config(config), description, config=config)

    @classmethod
    def from_saved_model(cls, path: str) -> "Predictor":
        """An exported SavedModel (a version folder, or a model base path: its newest version), read through its
        ``segment_patches`` and ``metadata`` signatures.

        Args:
            path: the folder.
        """
        folder = find_saved_model(path)
        if folder is None:
            raise ModelLoadError(f"{path}: no SavedModel (saved_model.pb, or numbered version folders holding one)")
        import tensorflow as tf

        loaded = tf.saved_model.load(folder)
        for name in ("segment_patches", "metadata"):
            if name not in loaded.signatures:
                raise ModelLoadError(f"{folder}: SavedModel has no {name!r} signature (has "
                                     f"{sorted(loaded.signatures)}); expected one written by sassnet_tf.export")
        raw = loaded.signatures["metadata"](format=tf.constant("json"))["json"].numpy()
        try:
            meta = json.loads(raw.decode("utf-8"))
            settings = InferenceSettings.from_metadata(meta)
        except (ValueError, UnicodeDecodeError) as exc:  # InferenceSettingsError is a ValueError
            raise ModelLoadError(f"{folder}: metadata signature returned unusable settings ({exc}): "
                                 f"{raw[:200]!r}") from None
        segment = loaded.signatures["segment_patches"]

        def predict_fn(patches):
            return segment(patches=patches)

        predict_fn.loaded = loaded  # keep the SavedModel's variables alive with the function
        description = {"kind": "saved_model", "path": os.path.abspath(folder), "metadata": meta}
        return cls(lambda: predict_fn, settings, description)

    @classmethod
    def from_path(cls, path: str, weights: str = "best", precision: Optional[str] = None) -> "Predictor":
        """A run folder or a SavedModel (folder or model base path), recognised by its content.

        Args:
            path: the model.
            weights, precision: for a run folder (see `from_run_dir`); a SavedModel's dtypes are fixed.
        """
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: not found (expected a run folder or a SavedModel folder / model base path)")
        if find_saved_model(path) is not None:
            return cls.from_saved_model(path)
        if os.path.isfile(os.path.join(path, "config.yaml")):
            return cls.from_run_dir(path, weights, precision)
        raise ModelLoadError(f"{path}: neither a run folder (config.yaml + weights/) nor a SavedModel "
                             "(saved_model.pb, or numbered version folders holding one)")

    def with_settings(self, **changes) -> "Predictor":
        """The same network with some settings changed (stride, batch_size, gaussian, threshold; None: kept)."""
        other = Predictor(self._load_predict_fn, self.settings.replace(**changes), self.description, self.config)
        other._predict_fn = self._predict_fn
        return other

    # -- prediction -----------------------------------------------------------------------------------------
    def segment_fn(self):
        """The traced sliding-window function on the model's grid (one trace for every volume shape)."""
        if self._segment is None:
            import tensorflow as tf

            from sassnet_tf.inference.sliding_window import sliding_window_inference

            if self._predict_fn is None:
                self._predict_fn = self._load_predict_fn()
            s, predict_fn = self.settings, self._predict_fn

            @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
            def segment(image):
                return sliding_window_inference(image, predict_fn, patch_size=s.patch_size, stride=s.stride,
                                                batch_size=s.batch_size, gaussian=s.gaussian, threshold=s.threshold)

            segment.get_concrete_function()
            self._segment = segment
        return self._segment

    def predict_whole_scan(self, volume: np.ndarray, affine: Optional[np.ndarray] = None,
                           margin: Optional[int] = None, coarse_overlap: float = 0.0,
                           component: str = "deepest", coarse_threshold: float = 0.9) -> dict:
        """Segment an uncropped scan: a coarse pass, then the normal sliding window around what it found.

        The LA data (and so every model trained on it) are cropped around the atrium; a new scan's whole field of
        view holds other bright structures the model has never seen. So: (1) a coarse pass over the whole volume
        with windows overlapping by `coarse_overlap` (0: side by side, ~1/50 of the paper's windows; 0.5: stride =
        half the patch); (2) one connected component of its confident voxels (probability > `coarse_threshold`;
        `component`), its bounding box grown by `margin` voxels per side; (3) the normal `predict` inside that box,
        pasted back into the full grid (outside it: probability 0, label 0, SDM 1 = far outside). Without any foreground
        in the coarse pass, the normal pass runs over the whole volume.

        Args:
            volume: ``[H, W, D]`` preprocessed scan at its own resolution.
            affine: returned with the outputs, as `predict`.
            margin: voxels (of `volume`'s grid) added around the box; default half the model's patch at that grid.
            coarse_overlap: fraction of a window the coarse pass's neighbouring windows share, in [0, 1).
            component: "deepest" (the one holding the voxel farthest from the background: the atrium is a compact
                body, the false positives in unseen anatomy -- a fat layer, vessels, noise -- are thin or fragmented
                even when they have more voxels) or "largest" (most voxels). docs/results/whole_scan.md compares them.
            coarse_threshold: probability the coarse pass's voxels must exceed to be localised from, in (0, 1).
                Unseen anatomy draws middling probabilities (0.3-0.7) over wide areas, the atrium a confident core:
                0.9 was chosen on the development list (configs/lists/la_eval10.list; docs/results/whole_scan.md).

        Returns:
            as `predict`, plus ``"box"``: the (start, stop) per axis of the region segmented finely.
        """
        from sassnet_tf.inference.postprocess import deepest_connected_component, largest_connected_component

        volume = np.asarray(volume, dtype=np.float32)
        self.segment_fn()  # load the network once; the coarse predictor shares it
        pick = {"deepest": deepest_connected_component, "largest": largest_connected_component}.get(component)
        if pick is None:
            raise InferenceSettingsError("component", f": expected 'deepest' or 'largest', got {component!r}")
        coarse_threshold = check_probability(coarse_threshold, "coarse_threshold")
        if not 0.0 <= coarse_overlap < 1.0:
            raise InferenceSettingsError("coarse_overlap", f": expected a fraction in [0, 1), got {coarse_overlap!r}")
        stride = tuple(max(1, int(round(p * (1.0 - coarse_overlap)))) for p in self.settings.patch_size)
        if stride not in self._coarse:  # one coarse predictor (one trace) per stride, kept for the next scans
            self._coarse[stride] = self.with_settings(stride=stride)
        # The coarse pass stays on the model's grid (8x fewer voxels to label and rank at downsample 2); its
        # voxel j covers input voxels within `factor` of j * factor (`downsample_volume`).
        from sassnet_tf.data.io import downsample_volume

        factor = self.settings.downsample
        low = downsample_volume(volume, factor) if factor > 1 else volume
        probability = self._coarse[stride].segment_fn()(np.ascontiguousarray(low))["probability"].numpy()
        found = pick(probability > coarse_threshold)
        if not found.any():
            result = self.predict(volume, affine)
            result["box"] = [(0, n) for n in volume.shape]
            return result
        if margin is None:
            margin = max(self.settings.patch_size) * factor // 2
        coords = np.argwhere(found)
        box = [(max(0, int(lo) * factor - (factor - 1) - margin), min(n, int(hi) * factor + factor + margin))
               for lo, hi, n in zip(coords.min(axis=0), coords.max(axis=0), volume.shape)]
        region = tuple(slice(a, b) for a, b in box)
        fine = self.predict(volume[region])
        result = {"probability": np.zeros(volume.shape, np.float32), "label": np.zeros(volume.shape, np.uint8),
                  "sdm": np.ones(volume.shape, np.float32)}
        for key in result:
            result[key][region] = fine[key]
        if affine is not None:
            result["affine"] = np.asarray(affine, dtype=np.float64)
        result["box"] = box
        return result

    def predict(self, volume: np.ndarray, affine: Optional[np.ndarray] = None) -> dict:
        """Segment one preprocessed volume (normalised as the model was trained: `sassnet_tf.data.io.zscore` for a
        raw scan, nothing for an LA ``.h5``).

        Args:
            volume: ``[H, W, D]`` at the scan's own resolution; the model's downsampling is applied here.
            affine: the volume's voxel-to-world matrix, returned unchanged with the outputs (all on its grid).

        Returns:
            ``{"probability": float32, "label": uint8, "sdm": float32}`` of shape ``[H, W, D]`` (+ ``"affine"``).
        """
        from sassnet_tf.data.io import downsample_volume

        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise InferenceSettingsError("volume",
                                         f": expected a non-empty 3-D [H, W, D] array, got shape {volume.shape}")
        factor = self.settings.downsample
        low = downsample_volume(volume, factor) if factor > 1 else volume
        outputs = self.segment_fn()(np.ascontiguousarray(low))
        result = to_input_grid(outputs["probability"].numpy(), outputs["sdm"].numpy(), outputs["label"].numpy(),
                               volume.shape, factor, self.settings.threshold)
        if affine is not None:
            result["affine"] = np.asarray(affine, dtype=np.float64)
        return result
