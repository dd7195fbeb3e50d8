"""The segmentation client end to end against the local server: NIfTI and LA h5 inputs, preprocessing from the
model's metadata (z-score, downsample), REST, TLS, retries while the server is unavailable, and clear errors."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import grpc
import h5py
import nibabel as nib
import numpy as np
import pytest

from sassnet_tf.data.io import downsample_volume
from sassnet_tf.inference.resample import resize_linear
from sassnet_tf.serving.client import SegmentationClient, main, zscore
from sassnet_tf.serving.errors import ServingError
from sassnet_tf.serving.server import LocalModelServer
from tests.serving.conftest import free_port, labels_match, save_toy_model, sigmoid

SHAPE = (24, 20, 12)


def make_scan(rng) -> np.ndarray:
    # Raw-scanner-like intensities (offset and scale), so skipping the z-score would change the mask.
    return (300.0 + 80.0 * rng.normal(size=SHAPE)).astype(np.float32)


def write_nifti_scan(path, image: np.ndarray, slope: float = 1.0) -> np.ndarray:
    affine = np.array([[0.0, -0.7, 0.0, 12.5], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 1.25, 4.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image((image / slope).astype(np.float32), affine)
    img.header["descrip"] = b"test scan"
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return affine


def test_cli_nifti_end_to_end_keeps_affine_and_header(server, tmp_path, rng, capsys):
    image = make_scan(rng)
    scan = tmp_path / "scan.nii.gz"
    affine = write_nifti_scan(scan, image, slope=2.0)
    image = np.asarray(nib.load(str(scan)).dataobj, dtype=np.float32)  # what the scanner file really holds
    code = main([
        "--server", server.grpc_target, "--input", str(scan), "--output", str(tmp_path / "mask.nii.gz"),
        "--probability-output", str(tmp_path / "prob.nii.gz"), "--sdm-output", str(tmp_path / "sdm.nii.gz"),
    ])
    assert code == 0, capsys.readouterr().err
    expected = sigmoid(zscore(image))
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.get_data_dtype() == np.uint8
    assert mask.header["descrip"].tobytes().startswith(b"test scan")
    assert mask.header.get_xyzt_units() == ("mm", "sec")
    assert labels_match(np.asarray(mask.dataobj), zscore(image))
    assert 0.2 < np.asarray(mask.dataobj).mean() < 0.8
    prob = nib.load(str(tmp_path / "prob.nii.gz"))
    np.testing.assert_allclose(prob.affine, affine)
    np.testing.assert_allclose(np.asarray(prob.dataobj), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(nib.load(str(tmp_path / "sdm.nii.gz")).dataobj), np.tanh(zscore(image)),
                               atol=1e-5)
    assert "mask.nii.gz" in capsys.readouterr().out


def test_cli_la_h5_is_not_renormalised_and_nms_keeps_one_component(server, tmp_path, rng, capsys):
    # Two blobs of positive values in a negative background: the label has two components, NMS keeps the larger.
    image = np.full(SHAPE, -2.0, np.float32)
    image[2:10, 2:10, 2:8] = 1.5
    image[16:19, 14:17, 8:10] = 1.5
    case = tmp_path / "CASE01" / "mri_norm2.h5"
    case.parent.mkdir()
    with h5py.File(case, "w") as fh:
        fh["image"] = image
        fh["label"] = (image > 0).astype(np.uint8)
    out = tmp_path / "mask.nii.gz"
    assert main(["--server", server.grpc_target, "--input", str(case), "--output", str(out),
                 "--probability-output", str(tmp_path / "p.nii.gz")]) == 0, capsys.readouterr().err
    mask = nib.load(str(out))
    np.testing.assert_allclose(mask.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (image > 0).astype(np.uint8))
    # The LA release is already normalised: the client sends it as is (a z-score would move these values).
    np.testing.assert_allclose(np.asarray(nib.load(str(tmp_path / "p.nii.gz")).dataobj), sigmoid(image), rtol=1e-5)

    assert main(["--server", server.grpc_target, "--input", str(case), "--output", str(out), "--nms"]) == 0
    kept = np.asarray(nib.load(str(out)).dataobj)
    assert kept.sum() == 8 * 8 * 6 and kept[2:10, 2:10, 2:8].all()


def test_client_downsamples_and_upsamples_as_the_metadata_says(tmp_path, rng):
    base = tmp_path / "models" / "half"
    save_toy_model(str(base / "1"), downsample=2, threshold=0.6)
    ramp = np.linspace(-1.0, 1.0, SHAPE[0], dtype=np.float32)[:, None, None]
    image = make_scan(rng) + 200.0 * ramp  # smooth structure survives the downsampling
    with LocalModelServer(str(base), model_name="half", port=0, rest_port=None, poll_seconds=0) as server:
        with SegmentationClient(server.grpc_target, "half", timeout=30) as client:
            assert client.metadata()["preprocessing"] == {"normalize": "zscore", "downsample": 2}
            result = client.segment(image)
    small = downsample_volume(zscore(image), 2)
    assert small.shape == (12, 10, 6)
    expected = resize_linear(sigmoid(small).astype(np.float32), SHAPE, factor=2)
    assert result["probability"].shape == SHAPE and result["label"].shape == SHAPE
    np.testing.assert_allclose(result["probability"], expected, rtol=1e-5, atol=1e-6)
    # Thresholded on the client at the model's threshold (0.6), after upsampling.
    np.testing.assert_array_equal(result["label"], (result["probability"] > 0.6).astype(np.uint8))
    assert 0.2 < result["label"].mean() < 0.5
    assert result["label"].dtype == np.uint8 and result["sdm"].dtype == np.float32


@pytest.mark.parametrize("downsample, threshold, field", [(0, 0.5, "downsample"), (1, 1.5, "threshold")])
def test_unusable_metadata_is_a_failed_precondition_naming_the_field(tmp_path, rng, downsample, threshold, field):
    """The client reads the served settings with InferenceSettings.from_metadata, the rules of every other reader."""
    base = tmp_path / "models" / "bad"
    save_toy_model(str(base / "1"), downsample=downsample, threshold=threshold)
    with LocalModelServer(str(base), model_name="bad", port=0, rest_port=None, poll_seconds=0) as server:
        with SegmentationClient(server.grpc_target, "bad", timeout=30) as client:
            with pytest.raises(ServingError) as info:
                client.segment(make_scan(rng))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"model 'bad': metadata {field}" in info.value.message


def test_rest_mode_matches_grpc(server, tmp_path, rng):
    image = make_scan(rng)
    scan = tmp_path / "scan.nii.gz"
    write_nifti_scan(scan, image)
    grpc_out, rest_out = tmp_path / "grpc.nii.gz", tmp_path / "rest.nii.gz"
    assert main(["--server", server.grpc_target, "--input", str(scan), "--output", str(grpc_out)]) == 0
    rest_server = f"127.0.0.1:{server.rest_port}"
    assert main(["--rest", "--server", rest_server, "--input", str(scan), "--output", str(rest_out)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(grpc_out)).dataobj),
                                  np.asarray(nib.load(str(rest_out)).dataobj))
    with SegmentationClient(rest_server, rest=True, timeout=30) as client:
        assert client.metadata()["threshold"] == 0.5


def test_retries_until_the_server_comes_up(tmp_path, toy_v1_source, rng, caplog):
    base = tmp_path / "sassnet"
    shutil.copytree(toy_v1_source, base / "1")
    port = free_port()
    holder = {}

    def start_later() -> None:
        time.sleep(1.0)
        holder["server"] = LocalModelServer(str(base), port=port, rest_port=None, poll_seconds=0).start()

    thread = threading.Thread(target=start_later)
    thread.start()
    started = time.monotonic()
    try:
        with SegmentationClient(f"127.0.0.1:{port}", retries=6, backoff_seconds=0.25, timeout=30) as client:
            result = client.segment(make_scan(rng))
        assert time.monotonic() - started >= 1.0
        assert result["label"].shape == SHAPE
        assert "unavailable" in caplog.text and "retry 1/6" in caplog.text
    finally:
        thread.join()
        if "server" in holder:
            holder["server"].stop(grace_seconds=0.5)


def test_clear_errors_exit_2_without_traceback(server, tmp_path, rng, capsys):
    image = make_scan(rng)
    scan = tmp_path / "scan.nii.gz"
    write_nifti_scan(scan, image)
    out = str(tmp_path / "mask.nii.gz")

    port = free_port()  # nothing listens there
    assert main(["--server", f"127.0.0.1:{port}", "--retries", "1", "--input", str(scan), "--output", out]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} unreachable after 2 attempt(s)" in err and "Traceback" not in err

    assert main(["--server", server.grpc_target, "--model", "nosuch", "--input", str(scan), "--output", out]) == 2
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "nosuch" in err and "Traceback" not in err

    assert main(["--server", server.grpc_target, "--version", "5", "--input", str(scan), "--output", out]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    for path in (broken, tmp_path / "missing.nii.gz", tmp_path / "scan.txt"):
        assert main(["--server", server.grpc_target, "--input", str(path), "--output", out]) == 2
        err = capsys.readouterr().err
        assert f"--input {path}" in err and "Traceback" not in err
    assert not (tmp_path / "mask.nii.gz").exists()

    assert main(["--server", server.grpc_target, "--input", str(scan), "--output", str(tmp_path / "m.png")]) == 2
    assert ".nii" in capsys.readouterr().err

    before = scan.read_bytes()  # a result never replaces the scan or another result
    assert main(["--server", server.grpc_target, "--input", str(scan), "--output", str(scan)]) == 2
    assert f"--output {scan}: is the --input scan itself" in capsys.readouterr().err
    assert main(["--server", server.grpc_target, "--input", str(scan), "--output", out, "--sdm-output", out]) == 2
    assert f"--sdm-output {out}: the same file as --output" in capsys.readouterr().err
    assert scan.read_bytes() == before and not (tmp_path / "mask.nii.gz").exists()


def test_server_errors_reach_the_python_api(server, rng):
    with SegmentationClient(server.grpc_target, signature="segment_patches", timeout=30) as client:
        with pytest.raises(ServingError) as info:
            client.segment(make_scan(rng))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "patches" in info.value.message


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_grpc_and_https(tmp_path, toy_base, rng):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    image = make_scan(rng)
    with LocalModelServer(toy_base, port=0, rest_port=0, poll_seconds=0, tls_cert=str(cert),
                          tls_key=str(key)) as server:
        with SegmentationClient(server.grpc_target, tls_ca=str(cert), timeout=30) as client:
            label = client.segment(image)["label"]
        with SegmentationClient(f"127.0.0.1:{server.rest_port}", rest=True, tls_ca=str(cert), timeout=30) as client:
            np.testing.assert_array_equal(client.segment(image)["label"], label)
        # Plain-text gRPC against the TLS port fails and is reported as unreachable, not as a crash.
        with SegmentationClient(server.grpc_target, retries=0, timeout=10) as client:
            with pytest.raises(ServingError) as info:
                client.metadata()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert labels_match(label, zscore(image))


def test_the_input_s_sform_qform_and_codes_come_back_unchanged(server, tmp_path, rng):
    """A scanner file whose sform (code 2, aligned) differs from its qform (code 1, scanner): every output keeps
    both matrices, both codes and pixdim, so masks overlay the scan in sform- and qform-first viewers alike."""
    image = make_scan(rng)
    sform = np.array([[0.0, -0.8, 0.0, 90.0], [0.9, 0.0, 0.0, -120.0], [0.0, 0.0, 1.5, -40.0], [0, 0, 0, 1]])
    qform = np.diag([0.8, 0.9, 1.5, 1.0])
    qform[:3, 3] = [-10.0, 20.0, 30.0]
    scan = nib.Nifti1Image(image, None)
    scan.set_sform(sform, code=2)
    scan.set_qform(qform, code=1)
    nib.save(scan, str(tmp_path / "scan.nii.gz"))
    before = nib.load(str(tmp_path / "scan.nii.gz")).header
    assert main(["--server", server.grpc_target, "--input", str(tmp_path / "scan.nii.gz"),
                 "--output", str(tmp_path / "mask.nii.gz"), "--probability-output", str(tmp_path / "p.nii.gz")]) == 0
    for name in ("mask.nii.gz", "p.nii.gz"):
        after = nib.load(str(tmp_path / name)).header
        for coded in ("get_sform", "get_qform"):
            matrix, code = getattr(after, coded)(coded=True)
            want_matrix, want_code = getattr(before, coded)(coded=True)
            assert code == want_code, (name, coded)
            np.testing.assert_allclose(matrix, want_matrix, atol=1e-5, err_msg=f"{name} {coded}")
        np.testing.assert_allclose(after["pixdim"][1:4], before["pixdim"][1:4])
