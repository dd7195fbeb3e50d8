"""sassnet-predict: a folder of scans in, masks with each scan's geometry out; a bad file is reported,
the rest go on."""

import os

import h5py
import nibabel as nib
import numpy as np
import pytest

from sassnet_tf.inference.predictor import Predictor
from sassnet_tf.predict import main
from tests.inference.tiny_model import make_run_and_export


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_run_and_export(str(tmp_path_factory.mktemp("predict_model")), downsample=1)[0]


def test_a_folder_with_a_bad_file(model, tmp_path, capsys):
    rng = np.random.default_rng(1)
    scans = tmp_path / "in"
    scans.mkdir()
    raw = (300.0 + 50.0 * rng.normal(size=(40, 36, 20))).astype(np.float32)  # scanner intensities: z-scored here
    image = nib.Nifti1Image(raw, None)
    image.set_sform(np.diag([0.7, 0.7, 1.2, 1.0]), code=2)
    qform = np.diag([0.7, 0.7, 1.2, 1.0])
    qform[:3, 3] = [5.0, -3.0, 12.0]  # the scanner's frame, distinct from the aligned sform
    image.set_qform(qform, code=1)
    nib.save(image, str(scans / "patient_a.nii.gz"))
    with h5py.File(scans / "la_case.h5", "w") as fh:  # an LA file: already normalised
        fh["image"] = rng.normal(size=(36, 36, 18)).astype(np.float32)
    (scans / "broken.nii.gz").write_bytes(b"not a nifti file")
    (scans / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["-i", str(scans), "-o", str(out), "-m", model, "--probabilities"]) == 2
    captured = capsys.readouterr()
    assert "broken.nii.gz" in captured.err and captured.err.count("sassnet-predict: error:") == 1
    assert "2 of 3 scans segmented" in captured.out and "3/3" in captured.out
    assert sorted(os.listdir(out)) == ["la_case.nii.gz", "la_case_probability.nii.gz", "patient_a.nii.gz",
                                       "patient_a_probability.nii.gz"]  # nothing for the broken file or the .txt
    mask = nib.load(str(out / "patient_a.nii.gz"))
    assert mask.shape == raw.shape and mask.get_data_dtype() == np.uint8
    assert mask.header.get_sform(coded=True)[1] == 2 and mask.header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(mask.header.get_qform(), qform, atol=1e-5)
    np.testing.assert_allclose(mask.affine, image.affine)
    # the same mask as the Predictor gives for the z-scored scan
    from sassnet_tf.data.io import zscore

    expected = Predictor.from_path(model).predict(zscore(raw))["label"]
    np.testing.assert_array_equal(np.asarray(mask.dataobj), expected)
    assert nib.load(str(out / "la_case.nii.gz")).shape == (36, 36, 18)
    assert (out / "patient_a_probability.nii.gz").is_file()

    # a second run keeps what is there and segments only what is missing
    before = (out / "patient_a.nii.gz").stat().st_mtime_ns
    (out / "la_case.nii.gz").unlink()
    assert main(["-i", str(scans), "-o", str(out), "-m", model]) == 2  # broken.nii.gz still fails
    assert (out / "patient_a.nii.gz").stat().st_mtime_ns == before and (out / "la_case.nii.gz").is_file()
    assert "skipped" in capsys.readouterr().out

    # a probability map asked for later is added; the mask already there is kept
    (out / "patient_a_probability.nii.gz").unlink()
    assert main(["-i", str(scans), "-o", str(out), "-m", model, "--probabilities"]) == 2
    captured = capsys.readouterr().out
    assert "patient_a.nii.gz: " in captured and "kept the existing patient_a.nii.gz" in captured
    assert "la_case.h5: skipped" in captured  # both its outputs are there from the first run
    assert (out / "patient_a.nii.gz").stat().st_mtime_ns == before
    assert (out / "patient_a_probability.nii.gz").is_file()


