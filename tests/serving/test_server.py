"""The local server through the official TensorFlow Serving gRPC stubs: Predict, GetModelMetadata, GetModelStatus,
bad requests of every kind (each followed by a good one), version hot-loading and broken versions."""

from __future__ import annotations

import json
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from sassnet_tf.serving.server import LocalModelServer, main
from tests.serving.conftest import free_port, labels_match, sigmoid

SHAPE = (24, 20, 12)
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.State.END


def channel_for(server, mb: int = 64) -> grpc.Channel:
    limit = mb << 20
    return grpc.insecure_channel(
        server.grpc_target,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )


@pytest.fixture(scope="module")
def stubs(server):
    channel = channel_for(server)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def predict_request(inputs: dict, model: str = "sassnet", signature: str = "", version=None, label: str = ""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def good_predict(predict_stub, rng, version: int = 1, scale: float = 1.0):
    image = rng.normal(size=SHAPE).astype(np.float32)
    response = predict_stub.Predict(predict_request({"image": image}), timeout=30)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert response.model_spec.name == "sassnet"
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    assert sorted(outputs) == ["label", "probability", "sdm"]
    assert outputs["probability"].dtype == np.float32 and outputs["label"].dtype == np.uint8
    np.testing.assert_allclose(outputs["probability"], sigmoid(image, scale), rtol=1e-5, atol=1e-6)
    assert labels_match(outputs["label"], image, scale)
    np.testing.assert_allclose(outputs["sdm"], np.tanh(image), rtol=1e-5, atol=1e-6)
    return outputs


def expect_code(call, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, (info.value.code(), info.value.details())
    details = info.value.details()
    for fragment in fragments:
        assert fragment in details, details
    return details


def test_predict_all_signatures(stubs, rng):
    predict, _ = stubs
    good_predict(predict, rng)

    patches = rng.normal(size=(3, 16, 16, 16, 1)).astype(np.float32)
    response = predict.Predict(predict_request({"patches": patches}, signature="segment_patches"), timeout=30)
    assert response.model_spec.signature_name == "segment_patches"
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), sigmoid(patches), rtol=1e-5)

    response = predict.Predict(predict_request({"format": "json"}, signature="metadata"), timeout=30)
    meta = json.loads(tf.make_ndarray(response.outputs["json"]).item())
    assert meta["preprocessing"] == {"normalize": "zscore", "downsample": 1}


