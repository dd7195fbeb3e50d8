"""sassnet_tf.data.dataset_layout: LA and NIfTI (MSD, nnU-Net) layouts, list files, the labeled/unlabeled split."""

import os

import numpy as np
import pytest

from sassnet_tf.data.dataset_layout import DatasetLayout, open_dataset
from sassnet_tf.data.errors import DataError

IDS = [f"ID{i:02d}" for i in range(6)]


# ------------------------------------------------------------------------------------------------ LA


def test_la_layout_loads_cases(make_la_root):
    root = make_la_root(IDS, test=["T1"])
    layout = open_dataset(root)
    assert isinstance(layout, DatasetLayout) and layout.format == "la"
    assert layout.read_list("train.list") == IDS
    assert layout.case_path("ID03") == os.path.join(root, "2018LA_Seg_Training Set", "ID03", "mri_norm2.h5")
    case = layout.load("ID03")
    assert case.case_id == "ID03" and case.image.shape == (20, 18, 12) and case.label is not None
    assert abs(case.image.mean() - 3 - 2 * case.label.mean()) < 0.1  # case 3 of the fixture: offset 3
    assert layout.load("ID03", read_label=False).label is None


def test_la_layout_downsample(make_la_root):
    layout = open_dataset(make_la_root(IDS), format="la", downsample=2)
    case = layout.load("ID00")
    assert case.image.shape == (10, 9, 6) and case.spacing == (1.25, 1.25, 1.25)


def test_missing_case_names_expected_path(make_la_root):
    root = make_la_root(IDS, test=["T1", "T2"])
    layout = open_dataset(root)
    with pytest.raises(DataError) as info:
        layout.load(layout.read_list("test.list")[0])
    message = str(info.value)
    assert "'T1'" in message and os.path.join(root, "2018LA_Seg_Training Set", "T1", "mri_norm2.h5") in message


