"""Each pixel's (y, x) as two more input channels, for the pixel-grid graph models."""
from segm.tf_quiet import keras, tf


@keras.saving.register_keras_serializable(package="segm")
class PixelCoordinates(keras.layers.Layer):
    """Appends each pixel's (y, x) in [-1, 1]: (B, H, W, C) -> (B, H, W, C + 2)."""

    def call(self, x):
        # A grid graph is the same seen from every pixel; coordinates let a
        # graph layer know where on the canvas it is, as zero padding does for a CNN.
        shape = tf.shape(x)
        ys = tf.linspace(-1.0, 1.0, shape[1])
        xs = tf.linspace(-1.0, 1.0, shape[2])
        grid = tf.stack(tf.meshgrid(ys, xs, indexing="ij"), axis=-1)  # (H, W, 2)
        grid = tf.broadcast_to(tf.cast(grid, x.dtype), (shape[0], shape[1], shape[2], 2))
        return tf.concat([x, grid], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


# ------------------------------------------------------------------ region graphs
