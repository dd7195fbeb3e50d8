"""The discriminator: parameter count, torch-exact padding, sizes, precision, dropout, serialisation."""

import keras
import numpy as np
import pytest

from sassnet_tf.models import Discriminator, build_discriminator
from tests.models.conftest import conv3d


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_reference_parameter_count():
    disc = build_discriminator(64)
    assert count(disc.trainable_weights) == 11_020_290
    assert count(disc.non_trainable_weights) == 0


def numpy_forward(disc, sdm, image):
    """The reference forward pass in inference mode: torch Conv3d(k=4, s=2, padding=1), LeakyReLU, mean, linear."""

    def conv(x, layer):
        return conv3d(x, layer.kernel.numpy(), layer.bias.numpy(), stride=2, pad=1)

    def leaky(x):
        return np.where(x > 0, x, 0.2 * x)

    x = leaky(conv(sdm, disc.sdm_conv) + conv(image, disc.image_conv))
    for layer in (disc.conv_2, disc.conv_3, disc.conv_4):
        x = leaky(conv(x, layer))
    return x.mean(axis=(0, 1, 2)) @ disc.classifier.kernel.numpy() + disc.classifier.bias.numpy(), x.shape


def test_forward_matches_torch_padding_on_odd_sizes():
    # 36 -> 18 -> 9 -> 4 -> 2 and 20 -> 10 -> 5 -> 2 -> 1: odd sizes where Keras "same" padding would differ.
    keras.utils.set_random_seed(1)
    disc = build_discriminator(4)
    rng = np.random.default_rng(0)
    sdm = np.tanh(rng.normal(size=(2, 36, 20, 16, 1))).astype(np.float32)
    image = rng.normal(size=(2, 36, 20, 16, 1)).astype(np.float32)
    logits = disc((sdm, image), training=False).numpy()
    for i in range(2):
        expected, last_shape = numpy_forward(disc, sdm[i].astype(np.float64), image[i].astype(np.float64))
        assert last_shape == (2, 1, 1, 32)
        np.testing.assert_allclose(logits[i], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 32, 32, 16, 1), (1, 64, 48, 32, 1)])
def test_logits_shape_and_dtype_under_mixed_bfloat16(policy, shape):
    policy("mixed_bfloat16")
    disc = build_discriminator(4)
    assert disc.conv_2.compute_dtype == "bfloat16"
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    logits = disc((x, x), training=True)
    assert tuple(logits.shape) == (shape[0], 2) and logits.dtype == "float32"


def test_float32_logits():
    x = np.zeros((3, 32, 32, 16, 1), np.float32)
    logits = build_discriminator(4)((x, x), training=False)
    assert tuple(logits.shape) == (3, 2) and logits.dtype == "float32"


def test_dropout_acts_in_training_only():
    disc = build_discriminator(4)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    a, b = disc((x, x), training=False), disc((x, x), training=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(disc((x, x), training=True).numpy() - a.numpy()).max() > 1e-5
    no_dropout = build_discriminator(4, dropout=0.0)
    np.testing.assert_allclose(no_dropout((x, x), training=True), no_dropout((x, x), training=False), rtol=1e-6)


@pytest.mark.parametrize("sdm_shape,image_shape,match", [
    ((1, 32, 32, 8, 1), (1, 32, 32, 8, 1), "axis D is 8, expected >= 16"),
    ((1, 32, 32, 16, 1), (1, 32, 16, 16, 1), "differ in size"),
    ((1, 32, 32, 16, 2), (1, 32, 32, 16, 1), "sdm must have 1 channel"),
])
def test_bad_inputs_are_rejected(sdm_shape, image_shape, match):
    with pytest.raises(ValueError, match=match):
        build_discriminator(4)((np.zeros(sdm_shape, np.float32), np.zeros(image_shape, np.float32)))


def test_a_single_tensor_is_rejected():
    with pytest.raises(ValueError, match=r"pair \(sdm, image\)"):
        build_discriminator(4)(np.zeros((1, 32, 32, 16, 1), np.float32))


def test_config_round_trip():
    disc = build_discriminator(8, dropout=0.3, name="critic")
    config = disc.get_config()
    assert {k: config[k] for k in ("ndf", "in_channels", "sdm_channels", "dropout")} == {
        "ndf": 8, "in_channels": 1, "sdm_channels": 1, "dropout": 0.3}
    clone = Discriminator.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(disc))
    assert type(revived) is Discriminator and revived.built
    assert count(revived.trainable_weights) == count(disc.trainable_weights)


