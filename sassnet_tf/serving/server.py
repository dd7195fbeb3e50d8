"""A local TensorFlow-Serving-compatible model server: gRPC PredictionService + ModelService, and the REST API.

It serves any SavedModel's signatures, from numbered version folders under a base path, like
``tensorflow_model_server --model_base_path=... --model_name=...`` (no such binary exists for every machine; this one
needs only the Python packages). Clients written against the official protos and REST routes work unchanged
against either.

    sassnet-serve --model-base-path models/sassnet [--model-name sassnet] [--port 8500] [--rest-port 8501]
                  [--host 127.0.0.1] [--poll-seconds 5] [--max-message-mb 512] [--workers 4]

Python:

    with LocalModelServer("models/sassnet", port=0, rest_port=0) as server:
        channel = grpc.insecure_channel(server.grpc_target)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from concurrent import futures
from typing import Mapping, Optional, Sequence

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from sassnet_tf.serving.model_manager import ModelManager, list_versions
from sassnet_tf.serving.model_status_servicer import ModelStatusServicer
from sassnet_tf.serving.prediction_servicer import PredictionServicer
from sassnet_tf.serving.rest_gateway import RestGateway
from sassnet_tf.serving.serving_core import ServingCore

LOG = logging.getLogger("sassnet_tf.serving")

_GRPC_MAX_LENGTH = (1 << 31) - 1  # gRPC message limits are int32


def message_limit_bytes(max_message_mb: float) -> int:
    """Bytes for a ``--max-message-mb`` value (MiB), capped to what gRPC accepts."""
    if not max_message_mb > 0:
        raise ValueError(f"max_message_mb: expected a positive number of MiB, got {max_message_mb!r}")
    return min(int(max_message_mb * (1 << 20)), _GRPC_MAX_LENGTH)


class LocalModelServer:
    """Serve the versions under ``base_path`` over gRPC (and REST) until ``stop()``.

    Args:
        base_path: folder of numbered SavedModel version folders (``base_path/1``, ``base_path/2`` ...).
        model_name: the name clients put in ``model_spec.name`` / the REST path.
        port: gRPC port; 0 picks a free one (read ``grpc_port`` after ``start``).
        rest_port: REST port; 0 picks a free one; None disables REST.
        host: interface to bind (127.0.0.1 = this machine only).
        poll_seconds: how often the base path is checked for new versions (0 = only at start).
        max_message_mb: gRPC send/receive limit and REST body limit, in MiB (volumes need far more than gRPC's
            4 MiB default).
        workers: request threads of the gRPC server (TensorFlow runs concurrent calls in parallel).
        num_versions: how many of the newest versions are served at once.
        version_labels: label -> version map for requests naming a ``version_label``.
        tls_cert, tls_key: PEM files; when both are given gRPC and REST use TLS.

    Example:
        >>> with LocalModelServer("models/sassnet") as server:
        ...     print(server.ports)
    """

    def __init__(
        self,
        base_path: str,
        model_name: str = "sassnet",
        port: int = 8500,
        rest_port: Optional[int] = 8501,
        host: str = "127.0.0.1",
        poll_seconds: float = 5.0,
        max_message_mb: float = 512,
        workers: int = 4,
        num_versions: int = 1,
        version_labels: Optional[Mapping[str, int]] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ):
        if int(workers) < 1:
            raise ValueError(f"workers: expected a positive integer, got {workers!r}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key: give both PEM files for TLS, or neither")
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.host = host
        self.poll_seconds = float(poll_seconds)
        self.max_message_bytes = message_limit_bytes(max_message_mb)
        self.workers = int(workers)
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self._requested_ports = (int(port), None if rest_port is None else int(rest_port))
        self.manager = ModelManager(
            model_name, base_path, num_versions=num_versions, version_labels=version_labels,
            max_tensor_bytes=self.max_message_bytes,
        )
        self.core = ServingCore([self.manager])
        self._grpc_server: Optional[grpc.Server] = None
        self._rest: Optional[RestGateway] = None
        self.grpc_port: Optional[int] = None
        self.rest_port: Optional[int] = None

    @property
    def ports(self) -> tuple[Optional[int], Optional[int]]:
        """(gRPC port, REST port or None), known after ``start``."""
        return self.grpc_port, self.rest_port

    @property
    def grpc_target(self) -> str:
        """``host:port`` for ``grpc.insecure_channel`` / the client's ``--server``."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API (``http(s)://host:port``)."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.rest_port}"

    def start(self) -> "LocalModelServer":
        """Load the newest version(s), open the ports and start polling. Raises OSError if a port is taken."""
        self.manager.poll_once()
        if not self.manager.loaded_versions:
            LOG.warning(
                "model %s: no loadable version under %s yet (found %s); polling every %.1f s",
                self.model_name, self.base_path, list_versions(self.base_path), self.poll_seconds,
            )
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use must fail, not be silently shared
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="grpc"), options=options
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self.max_message_bytes), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(self.core), server)
        address = f"{self.host}:{self._requested_ports[0]}"
        try:
            if self.tls_cert:
                with open(self.tls_key, "rb") as key, open(self.tls_cert, "rb") as cert:
                    credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
                bound = server.add_secure_port(address, credentials)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as err:  # grpcio raises RuntimeError when the port cannot be bound
            raise OSError(f"cannot bind the gRPC port {address}: {err}") from None
        if not bound:
            raise OSError(f"cannot bind the gRPC port {address}")
        rest = None
        if self._requested_ports[1] is not None:
            context = None
            if self.tls_cert:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self.tls_cert, self.tls_key)
            try:
                rest = RestGateway(
                    self.core, self.host, self._requested_ports[1], self.max_message_bytes, ssl_context=context
                )
            except OSError:
                server.stop(None)  # release the gRPC port bound above
                raise
        server.start()
        self._grpc_server, self.grpc_port = server, int(bound)
        if rest is not None:
            rest.start()
            self._rest, self.rest_port = rest, rest.port
        self.manager.start_polling(self.poll_seconds)
        LOG.info(
            "serving model %s (versions %s) from %s: gRPC %s:%d%s",
            self.model_name, self.manager.loaded_versions, self.base_path, self.host, self.grpc_port,
            f", REST {self.rest_url}" if rest is not None else "",
        )
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting requests, let running ones finish (up to ``grace_seconds``), stop polling."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_seconds).wait()
            self._grpc_server = None
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        self.manager.stop_polling()
        LOG.info("server for model %s stopped", self.model_name)

    def __enter__(self) -> "LocalModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _parse_labels(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, int]:
    labels = {}
    for item in items:
        name, _, version = item.partition("=")
        if not name or not version.isdigit():
            parser.error(f"--version-label: expected LABEL=VERSION (e.g. stable=1), got {item!r}")
        labels[name] = int(version)
    return labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sassnet-serve",
        description="Serve SavedModel versions over TensorFlow Serving's gRPC and REST APIs.",
    )
    parser.add_argument("--model-base-path", required=True, help="folder of numbered SavedModel versions")
    parser.add_argument("--model-name", default="sassnet", help="name clients use (default: sassnet)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 = any free port)")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501; 0 = any; -1 = off)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 = all)")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="check for new versions every N s (0 = never)")
    parser.add_argument("--max-message-mb", type=float, default=512, help="gRPC message / REST body limit in MiB")
    parser.add_argument("--workers", type=int, default=4, help="gRPC request threads (default 4)")
    parser.add_argument("--num-versions", type=int, default=1, help="serve the newest N versions (default 1)")
    parser.add_argument("--version-label", action="append", default=[], metavar="LABEL=VERSION",
                        help="map a version_label to a version (repeatable)")
    parser.add_argument("--tls-cert", help="PEM certificate: serve gRPC and REST over TLS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sassnet-serve``: serve until SIGINT / SIGTERM, then shut down gracefully. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not os.path.isdir(args.model_base_path):
        parser.error(f"--model-base-path {args.model_base_path}: no such folder (expected numbered version folders)")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    for flag, value in (("--workers", args.workers), ("--num-versions", args.num_versions)):
        if value < 1:
            parser.error(f"{flag}: expected a positive integer, got {value}")
    if not args.max_message_mb > 0:
        parser.error(f"--max-message-mb: expected a positive number, got {args.max_message_mb}")
    server = LocalModelServer(
        args.model_base_path,
        model_name=args.model_name,
        port=args.port,
        rest_port=None if args.rest_port < 0 else args.rest_port,
        host=args.host,
        poll_seconds=args.poll_seconds,
        max_message_mb=args.max_message_mb,
        workers=args.workers,
        num_versions=args.num_versions,
        version_labels=_parse_labels(args.version_label, parser),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        LOG.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except OSError as err:
        print(f"sassnet-serve: error: {err}", file=sys.stderr)
        return 2
    try:
        while not stop.wait(1.0):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
