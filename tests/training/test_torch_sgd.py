"""TorchSGD follows torch.optim.SGD's update (momentum buffer, coupled weight decay, lr drops)."""

import numpy as np
import tensorflow as tf

from sassnet_tf.schedules import StepDecay
from sassnet_tf.training.torch_sgd import TorchSGD


def reference_sgd(w, grads, lrs, momentum, wd):
    """torch.optim.SGD written out: g += wd*w; buf = momentum*buf + g (buf = g at the first step); w -= lr*buf."""
    buf = None
    for g, lr in zip(grads, lrs):
        g = g + wd * w
        buf = g.copy() if buf is None else momentum * buf + g
        w = w - lr * buf
    return w


def test_matches_torch_update_with_lr_drops():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype(np.float64)
    grads = [rng.normal(size=(5, 3)) for _ in range(8)]
    schedule = StepDecay(0.1, (3, 6), 0.1)
    lrs = [float(schedule(s)) for s in range(8)]
    assert lrs[2] == 0.1 and abs(lrs[3] - 0.01) < 1e-12 and abs(lrs[6] - 0.001) < 1e-12
    var = tf.Variable(w0.astype(np.float32))
    opt = TorchSGD(schedule, momentum=0.9, coupled_weight_decay=1e-2)
    for g in grads:
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    expected = reference_sgd(w0, grads, lrs, 0.9, 1e-2)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    opt = TorchSGD(0.01, momentum=0.5, coupled_weight_decay=1e-4)
    clone = TorchSGD.from_config(opt.get_config())
    assert clone.momentum == 0.5 and clone.coupled_weight_decay == 1e-4
