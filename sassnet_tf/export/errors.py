"""The error an export fails with."""

from __future__ import annotations


class ExportError(ValueError):
    """An export cannot be done as asked; the message names the path or setting and what was expected."""


__all__ = ["ExportError"]
