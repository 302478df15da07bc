"""The fused batch norm is Keras's BatchNormalization: the same outputs, gradients and
moving statistics, and the same model after a save and load."""
import numpy as np
import pytest

from segm.batch_norm import FusedBatchNormalization
from segm.tf_quiet import keras, tf


def twin_layers(shape, rng):
    """Keras's layer and the fused one, built with the same random gamma and beta."""
    pair = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    gamma, beta = rng.normal(size=(2, shape[-1])).astype(np.float32)
    for layer in pair:
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return pair


def step(layer, x, weights):
    """A training call: outputs, gradients of a non-linear loss, moving statistics after."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(weights * y * y)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y, *grads, layer.moving_mean, layer.moving_variance]


# (2, 1, 1, 3): two values per channel, where n / (n - 1) = 2 would show at once
@pytest.mark.parametrize("shape", [(4, 5, 6, 7), (2, 1, 1, 3)])
def test_a_training_step_equals_keras_batch_normalization(shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    weights = tf.constant(rng.normal(size=shape).astype(np.float32))
    keras_bn, fused = twin_layers(shape, rng)
    for _ in range(2):  # the moving statistics after two updates, not only the first
        expected, got = step(keras_bn, x, weights), step(fused, x, weights)
    for name, e, g in zip(("outputs", "dx", "dgamma", "dbeta", "mean", "variance"),
                          expected, got):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4,
                                   atol=1e-5 * scale, err_msg=name)
    np.testing.assert_allclose(fused(x, training=False), keras_bn(x, training=False),
                               atol=1e-5)


def test_a_bfloat16_training_step_is_fused_and_equals_keras_within_bfloat16():
    rng = np.random.default_rng(3)
    shape = (4, 5, 6, 7)
    x = tf.cast(tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32)), tf.bfloat16)
    pair = [keras.layers.BatchNormalization(momentum=0.9, dtype="mixed_bfloat16"),
            FusedBatchNormalization(momentum=0.9, dtype="mixed_bfloat16")]
    for layer in pair:
        layer.build(shape)
    keras_bn, fused = pair
    assert fused._fusable(x, True, None) and fused.gamma.dtype == "float32"
    expected, got = keras_bn(x, training=True), fused(x, training=True)
    assert got.dtype == tf.bfloat16
    # bfloat16 keeps 8 bits of mantissa: outputs of about unit size agree to ~1%.
    np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)),
                               np.asarray(tf.cast(expected, tf.float32)), atol=0.05)
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, rtol=1e-2)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=2e-2)


def test_what_the_kernel_cannot_take_falls_back_to_keras():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 6, 5)).astype(np.float32))  # (B, N, C): 3-D
    keras_bn, fused = twin_layers(x.shape, rng)
    np.testing.assert_allclose(fused(x, training=True), keras_bn(x, training=True), atol=1e-5)
    fused.synchronized = True
    assert not fused._fusable(tf.zeros((1, 2, 2, 5)), True, None)


def test_a_model_with_it_saves_and_loads(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, FusedBatchNormalization()(inputs))
    model.layers[-1].moving_mean.assign([1.0, 2.0, 3.0])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[-1], FusedBatchNormalization)
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_only_unet_fused_and_unet_fast_use_it():
    """unet_fused and unet_fast train on the fused kernel; the other models keep Keras's layer, so
    their published figures still come from the code that measured them."""
    import model

    def norms(name):
        return {type(layer) for layer in model.build_model(name).layers
                if isinstance(layer, keras.layers.BatchNormalization)}
    assert norms("unet_fused") == norms("unet_fast") == {FusedBatchNormalization}
    assert norms("unet") == norms("hybrid") == {keras.layers.BatchNormalization}
