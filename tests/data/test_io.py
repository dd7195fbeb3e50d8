"""sassnet_tf.data.io: LA h5 and NIfTI reading, validation errors, downsampling, atomic NIfTI writing."""

import gzip
import os

import numpy as np
import pytest

from sassnet_tf.data import io
from sassnet_tf.data.errors import DataError
from sassnet_tf.data.io import Case, downsample_label, downsample_volume, read_case, write_nifti


def _case_arrays(shape=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    label = (rng.random(shape) > 0.7).astype(np.uint8)
    return image, label


def _la_file(tmp_path, h5_writer, name="CASE01", **datasets):
    return h5_writer(str(tmp_path / name / "mri_norm2.h5"), **datasets)


def _affine():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 1.5])
    affine[:3, 3] = [12.5, -40.0, 7.25]
    return affine


# ------------------------------------------------------------------------------------------------ h5


def test_read_la_h5(tmp_path, h5_writer):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image, label=label)
    case = read_case(path)
    assert isinstance(case, Case)
    assert case.case_id == "CASE01"
    assert case.path == path
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    np.testing.assert_array_equal(case.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
    assert case.affine.dtype == np.float64
    assert case.spacing == (0.625, 0.625, 0.625)
    assert read_case(path, case_id="other").case_id == "other"


def test_float_and_bool_labels_are_accepted_as_uint8(tmp_path, h5_writer):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image.astype(np.float64), label=label.astype(np.float32))
    case = read_case(path)
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.label, label)


def test_unlabeled_case_never_reads_the_label(tmp_path, h5_writer, monkeypatch):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image, label=np.full(image.shape, 7, np.uint8))
    read = []
    original = io._read_h5_dataset
    monkeypatch.setattr(io, "_read_h5_dataset", lambda p, name, **kw: read.append(name) or original(p, name, **kw))
    case = read_case(path, read_label=False)
    assert case.label is None
    assert read == ["image"]
    with pytest.raises(DataError, match="label holds values"):  # the (bad) label is there: it was just not read
        read_case(path)


def test_unlabeled_nifti_never_opens_the_label_file(tmp_path):
    image, _ = _case_arrays()
    write_nifti(str(tmp_path / "img.nii.gz"), image, np.eye(4))
    case = read_case(str(tmp_path / "img.nii.gz"), read_label=False, label_path=str(tmp_path / "absent.nii.gz"))
    assert case.label is None and case.case_id == "img"


# ------------------------------------------------------------------------------------------------ NIfTI


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_nifti_round_trip_keeps_affine(tmp_path, ext):
    image, label = _case_arrays()
    affine = _affine()
    write_nifti(str(tmp_path / f"scan{ext}"), image, affine)
    write_nifti(str(tmp_path / f"mask{ext}"), label.astype(bool), affine)
    case = read_case(str(tmp_path / f"scan{ext}"), label_path=str(tmp_path / f"mask{ext}"))
    assert case.case_id == "scan"
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    np.testing.assert_allclose(case.affine, affine, atol=1e-6)
    np.testing.assert_allclose(case.spacing, (0.8, 0.9, 1.5), atol=1e-6)
    # No temporary files left beside the targets.
    assert sorted(os.listdir(tmp_path)) == sorted([f"scan{ext}", f"mask{ext}"])


def test_nifti_header_and_dtypes(tmp_path):
    import nibabel as nib

    label = np.zeros((6, 5, 4), np.int64)
    label[1:3, 1:3, 1:3] = 1
    write_nifti(str(tmp_path / "m.nii.gz"), label, np.eye(4))
    stored = nib.load(str(tmp_path / "m.nii.gz"))
    assert stored.get_data_dtype() == np.int32  # int64 would be rejected by many readers
    assert int(stored.header["sform_code"]) == 1 and int(stored.header["qform_code"]) == 1


