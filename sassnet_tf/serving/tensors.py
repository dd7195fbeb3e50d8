"""Tensor conversions and request validation shared by the gRPC and REST front ends (pure functions).

Inputs are checked against the signature's ``TensorInfo`` (the SignatureDef in ``saved_model.pb``, what
TensorFlow Serving validates against) before anything runs: the set of input names, the dtype, the rank and every
known dimension, and that floating-point inputs are finite.
"""

from __future__ import annotations

from typing import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from sassnet_tf.serving.errors import ServingError


def shape_to_text(shape: tensor_shape_pb2.TensorShapeProto) -> str:
    """``[-1,-1,-1]`` for a TensorShapeProto (``-1`` = any size), ``<unknown rank>`` when the rank is free."""
    if shape.unknown_rank:
        return "<unknown rank>"
    return "[" + ",".join(str(d.size) for d in shape.dim) + "]"


def tensor_proto_to_array(name: str, proto: tensor_pb2.TensorProto, max_bytes: int) -> np.ndarray:
    """Decode a request's TensorProto, refusing one that would decode to more than ``max_bytes``.

    Args:
        name: the input's name (for messages).
        proto: the TensorProto of the request.
        max_bytes: the largest decoded size accepted beyond 8x the proto's own size (8x covers every legitimate
            encoding, e.g. int64 values as one-byte varints). A proto may declare a large shape with a single
            value (TensorFlow fills the rest with it); this bound keeps such a request from exhausting memory.

    Returns:
        the numpy array (object dtype of bytes for DT_STRING).
    """
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': unknown dtype enum {proto.dtype}"
        ) from None
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}': a request tensor needs a fully known shape, got {shape_to_text(proto.tensor_shape)}",
        )
    count = int(np.prod([d.size for d in proto.tensor_shape.dim], dtype=np.float64))
    if dtype != tf.string and count * dtype.size > max(max_bytes, 8 * proto.ByteSize()):
        raise ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"input '{name}': shape {shape_to_text(proto.tensor_shape)} of {dtype.name} decodes to "
            f"{count * dtype.size} bytes, more than the server's limit of {max_bytes}",
        )
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as err:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': malformed TensorProto ({dtype.name}): {err}"
        ) from None


def array_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an output array (numeric arrays go into ``tensor_content``, strings into ``string_val``)."""
    return tf.make_tensor_proto(array)


def validate_inputs(
    model: str, signature_name: str, signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
) -> None:
    """Check a request's inputs against the signature; raise INVALID_ARGUMENT naming the first problem.

    Args:
        model: the model name (for messages).
        signature_name: the signature's key (for messages).
        signature: its SignatureDef.
        inputs: name -> array as decoded from the request.
    """
    where = f"model '{model}', signature '{signature_name}'"
    expected = set(signature.inputs)
    missing = sorted(expected - set(inputs))
    extra = sorted(set(inputs) - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {'; '.join(parts)}; expected exactly {sorted(expected)}"
        )
    for key, info in signature.inputs.items():
        array = inputs[key]
        want = tf.dtypes.as_dtype(info.dtype)
        try:
            got = tf.dtypes.as_dtype(array.dtype)
        except TypeError:
            got = None
        if got != want:
            got_name = got.name if got is not None else str(array.dtype)
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{where}: input '{key}' must be {want.name}, got {got_name}"
            )
        shape = info.tensor_shape
        if not shape.unknown_rank:
            dims = [d.size for d in shape.dim]
            fits = len(dims) == array.ndim and all(d < 0 or d == s for d, s in zip(dims, array.shape))
            if not fits:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: input '{key}' must have shape {shape_to_text(shape)} (rank {len(dims)}, -1 = any "
                    f"size), got {list(array.shape)} (rank {array.ndim})",
                )
        if want.is_floating and array.size:
            native = array.dtype in (np.float16, np.float32, np.float64)
            finite = np.isfinite(array if native else array.astype(np.float32))  # e.g. bfloat16 (ml_dtypes)
            bad = int(array.size - np.count_nonzero(finite))
        else:
            bad = 0
        if bad:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where}: input '{key}' has {bad} non-finite value(s) (NaN or Inf); expected finite numbers",
            )
