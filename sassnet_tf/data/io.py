"""Read one case (UA-MT LA HDF5 or NIfTI) into a validated `Case`; write NIfTI atomically.

Validation is strict because a silently wrong volume costs a training run: every problem raises
`sassnet_tf.data.errors.DataError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sassnet_tf.data.errors import DataError

LA_SPACING = 0.625  # mm, isotropic (the LA release)
H5_EXTENSIONS = (".h5", ".hdf5")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")


@dataclass(eq=False)
class Case:
    """One volume in memory.

    Args:
        case_id: the ID the dataset lists (an LA folder name, a NIfTI case name).
        path: the image file it was read from.
        image: float32 ``[H, W, D]``, finite.
        label: uint8 ``[H, W, D]`` with values 0/1, or None for an unlabeled case (never read from disk).
        affine: float64 ``4 x 4`` voxel-to-world (mm) matrix.
        spacing: voxel size in mm along (H, W, D).
    """

    case_id: str
    path: str
    image: np.ndarray
    label: Optional[np.ndarray]
    affine: np.ndarray
    spacing: tuple

    @property
    def shape(self) -> tuple:
        return tuple(self.image.shape)


def file_kind(path: str) -> str:
    """Return ``"h5"`` or ``"nifti"`` from the file name; raise DataError for anything else."""
    name = os.fspath(path).lower()
    if name.endswith(H5_EXTENSIONS):
        return "h5"
    if name.endswith(NIFTI_EXTENSIONS):
        return "nifti"
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(H5_EXTENSIONS + NIFTI_EXTENSIONS)}")


def read_case(
    path: str,
    read_label: bool = True,
    label_path: Optional[str] = None,
    downsample: int = 1,
    case_id: Optional[str] = None,
    normalize: str = "none",
) -> Case:
    """Read and validate one case.

    Args:
        path: a UA-MT LA ``.h5`` file (datasets ``image`` and ``label``) or a NIfTI image (``.nii``/``.nii.gz``).
        read_label: read the label (required to exist). False: the label is never opened (unlabeled case).
        label_path: a separate label file (NIfTI, or an ``.h5`` with a ``label`` dataset). Required for a NIfTI
            image when `read_label`; for an ``.h5`` image it replaces the file's own ``label`` dataset.
        downsample: integer factor per axis (1 = full resolution), see `downsample_volume`.
        case_id: the ID to record; default the file name (LA: the parent folder's name).
        normalize: ``"none"`` or ``"zscore"`` (over the whole volume, before downsampling: the LA release's own
            normalisation, which the serving client applies to NIfTI scans too).

    Returns:
        A `Case`: image float32, label uint8 0/1 (or None), affine float64 4x4, spacing in mm.
    """
    path = os.fspath(path)
    downsample = _check_factor(downsample, path)
    kind = _check_file(path, "image")
    if kind == "h5":
        image = _read_h5_dataset(path, "image")
        affine = np.diag([LA_SPACING, LA_SPACING, LA_SPACING, 1.0])
    else:
        image, affine = _read_nifti(path, "image")
    image = _squeeze_channel(image, path, "image")
    image = _validate_image(image, path)

    label = None
    if read_label:
        if label_path is None:
            if kind != "h5":
                raise DataError(f"{path}: a NIfTI image has no label inside; pass label_path or read_label=False")
            label = _read_h5_dataset(path, "label", hint="pass read_label=False for an unlabeled case")
            source = path
        else:
            source = os.fspath(label_path)
            if _check_file(source, "label") == "h5":
                label = _read_h5_dataset(source, "label")
            else:
                label, label_affine = _read_nifti(source, "label")
                # A label in another voxel grid would be silently misaligned (nnU-Net checks this too).
                if not np.allclose(label_affine, affine, rtol=1e-4, atol=1e-3):
                    raise DataError(f"{source}: label affine differs from the image's ({path}):\n"
                                    f"{np.array2string(label_affine, precision=4)}\nvs\n"
                                    f"{np.array2string(np.asarray(affine), precision=4)}")
        label = _squeeze_channel(label, source, "label")
        label = _validate_label(label, image.shape, source)

    if normalize == "zscore":
        image = zscore(image)
    elif normalize != "none":
        raise DataError(f"{path}: normalize {normalize!r} is not one of none, zscore")
    affine = np.asarray(affine, dtype=np.float64)
    if downsample > 1:
        image = downsample_volume(image, downsample)
        if label is not None:
            label = downsample_label(label, downsample)
        affine = affine @ np.diag([downsample, downsample, downsample, 1.0])
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    if case_id is None:
        case_id = _default_case_id(path, kind)
    return Case(case_id=str(case_id), path=path, image=image, label=label, affine=affine, spacing=spacing)


def zscore(image: np.ndarray) -> np.ndarray:
    """``(image - mean) / std`` over the whole volume, float32 (a constant volume becomes all zeros)."""
    image = np.asarray(image, dtype=np.float32)
    mean = float(image.mean(dtype=np.float64))
    std = float(image.std(dtype=np.float64))
    return ((image - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def nifti_header(path: str):
    """A copy of the NIfTI header of `path` (None for an ``.h5`` file), to give outputs the scan's geometry."""
    if not os.fspath(path).lower().endswith(NIFTI_EXTENSIONS):
        return None
    import nibabel as nib

    return nib.load(path).header.copy()


def output_header(header, dtype):
    """The scan's `header` for an output of `dtype` (None stays None): the scan's intensity scaling not carried over."""
    if header is None:
        return None
    header = header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(None, None)
    return header


def write_nifti(path: str, array: np.ndarray, affine: np.ndarray, header=None) -> None:
    """Write `array` as a NIfTI file (``.nii`` or ``.nii.gz``) atomically.

    Args:
        path: target file; its extension picks compression.
        array: 3-D (or 4-D) array; bool is stored as uint8 and int64 as int32 (NIfTI readers reject int64).
        affine: 4 x 4 voxel-to-world matrix (finite).
        header: optional nibabel header to start from (e.g. the source scan's). When `affine` is that header's own
            (a mask or map on the scan's grid), its sform and qform, their codes and pixdim are kept as they are, so
            the output overlays its scan in every viewer; otherwise both forms are set to `affine` (code 1).
    """
    import nibabel as nib

    from sassnet_tf.utils.atomic import atomic_path

    path = os.fspath(path)
    lower = path.lower()
    suffix = next((ext for ext in NIFTI_EXTENSIONS if lower.endswith(ext)), None)
    if suffix is None:
        raise DataError(f"{path}: write_nifti writes .nii or .nii.gz files only")
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise DataError(f"{path}: array has shape {array.shape}, expected 3-D [H, W, D] (or 4-D)")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise DataError(f"{path}: int64 values do not fit int32")
        array = array.astype(np.int32)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"{path}: affine must be a finite 4 x 4 matrix, got shape {affine.shape}")
    if header is not None and np.allclose(affine, header.get_best_affine(), rtol=0, atol=1e-6):
        image = nib.Nifti1Image(array, None, header=header)  # None: the header's forms stay untouched
        image.header.set_data_dtype(array.dtype)
    else:
        image = nib.Nifti1Image(array, affine, header=header)
        image.header.set_data_dtype(array.dtype)
        # Both forms set so that every reader (qform-first or sform-first) finds the same geometry.
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, tmp)


