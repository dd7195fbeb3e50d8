"""w(t) and the stepwise learning rate at the iterations where they change, against the formulas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.schedules import StepDecay, consistency_weight

STEPS = [0, 149, 150, 2499, 2500, 2501, 4999, 5000, 5999, 6000, 9000]


def w_formula(t, consistency=0.01, interval=150, length=40):
    return consistency * math.exp(-5 * (1 - min(t // interval, length) / length) ** 2)


def lr_formula(s):
    return 0.01 * 0.1 ** sum(s >= b for b in (2500, 5000))


@pytest.mark.parametrize("step", STEPS)
def test_consistency_weight_on_python_ints(step):
    got = consistency_weight(step)
    assert isinstance(got, float)
    assert got == pytest.approx(w_formula(step), rel=1e-12)


def test_consistency_weight_values_that_matter():
    assert consistency_weight(0) == pytest.approx(0.01 * math.exp(-5))
    assert consistency_weight(149) == consistency_weight(0)  # integer floor division: flat within an interval
    assert consistency_weight(150) > consistency_weight(149)
    assert consistency_weight(5999) == pytest.approx(0.01 * math.exp(-5 / 1600))  # 39 / 40
    assert consistency_weight(6000) == pytest.approx(0.01) and consistency_weight(10 ** 6) == pytest.approx(0.01)
    assert consistency_weight(np.int64(2500), consistency=0.015) == pytest.approx(w_formula(2500, 0.015))
    assert consistency_weight(-5) == consistency_weight(0)
    assert consistency_weight(7, consistency=0.02, length=0) == 0.02


def test_consistency_weight_in_a_graph_on_a_variable():
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def weight():
        return consistency_weight(step, 0.01, 150, 40)

    for s in STEPS:
        step.assign(s)
        got = weight()
        assert got.dtype == tf.float32
        assert float(got) == pytest.approx(w_formula(s), rel=1e-6)


def test_consistency_weight_on_tensors_and_the_optimizer_counter():
    assert float(consistency_weight(tf.constant(2999, tf.int32))) == pytest.approx(w_formula(2999), rel=1e-6)
    assert float(consistency_weight(tf.constant(2999.0))) == pytest.approx(w_formula(2999), rel=1e-6)
    opt = keras.optimizers.SGD(0.1)
    opt.build([tf.Variable(1.0)])
    opt.iterations.assign(4500)
    assert float(consistency_weight(opt.iterations)) == pytest.approx(w_formula(4500), rel=1e-6)


@pytest.mark.parametrize("kwargs,match", [({"interval": 0}, "interval must be a positive integer"),
                                          ({"length": -1}, "length must be a non-negative integer")])
def test_consistency_weight_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        consistency_weight(10, **kwargs)


@pytest.mark.parametrize("step", STEPS)
def test_step_decay(step):
    schedule = StepDecay(0.01, (2500, 5000), 0.1)
    assert float(schedule(step)) == pytest.approx(lr_formula(step), rel=1e-12)
    assert float(schedule(tf.constant(step, tf.int64))) == pytest.approx(lr_formula(step), rel=1e-12)


def test_step_decay_is_read_at_the_optimizer_count_before_the_update():
    # The update with 0-based index 2500 (the 2501st) is the first at the decayed rate.
    var = tf.Variable(0.0)
    opt = keras.optimizers.SGD(StepDecay())
    opt.build([var])
    for count, lr in ((2499, 0.01), (2500, 0.001), (5000, 0.0001)):
        opt.iterations.assign(count)
        before = float(var.numpy())
        opt.apply_gradients([(tf.constant(1.0), var)])
        assert before - float(var.numpy()) == pytest.approx(lr, rel=1e-4)  # float32 variable


def test_step_decay_config_round_trip():
    schedule = StepDecay(0.05, [100, 300, 900], 0.5, name="lr")
    config = schedule.get_config()
    assert config == {"base_lr": 0.05, "boundaries": [100, 300, 900], "factor": 0.5, "name": "lr"}
    clone = StepDecay.from_config(config)
    assert [float(clone(s)) for s in (99, 100, 300, 901)] == [0.05, 0.025, 0.0125, 0.00625]
    revived = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(revived, StepDecay) and revived.get_config() == config
    assert float(StepDecay(0.02, ())(10 ** 6)) == 0.02


@pytest.mark.parametrize("kwargs,match", [
    ({"boundaries": (5000, 2500)}, "strictly increasing"),
    ({"boundaries": (2500.5,)}, "strictly increasing non-negative integers"),
    ({"boundaries": "abc"}, "must be a list of integers"),
    ({"base_lr": -1.0}, "base_lr must be a non-negative number"),
    ({"factor": "0.1"}, "factor must be a non-negative number"),
])
def test_step_decay_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepDecay(**kwargs)
