"""The error every data reader, layout and pipeline raises on bad input."""

from __future__ import annotations


class DataError(ValueError):
    """A data file, list or dataset folder is missing or invalid.

    The message names the file (or folder), the field concerned and what was expected, e.g.
    ``.../mri_norm2.h5: dataset 'label' holds values [0, 255], expected only 0 and 1``.
    """
