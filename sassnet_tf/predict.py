"""`sassnet-predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m MODEL`: segment every scan in a folder (like nnUNetv2_predict).

Every NIfTI (``.nii``, ``.nii.gz``) and LA ``.h5`` file directly in INPUT_FOLDER (or the one scan file given as
``-i``) is segmented by MODEL (a training run folder or an exported SavedModel / model base path) and its mask written
to OUTPUT_FOLDER as ``<name>.nii.gz`` (uint8 0/1), with the input's affine and NIfTI header (sform, qform and their
codes kept). NIfTI scans are z-scored first, as the model's training data were (``--normalize``); LA ``.h5`` files are
already normalised. A file that cannot be read or segmented is reported on its own line and the others go on; the exit
code is then 2. Existing outputs are kept unless ``--overwrite`` (a scan whose outputs all exist is skipped, one with
some missing gets only those); an output never replaces an input scan (OUTPUT_FOLDER = INPUT_FOLDER) nor another
output of the same run (``a.h5`` and ``a.nii.gz`` both segment to ``a.nii.gz``): that scan fails with the reason.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Optional, Sequence

from sassnet_tf.utils.runtime import set_cpu_threads

INPUT_EXTENSIONS = (".nii.gz", ".nii", ".h5")


def _stem(name: str) -> str:
    lower = name.lower()
    return next(name[: -len(ext)] for ext in INPUT_EXTENSIONS if lower.endswith(ext))


def list_inputs(folder: str) -> list:
    """The scan files directly in `folder`, sorted (hidden files and other extensions ignored)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if not n.startswith(".") and n.lower().endswith(INPUT_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, n)))


def resolve_inputs(path: str) -> list:
    """The scans that `-i PATH` names: those directly in a folder, or the one scan file itself.

    ValueError naming PATH and what was expected when it is missing, not a scan file, or a folder without scans."""
    if os.path.isdir(path):
        inputs = list_inputs(path)
        if not inputs:
            raise ValueError(f"-i {path}: no .nii, .nii.gz or .h5 files in this folder")
        return inputs
    if not os.path.exists(path):
        raise ValueError(f"-i {path}: not found (expected a folder of scans or one .nii, .nii.gz or .h5 file)")
    if not path.lower().endswith(INPUT_EXTENSIONS):
        raise ValueError(f"-i {path}: not a folder nor a .nii, .nii.gz or .h5 file")
    return [path]


def _progress(done: int, total: int, name: str, note: str) -> str:
    width = 24
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name}: {note}"


def output_paths(path: str, output: str, probabilities: bool) -> dict:
    """The files segmenting `path` writes, by kind: "mask" ``<name>.nii.gz``, then "probability"
    ``<name>_probability.nii.gz`` if asked."""
    name = _stem(os.path.basename(path))
    return {"mask": os.path.join(output, f"{name}.nii.gz"),
            **({"probability": os.path.join(output, f"{name}_probability.nii.gz")} if probabilities else {})}


def _file_id(path: str) -> Optional[tuple]:
    try:
        stat = os.stat(path)
    except OSError:  # gone since it was listed: reading it reports that
        return None
    return stat.st_dev, stat.st_ino


def output_clash(path: str, targets: list, scans: dict, claimed: dict) -> Optional[str]:
    """Why segmenting `path` into `targets` must not happen, or None.

    `scans` maps the file identity of every input scan to its path (an output must never replace a scan, even with
    --overwrite); `claimed` maps outputs already written in this run to the scan they segment (``a.h5`` and
    ``a.nii.gz`` would both write ``a.nii.gz``)."""
    for target in targets:
        target_id = _file_id(target)
        if target_id in scans:
            which = "itself" if target_id == _file_id(path) else scans[target_id]
            return f"writing {target} would replace the scan {which}; choose another -o folder"
        if target in claimed:
            return f"{target} is already the output of {claimed[target]}; rename one of the two scans"
    return None


