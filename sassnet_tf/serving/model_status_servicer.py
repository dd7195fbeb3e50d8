"""gRPC ``tensorflow.serving.ModelService``: GetModelStatus; HandleReloadConfigRequest UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.prediction_servicer import spec_name, spec_version
from sassnet_tf.serving.serving_core import ServingCore


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Reports each version's state (LOADING, AVAILABLE, END with the load error) as TensorFlow Serving does.

    Args:
        core: the served models.
    """

    def __init__(self, core: ServingCore):
        self.core = core

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        try:
            name = spec_name(spec)
            version = spec_version(spec)
            if spec.version_label:
                version = self.core.manager(name).resolve(None, spec.version_label).version
            return self.core.status(name, version)
        except ServingError as err:
            context.abort(err.code, err.message)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented: this server polls its model base path for new versions",
        )
