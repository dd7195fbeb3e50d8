"""Split the CPU into two logical devices before TensorFlow initialises, so MirroredStrategy can be tested."""

import tensorflow as tf

try:
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # TensorFlow already initialised by an earlier test module: the test then skips
    pass