# ----------------------------------------------------------------------------------------------- resampling


def _tent_weights(factor: int) -> np.ndarray:
    """Linear-interpolation (tent) kernel of half-width `factor`, normalised to sum 1."""
    d = np.arange(-factor + 1, factor)
    w = (factor - np.abs(d)).astype(np.float64)
    return w / w.sum()


def _filter_and_sample(volume: np.ndarray, factor: int) -> np.ndarray:
    from scipy import ndimage

    out = np.asarray(volume, dtype=np.float32)
    weights = _tent_weights(factor)
    for axis in range(out.ndim):
        out = ndimage.correlate1d(out, weights, axis=axis, mode="nearest")
    return np.ascontiguousarray(out[::factor, ::factor, ::factor])


def downsample_volume(image: np.ndarray, factor: int) -> np.ndarray:
    """Reduce a float volume by an integer `factor` per axis.

    Output voxel ``j`` lies at input position ``j * factor`` (the convention `inference.resample.resize_linear(...,
    factor=...)` inverts; shape ``ceil(n / factor)``); its value is the tent-weighted (linear-interpolation
    kernel) average of the input voxels within ``factor`` of that position, an anti-aliased subsampling.

    Args:
        image: float ``[H, W, D]``.
        factor: integer >= 1.
    """
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    return _filter_and_sample(image, factor)