def test_output_filter_and_explicit_version(stubs, rng):
    predict, _ = stubs
    request = predict_request({"image": rng.normal(size=SHAPE).astype(np.float32)}, version=1)
    request.output_filter.append("label")
    response = predict.Predict(request, timeout=30)
    assert list(response.outputs) == ["label"]
    assert response.model_spec.version.value == 1

    request.output_filter.append("nonsense")
    expect_code(lambda: predict.Predict(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "nonsense")
    good_predict(predict, rng)


def test_get_model_metadata_packs_signature_def_map(stubs, toy_base):
    predict, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "sassnet"
    request.metadata_field.append("signature_def")
    response = predict.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert {"serving_default", "segment_patches", "metadata"} <= set(signatures)
    image = signatures["serving_default"].inputs["image"]
    assert image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, -1, -1]
    assert signatures["serving_default"].outputs["label"].dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in signatures["segment_patches"].inputs["patches"].tensor_shape.dim] == [-1, 16, 16, 16, 1]

    bad = get_model_metadata_pb2.GetModelMetadataRequest()
    bad.model_spec.name = "sassnet"
    bad.metadata_field.append("graph_def")
    expect_code(lambda: predict.GetModelMetadata(bad, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "graph_def")
    bad.ClearField("metadata_field")
    expect_code(lambda: predict.GetModelMetadata(bad, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "metadata_field")
    bad.metadata_field.append("signature_def")
    bad.model_spec.name = "other"
    expect_code(lambda: predict.GetModelMetadata(bad, timeout=30), grpc.StatusCode.NOT_FOUND, "other")


def test_get_model_status(stubs):
    _, model_service = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "sassnet"
    response = model_service.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [(1, AVAILABLE, 0)]
    request.model_spec.version.value = 9
    expect_code(lambda: model_service.GetModelStatus(request, timeout=30), grpc.StatusCode.NOT_FOUND, "9")
    request.model_spec.ClearField("version")
    request.model_spec.name = "nope"
    expect_code(lambda: model_service.GetModelStatus(request, timeout=30), grpc.StatusCode.NOT_FOUND, "nope")


def test_bad_requests_interleaved_with_good_ones(stubs, rng):
    predict, _ = stubs
    image = rng.normal(size=SHAPE).astype(np.float32)
    nan_image = image.copy()
    nan_image[1, 2, 3] = np.nan
    inf_image = image.copy()
    inf_image[0, 0, 0] = -np.inf
    cases = [
        (predict_request({"image": image}, model="unknown"), grpc.StatusCode.NOT_FOUND, ["unknown"]),
        (predict_request({"image": image}, version=7), grpc.StatusCode.NOT_FOUND, ["7"]),
        (predict_request({"image": image}, label="canary"), grpc.StatusCode.NOT_FOUND, ["canary"]),
        (predict_request({"image": image}, signature="classify_me"), grpc.StatusCode.NOT_FOUND, ["classify_me"]),
        (predict_request({"image": image.astype(np.float64)}), grpc.StatusCode.INVALID_ARGUMENT,
         ["float32", "float64"]),
        (predict_request({"image": image.astype(np.int32)}), grpc.StatusCode.INVALID_ARGUMENT, ["float32", "int32"]),
        (predict_request({"image": image[0]}), grpc.StatusCode.INVALID_ARGUMENT, ["rank 3", "rank 2"]),
        (predict_request({"image": image[None]}), grpc.StatusCode.INVALID_ARGUMENT, ["rank 4"]),
        (predict_request({"patches": np.zeros((2, 16, 16, 15, 1), np.float32)}, signature="segment_patches"),
         grpc.StatusCode.INVALID_ARGUMENT, ["[-1,16,16,16,1]", "[2, 16, 16, 15, 1]"]),
        (predict_request({"image": nan_image}), grpc.StatusCode.INVALID_ARGUMENT, ["non-finite", "1 "]),
        (predict_request({"image": inf_image}), grpc.StatusCode.INVALID_ARGUMENT, ["non-finite"]),
        (predict_request({}), grpc.StatusCode.INVALID_ARGUMENT, ["missing", "image"]),
        (predict_request({"image": image, "extra": image}), grpc.StatusCode.INVALID_ARGUMENT, ["unexpected", "extra"]),
        (predict_request({"picture": image}), grpc.StatusCode.INVALID_ARGUMENT, ["picture", "image"]),
        (predict_request({"image": image}, model=""), grpc.StatusCode.INVALID_ARGUMENT, ["model_spec.name"]),
        # a failed assertion on the request's values is TensorFlow's InvalidArgumentError: the request's fault
        (predict_request({"values": np.array([1.0, 250.0], np.float32)}, signature="checked"),
         grpc.StatusCode.INVALID_ARGUMENT, ["below 100"]),
        (predict_request({"format": "xml"}, signature="metadata"), grpc.StatusCode.INVALID_ARGUMENT, ["json"]),
    ]
    truncated = predict_request({"image": image})
    truncated.inputs["image"].tensor_content = truncated.inputs["image"].tensor_content[:-4]
    cases.append((truncated, grpc.StatusCode.INVALID_ARGUMENT, ["malformed"]))
    # A tiny proto declaring a huge shape (TensorFlow would fill it with its one value): refused before decoding.
    filled = predict_request({"image": image})
    filled.inputs["image"].ClearField("tensor_content")
    filled.inputs["image"].float_val.append(0.0)
    for dim, size in zip(filled.inputs["image"].tensor_shape.dim, (2000, 2000, 2000)):
        dim.size = size
    cases.append((filled, grpc.StatusCode.RESOURCE_EXHAUSTED, ["limit"]))

    for request, code, fragments in cases:
        expect_code(lambda: predict.Predict(request, timeout=30), code, *fragments)
        good_predict(predict, rng)  # the server keeps answering correctly after every refusal

    response = predict.Predict(predict_request({"values": np.array([1.0, 2.0], np.float32)}, signature="checked"),
                               timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["doubled"]), [2.0, 4.0])


def test_request_over_the_message_limit_is_resource_exhausted(stubs, rng, server):
    predict, _ = stubs
    assert server.max_message_bytes == 1 << 20
    big = np.zeros((80, 80, 60), np.float32)  # 1.5 MiB > the fixture's 1 MiB limit
    expect_code(lambda: predict.Predict(predict_request({"image": big}), timeout=30),
                grpc.StatusCode.RESOURCE_EXHAUSTED)
    good_predict(predict, rng)
    # A request under the limit whose answer (three outputs) is over it: gRPC refuses the answer, not the server.
    medium = np.zeros((64, 64, 40), np.float32)  # 640 KiB in, 1.4 MiB out
    expect_code(lambda: predict.Predict(predict_request({"image": medium}), timeout=30),
                grpc.StatusCode.RESOURCE_EXHAUSTED)
    good_predict(predict, rng)


def test_unimplemented_methods(stubs, rng):
    predict, model_service = stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "sassnet"
    expect_code(lambda: predict.Classify(request, timeout=30), grpc.StatusCode.UNIMPLEMENTED, "Predict")
    good_predict(predict, rng)


def _wait_for(predicate, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_hot_loads_a_new_version_and_survives_a_broken_one(tmp_path, toy_v1_source, toy_v2_source, rng):
    base = tmp_path / "sassnet"
    shutil.copytree(toy_v1_source, base / "1")
    with LocalModelServer(str(base), port=0, rest_port=None, poll_seconds=0.2) as server:
        channel = channel_for(server)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        status = model_service_pb2_grpc.ModelServiceStub(channel)
        good_predict(predict, rng, version=1, scale=1.0)

        # A broken version 3 (no variables) appears first: logged, version 1 keeps serving.
        shutil.copytree(toy_v2_source, tmp_path / "staging3")
        shutil.rmtree(tmp_path / "staging3" / "variables")
        os.rename(tmp_path / "staging3", base / "3")
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "sassnet"

        def version3_failed() -> bool:
            states = {s.version: s for s in status.GetModelStatus(status_request, timeout=10).model_version_status}
            return 3 in states and states[3].state == END

        _wait_for(version3_failed)
        states = {s.version: s for s in status.GetModelStatus(status_request, timeout=10).model_version_status}
        assert states[3].status.error_code != 0 and states[3].status.error_message
        assert states[1].state == AVAILABLE
        good_predict(predict, rng, version=1, scale=1.0)

        # Fixing version 3 in place (new folder contents) makes the poller retry it; it then replaces version 1.
        shutil.rmtree(base / "3")
        shutil.copytree(toy_v2_source, tmp_path / "staging3b")
        os.rename(tmp_path / "staging3b", base / "3")
        _wait_for(lambda: server.manager.loaded_versions == [3])
        good_predict(predict, rng, version=3, scale=2.0)
        states = {s.version: s.state for s in status.GetModelStatus(status_request, timeout=10).model_version_status}
        assert states == {3: AVAILABLE, 1: END}
        expect_code(
            lambda: predict.Predict(predict_request({"image": np.zeros(SHAPE, np.float32)}, version=1), timeout=30),
            grpc.StatusCode.NOT_FOUND, "Specific(sassnet, 1)",
        )
        channel.close()


def test_serves_newest_n_versions_with_labels(tmp_path, toy_v1_source, toy_v2_source, rng):
    base = tmp_path / "sassnet"
    shutil.copytree(toy_v1_source, base / "1")
    shutil.copytree(toy_v2_source, base / "2")
    with LocalModelServer(str(base), port=0, rest_port=None, poll_seconds=0, num_versions=2,
                          version_labels={"stable": 1, "canary": 2}) as server:
        channel = channel_for(server)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        image = rng.normal(size=SHAPE).astype(np.float32)
        for kwargs, version, scale in (({}, 2, 2.0), ({"label": "stable"}, 1, 1.0), ({"version": 1}, 1, 1.0),
                                       ({"label": "canary"}, 2, 2.0)):
            response = predict.Predict(predict_request({"image": image}, **kwargs), timeout=30)
            assert response.model_spec.version.value == version
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), sigmoid(image, scale),
                                       rtol=1e-5)
        expect_code(
            lambda: predict.Predict(predict_request({"image": image}, label="beta"), timeout=30),
            grpc.StatusCode.NOT_FOUND, "beta", "canary", "stable",
        )
        channel.close()


