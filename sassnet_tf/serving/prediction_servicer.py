"""gRPC ``tensorflow.serving.PredictionService``: Predict and GetModelMetadata; the other methods UNIMPLEMENTED."""

from __future__ import annotations

from typing import Optional

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.serving_core import SIGNATURE_DEF_FIELD, ServingCore
from sassnet_tf.serving.tensors import array_to_tensor_proto, tensor_proto_to_array


def spec_version(spec: model_pb2.ModelSpec) -> Optional[int]:
    """The requested version of a ModelSpec (None when the optional Int64Value is absent)."""
    return int(spec.version.value) if spec.HasField("version") else None


def spec_name(spec: model_pb2.ModelSpec) -> str:
    if not spec.name:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is empty; name the model to use")
    return spec.name


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Serves Predict and GetModelMetadata from a ``ServingCore``, with TensorFlow Serving's status codes.

    Args:
        core: the served models.
        max_tensor_bytes: bound on one decoded input tensor (see ``tensor_proto_to_array``).
    """

    def __init__(self, core: ServingCore, max_tensor_bytes: int):
        self.core = core
        self.max_tensor_bytes = int(max_tensor_bytes)

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        try:
            name = spec_name(spec)
            servable, signature_name, outputs = self.core.predict(
                "grpc",
                name,
                spec_version(spec),
                spec.version_label,
                spec.signature_name,
                lambda _signature: {
                    key: tensor_proto_to_array(key, proto, self.max_tensor_bytes)
                    for key, proto in request.inputs.items()
                },
                request.output_filter,
            )
        except ServingError as err:
            context.abort(err.code, err.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(array_to_tensor_proto(array))
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = request.model_spec
        try:
            name = spec_name(spec)
            servable, signature_defs = self.core.metadata(
                name, spec_version(spec), spec.version_label, request.metadata_field
            )
        except ServingError as err:
            context.abort(err.code, err.message)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
        return response

    def _unimplemented(self, method: str, context: grpc.ServicerContext):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not implemented by this server; use Predict (tensorflow.serving.PredictionService/Predict)",
        )

    def Classify(self, request, context):
        self._unimplemented("Classify", context)

    def Regress(self, request, context):
        self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        self._unimplemented("MultiInference", context)
