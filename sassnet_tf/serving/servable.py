"""One loaded version of a SavedModel: its SignatureDefs (as TensorFlow Serving reports them) and its functions."""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.tensors import tensor_proto_to_array, validate_inputs

LOG = logging.getLogger("sassnet_tf.serving")

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TensorFlow Serving's own cap on replayed warm-up requests


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the ``serve`` MetaGraph in ``path/saved_model.pb``.

    Raises:
        ValueError: the folder holds no readable SavedModel or no MetaGraph tagged ``serve``.
    """
    pb_path = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb_path):
        raise ValueError(f"{path}: no saved_model.pb; expected a SavedModel folder (tf.saved_model.save output)")
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as fh:
            saved_model.ParseFromString(fh.read())
    except Exception as err:  # protobuf raises DecodeError or RuntimeError depending on the backend
        raise ValueError(f"{pb_path}: not a SavedModel protobuf ({err})") from None
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{pb_path}: no MetaGraph tagged '{SERVE_TAG}'")


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
_GRAPH_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")


def op_error_status(err: Exception) -> tuple:
    """(grpc.StatusCode, message) for an exception raised while running a signature.

    A ``tf.errors.OpError`` carries TensorFlow's canonical code (the same numbers as gRPC's), which TensorFlow
    Serving returns as the request's status; its message loses the graph-node references (``[[{{node ...}}]]``)
    that mean nothing to a client. Anything else is INTERNAL.
    """
    if isinstance(err, tf.errors.OpError):
        code = _GRPC_CODES.get(err.error_code, grpc.StatusCode.INTERNAL)
        return (
            (grpc.StatusCode.INTERNAL if code == grpc.StatusCode.OK else code),
            _GRAPH_NODE.sub("", err.message).strip(),
        )
    return grpc.StatusCode.INTERNAL, str(err).strip()


class Servable:
    """A SavedModel version held in memory, ready to run its signatures from several threads at once.

    Args:
        model: the model name it is served under.
        version: the version number (its folder's name).
        path: the version folder.
        loaded: the object returned by ``tf.saved_model.load``.
        signature_defs: the SignatureDefs from ``saved_model.pb`` (``read_signature_defs``).

    Example:
        >>> servable = Servable.load("sassnet", 1, "models/sassnet/1")
        >>> servable.run("serving_default", {"image": volume})["label"]
    """

    def __init__(
        self, model: str, version: int, path: str, loaded, signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    ):
        self.model = model
        self.version = int(version)
        self.path = path
        self._loaded = loaded
        self._signature_defs = dict(signature_defs)
        # Only signatures with a callable function can be run ("__saved_model_init_op" is listed, not callable).
        self._functions = {name: fn for name, fn in loaded.signatures.items() if name in self._signature_defs}

    @classmethod
    def load(cls, model: str, version: int, path: str, max_tensor_bytes: int = 1 << 31) -> "Servable":
        """Load a version folder and replay its warm-up requests (``assets.extra/tf_serving_warmup_requests``).

        Args:
            model: the model name.
            version: the version number.
            path: the version folder.
            max_tensor_bytes: the largest decoded warm-up input accepted.

        Raises:
            ValueError: the folder is not a SavedModel, or a warm-up request fails (the version is then unusable,
                as in TensorFlow Serving).
        """
        signature_defs = read_signature_defs(path)
        try:
            loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        except Exception as err:  # TensorFlow raises many types for a damaged SavedModel
            raise ValueError(f"{path}: cannot load the SavedModel: {type(err).__name__}: {err}") from None
        servable = cls(model, version, path, loaded, signature_defs)
        replayed = servable.replay_warmup(max_tensor_bytes)
        if replayed:
            LOG.info("model %s version %d: replayed %d warm-up request(s)", model, version, replayed)
        return servable

    @property
    def signature_names(self) -> list[str]:
        """The signatures a Predict request may name."""
        return sorted(self._functions)

    def signature_def(self, name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef of a runnable signature; NOT_FOUND for an unknown name."""
        if name not in self._functions:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{self.model}' version {self.version}: serving signature name '{name}' not found; "
                f"available: {self.signature_names}",
            )
        return self._signature_defs[name]

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """All SignatureDefs of the MetaGraph, as GetModelMetadata returns them."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in self._signature_defs.items():
            result.signature_def[name].CopyFrom(signature)
        return result

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Validate the inputs against the signature, run it and return the (filtered) outputs.

        Args:
            signature_name: the signature to run.
            inputs: name -> array.
            output_filter: output names to return; empty = all outputs.

        Raises:
            ServingError: NOT_FOUND (signature), INVALID_ARGUMENT (inputs, output filter), INTERNAL (execution).
        """
        signature = self.signature_def(signature_name)
        validate_inputs(self.model, signature_name, signature, inputs)
        wanted = list(dict.fromkeys(output_filter))
        unknown = [name for name in wanted if name not in signature.outputs]
        if unknown:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model '{self.model}', signature '{signature_name}': output tensor alias(es) {unknown} in "
                f"output_filter not found; outputs are {sorted(signature.outputs)}",
            )
        tensors = {
            name: tf.convert_to_tensor(inputs[name], dtype=tf.dtypes.as_dtype(info.dtype))
            for name, info in signature.inputs.items()
        }
        try:
            outputs = self._functions[signature_name](**tensors)
        except Exception as err:
            # TensorFlow's own status is the answer, as in TensorFlow Serving: a failed assertion on the request's
            # values (an empty axis, NaN) is INVALID_ARGUMENT, an allocation failure RESOURCE_EXHAUSTED; any other
            # failure is the server's (INTERNAL).
            code, message = op_error_status(err)
            raise ServingError(
                code,
                f"model '{self.model}' version {self.version}, signature '{signature_name}' failed: "
                f"{type(err).__name__}: {message}",
            ) from None
        names = wanted or list(outputs)
        # np.asarray: a scalar string tensor gives bytes from .numpy(), not an array.
        return {name: np.asarray(outputs[name].numpy()) for name in names}

    def replay_warmup(self, max_tensor_bytes: int) -> int:
        """Run the Predict requests of the warm-up file; return how many ran (0 without a file)."""
        warmup = os.path.join(self.path, WARMUP_FILE)
        if not os.path.isfile(warmup):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(warmup).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog()
            log.ParseFromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{warmup}: record {count}: only predict_log warm-up records are supported")
            request = log.predict_log.request
            try:
                inputs = {
                    name: tensor_proto_to_array(name, proto, max_tensor_bytes) for name, proto in request.inputs.items()
                }
                self.run(request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs, request.output_filter)
            except ServingError as err:
                raise ValueError(f"{warmup}: warm-up request {count} failed: {err.message}") from None
            count += 1
        return count
