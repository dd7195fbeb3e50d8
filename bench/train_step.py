"""The training step every training benchmark times: bench_train.py and profile_train.py measure the same thing.

A SASSNet (V-Net + discriminator, the reference's optimizers) on a synthetic batch of 2 labeled + 2 unlabeled
patches held in memory, so the figure is the step alone (bench_pipeline.py measures the input pipeline).
"""
from __future__ import annotations

import os
import sys


def synthetic_train_step(precision: str, patch, n_filters: int, ndf: int, mode: str, d_reuse_forward: bool):
    """(traced train step, batch, resolved precision) for a seeded model; call ``step(batch)`` to run one iteration.

    TensorFlow is imported here, not at module load, so a parent process can set TF_ENABLE_ONEDNN_OPTS for the
    children that call this.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sassnet_tf.models import build_discriminator, build_vnet
    from sassnet_tf.schedules import StepDecay
    from sassnet_tf.training.precision import apply_precision
    from sassnet_tf.training.sassnet import SASSNet
    from sassnet_tf.training.torch_sgd import TorchSGD

    resolved = apply_precision(precision)
    keras.utils.set_random_seed(0)
    model = SASSNet(build_vnet(n_filters), build_discriminator(ndf), mode=mode, d_reuse_forward=d_reuse_forward)
    model.compile(TorchSGD(StepDecay(0.01), momentum=0.9, coupled_weight_decay=1e-4),
                  keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.99, epsilon=1e-8))
    model.build_optimizers()
    rng = np.random.default_rng(0)
    shape = (2,) + tuple(patch) + (1,)
    batch = {"labeled_image": tf.constant(rng.normal(size=shape), tf.float32),
             "label": tf.constant((rng.random(shape) > 0.9).astype(np.float32)),
             "sdm": tf.constant(rng.uniform(-1, 1, size=shape), tf.float32),
             "unlabeled_image": tf.constant(rng.normal(size=shape), tf.float32)}
    return tf.function(model.train_step), batch, resolved