def test_server_without_versions_answers_not_found_then_loads(tmp_path, toy_v1_source, rng):
    base = tmp_path / "sassnet"
    base.mkdir()
    with LocalModelServer(str(base), port=0, rest_port=None, poll_seconds=0.2) as server:
        channel = channel_for(server)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        expect_code(
            lambda: predict.Predict(predict_request({"image": np.zeros(SHAPE, np.float32)}), timeout=30),
            grpc.StatusCode.NOT_FOUND, "Latest(sassnet)",
        )
        shutil.copytree(toy_v1_source, tmp_path / "staging")
        os.rename(tmp_path / "staging", base / "1")
        _wait_for(lambda: server.manager.loaded_versions == [1])
        good_predict(predict, rng)
        channel.close()


def test_warmup_requests_are_replayed_and_a_failing_one_rejects_the_version(tmp_path, toy_v1_source):
    from tensorflow_serving.apis import prediction_log_pb2

    from sassnet_tf.serving.servable import Servable

    version = tmp_path / "1"
    shutil.copytree(toy_v1_source, version)
    (version / "assets.extra").mkdir()

    def write_warmup(values: list) -> None:
        with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            request = predict_request({"values": np.array(values, np.float32)}, signature="checked")
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())

    write_warmup([1.0, 2.0])
    servable = Servable.load("sassnet", 1, str(version))
    assert servable.replay_warmup(1 << 20) == 1
    write_warmup([1.0, 500.0])
    with pytest.raises(ValueError, match="(?s)warm-up request 0 failed.*below 100"):
        Servable.load("sassnet", 1, str(version))


