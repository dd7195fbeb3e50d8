"""Segment a scan with a served SASSNet model over gRPC (or REST), using only TensorFlow Serving's official API.

    sassnet-client --server localhost:8500 --model sassnet --input scan.nii.gz --output mask.nii.gz
                   [--probability-output P.nii.gz] [--sdm-output S.nii.gz] [--nms] [--tls-ca ca.pem]
                   [--rest] [--timeout 600] [--retries 3] [--signature serving_default] [--version N]

Steps: read the scan (NIfTI or an LA ``.h5``); ask the model's ``metadata`` signature for its preprocessing and
threshold; z-score the volume (a NIfTI scan; an LA ``.h5`` is already normalised by its release, see
``--normalize``); downsample by the model's factor; call Predict (``serving_default``) with a deadline, retrying with
exponential backoff while the server is UNAVAILABLE; upsample the probability back to the scan's grid and threshold
it; optionally keep the largest connected component; write the mask (uint8), and optionally the probability and
SDM, with the scan's affine and NIfTI header. Works unchanged against ``tensorflow_model_server``.

Exit codes: 0 success; 2 for a problem reported in one line (unreadable input, server unreachable after the
retries, unknown model / version / signature, deadline exceeded, server-side failure).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping, Optional, Sequence

import grpc
import numpy as np

from sassnet_tf.data.io import zscore  # one definition, shared with the NIfTI dataset reader
from sassnet_tf.serving.errors import ServingError

LOG = logging.getLogger("sassnet_tf.serving.client")

DEFAULT_SIGNATURE = "serving_default"
METADATA_SIGNATURE = "metadata"
NORMALIZE_CHOICES = ("auto", "zscore", "none")
_HTTP_TO_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _tensor_proto(array: np.ndarray):
    import tensorflow as tf

    return tf.make_tensor_proto(array)


def _make_ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(proto)


class SegmentationClient:
    """A client of a served segmentation model (gRPC by default, or TF Serving's REST API).

    Args:
        server: ``host:port`` of the gRPC (or, with ``rest``, the REST) endpoint.
        model: the model name.
        signature: the volume signature (``serving_default``).
        version: a specific model version, or None for the newest.
        timeout: deadline of each call, in seconds.
        retries: how many times a call is retried while the server is UNAVAILABLE (not on other errors).
        backoff_seconds: first wait between attempts, doubled after each retry.
        tls_ca: PEM file of the CA that signed the server's certificate: use TLS (gRPC) or HTTPS (REST).
        rest: use the REST API instead of gRPC.
        max_message_mb: gRPC send/receive limit in MiB (a volume is far above gRPC's 4 MiB default).

    Example:
        >>> with SegmentationClient("localhost:8500", "sassnet") as client:
        ...     result = client.segment(scan)  # raw float volume [H, W, D]
        >>> result["label"].shape == scan.shape
        True
    """

    def __init__(
        self,
        server: str = "localhost:8500",
        model: str = "sassnet",
        signature: str = DEFAULT_SIGNATURE,
        version: Optional[int] = None,
        timeout: float = 600.0,
        retries: int = 3,
        backoff_seconds: float = 1.0,
        tls_ca: Optional[str] = None,
        rest: bool = False,
        max_message_mb: float = 512,
    ):
        if int(retries) < 0:
            raise ValueError(f"retries: expected an integer >= 0, got {retries!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.server = server
        self.model = model
        self.signature = signature
        self.version = None if version is None else int(version)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff_seconds = float(backoff_seconds)
        self.rest = bool(rest)
        self.max_message_bytes = min(int(max_message_mb * (1 << 20)), (1 << 31) - 1)
        self._root_certificates = None
        self._ssl_context = None
        if tls_ca is not None:
            try:
                with open(tls_ca, "rb") as fh:
                    self._root_certificates = fh.read()
                if self.rest:
                    self._ssl_context = ssl.create_default_context(cafile=tls_ca)
            except (OSError, ssl.SSLError) as err:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"--tls-ca {tls_ca}: cannot read the CA file: {err}"
                ) from None
        self._channel: Optional[grpc.Channel] = None
        self._metadata: Optional[dict] = None

    # -- transport -----------------------------------------------------------------------------------------
    def _stub(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self._channel is None:
            options = [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                # Own subchannels: a channel re-created for a retry then connects at once instead of inheriting
                # the shared subchannel's reconnect backoff from the failed attempt.
                ("grpc.use_local_subchannel_pool", 1),
            ]
            if self._root_certificates is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
                self._channel = grpc.secure_channel(self.server, credentials, options=options)
            else:
                self._channel = grpc.insecure_channel(self.server, options=options)
        return prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        """Close the gRPC channel (a later call opens a new one)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> "SegmentationClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; on UNAVAILABLE wait (doubling) and retry on a fresh connection, up to ``retries`` times."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServingError as err:
                if err.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                if attempt == self.retries:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"server {self.server} unreachable after {self.retries + 1} attempt(s): {err.message}",
                    ) from None
                delay = self.backoff_seconds * (2**attempt)
                LOG.warning("server %s unavailable (%s); retry %d/%d in %.1f s", self.server, err.message,
                            attempt + 1, self.retries, delay)
                time.sleep(delay)
                self.close()  # a fresh channel connects at once instead of waiting out gRPC's reconnect backoff
        raise AssertionError("unreachable")

    def _grpc_predict(self, inputs: Mapping[str, np.ndarray], signature: str) -> dict[str, np.ndarray]:
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(_tensor_proto(array))
        try:
            response = self._stub().Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self._grpc_error(err, signature) from None
        return {name: _make_ndarray(proto) for name, proto in response.outputs.items()}

    def _grpc_error(self, err: grpc.RpcError, signature: str) -> ServingError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else "") or str(err)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            details = f"no answer within the {self.timeout:g} s deadline (--timeout): {details}"
        where = f"server {self.server}, model '{self.model}', signature '{signature}'"
        return ServingError(code, f"{where}: {code.name}: {details}")

    def _rest_url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{scheme}://{self.server}/v1/models/{self.model}{version}:predict"

    def _rest_predict(
        self, inputs: Mapping[str, np.ndarray], signature: str, single_output: str
    ) -> dict[str, np.ndarray]:
        def to_json(array: np.ndarray) -> Any:
            if array.dtype.kind in "OS":
                def text(item: bytes) -> Any:
                    try:
                        return item.decode("utf-8")
                    except UnicodeDecodeError:
                        return {"b64": base64.b64encode(item).decode("ascii")}

                return text(array.item()) if array.ndim == 0 else np.vectorize(text, otypes=[object])(array).tolist()
            return array.tolist()

        body = json.dumps(
            {"signature_name": signature, "inputs": {k: to_json(np.asarray(v)) for k, v in inputs.items()}}
        )
        request = urllib.request.Request(
            self._rest_url(), data=body.encode("utf-8"), headers={"Content-Type": "application/json"}, method="POST"
        )
        where = f"server {self.server} (REST), model '{self.model}', signature '{signature}'"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl_context) as answer:
                payload = json.loads(answer.read())
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", err.reason)
            except ValueError:
                message = str(err.reason)
            code = _HTTP_TO_CODE.get(err.code, grpc.StatusCode.INTERNAL if err.code >= 500 else grpc.StatusCode.UNKNOWN)
            raise ServingError(code, f"{where}: HTTP {err.code} {code.name}: {message}") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"{where}: no answer within {self.timeout:g} s"
                ) from None
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{where}: {reason}") from None
        except (ConnectionError, TimeoutError) as err:  # reset while reading the answer
            code = grpc.StatusCode.DEADLINE_EXCEEDED if isinstance(err, TimeoutError) else grpc.StatusCode.UNAVAILABLE
            raise ServingError(code, f"{where}: {err}") from None
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if outputs is None:
            raise ServingError(grpc.StatusCode.INTERNAL, f"{where}: answer has no \"outputs\": {str(payload)[:200]}")
        if not isinstance(outputs, dict):  # TF Serving returns a single output's value directly
            outputs = {single_output: outputs}
        return {name: np.asarray(value) for name, value in outputs.items()}

    # -- API -----------------------------------------------------------------------------------------------
    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: Optional[str] = None, single_output: str = "output"
    ) -> dict[str, np.ndarray]:
        """Run a signature on arrays; retries while UNAVAILABLE. Raises ServingError.

        Args:
            inputs: input name -> array.
            signature: signature name (default: the client's ``signature``).
            single_output: REST only: the name to give a single-output signature's value (TF Serving returns it
                without its name).
        """
        signature = signature or self.signature
        if self.rest:
            return self._with_retries(lambda: self._rest_predict(inputs, signature, single_output))
        return self._with_retries(lambda: self._grpc_predict(inputs, signature))

    def metadata(self) -> dict:
        """The model's metadata (``metadata`` signature, format json): preprocessing, threshold, patch size..."""
        if self._metadata is None:
            outputs = self.predict(
                {"format": np.array(b"json", dtype=object)}, METADATA_SIGNATURE, single_output="json"
            )
            raw = outputs.get("json")
            if raw is None:
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    f"model '{self.model}': the metadata signature answered {sorted(outputs)}, expected 'json'",
                )
            value = raw.item() if isinstance(raw, np.ndarray) else raw
            try:
                self._metadata = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
            except (ValueError, UnicodeDecodeError) as err:
                raise ServingError(
                    grpc.StatusCode.INTERNAL, f"model '{self.model}': metadata is not JSON: {err}"
                ) from None
            if not isinstance(self._metadata, dict):
                raise ServingError(grpc.StatusCode.INTERNAL, f"model '{self.model}': metadata is not a JSON object")
        return self._metadata

    def preprocessing(self) -> tuple[str, int, float]:
        """(normalize, downsample, threshold) from the metadata, validated by `InferenceSettings.from_metadata`
        (the rules every other reader of the settings uses)."""
        from sassnet_tf.inference.settings import InferenceSettings, InferenceSettingsError

        try:
            settings = InferenceSettings.from_metadata(self.metadata())
        except InferenceSettingsError as err:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"model '{self.model}': metadata {err}") from None
        return settings.normalize, settings.downsample, settings.threshold

    def segment(self, image: np.ndarray, normalize: bool = True) -> dict[str, np.ndarray]:
        """Segment a volume: preprocess as the model asks, predict, bring the result back to the input's grid.

        Args:
            image: the scan, ``[H, W, D]``, any real dtype.
            normalize: apply the model's normalisation (z-score). False for a volume already normalised the way
                the model was trained (an LA ``.h5``).

        Returns:
            ``{"probability": float32, "label": uint8, "sdm": float32}``, each ``[H, W, D]``.
        """
        from sassnet_tf.data.io import downsample_volume
        from sassnet_tf.inference.predictor import to_input_grid

        image = np.asarray(image)
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(f"segment: expected a non-empty 3-D volume [H, W, D], got shape {image.shape}")
        method, factor, threshold = self.preprocessing()
        volume = zscore(image) if normalize and method == "zscore" else np.asarray(image, dtype=np.float32)
        if factor > 1:
            volume = downsample_volume(volume, factor)
        outputs = self.predict({"image": np.ascontiguousarray(volume, dtype=np.float32)})
        missing = sorted({"probability", "label", "sdm"} - set(outputs))
        if missing:
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"model '{self.model}', signature '{self.signature}': outputs {sorted(outputs)} lack {missing}",
            )
        probability = np.asarray(outputs["probability"], dtype=np.float32)
        sdm = np.asarray(outputs["sdm"], dtype=np.float32)
        if probability.shape != volume.shape or sdm.shape != volume.shape:
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"model '{self.model}': outputs of shape {probability.shape} / {sdm.shape} "
                f"for an input of {volume.shape}",
            )
        return to_input_grid(probability, sdm, outputs["label"], image.shape, factor, threshold)


