"""TensorFlow Serving's REST routes on the local server, with urllib: status, metadata, predict (row and columnar),
errors as ``{"error": ...}`` with the right HTTP status, and the JSON conversions."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.rest_gateway import array_to_json, json_to_array
from tests.serving.conftest import labels_match, sigmoid


def call(server, path: str, body=None, raw: bytes = None):
    """(HTTP status, parsed JSON answer)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode("utf-8"))
    request = urllib.request.Request(server.rest_url + path, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_good_predict(server, rng) -> None:
    image = rng.normal(size=(6, 5, 4)).astype(np.float32)
    status, payload = call(server, "/v1/models/sassnet:predict", {"inputs": {"image": image.tolist()}})
    assert status == 200, payload
    np.testing.assert_allclose(np.asarray(payload["outputs"]["probability"]), sigmoid(image), rtol=1e-5)
    assert labels_match(np.asarray(payload["outputs"]["label"]), image)


def test_status_route(server):
    assert call(server, "/v1/models/sassnet") == (
        200,
        {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    status, payload = call(server, "/v1/models/sassnet/versions/1")
    assert status == 200 and payload["model_version_status"][0]["version"] == "1"
    status, payload = call(server, "/v1/models/sassnet/versions/4")
    assert status == 404 and "4" in payload["error"]
    status, payload = call(server, "/v1/models/other")
    assert status == 404 and "other" in payload["error"]


def test_metadata_route(server):
    status, payload = call(server, "/v1/models/sassnet/metadata")
    assert status == 200
    assert payload["model_spec"] == {"name": "sassnet", "signature_name": "", "version": "1"}
    signatures = payload["metadata"]["signature_def"]["signature_def"]
    image = signatures["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "-1", "-1"]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert set(signatures["serving_default"]["outputs"]) == {"probability", "label", "sdm"}


def test_predict_columnar_row_and_version_routes(server, rng):
    image = rng.normal(size=(6, 5, 4)).astype(np.float32)
    status, payload = call(server, "/v1/models/sassnet/versions/1:predict",
                           {"signature_name": "serving_default", "inputs": {"image": image.tolist()}})
    assert status == 200
    outputs = payload["outputs"]
    np.testing.assert_allclose(np.asarray(outputs["probability"], np.float32), sigmoid(image), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs["sdm"], np.float32), np.tanh(image), rtol=1e-5, atol=1e-6)

    # Row format: instances stack along the first axis; answers come back one row per instance.
    status, payload = call(server, "/v1/models/sassnet:predict", {"instances": image.tolist()})
    assert status == 200 and len(payload["predictions"]) == 6
    np.testing.assert_allclose(np.asarray(payload["predictions"][2]["probability"]), sigmoid(image[2]), rtol=1e-6)
    status, payload = call(server, "/v1/models/sassnet:predict",
                           {"instances": [{"image": row} for row in image.tolist()]})
    assert status == 200 and np.asarray(payload["predictions"][5]["label"]).shape == (5, 4)

    # A single-output signature answers its value directly (TF Serving's rule); strings as text.
    status, payload = call(server, "/v1/models/sassnet:predict",
                           {"signature_name": "metadata", "inputs": {"format": "json"}})
    assert status == 200 and json.loads(payload["outputs"])["threshold"] == 0.5
    status, payload = call(server, "/v1/models/sassnet:predict",
                           {"signature_name": "metadata",
                            "inputs": {"format": {"b64": base64.b64encode(b"json").decode()}}})
    assert status == 200 and isinstance(payload["outputs"], str)
    # A scalar input has no rows: the row format batches it to shape [1], which the signature refuses.
    status, payload = call(server, "/v1/models/sassnet:predict", {"signature_name": "metadata", "instances": ["json"]})
    assert status == 400 and "rank 0" in payload["error"]


@pytest.mark.parametrize(
    "path, body, raw, http_status, fragment",
    [
        ("/v1/models/nope:predict", {"inputs": {"image": [[[1.0]]]}}, None, 404, "nope"),
        ("/v1/models/sassnet/versions/3:predict", {"inputs": {"image": [[[1.0]]]}}, None, 404, "3"),
        ("/v1/models/sassnet/labels/canary:predict", {"inputs": {"image": [[[1.0]]]}}, None, 404, "canary"),
        ("/v1/models/sassnet:predict", {"signature_name": "zzz", "inputs": [[[1.0]]]}, None, 404, "zzz"),
        ("/v1/models/sassnet:predict", {"inputs": {"image": [[1.0, 2.0]]}}, None, 400, "rank 2"),
        ("/v1/models/sassnet:predict", {"inputs": {"image": [[["a"]]]}}, None, 400, "strings"),
        ("/v1/models/sassnet:predict", {"inputs": {"image": [[[1.0], [2.0, 3.0]]]}}, None, 400, "rectangular"),
        ("/v1/models/sassnet:predict", {"inputs": {"image": [[[1.0]]], "x": [1]}}, None, 400, "unexpected"),
        ("/v1/models/sassnet:predict", None, b'{"inputs": {"image": [[[NaN]]]}}', 400, "non-finite"),
        ("/v1/models/sassnet:predict", None, b"{not json", 400, "JSON"),
        ("/v1/models/sassnet:predict", {"inputs": [[[1.0]]], "instances": [[[1.0]]]}, None, 400, "exactly one"),
        ("/v1/models/sassnet:predict", {"signature_name": "segment_patches", "inputs": [[[[[0.0]]]]]}, None, 400,
         "[-1,16,16,16,1]"),
        ("/v1/models/sassnet:predict", {"signature_name": "checked", "inputs": [1.0, 300.0]}, None, 400, "below 100"),
        ("/v1/models/sassnet:classify", {"examples": []}, None, 501, "predict"),
        ("/v2/models/sassnet", None, None, 404, "malformed"),
    ],
)
def test_bad_rest_requests_then_a_good_one(server, rng, path, body, raw, http_status, fragment):
    status, payload = call(server, path, body, raw)
    assert status == http_status, payload
    assert fragment in payload["error"], payload
    assert_good_predict(server, rng)


@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/v1/models/sassnet:predict", 405, "POST"), ("PUT", "/v1/models/sassnet:predict", 405, "POST"),
    ("DELETE", "/v1/models/sassnet", 405, "GET"), ("PATCH", "/v1/models/sassnet/metadata", 405, "GET"),
    ("DELETE", "/nothing/here", 404, None),
])
def test_every_other_method_is_a_json_error(server, rng, method, path, status, allow):
    request = urllib.request.Request(server.rest_url + path, method=method, data=b"{}" if method != "GET" else None)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == status and info.value.headers.get("Allow") == allow
    assert info.value.headers["Content-Type"] == "application/json"
    assert method in json.loads(info.value.read())["error"]
    assert_good_predict(server, rng)


def test_wrong_method_and_oversized_body(server, rng):
    request = urllib.request.Request(server.rest_url + "/v1/models/sassnet:predict", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 405
    big = {"inputs": {"image": np.zeros((60, 60, 60)).tolist()}}  # ~1.3 MB of JSON > the fixture's 1 MiB
    status, payload = call(server, "/v1/models/sassnet:predict", big)
    assert status == 413 and "limit" in payload["error"]
    assert_good_predict(server, rng)


def test_json_conversions():
    assert json_to_array("x", [[1, 2], [3, 4]], tf.float32).dtype == np.float32
    assert json_to_array("x", [1, 2], tf.uint8).tolist() == [1, 2]
    for value, dtype, fragment in (
        ([1.5], tf.int32, "non-integer"),
        ([300], tf.uint8, "range"),
        ([1], tf.bool, "integers"),
        ([[1], [2, 3]], tf.float32, "rectangular"),
        ([1.0], tf.string, "strings"),
        ({"b64": "!!"}, tf.string, "base64"),
    ):
        with pytest.raises(ServingError, match=fragment):
            json_to_array("x", value, dtype)
    strings = json_to_array("x", [["a", {"b64": base64.b64encode(b"\xff").decode()}]], tf.string)
    assert strings.shape == (1, 2) and strings[0, 1] == b"\xff"
    assert array_to_json("text", np.array([b"ok", b"\xff"], dtype=object)) == ["ok", {"b64": "/w=="}]
    assert array_to_json("blob_bytes", np.array(b"ok", dtype=object)) == {"b64": "b2s="}
    assert array_to_json("x", np.array([1.5], dtype=tf.bfloat16.as_numpy_dtype)) == [1.5]
