"""What the gRPC and REST front ends share: model lookup, Predict on arrays, metadata, status, request logging."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Mapping, Optional

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.model_manager import ModelManager
from sassnet_tf.serving.servable import DEFAULT_SIGNATURE, Servable

LOG = logging.getLogger("sassnet_tf.serving")

SIGNATURE_DEF_FIELD = "signature_def"


class ServingCore:
    """Routes requests to the models' managers and logs each one (model, version, signature, status, ms).

    Args:
        managers: the served models (``ModelManager`` each), looked up by their ``name``.
    """

    def __init__(self, managers: Iterable[ModelManager]):
        self.managers = {m.name: m for m in managers}

    def manager(self, name: str) -> ModelManager:
        """The manager of a model; NOT_FOUND naming the served models otherwise."""
        if name not in self.managers:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model '{name}' is not served; served models: {sorted(self.managers)}",
            )
        return self.managers[name]

    def resolve(self, name: str, version: Optional[int], label: str) -> Servable:
        return self.manager(name).resolve(version, label)

    def predict(
        self,
        front: str,
        name: str,
        version: Optional[int],
        label: str,
        signature_name: str,
        decode: Callable[[meta_graph_pb2.SignatureDef], Mapping[str, np.ndarray]],
        output_filter: Iterable[str] = (),
    ) -> tuple[Servable, str, dict[str, np.ndarray]]:
        """Run a signature; return (servable used, signature name used, outputs). Raises ServingError.

        Args:
            front: ``"grpc"`` or ``"rest"`` (for the log line).
            name: model name.
            version: a specific version, or None.
            label: a version label, or "".
            signature_name: "" means ``serving_default``.
            decode: ``decode(signature_def) -> {name: array}``, the request's inputs, called once the model,
                version and signature are known (so an unknown model is NOT_FOUND before any decoding).
            output_filter: output names to return (empty = all).
        """
        signature_name = signature_name or DEFAULT_SIGNATURE
        start = time.perf_counter()
        used_version: Optional[int] = version
        status = "OK"
        try:
            servable = self.resolve(name, version, label)
            used_version = servable.version
            inputs = decode(servable.signature_def(signature_name))
            outputs = servable.run(signature_name, inputs, output_filter)
            return servable, signature_name, outputs
        except ServingError as err:
            status = err.code.name
            raise
        finally:
            LOG.info(
                "%s predict model=%s version=%s signature=%s status=%s ms=%.1f",
                front, name, used_version if used_version is not None else "latest", signature_name, status,
                1000.0 * (time.perf_counter() - start),
            )

    def metadata(
        self, name: str, version: Optional[int], label: str, fields: Iterable[str]
    ) -> tuple[Servable, get_model_metadata_pb2.SignatureDefMap]:
        """The SignatureDefMap (the only metadata field TF Serving knows) of the resolved version."""
        fields = list(fields)
        if not fields:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field; "
                f"supported: ['{SIGNATURE_DEF_FIELD}']",
            )
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata field(s) {unsupported} not supported; supported: ['{SIGNATURE_DEF_FIELD}']",
            )
        servable = self.resolve(name, version, label)
        LOG.info("metadata model=%s version=%d", name, servable.version)
        return servable, servable.signature_def_map()

    def status(self, name: str, version: Optional[int]) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatusResponse for a model (all versions seen) or one version."""
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.extend(self.manager(name).version_status(version))
        return response
