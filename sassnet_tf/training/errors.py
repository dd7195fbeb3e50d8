"""How a training run ends early: the exceptions train.py turns into exit codes (light: no TensorFlow import)."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the run stopped and its last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
