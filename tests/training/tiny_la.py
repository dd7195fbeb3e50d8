"""A tiny LA-layout dataset (UA-MT h5 files + list files) for training tests."""

import os

import h5py
import numpy as np

TINY = ["model.n_filters=2", "model.ndf=4", "data.patch_size=[32,32,16]", "train.checkpoint_every=2",
        "train.val_every=2", "train.val_cases=1", "train.log_every=1", "train.image_every=2",
        "data.num_parallel_calls=1"]


def write_tiny_la(root, n=6, shape=(40, 36, 20), seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"CASE{i:02d}" for i in range(n)]
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i, case in enumerate(ids):
        c = [s / 2 + rng.uniform(-3, 3) for s in shape]
        r = rng.uniform(6, 9)
        label = (((zz - c[0]) / r) ** 2 + ((yy - c[1]) / r) ** 2 + ((xx - c[2]) / (r * 0.7)) ** 2 <= 1).astype(np.uint8)
        image = (label * 2.0 + rng.normal(0, 0.5, shape)).astype(np.float32)
        folder = os.path.join(root, "2018LA_Seg_Training Set", case)
        os.makedirs(folder, exist_ok=True)
        with h5py.File(os.path.join(folder, "mri_norm2.h5"), "w") as f:
            f["image"] = image
            f["label"] = label
    with open(os.path.join(root, "train.list"), "w") as f:
        f.write("\n".join(ids) + "\n")
    with open(os.path.join(root, "test.list"), "w") as f:
        f.write("\n".join(ids[-2:]) + "\n")
    return str(root)