def test_nifti_label_in_another_grid_is_refused(tmp_path):
    image, label = _case_arrays()
    write_nifti(str(tmp_path / "img.nii.gz"), image, _affine())
    shifted = _affine()
    shifted[0, 3] += 5.0
    write_nifti(str(tmp_path / "lab.nii.gz"), label, shifted)
    with pytest.raises(DataError, match="lab.nii.gz: label affine differs from the image's"):
        read_case(str(tmp_path / "img.nii.gz"), label_path=str(tmp_path / "lab.nii.gz"))


def test_nifti_trailing_channel_is_squeezed(tmp_path):
    image, label = _case_arrays()
    write_nifti(str(tmp_path / "img.nii.gz"), image[..., None], np.eye(4))
    write_nifti(str(tmp_path / "lab.nii.gz"), label[..., None], np.eye(4))
    case = read_case(str(tmp_path / "img.nii.gz"), label_path=str(tmp_path / "lab.nii.gz"))
    assert case.image.shape == image.shape and case.label.shape == image.shape


def test_write_nifti_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=r"\.nii or \.nii\.gz"):
        write_nifti(str(tmp_path / "x.h5"), np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(DataError, match="4 x 4"):
        write_nifti(str(tmp_path / "x.nii.gz"), np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(DataError, match="3-D"):
        write_nifti(str(tmp_path / "x.nii.gz"), np.zeros((2, 2)), np.eye(4))
    assert os.listdir(tmp_path) == []


def test_nifti_image_needs_label_path_when_label_requested(tmp_path):
    image, _ = _case_arrays()
    write_nifti(str(tmp_path / "img.nii.gz"), image, np.eye(4))
    with pytest.raises(DataError, match="label_path"):
        read_case(str(tmp_path / "img.nii.gz"))


# ------------------------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope" / "mri_norm2.h5")
    with pytest.raises(DataError, match="file not found") as info:
        read_case(path)
    assert path in str(info.value)


def test_unsupported_extension(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_case(str(tmp_path / "scan.mha"))


def test_truncated_h5(tmp_path, h5_writer):
    image, label = _case_arrays(shape=(40, 40, 20))
    path = _la_file(tmp_path, h5_writer, image=image, label=label)
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        read_case(path)
    assert path in str(info.value)


def test_garbage_h5(tmp_path):
    path = tmp_path / "CASE" / "mri_norm2.h5"
    path.parent.mkdir()
    path.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(DataError, match="cannot open as HDF5"):
        read_case(str(path))


def test_truncated_nifti(tmp_path):
    image, _ = _case_arrays(shape=(30, 30, 20))
    path = str(tmp_path / "img.nii.gz")
    write_nifti(path, image, np.eye(4))
    raw = gzip.decompress(open(path, "rb").read())
    with open(path, "wb") as fh:
        fh.write(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match="cannot read image as NIfTI") as info:
        read_case(path, read_label=False)
    assert path in str(info.value)


def test_missing_image_dataset_lists_what_is_there(tmp_path, h5_writer):
    _, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, label=label, img=label)
    with pytest.raises(DataError, match=r"no dataset 'image' \(datasets found: img, label\)"):
        read_case(path)


def test_missing_label_dataset(tmp_path, h5_writer):
    image, _ = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image)
    with pytest.raises(DataError, match="no dataset 'label'.*read_label=False"):
        read_case(path)
    assert read_case(path, read_label=False).label is None


def test_shape_mismatch(tmp_path, h5_writer):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image, label=label[:-1])
    with pytest.raises(DataError, match=r"label shape \(11, 10, 8\) differs from image shape \(12, 10, 8\)"):
        read_case(path)


def test_non_binary_label_lists_values(tmp_path, h5_writer):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image, label=label * 255)
    with pytest.raises(DataError, match=r"label holds values \[0, 255\], expected only 0 and 1") as info:
        read_case(path)
    assert path in str(info.value)
    path = _la_file(tmp_path, h5_writer, name="F", image=image, label=label * 0.5)
    with pytest.raises(DataError, match=r"\[0.0, 0.5\]"):
        read_case(path)


