"""Fixtures for the data tests: tiny synthetic LA-layout and NIfTI-layout datasets written to tmp_path."""

import json
import os

import numpy as np
import pytest

LA_FOLDER = "2018LA_Seg_Training Set"


def _volume(rng, shape, case_no):
    label = np.zeros(shape, np.uint8)
    h, w, d = shape
    label[h // 4: 3 * h // 4, w // 4: 3 * w // 4, d // 4: 3 * d // 4] = 1
    image = rng.normal(size=shape).astype(np.float32) + label * 2.0 + case_no
    return image, label


def write_h5(path, image=None, label=None, **extra):
    import h5py

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as fh:
        if image is not None:
            fh.create_dataset("image", data=image)
        if label is not None:
            fh.create_dataset("label", data=label)
        for name, value in extra.items():
            fh.create_dataset(name, data=value)
    return path


@pytest.fixture
def h5_writer():
    """``write(path, image=..., label=..., **other_datasets) -> path``."""
    return write_h5


@pytest.fixture
def make_la_root(tmp_path):
    """``make(ids, shape=(20, 18, 12), train=None, test=None, missing=()) -> root``: an LA-layout dataset.

    Case i's image is noise + 2 x label + i (so cases are told apart by their mean). IDs in `missing` are listed
    but get no file.
    """

    def make(ids, shape=(20, 18, 12), train=None, test=None, missing=(), root_name="la"):
        root = tmp_path / root_name
        rng = np.random.default_rng(0)
        for i, case_id in enumerate(ids):
            if case_id in missing:
                continue
            image, label = _volume(rng, shape, i)
            write_h5(str(root / LA_FOLDER / case_id / "mri_norm2.h5"), image, label)
        (root / LA_FOLDER).mkdir(parents=True, exist_ok=True)
        (root / "train.list").write_text("\n".join(train if train is not None else ids) + "\n")
        if test is not None:
            (root / "test.list").write_text("\n".join(test) + "\n")
        return str(root)

    return make


@pytest.fixture
def make_nifti_root(tmp_path):
    """``make(ids, naming="msd"|"nnunet", shape=(16, 14, 10), with_json_training=True, test_ids=()) -> root``."""
    from sassnet_tf.data.io import write_nifti

    def make(ids, naming="msd", shape=(16, 14, 10), with_json_training=True, test_ids=(), root_name=None):
        root = tmp_path / (root_name or naming)
        rng = np.random.default_rng(1)
        affine = np.diag([1.25, 1.25, 2.5, 1.0])
        affine[:3, 3] = [-10.0, 5.0, 2.0]
        suffix = "_0000" if naming == "nnunet" else ""
        for i, case_id in enumerate(list(ids) + list(test_ids)):
            image, label = _volume(rng, shape, i)
            folder = "imagesTs" if case_id in test_ids else "imagesTr"
            write_nifti(str(root / folder / f"{case_id}{suffix}.nii.gz"), image, affine)
            if case_id not in test_ids:
                write_nifti(str(root / "labelsTr" / f"{case_id}.nii.gz"), label, affine)
        meta = {"name": "test", "labels": {"0": "background", "1": "left atrium"}}
        if naming == "nnunet":
            meta.update({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "left atrium": 1},
                         "numTraining": len(ids), "file_ending": ".nii.gz"})
        elif with_json_training:
            meta["training"] = [{"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in ids]
            meta["test"] = [f"./imagesTs/{i}.nii.gz" for i in test_ids]
        (root / "dataset.json").write_text(json.dumps(meta))
        return str(root)

    return make
