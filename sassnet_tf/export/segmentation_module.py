"""`SegmentationModule`: the inference V-Net and its export-time settings as a `tf.Module` with serving signatures.

The signatures follow docs/DESIGN.md "SavedModel (export)":

- ``serving_default(image)``: ``image`` float32 ``[-1, -1, -1]`` (already preprocessed) -> ``probability`` float32,
  ``label`` uint8, ``sdm`` float32, each ``[-1, -1, -1]``; sliding-window inference inside the graph.
- ``segment_patches(patches)``: ``patches`` float32 ``[-1, ph, pw, pd, 1]`` -> ``probability``, ``sdm`` float32 of the
  same shape; one forward pass, for clients that tile the volume themselves.
- ``metadata(format)``: ``format`` string scalar (``"json"``) -> ``json`` string scalar describing the settings.

Every signature has a fully dynamic input signature, so one graph serves every volume size (no retracing). The
network computes in the dtype policy it was built with (mixed_bfloat16 is ~2.5x faster on CPUs with AMX); its heads
and everything after them are float32.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf

import sassnet_tf
from sassnet_tf.export.errors import ExportError
from sassnet_tf.export.settings import check_export_settings
from sassnet_tf.inference.sliding_window import keras_predict_fn, sliding_window_inference

METADATA_FORMAT = "json"
METADATA_VERSION = 1

SIGNATURES = {
    "serving_default": {
        "inputs": {"image": "float32 [-1,-1,-1] (preprocessed volume)"},
        "outputs": {"probability": "float32 [-1,-1,-1]", "label": "uint8 [-1,-1,-1]", "sdm": "float32 [-1,-1,-1]"},
    },
    "segment_patches": {
        "inputs": {"patches": "float32 [-1,ph,pw,pd,1]"},
        "outputs": {"probability": "float32 [-1,ph,pw,pd,1]", "sdm": "float32 [-1,ph,pw,pd,1]"},
    },
    "metadata": {"inputs": {"format": 'string scalar ("json")'}, "outputs": {"json": "string scalar"}},
}


def _plain_config(config: Any) -> dict:
    """The run config as a JSON-ready dict (a `Config`, a dict or None)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ExportError(f"config: expected a sassnet_tf Config or a dict, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(dict(config)))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"config: not JSON-serialisable ({exc})") from None


def _model_description(vnet: Any, config: dict) -> dict:
    """What the exported network is: its own constructor arguments where it has them, else the run's model section."""
    model = dict(config.get("model") or {})
    for key in ("n_filters", "normalization", "dropout", "in_channels"):
        if hasattr(vnet, key):
            model[key] = getattr(vnet, key)
    return model


def _tf_variable(variable: Any) -> tf.Variable:
    """The tf.Variable behind a Keras variable (or the tf.Variable itself)."""
    if isinstance(variable, tf.Variable):
        return variable
    value = getattr(variable, "value", None)
    if isinstance(value, tf.Variable):
        return value
    raise ExportError(f"vnet: variable {getattr(variable, 'path', variable)!r} is not backed by a tf.Variable; "
                      "export needs the TensorFlow backend")


class SegmentationModule(tf.Module):
    """The inference V-Net (dropout off, BatchNorm moving statistics) with serving signatures.

    Args:
        vnet: a built dual-head V-Net (``vnet(x, training=False) -> {"seg", "sdm"}``, DESIGN.md "Networks").
        patch_size: sliding-window size (ph, pw, pd), multiples of 16.
        stride: window step per axis (1..patch).
        threshold: label = probability > threshold.
        gaussian: Gaussian importance weighting of overlapping windows.
        batch_size: windows per forward pass.
        preprocessing: what a client applies to a raw scan, ``{"normalize": "zscore", "downsample": N}``.
        config: the run's resolved config (a `Config` or its dict), recorded in the metadata.
        name: module name.

    Example:
        >>> module = SegmentationModule(build_vnet(n_filters=2), patch_size=(32, 32, 16), stride=(16, 16, 8))
        >>> out = module.serving_default(image=tf.zeros([40, 36, 24]))
        >>> out["label"].dtype, out["probability"].shape
        (tf.uint8, TensorShape([40, 36, 24]))
    """

    def __init__(
        self,
        vnet: Any,
        *,
        patch_size: Sequence[int],
        stride: Sequence[int],
        threshold: float = 0.5,
        gaussian: bool = False,
        batch_size: int = 4,
        preprocessing: Optional[Mapping[str, Any]] = None,
        config: Any = None,
        name: str = "sassnet_segmentation",
    ):
        super().__init__(name=name)
        settings = check_export_settings(patch_size, stride, threshold, gaussian, batch_size, preprocessing)
        plain_config = _plain_config(config)
        # Track the network's tf.Variables themselves, never the Keras model: a Keras 3 model tracked by a tf.Module
        # is saved with a second copy of every variable (Variable_N) that the checkpoint restores into, while the
        # signatures read the originals. TF2's tf.saved_model.load maps that back; tensorflow_model_server's TF1
        # loader does not ("Could not find variable v_net/..."), so the model would not serve.
        self._variables = [_tf_variable(v) for v in vnet.variables]
        # Plain tuples / scalars: tf.Module would wrap lists and dicts in trackable containers.
        self._patch = tuple(settings["patch_size"])
        self._stride = tuple(settings["stride"])
        self._threshold = settings["threshold"]
        self._gaussian = settings["gaussian"]
        self._batch_size = settings["batch_size"]
        policy = getattr(vnet, "dtype_policy", None)
        metadata = dict(
            settings,
            format_version=METADATA_VERSION,
            sassnet_tf_version=sassnet_tf.__version__,
            tensorflow_version=tf.__version__,
            dtype_policy=getattr(policy, "name", None) or "float32",
            model=_model_description(vnet, plain_config),
            config=plain_config,
            signatures=SIGNATURES,
        )
        self._metadata_json = json.dumps(metadata, indent=2, sort_keys=True)
        self._predict = keras_predict_fn(vnet)

        ph, pw, pd = self._patch
        self.serving_default = tf.function(
            self._segment_volume, input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")]
        )
        self.segment_patches = tf.function(
            self._segment_patches, input_signature=[tf.TensorSpec([None, ph, pw, pd, 1], tf.float32, name="patches")]
        )
        self.metadata = tf.function(self._metadata, input_signature=[tf.TensorSpec([], tf.string, name="format")])

    # ------------------------------------------------------------------------------------------------ settings
    patch_size = property(lambda self: self._patch)
    stride = property(lambda self: self._stride)
    threshold = property(lambda self: self._threshold)
    gaussian = property(lambda self: self._gaussian)
    batch_size = property(lambda self: self._batch_size)
    metadata_json = property(lambda self: self._metadata_json, doc="The JSON the metadata signature returns.")

    def metadata_dict(self) -> dict:
        """The metadata as a fresh dict."""
        return json.loads(self._metadata_json)

    def signatures(self) -> dict:
        """The concrete functions to save, by signature name."""
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "segment_patches": self.segment_patches.get_concrete_function(),
            "metadata": self.metadata.get_concrete_function(),
        }

    # ------------------------------------------------------------------------------------------- signatures
    def _segment_volume(self, image: tf.Tensor) -> dict:
        image = tf.debugging.check_numerics(image, "image: contains NaN or Inf; expected a finite, preprocessed volume")
        non_empty = tf.debugging.assert_greater(
            tf.shape(image), 0, message="image: every axis needs at least one voxel"
        )
        with tf.control_dependencies([non_empty]):
            image = tf.identity(image)
        out = sliding_window_inference(
            image,
            self._predict,
            patch_size=self._patch,
            stride=self._stride,
            batch_size=self._batch_size,
            gaussian=self._gaussian,
            threshold=self._threshold,
        )
        return {"probability": out["probability"], "label": out["label"], "sdm": out["sdm"]}

    def _segment_patches(self, patches: tf.Tensor) -> dict:
        out = self._predict(patches)
        return {"probability": tf.sigmoid(out["seg"]), "sdm": out["sdm"]}

    def _metadata(self, format: tf.Tensor) -> dict:  # noqa: A002 -- the input's name in the signature
        supported = tf.debugging.Assert(
            tf.equal(format, METADATA_FORMAT), ["metadata: unsupported format", format, 'expected "json"']
        )
        with tf.control_dependencies([supported]):
            return {"json": tf.identity(tf.constant(self._metadata_json))}


__all__ = ["SegmentationModule", "check_export_settings", "SIGNATURES"]