def test_open_dataset_errors(tmp_path, make_la_root):
    with pytest.raises(DataError, match="dataset folder not found"):
        open_dataset(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a known dataset layout"):
        open_dataset(str(tmp_path / "empty"))
    root = make_la_root(IDS)
    with pytest.raises(DataError, match="pass its parent folder"):
        open_dataset(os.path.join(root, "2018LA_Seg_Training Set"))
    with pytest.raises(DataError, match="not one of"):
        open_dataset(root, format="dicom")
    with pytest.raises(DataError, match="imagesTr"):
        open_dataset(root, format="nifti")


# ------------------------------------------------------------------------------------------------ lists


def test_list_comments_blank_lines_and_paths(make_la_root, tmp_path):
    root = make_la_root(IDS)
    with open(os.path.join(root, "mine.list"), "w") as fh:
        fh.write("# my split\nID01\n\n  ID02  \nID04 # trailing comment\n")
    layout = open_dataset(root)
    assert layout.read_list("mine.list") == ["ID01", "ID02", "ID04"]
    assert layout.read_list(os.path.join(root, "mine.list")) == ["ID01", "ID02", "ID04"]


def test_missing_list_file(make_la_root):
    root = make_la_root(IDS)
    with pytest.raises(DataError, match="list file not found") as info:
        open_dataset(root).read_list("test.list")
    assert os.path.join(root, "test.list") in str(info.value)


def test_empty_list_file(make_la_root):
    root = make_la_root(IDS)
    with open(os.path.join(root, "empty.list"), "w") as fh:
        fh.write("\n  \n# nothing\n")
    with pytest.raises(DataError, match="empty.list: list file names no case ID"):
        open_dataset(root).read_list("empty.list")


def test_duplicate_list_entry_names_file_and_lines(make_la_root):
    root = make_la_root(IDS, train=["ID00", "ID01", "ID02", "ID01"])
    with pytest.raises(DataError, match=r"train.list: line 4: ID 'ID01' is listed twice \(first on line 2\)"):
        open_dataset(root).read_list("train.list")


# ------------------------------------------------------------------------------------------------ split


def test_split_first_n_labeled(make_la_root):
    layout = open_dataset(make_la_root(IDS))
    assert layout.split(labeled=2) == (IDS[:2], IDS[2:])
    assert layout.split(labeled=6) == (IDS, [])


def test_split_too_many_labeled_names_both_numbers(make_la_root):
    layout = open_dataset(make_la_root(IDS))
    with pytest.raises(DataError, match="8 labeled cases asked for but the list holds only 6 IDs"):
        layout.split(labeled=8)
    with pytest.raises(DataError, match="labeled must be an integer >= 1"):
        layout.split(labeled=0)


def test_split_explicit_lists(make_la_root):
    root = make_la_root(IDS)
    with open(os.path.join(root, "lab.list"), "w") as fh:
        fh.write("ID05\nID02\n")
    layout = open_dataset(root)
    assert layout.split(labeled_list="lab.list") == (["ID05", "ID02"], ["ID00", "ID01", "ID03", "ID04"])
    assert layout.split(labeled_list=["ID01"], unlabeled_list=["ID03", "ID04"]) == (["ID01"], ["ID03", "ID04"])
    assert layout.split(labeled=1, unlabeled_list=["ID05"]) == (["ID00"], ["ID05"])


def test_split_overlap_is_an_error(make_la_root):
    layout = open_dataset(make_la_root(IDS))
    with pytest.raises(DataError, match="both labeled and unlabeled: ID02"):
        layout.split(labeled_list=["ID01", "ID02"], unlabeled_list=["ID02", "ID03"])
    with pytest.raises(DataError, match="listed twice"):
        layout.split(labeled_list=["ID01", "ID01"])


# ------------------------------------------------------------------------------------------------ NIfTI


def test_msd_layout(make_nifti_root):
    root = make_nifti_root(["la_003", "la_004", "la_007"], naming="msd", test_ids=["la_001"])
    # The MSD tarballs carry macOS resource forks next to each file: they must be ignored.
    open(os.path.join(root, "imagesTr", "._la_003.nii.gz"), "wb").close()
    layout = open_dataset(root)
    assert layout.format == "nifti" and layout.variant == "msd"
    assert layout.read_list("train.list") == ["la_003", "la_004", "la_007"]
    assert layout.read_list("test.list") == ["la_001"]
    case = layout.load("la_004")
    assert case.case_id == "la_004" and case.image.shape == (16, 14, 10)
    assert case.spacing == (1.25, 1.25, 2.5)
    np.testing.assert_allclose(case.affine[:3, 3], [-10.0, 5.0, 2.0])
    assert set(np.unique(case.label)) == {0, 1}
    assert layout.load("la_001", read_label=False).label is None
    with pytest.raises(DataError, match="label file not found, expected .*labelsTr.*la_001.nii.gz"):
        layout.load("la_001")


def test_nifti_images_are_zscored_like_the_la_release(make_nifti_root):
    from sassnet_tf.data.io import read_case

    root = make_nifti_root(["a", "b"], naming="msd")
    raw = read_case(os.path.join(root, "imagesTr", "a.nii.gz"), read_label=False).image
    case = open_dataset(root).load("a", read_label=False)
    assert abs(float(case.image.mean())) < 1e-4 and abs(float(case.image.std()) - 1.0) < 1e-3
    np.testing.assert_allclose(case.image, (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)


def test_msd_ids_from_files_without_training_entries(make_nifti_root):
    root = make_nifti_root(["b", "a"], naming="msd", with_json_training=False)
    assert open_dataset(root, format="nifti").read_list("train.list") == ["a", "b"]


def test_nnunet_layout(make_nifti_root):
    root = make_nifti_root(["LA_001", "LA_002"], naming="nnunet", test_ids=["LA_100"])
    layout = open_dataset(root)
    assert layout.variant == "nnunet"
    assert layout.read_list("train.list") == ["LA_001", "LA_002"]
    assert layout.read_list("test.list") == ["LA_100"]
    assert layout.case_path("LA_002").endswith(os.path.join("imagesTr", "LA_002_0000.nii.gz"))
    assert layout.case_path("LA_100").endswith(os.path.join("imagesTs", "LA_100_0000.nii.gz"))
    case = layout.load("LA_002")
    assert case.case_id == "LA_002" and case.label.shape == case.image.shape
    assert layout.split(labeled=1) == (["LA_001"], ["LA_002"])
    with pytest.raises(DataError, match="image file not found, expected .*LA_999_0000.nii.gz"):
        layout.load("LA_999")


def test_nnunet_multichannel_is_refused(make_nifti_root):
    root = make_nifti_root(["A"], naming="nnunet")
    os.link(os.path.join(root, "imagesTr", "A_0000.nii.gz"), os.path.join(root, "imagesTr", "A_0001.nii.gz"))
    with pytest.raises(DataError, match="channels 0000, 0001"):
        open_dataset(root)


def test_nifti_list_files_win_over_defaults(make_nifti_root):
    root = make_nifti_root(["a", "b", "c"], naming="msd")
    with open(os.path.join(root, "train.list"), "w") as fh:
        fh.write("c\na\n")
    layout = open_dataset(root)
    assert layout.read_list("train.list") == ["c", "a"]
    with pytest.raises(DataError, match="no test cases"):
        layout.read_list("test.list")
    with pytest.raises(DataError, match="other.list: list file not found"):
        layout.read_list("other.list")


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.real_data
def test_real_la_cases(la_root):
    layout = open_dataset(str(la_root))
    ids = layout.read_list("train.list")
    assert len(ids) == 80 and len(layout.read_list("test.list")) == 20
    labeled, unlabeled = layout.split(labeled=16)
    assert labeled == ids[:16] and len(unlabeled) == 64
    for case_id in ids[:2]:
        case = layout.load(case_id)
        assert case.image.dtype == np.float32 and case.image.shape[2] == 88
        assert 120 <= case.image.shape[0] <= 260 and 120 <= case.image.shape[1] <= 180
        assert 0.02 < case.label.mean() < 0.2
        assert case.spacing == (0.625, 0.625, 0.625)
    # the 20 volumes of test.list are in the data too (REFERENCE.md), none of them in train.list
    test_ids = layout.read_list("test.list")
    assert not set(test_ids) & set(ids)
    assert layout.load(test_ids[0]).label.shape == layout.load(test_ids[0]).image.shape
