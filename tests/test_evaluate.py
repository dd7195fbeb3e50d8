"""evaluate: helpers, error handling and end-to-end runs on a tiny model and tiny synthetic LA-layout data."""

import csv
import json
import math
import os

import numpy as np
import pytest

from sassnet_tf import evaluate as ev
from sassnet_tf import evaluation_report as report


# --------------------------------------------------------------------------------------------- pure helpers


def test_check_output_dir(tmp_path):
    assert ev.check_output_dir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OSError, match="file.txt"):
        ev.check_output_dir(str(blocker / "sub"))


def test_overlay_png(tmp_path):
    image = np.random.default_rng(0).normal(size=(20, 18, 10)).astype(np.float32)
    label = np.zeros((20, 18, 10), np.uint8)
    label[5:12, 4:10, 3:7] = 1
    prediction = np.roll(label, 2, axis=0)
    path = tmp_path / "png" / "case.png"
    report.save_overlay_png(str(path), image, label, prediction, "case")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.save_overlay_png(str(tmp_path / "empty.png"), image, np.zeros_like(label), np.zeros_like(label), "empty")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    assert ev.main(["--model", str(tmp_path / "missing"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "not found" in err and "Traceback" not in err
    (tmp_path / "neither").mkdir()
    assert ev.main(["--model", str(tmp_path / "neither"), "--data-root", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert ev.main(["--model", str(tmp_path / "neither"), "--threads", "0"]) == 2
    assert "--threads: threads must be a positive integer, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- end-to-end fixtures

PATCH = (32, 32, 16)
STRIDE = (16, 16, 8)
SHAPES = {"case_a": (40, 36, 24), "case_b": (34, 40, 20), "case_c": (28, 30, 18)}  # case_c: smaller than the patch


def _blob(shape, centre, radii):
    grid = np.indices(shape).astype(np.float32)
    return (sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0).astype(np.uint8)


def _write_la_case(root, case_id, image, label):
    import h5py

    folder = root / "2018LA_Seg_Training Set" / case_id
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "mri_norm2.h5", "w") as fh:
        fh["image"] = image.astype(np.float32)
        fh["label"] = label.astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_la_root(tmp_path_factory):
    """Tiny LA-layout dataset: image = label + small noise, so a 'threshold at 0.5' model is exact."""
    root = tmp_path_factory.mktemp("la")
    rng = np.random.default_rng(0)
    for i, (case_id, shape) in enumerate(SHAPES.items()):
        centre = [s / 2 + (i - 1) for s in shape]
        label = _blob(shape, centre, [s / 4 for s in shape])
        noise = np.clip(rng.normal(0, 0.05, size=shape), -0.2, 0.2)
        image = label + noise
        if case_id == "case_a":
            image[2:5, 2:5, 2:5] += 1.0  # a bright spot outside the label: a second component in the prediction
        _write_la_case(root, case_id, image, label)
    (root / "test.list").write_text("\n".join(SHAPES) + "\n")
    (root / "missing.list").write_text("case_a\nno_such_case\n")
    return root


class _ThresholdModule:
    """Builds a SavedModel with the DESIGN.md signatures whose network is probability = sigmoid(40 (x - 0.5))."""

    @staticmethod
    def save(path, patch=PATCH, stride=STRIDE, downsample=1):
        import tensorflow as tf

        meta = json.dumps({"patch_size": list(patch), "stride": list(stride), "threshold": 0.5, "gaussian": False,
                           "batch_size": 2, "preprocessing": {"normalize": "zscore", "downsample": downsample}})

        class Module(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, *patch, 1], tf.float32, name="patches")])
            def segment_patches(self, patches):
                probability = tf.sigmoid(40.0 * (patches - 0.5))
                return {"probability": probability, "sdm": 1.0 - 2.0 * probability}

            @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="format")])
            def metadata(self, format):  # noqa: A002 -- the signature's input name
                return {"json": tf.constant(meta)}

        module = Module()
        tf.saved_model.save(module, str(path), signatures={"segment_patches": module.segment_patches,
                                                           "metadata": module.metadata})
        return path


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_saved_model_with_a_known_network_scores_perfectly(tiny_la_root, tmp_path, capsys):
    base = tmp_path / "models" / "sassnet"
    _ThresholdModule.save(base / "1", patch=(16, 16, 16))  # an older version the newest must win over
    _ThresholdModule.save(base / "2")
    out = tmp_path / "eval"
    code = ev.main(["--model", str(base), "--data-root", str(tiny_la_root), "--output", str(out), "--nms"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "[1/3] case_a: dice 1.0000" in printed and "[3/3] case_c" in printed
    rows = _read_csv(out / "per_case.csv")
    assert [r["case"] for r in rows] == list(SHAPES)
    for r in rows:
        assert float(r["dice"]) == 1.0 and float(r["jaccard"]) == 1.0
        assert float(r["hd95"]) == 0.0 and float(r["asd"]) == 0.0 and float(r["seconds"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["kind"] == "saved_model" and summary["model"]["path"].endswith(os.path.join("sassnet", "2"))
    assert summary["settings"]["patch_size"] == list(PATCH) and summary["settings"]["batch_size"] == 2
    assert summary["paper_table"]["Dice (%)"] == 100.0 and summary["metrics"]["cases"] == 3
    table_line = "| this model | 100.00 ± 0.00 | 100.00 ± 0.00 | 0.00 ± 0.00 | 0.00 ± 0.00 |"
    assert table_line in (out / "summary.md").read_text()

    import nibabel as nib

    for case_id, shape in SHAPES.items():
        nii = nib.load(str(out / "predictions" / f"{case_id}.nii.gz"))
        assert nii.shape == shape and nii.get_data_dtype() == np.uint8
        np.testing.assert_allclose(nii.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
        assert (out / "png" / f"{case_id}.png").stat().st_size > 1000


def test_without_nms_the_bright_spot_costs_dice(tiny_la_root, tmp_path):
    model = _ThresholdModule.save(tmp_path / "sm")
    out = tmp_path / "eval"
    assert ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(out), "--no-png",
                    "--stride", "8", "8", "4", "--gaussian", "--batch-size", "3"]) == 0
    rows = {r["case"]: r for r in _read_csv(out / "per_case.csv")}
    label = _blob(SHAPES["case_a"], [19, 17, 11], [10, 9, 6])
    extra = 27  # the 3x3x3 spot
    assert float(rows["case_a"]["dice"]) == pytest.approx(2 * label.sum() / (2 * label.sum() + extra))
    assert float(rows["case_a"]["asd"]) > 0  # the spot is far from the label (too few voxels to move hd95)
    assert float(rows["case_b"]["dice"]) == 1.0
    assert not (out / "png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["stride"] == [8, 8, 4] and summary["settings"]["gaussian"] is True
    assert summary["settings"]["batch_size"] == 3 and summary["settings"]["nms"] is False


def test_downsampled_model_is_scored_at_full_resolution(tiny_la_root, tmp_path):
    model = _ThresholdModule.save(tmp_path / "sm", patch=(16, 16, 16), stride=(8, 8, 8), downsample=2)
    out = tmp_path / "eval"
    assert ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(out), "--no-png"]) == 0
    import nibabel as nib

    for case_id, shape in SHAPES.items():
        assert nib.load(str(out / "predictions" / f"{case_id}.nii.gz")).shape == shape
    rows = _read_csv(out / "per_case.csv")
    assert all(0.85 < float(r["dice"]) < 1.0 for r in rows if r["case"] != "case_a")
    assert json.loads((out / "summary.json").read_text())["settings"]["downsample"] == 2


@pytest.fixture(scope="module")
def run_dir(tiny_la_root, tmp_path_factory):
    """A run folder as train.py writes it (config.yaml + weights/vnet_best.weights.h5) with a tiny V-Net."""
    import keras

    from sassnet_tf.config import Config, save_config
    from sassnet_tf.models import build_vnet

    keras.mixed_precision.set_dtype_policy("float32")
    keras.utils.set_random_seed(3)
    run = tmp_path_factory.mktemp("run")
    config = Config().replace(**{
        "data.root": str(tiny_la_root), "data.patch_size": list(PATCH), "model.n_filters": 2,
        "eval.stride": list(STRIDE), "eval.batch_size": 2, "train.precision": "float32",
    })
    save_config(config, str(run / "config.yaml"))
    vnet = build_vnet(n_filters=2)
    # A random network's logits sit in a narrow band: centre and stretch them so that about half the voxels are
    # foreground and few sit near the threshold -- the predictions (and their metrics) are then non-trivial.
    from sassnet_tf.data.dataset_layout import open_dataset

    image = open_dataset(str(tiny_la_root)).load("case_a").image[:32, :32, :16]
    logits = vnet(image[None, ..., None], training=False)["seg"].numpy()
    kernel, bias = vnet.seg_head.get_weights()
    vnet.seg_head.set_weights([20.0 * kernel, 20.0 * (bias - np.median(logits))])
    (run / "weights").mkdir()
    vnet.save_weights(str(run / "weights" / "vnet_best.weights.h5"))
    return run


def test_run_dir_end_to_end(run_dir, tiny_la_root):
    import nibabel as nib

    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.metrics import dice

    assert ev.main(["--model", str(run_dir), "--list", "test.list"]) == 0  # data root from config.yaml
    out = run_dir / "eval-test"
    rows = _read_csv(out / "per_case.csv")
    assert [r["case"] for r in rows] == list(SHAPES)
    layout = open_dataset(str(tiny_la_root))
    assert all(0.01 < float(r["dice"]) < 0.99 and math.isfinite(float(r["hd95"])) for r in rows)  # non-trivial
    for r in rows:  # the CSV's Dice is the Dice of the written prediction against the case's label
        prediction = np.asarray(nib.load(str(out / "predictions" / f"{r['case']}.nii.gz")).dataobj)
        assert float(r["dice"]) == pytest.approx(dice(prediction, layout.load(r["case"]).label), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["kind"] == "run_dir" and summary["model"]["weights"] == "best"
    assert summary["settings"]["stride"] == list(STRIDE) and summary["settings"]["batch_size"] == 2


@pytest.mark.slow
def test_run_dir_and_its_exported_saved_model_score_the_same(run_dir, tiny_la_root, tmp_path):
    from sassnet_tf.export.saved_model import export_saved_model
    from sassnet_tf.training.run_dir import load_vnet

    assert ev.main(["--model", str(run_dir), "--output", str(tmp_path / "eval-run"), "--no-png"]) == 0
    rows = _read_csv(tmp_path / "eval-run" / "per_case.csv")
    vnet, config = load_vnet(str(run_dir))
    version = export_saved_model(
        vnet, str(tmp_path / "models" / "sassnet"), patch_size=PATCH, stride=STRIDE, threshold=0.5, gaussian=False,
        batch_size=2, preprocessing={"normalize": "zscore", "downsample": 1}, config=config, warmup=False,
    )
    assert ev.main(["--model", os.path.dirname(version), "--data-root", str(tiny_la_root), "--output",
                    str(tmp_path / "eval-sm"), "--no-png"]) == 0
    exported = _read_csv(tmp_path / "eval-sm" / "per_case.csv")
    assert [r["case"] for r in exported] == list(SHAPES)
    for a, b in zip(rows, exported):
        for key in ("dice", "jaccard", "hd95", "asd"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4, nan_ok=True), (a["case"], key)


def test_bad_inputs_exit_2_naming_the_problem(run_dir, tiny_la_root, tmp_path, capsys):
    assert ev.main(["--model", str(run_dir), "--list", "missing.list", "--output", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "no_such_case" in err and "missing.list" in err and "Traceback" not in err

    assert ev.main(["--model", str(run_dir), "--list", "nope.list", "--output", str(tmp_path / "o2")]) == 2
    assert "nope.list" in capsys.readouterr().err

    assert ev.main(["--model", str(run_dir), "--stride", "0", "16", "8", "--output", str(tmp_path / "o3")]) == 2
    assert "--stride" in capsys.readouterr().err

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert ev.main(["--model", str(run_dir), "--output", str(blocker / "out")]) == 2
    assert "blocker" in capsys.readouterr().err

    assert ev.main(["--model", str(run_dir), "--data-root", str(tmp_path / "nowhere"), "--output",
                    str(tmp_path / "o4")]) == 2
    assert "nowhere" in capsys.readouterr().err

    sm = _ThresholdModule.save(tmp_path / "sm_bad", patch=(30, 32, 16))
    assert ev.main(["--model", str(sm), "--data-root", str(tiny_la_root), "--output", str(tmp_path / "o5")]) == 2
    assert "patch_size [30, 32, 16]: each axis must be a multiple of 16" in capsys.readouterr().err
    good = _ThresholdModule.save(tmp_path / "sm_good")
    assert ev.main(["--model", str(good), "--data-root", str(tiny_la_root)]) == 2
    assert "--output: required" in capsys.readouterr().err


def test_image_and_label_shape_mismatch(tmp_path, run_dir, capsys):
    import h5py

    root = tmp_path / "bad"
    folder = root / "2018LA_Seg_Training Set" / "odd"
    folder.mkdir(parents=True)
    with h5py.File(folder / "mri_norm2.h5", "w") as fh:
        fh["image"] = np.zeros((40, 36, 24), np.float32)
        fh["label"] = np.zeros((40, 36, 20), np.uint8)
    (root / "test.list").write_text("odd\n")
    assert ev.main(["--model", str(run_dir), "--data-root", str(root), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mri_norm2.h5" in err and "shape" in err and "Traceback" not in err


@pytest.mark.real_data
def test_real_la_case_end_to_end(la_root, tmp_path):
    import nibabel as nib

    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.metrics import case_metrics

    layout = open_dataset(str(la_root))
    case_id = layout.read_list("train.list")[0]
    (tmp_path / "one.list").write_text(case_id + "\n")
    model = _ThresholdModule.save(tmp_path / "sm", patch=(112, 112, 80), stride=(56, 56, 40))
    out = tmp_path / "eval"
    assert ev.main(["--model", str(model), "--data-root", str(la_root), "--list", str(tmp_path / "one.list"),
                    "--output", str(out)]) == 0
    case = layout.load(case_id)
    prediction = np.asarray(nib.load(str(out / "predictions" / f"{case_id}.nii.gz")).dataobj)
    assert prediction.shape == case.label.shape
    differ = prediction != (case.image > 0.5)  # sigmoid(40 (x - 0.5)) > 0.5  <=>  x > 0.5
    assert not differ[np.abs(case.image - 0.5) > 1e-6].any()
    row = _read_csv(out / "per_case.csv")[0]
    expected = case_metrics(prediction, case.label)
    for key in ("dice", "jaccard", "hd95", "asd"):
        assert float(row[key]) == pytest.approx(expected[key], abs=1e-5)


def test_nms_output_scores_one_inference_both_ways(tiny_la_root, tmp_path, capsys):
    model = _ThresholdModule.save(tmp_path / "sm")
    plain, largest = tmp_path / "eval", tmp_path / "eval-nms"
    assert ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(plain), "--no-png",
                    "--nms-output", str(largest)]) == 0
    assert "(NMS)" in capsys.readouterr().out
    by_case = {f: {r["case"]: r for r in _read_csv(f / "per_case.csv")} for f in (plain, largest)}
    assert float(by_case[plain]["case_a"]["dice"]) < 1.0  # the bright spot is kept without NMS ...
    assert float(by_case[largest]["case_a"]["dice"]) == 1.0  # ... and removed with it
    assert json.loads((plain / "summary.json").read_text())["settings"]["nms"] is False
    assert json.loads((largest / "summary.json").read_text())["settings"]["nms"] is True
    # The same as a separate --nms run: one pass gives both tables.
    separate = tmp_path / "separate"
    assert ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(separate), "--no-png",
                    "--nms"]) == 0
    for r in _read_csv(separate / "per_case.csv"):
        assert r["dice"] == by_case[largest][r["case"]]["dice"] and r["asd"] == by_case[largest][r["case"]]["asd"]
    import nibabel as nib

    a, b = (np.asarray(nib.load(str(f / "predictions" / "case_a.nii.gz")).dataobj) for f in (plain, largest))
    assert a.sum() == b.sum() + 27


def test_nms_output_needs_a_plain_output(tiny_la_root, tmp_path, capsys):
    model = _ThresholdModule.save(tmp_path / "sm")
    code = ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(tmp_path / "a"), "--nms",
                    "--nms-output", str(tmp_path / "b")])
    assert code == 2 and "--nms-output" in capsys.readouterr().err
    code = ev.main(["--model", str(model), "--data-root", str(tiny_la_root), "--output", str(tmp_path / "a"),
                    "--nms-output", str(tmp_path / "a")])
    assert code == 2 and "must differ from --output" in capsys.readouterr().err


def test_nms_output_keeps_output_without_nms_when_the_run_defaults_to_nms(run_dir, tmp_path):
    import shutil

    from sassnet_tf.config import load_config, save_config

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("eval-*"))
    save_config(load_config(str(run / "config.yaml")).replace(**{"eval.nms": True}), str(run / "config.yaml"))
    assert ev.main(["--model", str(run), "--output", str(tmp_path / "default"), "--no-png"]) == 0
    assert json.loads((tmp_path / "default" / "summary.json").read_text())["settings"]["nms"] is True
    assert ev.main(["--model", str(run), "--output", str(tmp_path / "plain"), "--no-png",
                    "--nms-output", str(tmp_path / "largest")]) == 0
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["settings"]["nms"] is False
    assert json.loads((tmp_path / "largest" / "summary.json").read_text())["settings"]["nms"] is True

    def scores(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in _read_csv(tmp_path / folder / "per_case.csv")]

    assert scores("largest") == scores("default")  # the NMS result of the one pass = the run's default result