# --------------------------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sassnet-client",
        description="Segment a scan with a model served by TensorFlow Serving (or sassnet-serve).",
    )
    parser.add_argument("--server", help="host:port (default localhost:8500, or localhost:8501 with --rest)")
    parser.add_argument("--model", default="sassnet", help="model name (default sassnet)")
    parser.add_argument("--input", required=True, help="scan: NIfTI (.nii/.nii.gz) or LA HDF5 (.h5)")
    parser.add_argument("--output", required=True, help="mask to write (.nii/.nii.gz, uint8)")
    parser.add_argument("--probability-output", help="also write the probability map (.nii.gz, float32)")
    parser.add_argument("--sdm-output", help="also write the signed distance map (.nii.gz, float32)")
    parser.add_argument("--nms", action="store_true", help="keep only the largest connected component")
    parser.add_argument("--tls-ca", help="PEM CA certificate: connect with TLS (HTTPS with --rest)")
    parser.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    parser.add_argument("--timeout", type=float, default=600.0, help="deadline per call in seconds (default 600)")
    parser.add_argument("--retries", type=int, default=3, help="retries while the server is unavailable (default 3)")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE, help="volume signature (default serving_default)")
    parser.add_argument("--version", type=int, help="model version (default: the newest served)")
    parser.add_argument("--max-message-mb", type=float, default=512, help="gRPC message limit in MiB (default 512)")
    parser.add_argument(
        "--normalize", choices=NORMALIZE_CHOICES, default="auto",
        help="auto (default): the model's z-score for NIfTI scans, none for LA .h5 files (already normalised); "
        "zscore / none force it",
    )
    return parser


