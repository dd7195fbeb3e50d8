"""The error a serving request fails with: a gRPC status code and a message, mapped to HTTP for the REST routes."""

from __future__ import annotations

import grpc

# TensorFlow Serving's REST front end maps canonical status codes to HTTP the same way (Google API conventions).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request the server refuses or could not run.

    Args:
        code: the canonical status (``grpc.StatusCode``) the gRPC front end aborts with.
        message: what was wrong, naming the model, signature or input concerned and what was expected.
        http_status: the REST status when it is more precise than the code's usual one (413 for a large body).
    """

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = int(http_status)

    @property
    def http_status(self) -> int:
        """The HTTP status the REST front end answers with."""
        return self._http_status or _HTTP_STATUS.get(self.code, 500)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"
