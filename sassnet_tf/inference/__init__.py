"""Whole-volume inference: sliding-window stitching (TensorFlow) and post-processing (numpy)."""

from sassnet_tf.inference.postprocess import largest_connected_component
from sassnet_tf.inference.predictor import Predictor
from sassnet_tf.inference.settings import InferenceSettings
from sassnet_tf.inference.sliding_window import (
    importance_map,
    keras_predict_fn,
    sliding_window_inference,
    window_starts,
)

__all__ = [
    "InferenceSettings",
    "Predictor",
    "importance_map",
    "keras_predict_fn",
    "largest_connected_component",
    "sliding_window_inference",
    "window_starts",
]