def test_weights_round_trip(tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    disc = build_discriminator(4)
    path = str(tmp_path / "discriminator.weights.h5")
    disc.save_weights(path)
    other = build_discriminator(4)
    assert np.abs(other((x, x)).numpy() - disc((x, x)).numpy()).max() > 0  # fresh weights differ ...
    other.load_weights(path)
    np.testing.assert_array_equal(other((x, x)), disc((x, x)))  # ... until loaded


def test_weight_file_layout_is_that_of_plain_conv3d_layers(tmp_path):
    """Weight files written before the space-to-depth convolutions (Keras Conv3D layers) must keep loading."""
    import h5py

    path = str(tmp_path / "d.weights.h5")
    build_discriminator(4).save_weights(path)
    with h5py.File(path) as f:
        stored = {}
        f.visititems(lambda name, obj: stored.update({name: obj.shape}) if "/vars/" in name else None)
    convs = {"layers/conv3d": (1, 4), "image_conv": (1, 4), "conv_2": (4, 8), "conv_3": (8, 16), "conv_4": (16, 32)}
    expected = {"classifier/vars/0": (32, 2), "classifier/vars/1": (2,)}
    for name, (c_in, c_out) in convs.items():
        expected.update({f"{name}/vars/0": (4, 4, 4, c_in, c_out), f"{name}/vars/1": (c_out,)})
    assert stored == expected


def test_gradients_match_plain_strided_convolutions():
    """Inputs and weight gradients equal those of the padded strided tf.nn.conv3d form (dropout off)."""
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    disc = build_discriminator(4)
    rng = np.random.default_rng(5)
    sdm = tf.constant(np.tanh(rng.normal(size=(2, 34, 20, 17, 1))), tf.float32)
    image = tf.constant(rng.normal(size=(2, 34, 20, 17, 1)), tf.float32)

    def plain(layer, x):
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]])
        return tf.nn.conv3d(x, layer.kernel, [1, 2, 2, 2, 1], "VALID") + layer.bias

    def reference(s, i):
        x = tf.nn.leaky_relu(plain(disc.sdm_conv, s) + plain(disc.image_conv, i), 0.2)
        for layer in (disc.conv_2, disc.conv_3, disc.conv_4):
            x = tf.nn.leaky_relu(plain(layer, x), 0.2)
        return tf.reduce_mean(x, axis=(1, 2, 3)) @ disc.classifier.kernel + disc.classifier.bias

    results = []
    for fn in (lambda s, i: disc((s, i), training=False), reference):
        with tf.GradientTape() as tape:
            tape.watch([sdm, image])
            logits = fn(sdm, image)
            loss = tf.reduce_sum(logits * tf.constant([[1.0, -2.0], [0.5, 3.0]]))
        results.append([logits] + tape.gradient(loss, [sdm, image] + disc.trainable_variables))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_leaky_relu_equals_tf_leaky_relu_in_value_and_gradient():
    import tensorflow as tf

    from sassnet_tf.models.discriminator import _leaky_relu

    for dtype in (tf.float32, tf.bfloat16):
        # Tiny negatives too: the gradient selects on the output's sign, which must stay the input's.
        x = tf.constant([-3.0, -0.5, -1e-38, 0.0, 1e-38, 0.25, 7.0], dtype)
        upstream = tf.constant([1.0, -2.0, 3.0, 0.5, -1.5, 4.0, 2.5], dtype)
        results = []
        for fn in (_leaky_relu, lambda t: tf.nn.leaky_relu(t, 0.2)):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            results.append((y, tape.gradient(y, x, output_gradients=upstream)))  # at 0: the slope, as TF's
        (y, g), (y_ref, g_ref) = results
        assert y.dtype == dtype
        np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))
        np.testing.assert_array_equal(tf.cast(g, tf.float32), tf.cast(g_ref, tf.float32))