@pytest.mark.parametrize("bad, counts", [(np.nan, "2 NaN and 0 Inf"), (np.inf, "0 NaN and 2 Inf")])
def test_non_finite_image(tmp_path, h5_writer, bad, counts):
    image, label = _case_arrays()
    image[0, 0, 0] = image[3, 2, 1] = bad
    path = _la_file(tmp_path, h5_writer, image=image, label=label)
    with pytest.raises(DataError, match=counts):
        read_case(path)


def test_wrong_rank(tmp_path, h5_writer):
    path = _la_file(tmp_path, h5_writer, image=np.zeros((5, 5), np.float32))
    with pytest.raises(DataError, match=r"shape \(5, 5\), expected a 3-D volume"):
        read_case(path, read_label=False)
    write_nifti(str(tmp_path / "two.nii.gz"), np.zeros((4, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(DataError, match="expected a 3-D volume"):
        read_case(str(tmp_path / "two.nii.gz"), read_label=False)


@pytest.mark.parametrize("factor", [0, 1.5, True, "2"])
def test_bad_downsample(tmp_path, h5_writer, factor):
    image, label = _case_arrays()
    path = _la_file(tmp_path, h5_writer, image=image, label=label)
    with pytest.raises(DataError, match="downsample"):
        read_case(path, downsample=factor)


# ------------------------------------------------------------------------------------------------ downsample


def test_downsample_shapes_affine_and_label(tmp_path, h5_writer):
    image, label = _case_arrays(shape=(13, 10, 8))
    label[:] = 0
    label[2:9, 2:8, 2:6] = 1
    path = _la_file(tmp_path, h5_writer, image=image, label=label)
    case = read_case(path, downsample=2)
    assert case.image.shape == (7, 5, 4) and case.label.shape == (7, 5, 4)
    np.testing.assert_array_equal(case.affine, np.diag([1.25, 1.25, 1.25, 1.0]))
    assert case.spacing == (1.25, 1.25, 1.25)
    # Voxel j sits at full-resolution voxel 2j: inside the box -> 1, away from it -> 0.
    assert case.label[2, 2, 2] == 1 and case.label[0, 0, 0] == 0 and case.label[5, 4, 3] == 0
    assert set(np.unique(case.label)) <= {0, 1}


def test_downsample_keeps_a_linear_ramp_at_sample_positions():
    x = np.arange(20, dtype=np.float32)
    ramp = np.broadcast_to(x[:, None, None] * 2.0 + x[None, :12, None] - x[None, None, :8], (20, 12, 8))
    out = downsample_volume(ramp, 2)
    assert out.shape == (10, 6, 4)
    # Interior samples of a linear function are exact (the tent kernel is symmetric); borders clamp.
    np.testing.assert_allclose(out[1:-1, 1:-1, 1:-1], ramp[2:-2:2, 2:-2:2, 2:-2:2], atol=1e-5)


def test_downsample_label_threshold():
    label = np.zeros((10, 10, 10), np.uint8)
    label[1:8, 1:8, 1:8] = 1
    out = downsample_label(label, 2)
    assert out.dtype == np.uint8 and out.shape == (5, 5, 5)
    # Samples at 2, 4, 6 see only foreground (weights 1/4, 1/2, 1/4 over j-1..j+1); at 0 and 8 a quarter of it.
    expected = np.zeros((5, 5, 5), np.uint8)
    expected[1:4, 1:4, 1:4] = 1
    np.testing.assert_array_equal(out, expected)
    # A corner sample only 3/4 inside along each axis averages 0.42 < 0.5: thresholded away.
    label[:] = 0
    label[2:5, 2:5, 2:5] = 1
    assert not downsample_label(label, 2).any()
    np.testing.assert_array_equal(downsample_label(label, 1), label)