def test_bad_arguments_exit_2(model, tmp_path, capsys):
    assert main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "-m", model]) == 2
    assert "missing: not found (expected a folder of scans or one .nii" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["-i", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "o"), "-m", model]) == 2
    assert "notes.txt: not a folder nor a .nii, .nii.gz or .h5 file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "-m", model]) == 2
    assert "no .nii" in capsys.readouterr().err
    (tmp_path / "empty" / "a.nii.gz").write_bytes(b"x")
    assert main(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "-m", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "-m", str(tmp_path / "typo")]) == 2
    assert "typo: not found (expected a run folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a model that does not load leaves no empty output folder
    assert main(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "notes.txt"), "-m", model]) == 2
    assert "notes.txt: a file, not a folder (expected a folder for the masks)" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_whole_scan_mode_from_the_command_line(model, tmp_path, capsys):
    rng = np.random.default_rng(2)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(rng.normal(size=(64, 48, 32)).astype(np.float32), np.eye(4)),
             str(tmp_path / "in" / "wide.nii.gz"))
    assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", model, "--whole-scan"]) == 0
    assert "segmented inside" in capsys.readouterr().out
    assert nib.load(str(tmp_path / "out" / "wide.nii.gz")).shape == (64, 48, 32)


def test_one_scan_file_as_input(model, tmp_path, capsys):
    rng = np.random.default_rng(3)
    scan = tmp_path / "Patient_B.NII.GZ"  # extensions in any case
    raw = rng.normal(size=(40, 36, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(raw, np.diag([0.7, 0.7, 1.2, 1.0])), str(scan))
    (tmp_path / "other.nii.gz").write_bytes(b"not read: only the named file is segmented")
    out = tmp_path / "out"
    assert main(["-i", str(scan), "-o", str(out), "-m", model]) == 0
    assert "1 of 1 scans segmented" in capsys.readouterr().out
    assert os.listdir(out) == ["Patient_B.nii.gz"]
    assert nib.load(str(out / "Patient_B.nii.gz")).shape == raw.shape


def test_a_mask_never_replaces_its_scan(model, tmp_path, capsys):
    scan = tmp_path / "case.nii.gz"  # -o is the input folder: case.nii.gz would be both the scan and its mask
    nib.save(nib.Nifti1Image(np.ones((40, 36, 20), np.float32), np.eye(4)), str(scan))
    before = scan.read_bytes()
    assert main(["-i", str(tmp_path), "-o", str(tmp_path), "-m", model, "--overwrite"]) == 2
    assert "would replace the scan itself" in capsys.readouterr().err
    assert scan.read_bytes() == before


def test_outputs_never_replace_other_scans_or_each_other(model, tmp_path, capsys):
    rng = np.random.default_rng(4)
    scans = tmp_path / "in"
    scans.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "b_probability.nii.gz"):
        nib.save(nib.Nifti1Image(rng.normal(size=(40, 36, 20)).astype(np.float32), np.eye(4)), str(scans / name))
    with h5py.File(scans / "a.h5", "w") as fh:  # segments to a.nii.gz, the name of another scan's mask
        fh["image"] = rng.normal(size=(36, 36, 18)).astype(np.float32)
    before = {p.name: p.read_bytes() for p in scans.iterdir()}

    out = tmp_path / "out"  # a separate folder: a.h5 (first) wins a.nii.gz, b (first) wins b_probability.nii.gz
    assert main(["-i", str(scans), "-o", str(out), "-m", model, "--probabilities"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'a.nii.gz'} is already the output of {scans / 'a.h5'}" in err
    assert f"{out / 'b_probability.nii.gz'} is already the output of {scans / 'b.nii.gz'}" in err
    assert sorted(os.listdir(out)) == ["a.nii.gz", "a_probability.nii.gz", "b.nii.gz", "b_probability.nii.gz"]
    assert nib.load(str(out / "a.nii.gz")).shape == (36, 36, 18)  # a.h5's mask, not replaced by a.nii.gz's

    # the input folder as -o, even with --overwrite: no scan is replaced; each failing scan says by what
    assert main(["-i", str(scans), "-o", str(scans), "-m", model, "--probabilities", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{scans / 'a.h5'}: writing {scans / 'a.nii.gz'} would replace the scan {scans / 'a.nii.gz'}" in err
    assert f"{scans / 'b.nii.gz'}: writing {scans / 'b.nii.gz'} would replace the scan itself" in err
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before
