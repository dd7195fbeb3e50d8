"""SavedModel export for TensorFlow Serving: `SegmentationModule`, `export_saved_model`, the `export.py` command.

Names load lazily so that the command line can check its arguments before TensorFlow is imported.
"""

import importlib

_EXPORTS = {
    "ExportError": "sassnet_tf.export.errors",
    "SegmentationModule": "sassnet_tf.export.segmentation_module",
    "export_saved_model": "sassnet_tf.export.saved_model",
    "save_module": "sassnet_tf.export.saved_model",
    "existing_versions": "sassnet_tf.export.versions",
    "next_version": "sassnet_tf.export.versions",
    "check_export_settings": "sassnet_tf.export.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sassnet_tf.export' has no attribute {name!r}")
