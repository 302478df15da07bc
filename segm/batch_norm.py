"""Keras's BatchNormalization, trained on TensorFlow's fused kernel.

Keras 3 normalizes a training batch with separate ops: moments (two reductions), then
(x - mean) * rsqrt(var + eps) * gamma + beta, each a pass over the activations, and as
many again for the gradient (keras-team/keras-core#225). TensorFlow's FusedBatchNormV3
does the statistics, the normalization and, through its registered gradient, the
backward pass in one CPU kernel each. On unet_fused that is about a sixth of a training
step (benchmark.py steps --keras_batch_norm). The layer is Keras's own: the same
weights, moving statistics, momentum, saving and inference path; only a training batch
of a 4-D, channels-last, float32 or bfloat16 tensor on one replica takes the fused kernel.
With bfloat16 (mixed_bfloat16) its scale, offset and statistics stay float32, as the
kernel takes them; on this project's CPU that made a bfloat16 unet_fused step 1.45x faster
than float32, where Keras's unfused path made it no faster at all.
"""
from segm.tf_quiet import keras, tf


@keras.saving.register_keras_serializable(package="segm")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training pass uses tf's FusedBatchNormV3."""

    def _fusable(self, inputs, training, mask):
        return (training and self.trainable and mask is None and not self.synchronized
                and not self.renorm and self.center and self.scale
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and inputs.dtype in (tf.float32, tf.bfloat16))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)[:3]
        # The kernel hands back the unbiased variance, n / (n - 1) times the one it
        # normalized with; Keras averages the biased one, so undo the correction.
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * tf.maximum(n - 1.0, 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return outputs


def bn_relu(x, norm=keras.layers.BatchNormalization):
    """ReLU(norm(x)), the normalisation every model's blocks share."""
    # momentum 0.9: the running statistics must settle within a few hundred steps.
    return keras.layers.ReLU()(norm(momentum=0.9)(x))
