"""SGD with momentum and coupled (L2) weight decay, updated exactly as torch.optim.SGD, which the reference uses."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="sassnet_tf")
class TorchSGD(keras.optimizers.Optimizer):
    """torch.optim.SGD semantics: ``g += wd * w; v = momentum * v + g; w -= lr * v``.

    Keras' SGD keeps ``v = momentum * v - lr * g`` instead, so after a learning-rate drop the old velocity keeps
    the old rate for a while, and its ``weight_decay`` is decoupled; both differ from the reference's updates.

    Args:
        learning_rate: float or LearningRateSchedule.
        momentum: momentum factor.
        coupled_weight_decay: L2 factor added to every gradient (BatchNorm and biases included, as torch).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, coupled_weight_decay=0.0, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        self.momentum = momentum
        self.coupled_weight_decay = coupled_weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = keras.ops.cast(learning_rate, variable.dtype)
        g = keras.ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            g = g + self.coupled_weight_decay * variable
        if self.momentum:
            m = self.momentums[self._get_variable_index(variable)]
            self.assign(m, self.momentum * m + g)
            g = m
        self.assign_sub(variable, lr * g)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, coupled_weight_decay=self.coupled_weight_decay)
        return config
