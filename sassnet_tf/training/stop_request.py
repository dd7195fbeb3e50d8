"""StopRequest: Ctrl-C (SIGINT) or SIGTERM asks a training loop to stop cleanly after the current iteration."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("sassnet_tf")

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; what Kubernetes and batch schedulers send


class StopRequest:
    """While active (a context manager), the first SIGINT or SIGTERM only sets `signum`: the loop finishes its
    iteration, checkpoints and stops. From then on both signals have their default action again, so a second one
    ends the process at once (the last checkpoint stays). Outside the main thread (where Python cannot install
    handlers) it does nothing and `signum` stays None.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        self._restore()
        return False

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        self.signum = signum
        for s in SIGNALS:  # a second signal: the default action, i.e. stop now
            signal.signal(s, signal.SIG_DFL)
        log.warning("%s received: stopping after this iteration with a checkpoint (send it again to stop at once)",
                    signal.Signals(signum).name)