def downsample_label(label: np.ndarray, factor: int) -> np.ndarray:
    """Reduce a 0/1 label like `downsample_volume` and keep voxels whose weighted average is >= 0.5 (uint8)."""
    if factor == 1:
        return np.asarray(label, dtype=np.uint8)
    return (_filter_and_sample(label, factor) >= 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- internals


def _check_factor(downsample, path: str) -> int:
    if isinstance(downsample, bool) or not isinstance(downsample, (int, np.integer)) or downsample < 1:
        raise DataError(f"{path}: downsample must be an integer >= 1, got {downsample!r}")
    return int(downsample)


def _check_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise DataError(f"{path}: {what} file not found")
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} path is not a file")
    return file_kind(path)


def _default_case_id(path: str, kind: str) -> str:
    if kind == "h5":
        # LA release: <ID>/mri_norm2.h5 -- the folder is the ID.
        return os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = os.path.basename(path)
    for ext in NIFTI_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _read_h5_dataset(path: str, name: str, hint: str = "") -> np.ndarray:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError for truncated / non-HDF5 files
        raise DataError(f"{path}: cannot open as HDF5 (truncated or not an HDF5 file): {exc}") from None
    with fh:
        if name not in fh:
            found = ", ".join(sorted(fh.keys())) or "none"
            extra = f"; {hint}" if hint else ""
            raise DataError(f"{path}: no dataset {name!r} (datasets found: {found}){extra}")
        node = fh[name]
        if not isinstance(node, h5py.Dataset):
            raise DataError(f"{path}: {name!r} is a group, expected a dataset")
        try:
            return node[()]
        except Exception as exc:  # a truncated file opens but fails on reading the chunks
            raise DataError(f"{path}: cannot read dataset {name!r} (file truncated or corrupt): {exc}") from None


def _read_nifti(path: str, what: str) -> tuple:
    import nibabel as nib

    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib.error, OSError ...
        raise DataError(f"{path}: cannot read {what} as NIfTI (truncated or corrupt): {exc}") from None
    return np.asarray(data), np.asarray(image.affine, dtype=np.float64)


def _squeeze_channel(array: np.ndarray, path: str, what: str) -> np.ndarray:
    # NIfTI stores a channel / time axis as dims 4-5: accept singleton ones only.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: {what} has shape {tuple(array.shape)}, expected a 3-D volume [H, W, D] "
                        "(a single trailing channel is allowed)")
    if min(array.shape) < 1:
        raise DataError(f"{path}: {what} is empty (shape {tuple(array.shape)})")
    return array


def _validate_image(image: np.ndarray, path: str) -> np.ndarray:
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise DataError(f"{path}: image has dtype {image.dtype}, expected numbers")
    image = np.ascontiguousarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if not finite.all():
        n_nan = int(np.isnan(image).sum())
        n_inf = int(image.size - finite.sum() - n_nan)
        raise DataError(f"{path}: image holds {n_nan} NaN and {n_inf} Inf values, expected finite numbers")
    return image


def _validate_label(label: np.ndarray, image_shape: tuple, path: str) -> np.ndarray:
    if tuple(label.shape) != tuple(image_shape):
        raise DataError(f"{path}: label shape {tuple(label.shape)} differs from image shape {tuple(image_shape)}")
    if not (np.issubdtype(label.dtype, np.number) or label.dtype == bool):
        raise DataError(f"{path}: label has dtype {label.dtype}, expected integers 0/1")
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)  # fast value census for the common case
        ok = not counts[2:].any()
    else:
        ok = bool(np.all((label == 0) | (label == 1)))
    if not ok:
        values = np.unique(label)
        shown = ", ".join(str(v) for v in values[:12]) + (", ..." if values.size > 12 else "")
        raise DataError(f"{path}: label holds values [{shown}], expected only 0 and 1 "
                        "(convert a 0/255 mask with label > 0 first)")
    return np.ascontiguousarray(label, dtype=np.uint8)
