"""TensorFlow Serving's documented REST API over the same models as the gRPC front end.

Routes (``/v1/models/<name>`` optionally followed by ``/versions/<n>`` or ``/labels/<label>``):

- ``GET  .../<name>``            -> ``{"model_version_status": [...]}`` (GetModelStatus as JSON)
- ``GET  .../<name>/metadata``   -> ``{"model_spec": ..., "metadata": {"signature_def": ...}}``
- ``POST .../<name>:predict``    -> body ``{"signature_name"?, "instances": [...]}`` (row format) answered with
  ``{"predictions": [...]}``, or ``{"signature_name"?, "inputs": ...}`` (columnar) answered with ``{"outputs": ...}``.

Errors answer ``{"error": "<message>"}`` with the HTTP status of the canonical code (404 NOT_FOUND, 400
INVALID_ARGUMENT, 500 INTERNAL ...). JSON numbers are converted to the signature's dtype; strings are UTF-8 text or
``{"b64": "..."}``; string outputs whose name ends in ``_bytes`` are returned base64-encoded, as TF Serving does.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.serving_core import SIGNATURE_DEF_FIELD, ServingCore

LOG = logging.getLogger("sassnet_tf.serving")

_DRAIN_LIMIT = 64 << 20  # bytes of an over-limit body read and discarded before answering 413

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:predict|:classify|:regress)?/?$"
)


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_strings(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v, name) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise _bad(
                f"input '{name}': a binary string must be {{\"b64\": \"<base64>\"}}, got {json.dumps(value)[:80]}"
            )
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise _bad(f"input '{name}': invalid base64 in {{\"b64\": ...}}") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _bad(f"input '{name}' is a string tensor: expected JSON strings, got {type(value).__name__}")


def json_to_array(name: str, value: Any, dtype: tf.DType) -> np.ndarray:
    """Convert a JSON value (nested lists) to an array of the signature's dtype, refusing lossy conversions.

    Args:
        name: the input's name (for messages).
        value: the parsed JSON value.
        dtype: the signature input's dtype.
    """
    if dtype == tf.string:
        decoded = _decode_strings(value, name)
        array = np.empty((), dtype=object)
        if isinstance(decoded, list):
            try:
                array = np.array(decoded, dtype=object)
                ok = all(isinstance(v, bytes) for v in array.ravel())
            except ValueError:
                ok = False
            if not ok:
                raise _bad(f"input '{name}': nested lists of strings must be rectangular")
        else:
            array[()] = decoded
        return array
    try:
        raw = np.asarray(value)
    except ValueError:
        raise _bad(f"input '{name}': nested lists must be rectangular (same length at each depth)") from None
    kind = raw.dtype.kind
    if kind == "O":
        raise _bad(f"input '{name}': nested lists must be rectangular numbers, got ragged or mixed values")
    if dtype == tf.bool:
        allowed = "b"
    elif dtype.is_integer:
        allowed = "iub"
    elif dtype.is_floating:
        allowed = "iuf"
    else:
        raise _bad(f"input '{name}': dtype {dtype.name} cannot be given as JSON")
    if raw.size and kind not in allowed:
        got = {"U": "strings", "f": "non-integer numbers", "b": "booleans", "i": "integers"}.get(kind, raw.dtype.name)
        raise _bad(f"input '{name}' must be {dtype.name}, got {got}")
    if dtype.is_integer and raw.size and kind in "iu":
        info = np.iinfo(dtype.as_numpy_dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise _bad(f"input '{name}': values outside the {dtype.name} range [{info.min}, {info.max}]")
    return raw.astype(dtype.as_numpy_dtype)


def array_to_json(name: str, array: np.ndarray) -> Any:
    """An output array as JSON-ready nested lists (strings as text, or base64 for ``*_bytes`` outputs)."""
    if array.dtype.kind in "OS":
        as_b64 = name.endswith("_bytes")

        def text(item: bytes) -> Any:
            if not as_b64:
                try:
                    return item.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(item).decode("ascii")}

        if array.ndim == 0:
            return text(array.item())
        return np.vectorize(text, otypes=[object])(array).tolist()
    if array.dtype.kind == "f" and array.dtype not in (np.float16, np.float32, np.float64):
        array = array.astype(np.float32)  # bfloat16 and friends: tolist() gives non-JSON objects
    return array.tolist()


def decode_instances(body: Mapping[str, Any], signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    """The inputs of a predict body, in row (``instances``) or columnar (``inputs``) format."""
    names = list(signature.inputs)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise _bad('"instances" must be a JSON list (one element per batch row)')
        named = bool(rows) and all(isinstance(r, dict) and set(r) != {"b64"} for r in rows)
        if named:
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise _bad('every element of "instances" must name the same inputs')
            columns = {k: [r[k] for r in rows] for k in keys}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise _bad(
                f'the signature has inputs {sorted(names)}: each element of "instances" must be an object naming them'
            )
    else:
        value = body["inputs"]
        if isinstance(value, dict) and set(value) != {"b64"}:
            columns = dict(value)
        elif len(names) == 1:
            columns = {names[0]: value}
        else:
            raise _bad(f'the signature has inputs {sorted(names)}: "inputs" must be an object naming them')
    result = {}
    for key, value in columns.items():
        # Unknown names are kept as float arrays so validation reports them with the expected set.
        dtype = tf.dtypes.as_dtype(signature.inputs[key].dtype) if key in signature.inputs else tf.float32
        result[key] = json_to_array(key, value, dtype)
    return result


class _Handler(BaseHTTPRequestHandler):
    server_version = "sassnet-tf-serving"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        LOG.debug("rest %s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        gateway: RestGateway = self.server.gateway  # type: ignore[attr-defined]
        try:
            match = _ROUTE.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"malformed request: {method} {self.path}")
            action = match.group("action") or ""
            expected = "POST" if action.startswith(":") else "GET"
            if method != expected:
                self.close_connection = True
                self._send(405, {"error": f"{method} not allowed on {self.path}; use {expected}"}, {"Allow": expected})
                return
            version = int(match.group("version")) if match.group("version") else None
            payload = gateway.handle(match.group("name"), version, match.group("label") or "", action, self)
            self._send(200, payload)
        except ServingError as err:
            self.close_connection = True
            self._send(err.http_status, {"error": err.message})
        except Exception as err:  # keep serving; report what broke
            LOG.exception("rest %s %s failed", method, self.path)
            self.close_connection = True
            self._send(500, {"error": f"{type(err).__name__}: {err}"})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    # Methods no route takes: a JSON 405 (404 for an unknown path) like every other error, not http.server's HTML 501.
    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")

    def read_json_body(self, max_bytes: int) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _bad("a POST body needs a Content-Length header")
        if int(length) > max_bytes:
            # Drain a moderately large body so the client can read the answer instead of a reset connection.
            remaining = int(length) if int(length) <= max_bytes + _DRAIN_LIMIT else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body of {int(length)} bytes is larger than the server's limit of {max_bytes} bytes",
                http_status=413,
            )
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise _bad(f"request body is not valid JSON: {err}") from None


class RestGateway:
    """The REST front end on its own port, one thread per connection.

    Args:
        core: the served models.
        host: interface to bind.
        port: TCP port (0 = any free port; see ``port`` after ``start``).
        max_body_bytes: largest accepted request body.
        ssl_context: a server-side ``ssl.SSLContext`` to serve HTTPS, or None for plain HTTP.
    """

    def __init__(
        self, core: ServingCore, host: str, port: int, max_body_bytes: int, ssl_context: Optional[ssl.SSLContext] = None
    ):
        self.core = core
        self.max_body_bytes = int(max_body_bytes)
        try:
            self._httpd = ThreadingHTTPServer((host, int(port)), _Handler)
        except OSError as err:
            raise OSError(f"cannot bind the REST port {host}:{port}: {err.strerror or err}") from None
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.gateway = self  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def handle(self, name: str, version: Optional[int], label: str, action: str, request: _Handler) -> Any:
        """Answer one routed request with a JSON-ready value; raise ServingError to fail it."""
        if action == "":
            if label:
                version = self.core.manager(name).resolve(None, label).version
            status = self.core.status(name, version)
            return json_format.MessageToDict(
                status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        if action == "/metadata":
            servable, signature_defs = self.core.metadata(name, version, label, [SIGNATURE_DEF_FIELD])
            return {
                "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {
                    SIGNATURE_DEF_FIELD: json_format.MessageToDict(signature_defs, preserving_proto_field_name=True)
                },
            }
        if action != ":predict":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"{action[1:]} is not implemented; use :predict")
        body = request.read_json_body(self.max_body_bytes)
        if not isinstance(body, dict):
            raise _bad("the predict body must be a JSON object")
        if ("instances" in body) == ("inputs" in body):
            raise _bad('the predict body needs exactly one of "instances" (row format) or "inputs" (columnar format)')
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _bad('"signature_name" must be a string')
        _, _, outputs = self.core.predict(
            "rest", name, version, label, signature_name, lambda signature: decode_instances(body, signature)
        )
        if "inputs" in body:
            if len(outputs) == 1:
                return {"outputs": array_to_json(*next(iter(outputs.items())))}
            return {"outputs": {k: array_to_json(k, v) for k, v in outputs.items()}}
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise _bad(
                f"row format (\"instances\") needs outputs sharing their first dimension, got shapes "
                f"{ {k: list(v.shape) for k, v in outputs.items()} }; use the columnar \"inputs\" format"
            )
        rows = next(iter(sizes.values()))
        if len(outputs) == 1:
            key, value = next(iter(outputs.items()))
            return {"predictions": array_to_json(key, value)}
        columns = {k: array_to_json(k, v) for k, v in outputs.items()}
        return {"predictions": [{k: columns[k][i] for k in columns} for i in range(rows)]}
