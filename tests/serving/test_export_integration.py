"""A real exported model (V-Net n_filters=2, patch 32x32x16, via sassnet_tf.export) served locally and segmented
with the client: the server replays its warm-up file, reports the contract's signatures, and the client's mask
equals the SavedModel's own answer in process."""

from __future__ import annotations

import json

import grpc
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from sassnet_tf.serving.client import SegmentationClient, main, zscore
from sassnet_tf.serving.server import LocalModelServer

SHAPE = (40, 36, 24)


@pytest.fixture(scope="module")
def exported_base(tmp_path_factory) -> str:
    keras = pytest.importorskip("keras")
    from sassnet_tf.export import export_saved_model
    from sassnet_tf.models import build_vnet

    keras.utils.set_random_seed(3)
    vnet = build_vnet(n_filters=2)
    base = tmp_path_factory.mktemp("exported") / "sassnet"
    export_saved_model(
        vnet, str(base), 1, patch_size=(32, 32, 16), stride=(16, 16, 8), threshold=0.5, gaussian=False,
        batch_size=2, preprocessing={"normalize": "zscore", "downsample": 1}, config=None,
    )
    return str(base)


def test_exported_model_served_and_segmented(exported_base, tmp_path, caplog):
    caplog.set_level("INFO", logger="sassnet_tf.serving")
    rng = np.random.default_rng(5)
    image = (100.0 + 20.0 * rng.normal(size=SHAPE)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(scan))

    with LocalModelServer(exported_base, port=0, rest_port=0, poll_seconds=0) as server:
        assert "replayed 2 warm-up request(s)" in caplog.text

        channel = grpc.insecure_channel(server.grpc_target)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "sassnet"
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        serving = signature_map.signature_def["serving_default"]
        assert list(serving.inputs) == ["image"] and set(serving.outputs) == {"probability", "label", "sdm"}
        assert serving.outputs["label"].dtype == tf.uint8.as_datatype_enum
        patches = signature_map.signature_def["segment_patches"].inputs["patches"]
        assert [d.size for d in patches.tensor_shape.dim] == [-1, 32, 32, 16, 1]
        channel.close()

        with SegmentationClient(server.grpc_target, timeout=120) as client:
            meta = client.metadata()
            assert meta["patch_size"] == [32, 32, 16] and meta["preprocessing"]["downsample"] == 1
            result = client.segment(image)
        out = tmp_path / "mask.nii.gz"
        assert main(["--server", server.grpc_target, "--input", str(scan), "--output", str(out),
                     "--timeout", "120"]) == 0
        # The same SavedModel called in process (the server's loaded copy: loading it again costs seconds).
        reference = server.manager.resolve().run("serving_default", {"image": zscore(image)})

    np.testing.assert_allclose(result["probability"], reference["probability"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result["label"], reference["label"])
    mask = nib.load(str(out))
    np.testing.assert_allclose(mask.affine, affine)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), reference["label"])
    assert json.loads(json.dumps(meta))["threshold"] == 0.5


@pytest.mark.parametrize("shape", [(0, 48, 32), (48, 48, 0)])
def test_a_zero_size_volume_is_invalid_argument_and_the_server_keeps_serving(exported_base, shape):
    """The exported graph asserts every axis has a voxel: TensorFlow's InvalidArgumentError is the request's fault,
    INVALID_ARGUMENT over gRPC and 400 over REST, with the message and the shape, never INTERNAL with a graph dump."""
    import urllib.error
    import urllib.request

    from tensorflow_serving.apis import predict_pb2

    good = np.zeros((32, 32, 16), np.float32)
    with LocalModelServer(exported_base, port=0, rest_port=0, poll_seconds=0) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(image):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "sassnet"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
            return stub.Predict(request, timeout=60)

        with pytest.raises(grpc.RpcError) as info:
            predict(np.zeros(shape, np.float32))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        details = info.value.details()
        assert "every axis needs at least one voxel" in details and " ".join(map(str, shape)) in details
        assert "{{node" not in details
        assert predict(good).outputs["label"].tensor_shape.dim[0].size == 32  # still serving

        # JSON nests lists, so an empty axis can only be the last one ([] at the top would be rank 1)
        body = json.dumps({"inputs": {"image": np.zeros((*shape[1:], 0) if not shape[0] else shape).tolist()}})
        request = urllib.request.Request(f"{server.rest_url}/v1/models/sassnet:predict", data=body.encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(request, timeout=60)
        assert http.value.code == 400
        assert "every axis needs at least one voxel" in json.loads(http.value.read())["error"]
        assert predict(good).outputs["probability"].tensor_shape.dim[2].size == 16
        channel.close()
