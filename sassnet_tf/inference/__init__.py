"""Whole-volume inference: the Predictor, its settings, sliding-window stitching (TensorFlow), resampling and
post-processing (numpy).

Names load lazily, so that the settings can be validated (by the config, the export command) before TensorFlow is
imported.
"""

import importlib

_EXPORTS = {
    "InferenceSettings": "sassnet_tf.inference.settings",
    "Predictor": "sassnet_tf.inference.predictor",
    "importance_map": "sassnet_tf.inference.sliding_window",
    "keras_predict_fn": "sassnet_tf.inference.sliding_window",
    "largest_connected_component": "sassnet_tf.inference.postprocess",
    "sliding_window_inference": "sassnet_tf.inference.sliding_window",
    "window_starts": "sassnet_tf.inference.sliding_window",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sassnet_tf.inference' has no attribute {name!r}")
