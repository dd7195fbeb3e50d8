"""Write a `SegmentationModule` as a TensorFlow Serving model version: ``<base>/<version>/``.

Layout of a version folder (docs/DESIGN.md "SavedModel (export)")::

    <base>/<N>/saved_model.pb, variables/          signatures serving_default, segment_patches, metadata
    <base>/<N>/assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog, replayed by the server at load
    <base>/<N>/assets.extra/sassnet_metadata.json        the metadata signature's JSON

The version is written into a hidden temporary folder beside it (``<base>/.<N>.*.tmp``) and renamed into place
only when complete: tensorflow_model_server polls ``<base>`` for numeric folder names and ignores others, so it
never sees a half-written version. An existing version is never overwritten.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from sassnet_tf.export.errors import ExportError
from sassnet_tf.export.segmentation_module import SegmentationModule
from sassnet_tf.export.versions import existing_versions, next_version, prepare_base_path, resolve_version
from sassnet_tf.utils.atomic import atomic_dir, remove_stale_temporaries

log = logging.getLogger("sassnet_tf")

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "sassnet_metadata.json"


def _zeros_proto(shape: Sequence[int]) -> tensor_pb2.TensorProto:
    """A float32 TensorProto of zeros holding a single value: TensorFlow fills the rest with the last value."""
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)) for size in shape]
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), float_val=[0.0]
    )


def warmup_requests(module: SegmentationModule, model_name: str) -> list:
    """PredictionLog records that exercise both array signatures with the batch shapes real requests use.

    serving_default gets a zero volume of ``batch_size`` windows along the last axis (one full forward batch);
    segment_patches gets ``batch_size`` zero patches. Tensors are stored as one repeated value, so the file stays a
    few hundred bytes whatever the patch size.

    Args:
        module: the module being exported.
        model_name: the model name written into each request's model_spec.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    ph, pw, pd = module.patch_size
    volume = (ph, pw, pd + (module.batch_size - 1) * module.stride[2])
    requests = [
        ("serving_default", "image", volume),
        ("segment_patches", "patches", (module.batch_size, ph, pw, pd, 1)),
    ]
    logs = []
    for signature, input_name, shape in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        request.inputs[input_name].CopyFrom(_zeros_proto(shape))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def _write_extras(folder: str, module: SegmentationModule, model_name: str, warmup: bool) -> None:
    extra = os.path.join(folder, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as fh:
        fh.write(module.metadata_json + "\n")
    if warmup:
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for log in warmup_requests(module, model_name):
                writer.write(log.SerializeToString())


def save_module(module: SegmentationModule, base_path: str, version: Optional[int] = None, *,
                warmup: bool = True) -> str:
    """Write an existing `SegmentationModule` as version `version` of the model at `base_path`.

    Args:
        module: the module to save (its signatures are traced here if they were not yet).
        base_path: the model base path (``MODELS/sassnet``); created if missing. The model name in the warm-up
            requests is its last component.
        version: positive integer; None = newest existing version + 1. An existing version is an error.
        warmup: write ``assets.extra/tf_serving_warmup_requests``.

    Returns:
        the version folder's absolute path.
    """
    base = prepare_base_path(base_path)
    for path in remove_stale_temporaries(base):  # a version folder half-written by a killed export
        log.info("removed %s, left by an export that was killed while writing", path)
    target = os.path.join(base, str(resolve_version(base, version)))
    try:
        with atomic_dir(target) as tmp:
            tf.saved_model.save(module, tmp, signatures=module.signatures())
            _write_extras(tmp, module, os.path.basename(base), warmup)
    except FileExistsError as exc:  # another export took the number while this one was writing
        raise ExportError(f"{exc}; export again to take the next free version") from None
    except OSError as exc:
        raise ExportError(f"{target}: cannot write the SavedModel ({exc.strerror or exc})") from None
    return target


def export_saved_model(
    vnet: Any,
    base_path: str,
    version: Optional[int] = None,
    *,
    patch_size: Sequence[int],
    stride: Sequence[int],
    threshold: float,
    gaussian: bool,
    batch_size: int,
    preprocessing: Mapping[str, Any],
    config: Any,
    warmup: bool = True,
) -> str:
    """Export `vnet` with its inference settings as version `version` of the model at `base_path`.

    Args:
        vnet: the built dual-head V-Net (its dtype policy is kept: a mixed_bfloat16 network exports bf16 kernels).
        base_path: the model base path (``MODELS/sassnet``); created if missing.
        version: positive integer; None = newest existing version + 1. An existing version is an error.
        patch_size, stride, threshold, gaussian, batch_size: sliding-window settings (see `SegmentationModule`).
        preprocessing: ``{"normalize": "zscore", "downsample": N}``, what clients apply to a raw scan.
        config: the run's resolved config (a `Config` or dict), recorded in the metadata.
        warmup: write ``assets.extra/tf_serving_warmup_requests``.

    Returns:
        the version folder's absolute path.
    """
    # Refuse unusable paths and taken versions before the (slow) tracing.
    resolve_version(prepare_base_path(base_path), version)
    module = SegmentationModule(
        vnet,
        patch_size=patch_size,
        stride=stride,
        threshold=threshold,
        gaussian=gaussian,
        batch_size=batch_size,
        preprocessing=preprocessing,
        config=config,
    )
    return save_module(module, base_path, version, warmup=warmup)


__all__ = ["export_saved_model", "save_module", "existing_versions", "next_version", "warmup_requests",
           "ASSETS_EXTRA", "WARMUP_FILE", "METADATA_FILE"]
