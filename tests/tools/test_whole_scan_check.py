"""tools/whole_scan_check.py: embedding a case in a larger field of view, and the report's fields."""

import importlib.util
import json
import pathlib
import sys

import numpy as np

from tests.inference.tiny_model import make_run_and_export
from tests.training.tiny_la import write_tiny_la

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("whole_scan_check", REPO / "tools" / "whole_scan_check.py")
tool = importlib.util.module_from_spec(spec)
sys.modules["whole_scan_check"] = tool
spec.loader.exec_module(tool)


def test_embed_places_the_case_and_its_label_together():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 16, 8)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[5:9, 4:8, 2:6] = 1
    canvas, canvas_label, offset = tool.embed(image, label, (64, 48), rng)
    assert canvas.shape == canvas_label.shape == (64, 48, 8)
    region = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    np.testing.assert_array_equal(canvas[region], image)
    assert canvas_label.sum() == label.sum() and canvas_label[region].sum() == label.sum()


def test_embed_into_a_phantom_scan_covers_the_phantom_atrium():
    from sassnet_tf.data.phantom import phantom_case

    rng = np.random.default_rng(1)
    image = rng.normal(1.0, 1.0, size=(60, 50, 24)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[20:40, 15:35, 6:18] = 1
    canvas, canvas_label, offset = tool.embed(image, label, (150, 140), rng, fill="phantom", phantom_seed=(0, 2, 0))
    assert canvas.shape == (150, 140, 24)
    region = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    np.testing.assert_array_equal(canvas[region], image)
    assert canvas_label.sum() == label.sum()
    # the phantom's own atrium (same seed, same size) lies under the pasted case
    _, phantom_label, _ = phantom_case((48, 40, 24), seed=(0, 2, 0), return_parts=True, field_of_view=(150, 140))
    outside = phantom_label.astype(bool)
    outside[region] = False
    assert phantom_label.any() and not outside.any()
    assert canvas[:4, :4].mean() < canvas[region].mean() - 0.5  # air at the corners, a scan's body around


def test_report(tmp_path, capsys):
    root = write_tiny_la(tmp_path / "la")
    run, _ = make_run_and_export(str(tmp_path / "model"), downsample=1)
    out = tmp_path / "report.json"
    assert tool.main(["--model", run, "--weights", "best", "--data-root", root, "--list", "test.list",
                      "--canvas", "96", "80", "--fill", "noise", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["cases"] == 2 and len(report["per_case"]) == 2
    assert report["per_case"][0]["canvas"] == [96, 80, 20]
    assert set(report["means"]) == {"dice_crop", "dice_whole_scan", "seconds_crop", "seconds_whole_scan"}
    assert report["source"]["fill"] == "noise" and report["component"] == "deepest"
    assert tool.main(["--model", run, "--weights", "best", "--phantom-cases", "1", "--phantom-shape", "64", "56", "24",
                      "--canvas", "120", "100", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["per_case"][0]["canvas"] == [120, 100, 24] and report["source"]["phantom_cases"] == 1
    assert report["source"]["phantom_shape"] == [64, 56, 24]