def _fail(message: str) -> int:
    print(f"sassnet-client: error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sassnet-client``; returns the exit code (0 success, 2 error reported in one line)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    named = [(flag, path) for flag, path in (("--output", args.output), ("--probability-output",
             args.probability_output), ("--sdm-output", args.sdm_output)) if path is not None]
    for i, (flag, path) in enumerate(named):  # a result must never replace the scan or another result
        if not path.lower().endswith((".nii", ".nii.gz")):
            return _fail(f"{flag} {path}: expected a .nii or .nii.gz file name")
        if os.path.exists(path) and os.path.exists(args.input) and os.path.samefile(path, args.input):
            return _fail(f"{flag} {path}: is the --input scan itself (expected a new file name)")
        for other_flag, other in named[:i]:
            if os.path.abspath(path) == os.path.abspath(other):
                return _fail(f"{flag} {path}: the same file as {other_flag} (expected a file name of its own)")
    if args.retries < 0 or not args.timeout > 0:
        return _fail(f"--retries must be >= 0 and --timeout > 0 (got {args.retries}, {args.timeout})")
    from sassnet_tf.data.errors import DataError
    from sassnet_tf.data.io import nifti_header, output_header, read_case, write_nifti

    try:
        case = read_case(args.input, read_label=False)
        header = nifti_header(args.input)
    except (DataError, OSError) as err:
        return _fail(f"cannot read --input {args.input}: {err}")
    except Exception as err:  # nibabel's own exception types for a damaged header
        return _fail(f"cannot read --input {args.input}: {type(err).__name__}: {err}")
    normalize = args.normalize == "zscore" or (args.normalize == "auto" and header is not None)
    server = args.server or ("localhost:8501" if args.rest else "localhost:8500")
    start = time.perf_counter()
    try:
        with SegmentationClient(
            server, args.model, signature=args.signature, version=args.version, timeout=args.timeout,
            retries=args.retries, tls_ca=args.tls_ca, rest=args.rest, max_message_mb=args.max_message_mb,
        ) as client:
            result = client.segment(case.image, normalize=normalize)
    except ServingError as err:
        return _fail(err.message)
    label = result["label"]
    if args.nms:
        from sassnet_tf.inference.postprocess import largest_connected_component

        label = largest_connected_component(label)
    outputs = [(args.output, label.astype(np.uint8))]
    if args.probability_output:
        outputs.append((args.probability_output, result["probability"]))
    if args.sdm_output:
        outputs.append((args.sdm_output, result["sdm"]))
    try:
        for path, array in outputs:
            write_nifti(path, array, case.affine, header=output_header(header, array.dtype))
    except (DataError, OSError) as err:
        return _fail(f"cannot write the output: {err}")
    seconds = time.perf_counter() - start
    print(
        f"{args.input}: {label.shape} -> {args.output} (foreground {100.0 * float(label.mean()):.2f} %, "
        f"{seconds:.1f} s via {'REST' if args.rest else 'gRPC'} {server})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
