"""Split the CPU into two logical devices before TensorFlow initialises, so MirroredStrategy can be tested; the tiny
LA-layout dataset the train.py tests share."""

import pytest
import tensorflow as tf

from tests.training.tiny_la import write_tiny_la

try:
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # TensorFlow already initialised by an earlier test module: the test then skips
    pass


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny LA-layout dataset (tests/training/tiny_la.py), written once per test module."""
    return write_tiny_la(tmp_path_factory.mktemp("la"))