def test_port_in_use_is_a_clear_error(server, toy_base):
    clash = LocalModelServer(toy_base, port=server.grpc_port, rest_port=None, poll_seconds=0)
    with pytest.raises(OSError, match=f"gRPC port 127.0.0.1:{server.grpc_port}"):
        clash.start()
    clash.stop()
    with pytest.raises(OSError, match="REST port"):
        LocalModelServer(toy_base, port=0, rest_port=server.rest_port, poll_seconds=0).start()


def test_main_rejects_a_missing_base_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--model-base-path", str(tmp_path / "absent"), "--port", str(free_port())])
    assert info.value.code == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("error, code, message", [
    (tf.errors.InvalidArgumentError(None, None, "assertion failed: [x]\n\t [[{{node assert/Assert}}]]"),
     grpc.StatusCode.INVALID_ARGUMENT, "assertion failed: [x]"),
    (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "OOM when allocating"),
    (tf.errors.OutOfRangeError(None, None, "end"), grpc.StatusCode.OUT_OF_RANGE, "end"),
    (tf.errors.UnimplementedError(None, None, "no kernel"), grpc.StatusCode.UNIMPLEMENTED, "no kernel"),
    (tf.errors.InternalError(None, None, "broken"), grpc.StatusCode.INTERNAL, "broken"),
    (tf.errors.UnknownError(None, None, "odd"), grpc.StatusCode.UNKNOWN, "odd"),
    (ValueError("not a TensorFlow error"), grpc.StatusCode.INTERNAL, "not a TensorFlow error"),
])
def test_tensorflow_errors_map_to_tensorflow_serving_status_codes(error, code, message):
    from sassnet_tf.serving.servable import op_error_status

    assert op_error_status(error) == (code, message)