def predict_file(predictor, path: str, write: dict, normalize: str, nms: bool, whole_scan: bool = False) -> str:
    """Segment one scan and write the outputs in `write` (``{"mask": file, "probability": file}``, either may be
    left out); returns a short note for the progress line."""
    import numpy as np

    from sassnet_tf.data.io import nifti_header, output_header, read_case, write_nifti

    nifti = not path.lower().endswith(".h5")
    method = "zscore" if normalize == "zscore" or (normalize == "auto" and nifti) else "none"
    case = read_case(path, read_label=False, normalize=method)
    header = nifti_header(path)
    tick = time.perf_counter()
    out = predictor.predict_whole_scan(case.image) if whole_scan else predictor.predict(case.image)
    label = out["label"]
    if nms:
        from sassnet_tf.inference.postprocess import largest_connected_component

        label = largest_connected_component(label)
    seconds = time.perf_counter() - tick

    for kind, target in write.items():
        array = label.astype(np.uint8) if kind == "mask" else out["probability"].astype(np.float32)
        write_nifti(target, array, case.affine, header=output_header(header, array.dtype))
    box = f", segmented inside {[list(b) for b in out['box']]}" if whole_scan else ""
    return f"{int(label.sum())} foreground voxels, {seconds:.1f} s{box}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sassnet-predict", description=__doc__.split("\n\n")[0],
                                epilog="Masks keep each input's affine and header. Exit codes: 0 all segmented, 2 a "
                                       "bad argument or at least one file failed (each named on its own line).")
    p.add_argument("-i", "--input", required=True, help="folder of scans (.nii, .nii.gz, LA .h5), or one such file")
    p.add_argument("-o", "--output", required=True, help="folder for the masks (created)")
    p.add_argument("-m", "--model", required=True, help="training run folder, SavedModel folder or model base path")
    p.add_argument("--weights", choices=("best", "last"), default="best", help="run folder weights (default best)")
    p.add_argument("--normalize", choices=("auto", "zscore", "none"), default="auto",
                   help="intensity normalisation: auto = z-score NIfTI scans, leave LA .h5 files (already normalised)")
    p.add_argument("--nms", action="store_true", help="keep the largest connected component")
    p.add_argument("--stride", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default: the model's")
    p.add_argument("--probabilities", action="store_true", help="also write <name>_probability.nii.gz")
    p.add_argument("--whole-scan", action="store_true",
                   help="uncropped scans: a coarse pass over the whole field of view, then the normal sliding window "
                        "inside the box of its thickest component "
                        "(Predictor.predict_whole_scan; docs/results/whole_scan.md)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip those scans)")
    p.add_argument("--threads", type=int, help="CPU threads for TensorFlow's ops (default: all cores)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        inputs = resolve_inputs(args.input)
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise ValueError(f"-o {args.output}: a file, not a folder (expected a folder for the masks)")
    except ValueError as exc:
        print(f"sassnet-predict: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.threads is not None:
            set_cpu_threads(args.threads)
        from sassnet_tf.inference.predictor import Predictor

        predictor = Predictor.from_path(args.model, weights=args.weights)
        if args.stride:
            predictor = predictor.with_settings(stride=tuple(args.stride))
        predictor.segment_fn()  # load the network once, before the first scan
        os.makedirs(args.output, exist_ok=True)  # only once the model loads: a typo in -m leaves no empty folder
    except (ValueError, OSError) as exc:  # ModelLoadError, InferenceSettingsError, RunDirError are ValueErrors
        print(f"sassnet-predict: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    scans = {_file_id(path): path for path in inputs}
    scans.pop(None, None)  # a scan gone since it was listed: reading it reports that
    claimed: dict = {}

    def report_failure(done: int, name: str, path: str, reason: str) -> None:
        print(_progress(done, len(inputs), name, "FAILED"), flush=True)
        print(f"sassnet-predict: error: {path}: {reason}", file=sys.stderr, flush=True)

    for done, path in enumerate(inputs, 1):
        name = os.path.basename(path)
        kinds = output_paths(path, args.output, args.probabilities)
        targets = list(kinds.values())
        clash = output_clash(path, targets, scans, claimed)
        if clash:  # checked before --overwrite: that flag replaces old masks, never scans or this run's outputs
            failed += 1
            report_failure(done, name, path, clash)
            continue
        claimed.update((target, path) for target in targets)
        # without --overwrite only what is missing is written (the probability map asked for later, say)
        write = {kind: target for kind, target in kinds.items() if args.overwrite or not os.path.exists(target)}
        kept = [os.path.basename(target) for kind, target in kinds.items() if kind not in write]
        if not write:
            there = f"{targets[0]} exists (--overwrite replaces it)" if len(targets) == 1 else \
                f"{' and '.join(targets)} exist (--overwrite replaces them)"
            print(_progress(done, len(inputs), name, f"skipped, {there}"), flush=True)
            continue
        try:
            note = predict_file(predictor, path, write, args.normalize, args.nms, args.whole_scan)
        except Exception as exc:  # one bad file must not stop the others; nibabel/h5py raise many types
            failed += 1
            report_failure(done, name, path,
                           str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}")
            continue
        if kept:
            note += f"; kept the existing {', '.join(kept)} (--overwrite replaces it)"
        print(_progress(done, len(inputs), name, note), flush=True)
    print(f"{len(inputs) - failed} of {len(inputs)} scans segmented into {args.output}"
          + (f"; {failed} failed (above)" if failed else ""), flush=True)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
