"""The versions of one model: numbered folders under a base path, loaded, swapped and reported like TF Serving.

Version policy: TensorFlow Serving's default ``latest { num_versions: N }`` (N = 1 unless asked). A poll lists the
numeric sub-folders of the base path, loads the newest N it does not hold yet (load first, swap after: requests
keep being served by the old version meanwhile), then unloads versions that fell out of the newest N. A version
that fails to load is logged and reported with state END and its error; it is retried only after its folder
changes. Versions keep serving if their folders disappear and nothing else is loadable (never go from serving
to empty because of a half-finished copy or a mistaken delete).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Mapping, Optional

import grpc
from tensorflow_serving.apis import get_model_status_pb2, status_pb2

from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.servable import Servable

LOG = logging.getLogger("sassnet_tf.serving")

State = get_model_status_pb2.ModelVersionStatus.State
# tensorflow.error.Code (the StatusProto's enum) shares the canonical numbering with gRPC.
_ERROR_CODE_OK = grpc.StatusCode.OK.value[0]
_ERROR_CODE_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]


def list_versions(base_path: str) -> list[int]:
    """Numeric sub-folders of ``base_path`` (other names, e.g. temporary ``.1.tmp`` folders, are ignored): the one
    rule of `sassnet_tf.export.versions.existing_versions`."""
    from sassnet_tf.export.versions import existing_versions

    return existing_versions(base_path)


def _fingerprint(path: str) -> tuple:
    """Changes when a version folder is rewritten, so a failed version is retried only after a fix."""
    stamps = []
    for item in (path, os.path.join(path, "saved_model.pb"), os.path.join(path, "variables")):
        try:
            stats = os.stat(item)
            stamps.append((stats.st_mtime_ns, stats.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class ModelManager:
    """Loads and serves the newest version(s) of one model and polls its base path for new ones.

    Args:
        name: the model name clients ask for.
        base_path: folder holding numbered version folders (``base_path/1``, ``base_path/2`` ...).
        num_versions: how many of the newest versions are served at once.
        version_labels: optional label -> version map (``{"stable": 1, "canary": 2}``) for ``version_label``.
        max_tensor_bytes: bound on decoded warm-up inputs (see ``Servable.load``).
        loader: ``loader(name, version, path) -> Servable``; replaceable for tests.
    """

    def __init__(
        self,
        name: str,
        base_path: str,
        num_versions: int = 1,
        version_labels: Optional[Mapping[str, int]] = None,
        max_tensor_bytes: int = 1 << 31,
        loader: Optional[Callable[[str, int, str], Servable]] = None,
    ):
        if int(num_versions) < 1:
            raise ValueError(f"num_versions: expected a positive integer, got {num_versions!r}")
        self.name = name
        self.base_path = os.path.abspath(base_path)
        self.num_versions = int(num_versions)
        self.version_labels = {str(k): int(v) for k, v in (version_labels or {}).items()}
        self._loader = loader or (lambda n, v, p: Servable.load(n, v, p, max_tensor_bytes=max_tensor_bytes))
        self._lock = threading.Lock()  # guards _servables and _states (held only for dictionary updates)
        self._poll_lock = threading.Lock()  # one poll (load/unload) at a time
        self._servables: dict[int, Servable] = {}
        self._states: dict[int, tuple[int, int, str]] = {}  # version -> (state, error code, message)
        self._failed: dict[int, tuple] = {}  # version -> folder fingerprint at the failed load
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- loading -------------------------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Bring the served set in line with the base path (load new versions, then unload replaced ones)."""
        with self._poll_lock:
            on_disk = list_versions(self.base_path)
            wanted = on_disk[-self.num_versions:]
            for version in wanted:
                if version in self._servables:
                    continue
                path = os.path.join(self.base_path, str(version))
                stamp = _fingerprint(path)
                if self._failed.get(version) == stamp:
                    continue
                self._load(version, path, stamp)
            with self._lock:
                loaded = sorted(self._servables)
                # Newest N loaded versions whose folders still exist; keep what serves if none does.
                present = [v for v in loaded if v in on_disk]
                keep = set(present[-self.num_versions:]) if present else set(loaded)
                dropped = [v for v in loaded if v not in keep]
                for version in dropped:
                    del self._servables[version]
                    self._states[version] = (State.END, _ERROR_CODE_OK, "")
            for version in dropped:
                LOG.info("model %s: unloaded version %d", self.name, version)

    def _load(self, version: int, path: str, stamp: tuple) -> None:
        with self._lock:
            self._states[version] = (State.LOADING, _ERROR_CODE_OK, "")
        LOG.info("model %s: loading version %d from %s", self.name, version, path)
        try:
            servable = self._loader(self.name, version, path)
        except Exception as err:  # a broken version must never stop the server
            message = f"{type(err).__name__}: {err}"
            LOG.error(
                "model %s: version %d failed to load, keeping the served version(s): %s", self.name, version, message
            )
            with self._lock:
                self._failed[version] = stamp
                self._states[version] = (State.END, _ERROR_CODE_UNKNOWN, message)
            return
        with self._lock:
            self._servables[version] = servable
            self._failed.pop(version, None)
            self._states[version] = (State.AVAILABLE, _ERROR_CODE_OK, "")
        LOG.info("model %s: version %d available (signatures %s)", self.name, version, servable.signature_names)

    def start_polling(self, interval_seconds: float) -> None:
        """Poll the base path every ``interval_seconds`` on a daemon thread (0 or less: never)."""
        if interval_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll_once()
                except Exception:  # keep polling whatever happens on one pass
                    LOG.exception("model %s: polling %s failed", self.name, self.base_path)

        self._thread = threading.Thread(target=loop, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        """Stop the polling thread (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- queries -------------------------------------------------------------------------------------------
    @property
    def loaded_versions(self) -> list[int]:
        """Versions currently served, oldest first."""
        with self._lock:
            return sorted(self._servables)

    def resolve(self, version: Optional[int] = None, label: str = "") -> Servable:
        """The servable a request names: a version, a label, or (neither) the newest; NOT_FOUND otherwise.

        ModelSpec holds the version and the label in one ``oneof``, so a request never carries both.
        """
        with self._lock:
            if label:
                if label not in self.version_labels:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"model '{self.name}': unrecognized version_label '{label}'; known labels: "
                        f"{sorted(self.version_labels)}",
                    )
                version = self.version_labels[label]
            if version is None:
                if not self._servables:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Latest({self.name}); no version of model '{self.name}' "
                        f"is loaded from {self.base_path}",
                    )
                return self._servables[max(self._servables)]
            if version not in self._servables:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({self.name}, {version}); served versions: "
                    f"{sorted(self._servables)}",
                )
            return self._servables[version]

    def version_status(self, version: Optional[int] = None) -> list[get_model_status_pb2.ModelVersionStatus]:
        """ModelVersionStatus of every version seen (newest first), or of one; NOT_FOUND if never seen."""
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model '{self.name}': version {version} was never loaded; known versions: {sorted(states)}",
                )
            states = {version: states[version]}
        if not states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{self.name}': no version found under {self.base_path}",
            )
        return [
            get_model_status_pb2.ModelVersionStatus(
                version=v, state=s, status=status_pb2.StatusProto(error_code=code, error_message=msg)
            )
            for v, (s, code, msg) in sorted(states.items(), reverse=True)
        ]
