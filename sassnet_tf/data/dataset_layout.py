"""Dataset folders: the UA-MT LA release and NIfTI datasets as the Medical Segmentation Decathlon and nnU-Net lay
them out; list files; the labeled / unlabeled split.

LA layout::

    ROOT/2018LA_Seg_Training Set/<ID>/mri_norm2.h5   (datasets image, label)
    ROOT/train.list, ROOT/test.list                  (one ID a line)

NIfTI layout (MSD: ``imagesTr/<case>.nii.gz``; nnU-Net: ``imagesTr/<case>_0000.nii.gz``)::

    ROOT/dataset.json
    ROOT/imagesTr/, ROOT/labelsTr/<case>.nii.gz, ROOT/imagesTs/ (optional)
    ROOT/*.list (optional; without them "train.list" means every training case and "test.list" every imagesTs case)
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence, Union

from sassnet_tf.data.errors import DataError
from sassnet_tf.data.io import Case, read_case

LA_TRAINING_FOLDER = "2018LA_Seg_Training Set"
LA_FILE = "mri_norm2.h5"
FORMATS = ("auto", "la", "nifti")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_DEFAULT_LISTS = {"train.list": "training", "test.list": "test"}


def _nifti_stem(name: str) -> Optional[str]:
    lower = name.lower()
    for ext in (".nii.gz", ".nii"):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return None


def _nifti_files(folder: str) -> list:
    """NIfTI file names in `folder`, sorted; hidden files (the MSD tarballs' ``._*`` macOS forks) skipped."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and _nifti_stem(n) is not None)


class DatasetLayout:
    """A dataset folder: where each case lives, its list files, the labeled / unlabeled split.

    Build it with `open_dataset` (format detection); the constructor checks nothing beyond the arguments.

    Args:
        root: the dataset folder.
        format: ``"la"`` or ``"nifti"``.
        downsample: integer factor applied when reading each case (``read_case(downsample=...)``).

    Example:
        >>> layout = open_dataset("../shared/data/LA")           # doctest: +SKIP
        >>> labeled, unlabeled = layout.split(labeled=16)         # doctest: +SKIP
        >>> case = layout.load(labeled[0])                        # doctest: +SKIP
    """

    def __init__(self, root: str, format: str, downsample: int = 1):
        if format not in ("la", "nifti"):
            raise DataError(f"{root}: format {format!r} is not one of la, nifti")
        if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
            raise DataError(f"{root}: downsample must be an integer >= 1, got {downsample!r}")
        self.root = os.fspath(root)
        self.format = format
        self.downsample = downsample
        self.variant = "la"
        self._file_ending = ".nii.gz"
        self._training_ids: list = []
        self._test_ids: list = []
        if format == "nifti":
            self._scan_nifti()

    def __repr__(self) -> str:
        return f"DatasetLayout(root={self.root!r}, format={self.format!r}, variant={self.variant!r}, " \
               f"downsample={self.downsample})"

    # ------------------------------------------------------------------------------------------------ lists
    def list_path(self, name_or_path: str) -> str:
        """Resolve a list file: absolute paths as given, relative names under the root (else under the cwd)."""
        name = os.fspath(name_or_path)
        if os.path.isabs(name):
            return name
        under_root = os.path.join(self.root, name)
        if not os.path.exists(under_root) and os.path.isfile(name):
            return name
        return under_root

    def read_list(self, name_or_path: str) -> list:
        """Read a list file of case IDs (one a line; blank lines and ``#`` comments skipped).

        For a NIfTI dataset without the file, ``train.list`` means every training case (dataset.json
        ``training`` or ``imagesTr/``) and ``test.list`` every test case (``imagesTs/``).

        Raises:
            DataError: the file is missing, names no ID, or names an ID twice (file and line numbers given).
        """
        path = self.list_path(name_or_path)
        if not os.path.isfile(path):
            default = _DEFAULT_LISTS.get(os.fspath(name_or_path))
            if self.format == "nifti" and default is not None:
                ids = self._training_ids if default == "training" else self._test_ids
                if not ids:
                    raise DataError(f"{path}: list file not found and the dataset has no {default} cases "
                                    f"({'imagesTr' if default == 'training' else 'imagesTs'}/ is empty)")
                return list(ids)
            raise DataError(f"{path}: list file not found (expected one case ID a line)")
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read list file: {exc}") from None
        ids: list = []
        first_line: dict = {}
        for number, line in enumerate(lines, 1):
            case_id = line.split("#", 1)[0].strip()
            if not case_id:
                continue
            if case_id in first_line:
                raise DataError(f"{path}: line {number}: ID {case_id!r} is listed twice (first on line "
                                f"{first_line[case_id]})")
            first_line[case_id] = number
            ids.append(case_id)
        if not ids:
            raise DataError(f"{path}: list file names no case ID")
        return ids

    def _ids(self, value: Union[str, Sequence[str]], what: str) -> list:
        if isinstance(value, (str, os.PathLike)):
            return self.read_list(value)
        ids = [str(v) for v in value]
        seen = set()
        for case_id in ids:
            if case_id in seen:
                raise DataError(f"{self.root}: {what}: ID {case_id!r} is listed twice")
            seen.add(case_id)
        return ids

    def split(
        self,
        train_list: str = "train.list",
        labeled: int = 16,
        labeled_list: Union[None, str, Sequence[str]] = None,
        unlabeled_list: Union[None, str, Sequence[str]] = None,
    ) -> tuple:
        """Split the training IDs into (labeled_ids, unlabeled_ids).

        Default (the reference's rule): the first `labeled` IDs of `train_list` are labeled, the rest unlabeled.
        Explicit lists (a list file name or a sequence of IDs) replace that: with `labeled_list` only, the
        unlabeled IDs are the rest of `train_list`; with `unlabeled_list` only, the labeled IDs are the first
        `labeled` of `train_list` and the unlabeled IDs exactly that list.

        Args:
            train_list: list file of the training IDs.
            labeled: number of labeled IDs taken from the head of `train_list`.
            labeled_list: explicit labeled IDs.
            unlabeled_list: explicit unlabeled IDs.

        Raises:
            DataError: more labeled IDs asked for than the list holds, or an ID both labeled and unlabeled.
        """
        train_ids = None
        if labeled_list is not None:
            labeled_ids = self._ids(labeled_list, "labeled_list")
            if not labeled_ids:
                raise DataError(f"{self.root}: labeled_list names no case ID")
        else:
            if isinstance(labeled, bool) or not isinstance(labeled, int) or labeled < 1:
                raise DataError(f"{self.root}: labeled must be an integer >= 1, got {labeled!r}")
            train_ids = self.read_list(train_list)
            if labeled > len(train_ids):
                raise DataError(f"{self.list_path(train_list)}: {labeled} labeled cases asked for but the list "
                                f"holds only {len(train_ids)} IDs")
            labeled_ids = train_ids[:labeled]
        if unlabeled_list is not None:
            unlabeled_ids = self._ids(unlabeled_list, "unlabeled_list")
        else:
            if train_ids is None:
                train_ids = self.read_list(train_list)
            chosen = set(labeled_ids)
            unlabeled_ids = [i for i in train_ids if i not in chosen]
        both = sorted(set(labeled_ids) & set(unlabeled_ids))
        if both:
            raise DataError(f"{self.root}: {len(both)} ID(s) both labeled and unlabeled: {', '.join(both[:10])}")
        return list(labeled_ids), list(unlabeled_ids)

    # ------------------------------------------------------------------------------------------------ cases
    def case_path(self, case_id: str) -> str:
        """The image file of `case_id` (whether or not it exists)."""
        if self.format == "la":
            return os.path.join(self.root, LA_TRAINING_FOLDER, case_id, LA_FILE)
        for folder in ("imagesTr", "imagesTs"):
            for name in self._image_names(case_id):
                candidate = os.path.join(self.root, folder, name)
                if os.path.isfile(candidate):
                    return candidate
        return os.path.join(self.root, "imagesTr", self._image_names(case_id)[0])

    def label_path(self, case_id: str) -> Optional[str]:
        """The label file of `case_id` (NIfTI; None for LA, whose label sits in the image file)."""
        if self.format == "la":
            return None
        for folder in ("labelsTr", "labelsTs"):
            candidate = os.path.join(self.root, folder, case_id + self._file_ending)
            if os.path.isfile(candidate):
                return candidate
        return os.path.join(self.root, "labelsTr", case_id + self._file_ending)

    def load(self, case_id: str, read_label: bool = True) -> Case:
        """Read one case (validated, downsampled by the layout's factor).

        Raises:
            DataError: the case's file is missing (the expected path is named) or invalid.
        """
        path = self.case_path(case_id)
        if not os.path.isfile(path):
            raise DataError(f"case {case_id!r}: image file not found, expected {path}")
        label_path = None
        if read_label and self.format == "nifti":
            label_path = self.label_path(case_id)
            if not os.path.isfile(label_path):
                raise DataError(f"case {case_id!r}: label file not found, expected {label_path}")
        # NIfTI scans carry raw intensities: z-score them as the LA release's h5 files already are (and as the
        # serving client does), so training, evaluation and serving see the same input distribution.
        return read_case(path, read_label=read_label, label_path=label_path, downsample=self.downsample,
                         case_id=case_id, normalize="zscore" if self.format == "nifti" else "none")

    # ------------------------------------------------------------------------------------------------ NIfTI
    def _image_names(self, case_id: str) -> list:
        if self.variant == "nnunet":
            return [f"{case_id}_0000{self._file_ending}"]
        return [case_id + self._file_ending]

    def _scan_nifti(self) -> None:
        meta = {}
        meta_path = os.path.join(self.root, "dataset.json")
        if os.path.isfile(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as fh:
                    meta = json.load(fh)
            except (OSError, ValueError) as exc:
                raise DataError(f"{meta_path}: not valid JSON: {exc}") from None
            if not isinstance(meta, dict):
                raise DataError(f"{meta_path}: expected a JSON object")
        ending = meta.get("file_ending", ".nii.gz")
        if ending not in (".nii.gz", ".nii"):
            raise DataError(f"{meta_path}: file_ending {ending!r} is not supported, expected .nii.gz or .nii")
        self._file_ending = ending
        train_files = _nifti_files(os.path.join(self.root, "imagesTr"))
        test_files = _nifti_files(os.path.join(self.root, "imagesTs"))
        files = train_files + test_files
        stems = [_nifti_stem(n) for n in files]
        if stems and all(_CHANNEL_SUFFIX.match(s) for s in stems):
            self.variant = "nnunet"
            channels = sorted({_CHANNEL_SUFFIX.match(s).group("channel") for s in stems})
            if channels != ["0000"]:
                raise DataError(f"{self.root}/imagesTr: channels {', '.join(channels)} found; only single-channel "
                                "data (_0000) is supported")
        else:
            self.variant = "msd"
        if files:
            # The files themselves decide the extension (dataset.json may be absent or generic).
            self._file_ending = ".nii" if files[0].lower().endswith(".nii") else ".nii.gz"

        def case_of(name: str) -> str:
            stem = _nifti_stem(os.path.basename(name)) or os.path.basename(name)
            match = _CHANNEL_SUFFIX.match(stem)
            return match.group("case") if self.variant == "nnunet" and match else stem

        training = meta.get("training")
        if isinstance(training, list) and training:
            ids = []
            for i, entry in enumerate(training):
                image = entry.get("image") if isinstance(entry, dict) else None
                if not isinstance(image, str):
                    raise DataError(f"{meta_path}: training[{i}] has no 'image' path")
                ids.append(case_of(image))
            self._training_ids = ids
        else:
            self._training_ids = [case_of(n) for n in train_files]
        test = meta.get("test")
        if isinstance(test, list) and test:
            self._test_ids = [case_of(t if isinstance(t, str) else t.get("image", "")) for t in test]
        else:
            self._test_ids = [case_of(n) for n in test_files]


def detect_format(root: str) -> str:
    """``"la"`` or ``"nifti"`` from the folder's content; raise DataError describing both layouts otherwise."""
    if os.path.isdir(os.path.join(root, LA_TRAINING_FOLDER)):
        return "la"
    if os.path.isfile(os.path.join(root, "dataset.json")) or os.path.isdir(os.path.join(root, "imagesTr")):
        return "nifti"
    hint = ""
    if os.path.basename(os.path.normpath(root)) == LA_TRAINING_FOLDER:
        hint = "; pass its parent folder (the one holding train.list) instead"
    raise DataError(
        f"{root}: not a known dataset layout{hint}. Expected either the LA layout "
        f"('{LA_TRAINING_FOLDER}/<ID>/{LA_FILE}' + train.list) or a NIfTI layout (dataset.json, imagesTr/, labelsTr/)"
    )


def open_dataset(root: str, format: str = "auto", downsample: int = 1) -> DatasetLayout:
    """Open a dataset folder.

    Args:
        root: the dataset folder.
        format: ``"auto"`` (detect), ``"la"`` or ``"nifti"``.
        downsample: integer factor applied to every case read.

    Raises:
        DataError: the folder is missing or matches neither layout.
    """
    root = os.fspath(root)
    if format not in FORMATS:
        raise DataError(f"{root}: format {format!r} is not one of {', '.join(FORMATS)}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset folder not found")
    if format == "auto":
        format = detect_format(root)
    elif format == "la" and not os.path.isdir(os.path.join(root, LA_TRAINING_FOLDER)):
        raise DataError(f"{root}: format 'la' expects the folder '{LA_TRAINING_FOLDER}' inside it")
    elif format == "nifti" and not os.path.isdir(os.path.join(root, "imagesTr")) \
            and not os.path.isdir(os.path.join(root, "imagesTs")):
        raise DataError(f"{root}: format 'nifti' expects imagesTr/ (and labelsTr/) inside it")
    return DatasetLayout(root, format, downsample=downsample)
