"""tools/case_errors.py: false positives and negatives per case, kept beside a record, summarised over seeds."""

import importlib.util
import pathlib

import h5py
import nibabel as nib
import numpy as np
import pytest

from tests.training.tiny_la import write_tiny_la

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("case_errors", REPO / "tools" / "case_errors.py")
case_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(case_errors)


def test_measure_sorts_the_errors_by_where_they_lie():
    label = np.zeros((60, 40, 40), bool)
    label[10:20, 10:20, 10:20] = True  # 1000 atrium voxels
    prediction = label.copy()
    prediction[10:12] = False  # 200 missed
    prediction[20, 10:20, 10:20] = True  # 100 on the boundary (1 voxel out)
    prediction[20:45, 14:16, 14:16] = True  # a connected leak along the first axis, 4 voxels per slice
    prediction[50:52, 30:32, 30:32] = True  # a stray blob of 8, far away
    counts = case_errors.measure(prediction.astype(np.uint8), label)
    # the leak: slices 21..44 beyond the boundary slice 20; distance d = i - 19; within 3: i 21, 22 (8 voxels);
    # beyond 10: i 30..44 (15 slices, 60 voxels); the stray blob is beyond 10 too
    assert counts == {"atrium": 1000, "false_negative": 200, "false_positive": 100 + 24 * 4 + 8,
                      "fp_within_3": 100 + 8, "fp_beyond_10": 60 + 8, "outside_largest_component": 8}
    image = np.where(label, 2.0, 0.5)
    image[45:, 14:16, 14:16] = 1.0  # the leak's far end (slices 45..) is not predicted; its voxels up to 44 are
    image[20:45, 14:16, 14:16] = 1.5
    measured = case_errors.measure(prediction, label, image)
    # far false positives: 60 leak voxels at 1.5 and the 8 blob voxels at 0.5, over the atrium's 2.0
    assert measured[case_errors.BRIGHTNESS] == pytest.approx((60 * 1.5 + 8 * 0.5) / 68 / 2.0)
    assert case_errors.measure(label, label)["false_positive"] == 0
    assert case_errors.measure(label, label, image)[case_errors.BRIGHTNESS] is None  # no far false positive
    with pytest.raises(ValueError, match="shape"):
        case_errors.measure(label[:10], label)


def test_errors_are_written_beside_the_record_and_summarised_over_seeds(tmp_path, capsys):
    root = write_tiny_la(tmp_path / "la", n=4)
    cases = ["CASE02", "CASE03"]
    labels = {}
    for case in cases:
        with h5py.File(tmp_path / "la" / "2018LA_Seg_Training Set" / case / "mri_norm2.h5", "r") as f:
            labels[case] = f["label"][:].astype(bool)
    runs, records = tmp_path / "runs", tmp_path / "records"
    for name, missed in (("vnet_8-seed1337", 0.0), ("vnet_8-seed1338", 0.5), ("sassnet_8-seed1337", 0.25)):
        (records / name / "eval-test").mkdir(parents=True)
        (records / name / "eval-test" / "per_case.csv").write_text(
            "case,dice\n" + "".join(f"{c},0.9\n" for c in cases))
        (runs / name / "eval-test" / "predictions").mkdir(parents=True)
        for case in cases:
            prediction = labels[case].copy()
            coords = np.argwhere(prediction)
            prediction[tuple(coords[: int(missed * len(coords))].T)] = False  # a fraction of the atrium missed
            nib.save(nib.Nifti1Image(prediction.astype(np.uint8), np.eye(4)),
                     str(runs / name / "eval-test" / "predictions" / f"{case}.nii.gz"))
    (records / "vnet_16-seed1337" / "eval-test").mkdir(parents=True)  # a record without its run folder: skipped
    assert case_errors.main(["--runs", str(runs), "--records", str(records), "--data-root", root,
                             "--json", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "measured from run folders: sassnet_8-seed1337, vnet_8-seed1337, vnet_8-seed1338" in out
    assert (records / "vnet_8-seed1338" / "eval-test" / "case_errors.csv").read_text().startswith(
        "case,atrium,false_negative,false_positive,fp_within_3,fp_beyond_10,outside_largest_component,"
        "fp_beyond_10_brightness\nCASE02,")
    summary = case_errors.summarise(str(records), "test")
    assert summary["vnet_8"]["seeds"] == 2 and summary["vnet_8"]["cases"] == 4
    assert summary["vnet_8"]["false_negative"] == pytest.approx(0.25, abs=0.01)  # seeds 0 and 0.5
    assert summary["sassnet_8"]["false_negative"] == pytest.approx(0.25, abs=0.01)
    assert summary["vnet_8"]["false_positive"] == 0 and summary["vnet_8"]["fp_beyond_10_brightness"] is None
    assert "| vnet_8 | 2 | 0.25" in out and (tmp_path / "summary.json").is_file()
    # the run folders gone (a new machine): the summary still comes from the records
    assert case_errors.main(["--runs", str(tmp_path / "gone"), "--records", str(records)]) == 0
    assert "none (summary from the records)" in capsys.readouterr().out
