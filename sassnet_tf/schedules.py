"""Step-dependent weights of the SASSNet training: the adversarial ramp-up w(t) and the stepwise learning rate.

Step convention (both): `step` is the number of network updates already applied, i.e. the 0-based index of the
update being computed -- Keras' ``optimizer.iterations`` read before ``apply_gradients``. The reference keeps a
counter that starts at 0, computes w from it, takes the SGD step, increments the counter and then, when the
counter has reached a multiple of 2500, lowers the learning rate. So update 0 uses w(0) and the updates 0..2499
(the first 2500, "decayed by 0.1 every 2500 iterations" in the paper) use the base rate, updates 2500..4999 use
base * 0.1 and 5000..5999 base * 0.01.
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf


def _check_ramp(interval, length) -> None:
    if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
        raise ValueError(f"consistency_weight: interval must be a positive integer, got {interval!r}")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(f"consistency_weight: length must be a non-negative integer, got {length!r}")


def consistency_weight(step, consistency: float = 0.01, interval: int = 150, length: int = 40):
    """Gaussian ramp-up of the adversarial weight, as the reference:
    ``consistency * exp(-5 * (1 - min(step // interval, length) / length) ** 2)``.

    The ramp advances in whole intervals (integer floor division), so w is constant over each block of
    `interval` updates and reaches `consistency` at step ``interval * length`` (6000 with the defaults). Negative
    steps count as 0; ``length == 0`` gives `consistency` at once (the reference's ramp of length 0).

    Args:
        step: number of updates already applied (see the module docstring): a Python/NumPy integer, or a tensor
            or variable (integer or float) for use inside a `tf.function`.
        consistency: maximum weight (0.01 for 16 labeled cases, 0.015 for 8).
        interval: updates per ramp step (150).
        length: number of ramp steps (40).

    Returns:
        a Python float for a Python/NumPy step, else a float32 scalar tensor.
    """
    _check_ramp(interval, length)
    if length == 0:
        return float(consistency) if isinstance(step, numbers.Number) else tf.constant(consistency, tf.float32)
    if isinstance(step, numbers.Number):
        if isinstance(step, bool):
            raise ValueError(f"consistency_weight: step must be a number, got {step!r}")
        current = min(max(math.floor(step) // interval, 0), length)
        phase = 1.0 - current / length
        return float(consistency * math.exp(-5.0 * phase * phase))
    step = tf.convert_to_tensor(step)
    if step.dtype.is_integer:
        current = tf.math.floordiv(tf.cast(step, tf.int64), interval)
    elif step.dtype.is_floating:
        current = tf.floor(tf.cast(step, tf.float64) / interval)
    else:
        raise ValueError(f"consistency_weight: step must be an integer or float tensor, got {step.dtype.name}")
    current = tf.clip_by_value(tf.cast(current, tf.float64), 0.0, float(length))
    phase = 1.0 - current / length
    return tf.cast(consistency * tf.exp(-5.0 * phase * phase), tf.float32)


@keras.saving.register_keras_serializable(package="sassnet_tf")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(step) = base_lr * factor ** (number of boundaries b with step >= b)``.

    `step` is the optimizer's update count before the update (the module docstring explains why this matches the
    reference): with the defaults, updates 0..2499 use 0.01, 2500..4999 use 0.001 and 5000.. use 1e-4.
    Returns a float64 scalar so every rate equals the Python value ``base_lr * factor ** k`` (a float32 0.001 is
    off by 5e-11); optimizers cast it to each variable's dtype.

    Args:
        base_lr: rate before the first boundary.
        boundaries: increasing non-negative update counts at which the rate is multiplied by `factor`.
        factor: multiplier applied at each boundary.
        name: name of the schedule.

    Example:
        >>> schedule = StepDecay(0.01, (2500, 5000), 0.1)
        >>> [round(float(schedule(s)), 6) for s in (2499, 2500, 5000)]
        [0.01, 0.001, 0.0001]
    """

    def __init__(self, base_lr=0.01, boundaries=(2500, 5000), factor=0.1, name="StepDecay"):
        super().__init__()
        if isinstance(base_lr, bool) or not isinstance(base_lr, numbers.Real) or base_lr < 0:
            raise ValueError(f"StepDecay: base_lr must be a non-negative number, got {base_lr!r}")
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor < 0:
            raise ValueError(f"StepDecay: factor must be a non-negative number, got {factor!r}")
        try:
            bounds = tuple(int(b) for b in boundaries)
        except (TypeError, ValueError):
            raise ValueError(f"StepDecay: boundaries must be a list of integers, got {boundaries!r}") from None
        if any(b != raw for b, raw in zip(bounds, boundaries)) or any(b < 0 for b in bounds) or any(
            b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])
        ):
            raise ValueError(f"StepDecay: boundaries must be strictly increasing non-negative integers, "
                             f"got {boundaries!r}")
        self.base_lr = float(base_lr)
        self.boundaries = bounds
        self.factor = float(factor)
        self.name = name
        self.values = tuple(self.base_lr * self.factor ** k for k in range(len(bounds) + 1))

    def __call__(self, step):
        values = tf.constant(self.values, tf.float64)
        if not self.boundaries:
            return values[0]
        step = tf.convert_to_tensor(step)
        if step.dtype.is_integer:
            passed = tf.cast(step, tf.int64) >= tf.constant(self.boundaries, tf.int64)
        else:
            passed = tf.cast(step, tf.float64) >= tf.constant(self.boundaries, tf.float64)
        return tf.gather(values, tf.reduce_sum(tf.cast(passed, tf.int32)))

    def get_config(self):
        return {"base_lr": self.base_lr, "boundaries": list(self.boundaries), "factor": self.factor,
                "name": self.name}
