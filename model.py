"""Segmentation networks: a CNN baseline, a U-Net and convolutions on the pixel grid graph.

Every pixel of an H x W image is a node; edges join 4- or 8-neighbours. The graph is built
once by graphs.py with scipy.sparse (never a dense (H*W)^2 matrix) and used by three layers:

    GraphConv             Y = Â X W + b, Â = D~^-1/2 (A + I) D~^-1/2 (Kipf & Welling)
    ChebConv              Y = sum_k T_k(L~) X W_k + b (Defferrard et al.)
    DirectionalGraphConv  Y = X W_self + sum_d A_d X W_d + b, one weight per direction

The sparse product is the definition and the general path. On a grid every one of these
matrices only links a pixel to its 3x3 neighbourhood, so each layer also has an exact stencil
fast path of dense ops (a fixed depthwise convolution, or conv2d for the directional layer);
tests prove the two equal.

Two more layer families live beneath, one file each: the graph U-Net's Graclus pyramid
(segm/pyramid_layers.py) and SLIC region graphs (segm/region_layers.py; their models in
segm/region_models.py, edge geometry in segm/edge_geometry.py). Importing this file
registers them and the loss (segm/losses.py), so load_model needs nothing else.

`python model.py [NAME ...]` prints the named models' summaries and every model's parameters.
"""
import sys

import scipy.sparse as sp

from segm.configurator import POOLINGS
from segm.coordinates import PixelCoordinates
from segm import checkpoints, losses
from segm.batch_norm import FusedBatchNormalization, bn_relu
from segm.graph_ops import chebyshev, depthwise, sparse_matmul
from segm.graphs import (DIRECTIONS, check_connectivity, direction_adjacencies, gcn_propagation,
                         grid_stencil, rescaled_laplacian)
from segm.pyramid_layers import GraphPool, GraphUnpool, PyramidChebConv
from segm.region_layers import RegionGraph
from segm.region_models import regions, regions_distance, regions_offset
from segm.tf_quiet import keras, tf


# ------------------------------------------------------------------------ layers

class _GridGraphLayer(keras.layers.Layer):
    """What the grid graph layers share: (B, H, W, C) -> (B, H, W, units), a kernel, a bias."""

    def __init__(self, units, connectivity, use_bias=True, stencil=True, **kwargs):
        super().__init__(**kwargs)
        check_connectivity(connectivity)
        self.units, self.connectivity = int(units), int(connectivity)
        self.use_bias, self.stencil = bool(use_bias), bool(stencil)

    def add_kernel_and_bias(self, shape):
        self.kernel = self.add_weight(shape, "glorot_uniform", name="kernel")
        self.bias = self.add_weight((self.units,), "zeros", name="bias") if self.use_bias else None

    def biased(self, y):
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "connectivity": self.connectivity,
                "use_bias": self.use_bias, "stencil": self.stencil}


@keras.saving.register_keras_serializable(package="segm")
class GraphConv(_GridGraphLayer):
    """Y = Â X W + b on the pixel grid: (B, H, W, C) -> (B, H, W, units)."""

    def __init__(self, units, connectivity=4, use_bias=True, stencil=True, **kwargs):
        super().__init__(units, connectivity, use_bias, stencil, **kwargs)

    def build(self, input_shape):
        _, h, w, c = input_shape
        self.add_kernel_and_bias((c, self.units))
        if self.stencil:
            self.scale, self.window = grid_stencil(h, w, self.connectivity, self_loop=1)
        else:
            self.propagation = gcn_propagation(h, w, self.connectivity)

    def call(self, x):
        xw = tf.einsum("bhwc,cu->bhwu", x, self.kernel)              # (B, H, W, units)
        if self.stencil:
            scale = tf.constant(self.scale, xw.dtype)                 # (H, W, 1)
            return self.biased(scale * depthwise(scale * xw, self.window))
        return self.biased(tf.reshape(sparse_matmul(self.propagation, xw), (-1, *xw.shape[1:])))


@keras.saving.register_keras_serializable(package="segm")
class ChebConv(_GridGraphLayer):
    """Y = sum_{k<K} T_k(L~) X W_k + b, T_0 = X, T_1 = L~ X, T_k = 2 L~ T_{k-1} - T_{k-2}."""

    def __init__(self, units, K, connectivity=4, use_bias=True, stencil=True, **kwargs):
        super().__init__(units, connectivity, use_bias, stencil, **kwargs)
        if int(K) < 1:
            raise ValueError(f"K (the Chebyshev order) must be an integer >= 1, got {K!r}.")
        self.K = int(K)

    def build(self, input_shape):
        _, h, w, c = input_shape
        self.add_kernel_and_bias((self.K, c, self.units))
        # With lmax = 2, L~ = L - I = -D^-1/2 A D^-1/2: a stencil without self loop.
        if self.stencil:
            self.scale, self.window = grid_stencil(h, w, self.connectivity, self_loop=0)
        else:
            self.rescaled = rescaled_laplacian(h, w, self.connectivity, lmax=2.0)

    def _apply_rescaled(self, x):
        if self.stencil:
            scale = tf.constant(self.scale, x.dtype)
            return -scale * depthwise(scale * x, self.window)
        return tf.reshape(sparse_matmul(self.rescaled, x), (-1, *x.shape[1:]))

    def call(self, x):
        return self.biased(chebyshev(x, self._apply_rescaled, self.kernel))

    def get_config(self):
        return {**super().get_config(), "K": self.K}


@keras.saving.register_keras_serializable(package="segm")
class DirectionalGraphConv(_GridGraphLayer):
    """Y = X W_self + sum_d A_d X W_d + b: one weight per edge direction, so it sees orientation."""

    def __init__(self, units, connectivity=8, use_bias=True, stencil=True, **kwargs):
        super().__init__(units, connectivity, use_bias, stencil, **kwargs)

    def build(self, input_shape):
        _, h, w, c = input_shape
        directions = ((0, 0),) + DIRECTIONS[self.connectivity]      # self first
        # kernel[0] is W_self, kernel[d] the weight of direction directions[d].
        self.add_kernel_and_bias((len(directions), c, self.units))
        if self.stencil:
            # Direction (dy, dx) is tap [dy + 1, dx + 1] of a 3x3 convolution kernel.
            self.taps = tuple((dy + 1) * 3 + dx + 1 for dy, dx in directions)
        else:
            adjacencies = direction_adjacencies(h, w, self.connectivity)
            self.stacked = sp.hstack([adjacencies[d] for d in directions[1:]]).tocsr()

    def call(self, x):
        if self.stencil:
            c = self.kernel.shape[1]
            k = tf.scatter_nd([[t] for t in self.taps], self.kernel, (9, c, self.units))
            return self.biased(tf.nn.conv2d(x, tf.reshape(k, (3, 3, c, self.units)), 1, "SAME"))
        # [A_1 ... A_D] @ [X W_1; ...; X W_D]: every direction in one sparse matmul.
        xw = tf.einsum("bhwc,dcu->bdhwu", x, self.kernel[1:])           # (B, D, H, W, units)
        y = tf.reshape(sparse_matmul(self.stacked, xw), (-1, *x.shape[1:3], self.units))
        return self.biased(y + tf.einsum("bhwc,cu->bhwu", x, self.kernel[0]))


# ------------------------------------------------------------------------ models

def _conv_block(x, filters, norm=keras.layers.BatchNormalization):
    """Two 3x3 convolutions, each followed by batch norm (the layer `norm`) and ReLU."""
    for _ in range(2):
        x = bn_relu(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x), norm)
    return x


def _residual_graph_layers(x, make_layer, depth):
    """`depth` times x <- x + ReLU(BN(layer(x))): residuals keep deep stacks trainable."""
    for _ in range(depth):
        x = keras.layers.Add()([x, bn_relu(make_layer()(x))])
    return x


def _graph_model(name, make_layer, channels, depth, num_classes, height, width):
    """Pixel coordinates, a 1x1 lift to `channels`, residual graph layers, a 1x1 classifier."""
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Dense(channels)(PixelCoordinates()(inputs))
    x = _residual_graph_layers(x, make_layer, depth)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


def fcn(num_classes, height, width):
    """The seed repository's network: four 5x5 convolutions, the weak baseline."""
    inputs = keras.Input((height, width, 3))
    x = inputs
    for filters in (10, 12, 8):
        x = keras.layers.Conv2D(filters, 5, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(num_classes, 5, padding="same")(x)
    return keras.Model(inputs, outputs, name="fcn")


def _encoder(x, filters, norm=keras.layers.BatchNormalization):
    """Conv blocks, each followed by 2x2 max pooling; returns the pooled map and the skips."""
    skips = []
    for f in filters:
        x = _conv_block(x, f, norm)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    return x, skips


def _decoder(x, skips, norm=keras.layers.BatchNormalization, merge=keras.layers.Concatenate):
    """Upsample, merge the skip of the same scale (concatenate, or add), conv block; coarse to
    fine. Adding halves the first convolution's input channels, and its FLOPs."""
    for skip in reversed(skips):
        f = skip.shape[-1]
        x = keras.layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = _conv_block(merge()([x, skip]), f, norm)
    return x


def _unet(name, num_classes, height, width, coarser=0, norm=keras.layers.BatchNormalization,
          coarse_channels=48, merge=keras.layers.Concatenate):
    inputs = keras.Input((height, width, 3))
    x, skips = _encoder(inputs, (16, 32), norm)
    coarse = _conv_block(x, coarse_channels, norm)                    # (B, H/4, W/4, C)
    x = _decoder(coarse, skips, norm, merge)
    outputs = keras.layers.Conv2D(num_classes, 1)(x)                  # (B, H, W, K)
    if coarser:  # FCN's score fusion: coarse class scores, upsampled, added to the output
        scores = keras.layers.Conv2D(num_classes, 1)(coarse)          # (B, H/4, W/4, K)
        outputs = keras.layers.Add()(
            [outputs, keras.layers.UpSampling2D(4, interpolation="bilinear")(scores)])
        x = _conv_block(keras.layers.MaxPooling2D()(coarse), coarser, norm)  # (B, H/8, W/8, C)
        scores = keras.layers.Conv2D(num_classes, 1)(x)               # (B, H/8, W/8, K)
        outputs = keras.layers.Add()(
            [outputs, keras.layers.UpSampling2D(8, interpolation="bilinear")(scores)])
    return keras.Model(inputs, outputs, name=name)


def unet(num_classes, height, width):
    """A small U-Net: 16-32 channel encoder, 48 at 1/4 scale, decoder with skips."""
    return _unet("unet", num_classes, height, width)


def unet_fused(num_classes, height, width):
    """The U-Net plus FCN's score fusion (Long et al. 2015): class scores from its 1/4-scale
    features and from 96 channels at 1/8, which see the whole digit, added to the output's.
    Which digit it is then need not squeeze through the decoder's 16 full-size channels.
    Its batch norm trains on TensorFlow's fused kernel, the same function in less time."""
    return _unet("unet_fused", num_classes, height, width, 96, FusedBatchNormalization)


def unet_fast(num_classes, height, width):
    """unet_fused for the default run: wider where it is cheap, 64 channels at 1/4 scale and
    128 at 1/8 (which digit it is), and skips added rather than concatenated at full and
    half size, where the arithmetic is: 48 MFLOP an image against 51."""
    return _unet("unet_fast", num_classes, height, width, 128, FusedBatchNormalization, 64,
                 keras.layers.Add)


def gcn(num_classes, height, width):
    """Isotropic Kipf-Welling graph convolutions on the pixel grid, no convolutions."""
    return _graph_model("gcn", lambda: GraphConv(64, use_bias=False), 64, 12,
                        num_classes, height, width)


def cheb(num_classes, height, width):
    """Chebyshev filters of order K=3 (2-hop) on the pixel grid, no convolutions."""
    return _graph_model("cheb", lambda: ChebConv(64, K=3, use_bias=False), 64, 5,
                        num_classes, height, width)


def dgcn(num_classes, height, width):
    """Direction-aware graph convolutions on the 8-connected grid, no convolutions."""
    return _graph_model("dgcn", lambda: DirectionalGraphConv(32, use_bias=False), 32, 8,
                        num_classes, height, width)


# The ladder: dgcn's grid, depth and width, with the direction taken away one step at a time.
def gcn8(num_classes, height, width):
    """GraphConv on dgcn's 8-connected grid, 8 layers of 32: one fixed isotropic average."""
    return _graph_model("gcn8", lambda: GraphConv(32, 8, use_bias=False), 32, 8,
                        num_classes, height, width)


def cheb8(num_classes, height, width):
    """ChebConv K=2 (self and one hop) on dgcn's grid, 8 layers of 32: learned, isotropic."""
    return _graph_model("cheb8", lambda: ChebConv(32, 2, 8, use_bias=False), 32, 8,
                        num_classes, height, width)


def _cheb_block(x, units, height, width, level):
    """Two Chebyshev layers (K=3) on pyramid level `level`, each with batch norm and ReLU."""
    for _ in range(2):
        x = bn_relu(PyramidChebConv(units, 3, height, width, level, use_bias=False)(x))
    return x


def gunet(num_classes, height, width):
    """The U-Net on graphs: Chebyshev blocks on three pyramid levels, Graclus pooling, skips.
    ChebConv, because with K=3 each layer has its own weight for X, L~X and T_2 X, so it can
    learn high-pass filters (edges: X - ÂX) that GraphConv's single low-pass Â cannot;
    DirectionalGraphConv needs edge directions, which coarse graphs lack. Only the two
    reshapes know the pixel grid."""
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Reshape((height * width, 3))(inputs)            # (B, N, 3)
    skips = []
    for level, units in enumerate((16, 32)):
        x = _cheb_block(x, units, height, width, level)
        skips.append(x)
        x = GraphPool(height, width, level + 1)(x)                    # (B, ~N / 4^(l+1), C)
    x = _cheb_block(x, 48, height, width, 2)
    for level in (1, 0):
        x = GraphUnpool(height, width, level + 1)(x)
        x = keras.layers.Concatenate()([x, skips[level]])
        x = _cheb_block(x, skips[level].shape[-1], height, width, level)
    x = keras.layers.Dense(num_classes)(x)                            # (B, N, num_classes)
    outputs = keras.layers.Reshape((height, width, num_classes))(x)
    return keras.Model(inputs, outputs, name="gunet")


def hybrid(num_classes, height, width):
    """CNN encoder down to 1/4 scale, graph convolutions on that coarse grid, CNN decoder."""
    inputs = keras.Input((height, width, 3))
    x, skips = _encoder(inputs, (16, 32))
    x = keras.layers.Dense(64)(PixelCoordinates()(x))
    x = _residual_graph_layers(x, lambda: GraphConv(64, use_bias=False), 4)
    outputs = keras.layers.Conv2D(num_classes, 1)(_decoder(x, skips))
    return keras.Model(inputs, outputs, name="hybrid")


BUILDERS = {"fcn": fcn, "unet": unet, "unet_fused": unet_fused, "unet_fast": unet_fast,
            "gcn": gcn, "cheb": cheb, "dgcn": dgcn, "gcn8": gcn8, "cheb8": cheb8, "hybrid": hybrid,
            "gunet": gunet, "regions": regions, "regions_offset": regions_offset,
            "regions_distance": regions_distance}
MODELS = tuple(BUILDERS)


def build_model(name, num_classes=2, height=32, width=32):
    """The model `name` (see MODELS): (B, H, W, 3) images -> (B, H, W, num_classes) logits."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    multiple = 2 ** POOLINGS.get(name, 0)
    if height % multiple or width % multiple:
        raise ValueError(f"{name} pools {POOLINGS[name]} times, so height and width must be "
                         f"multiples of {multiple}, got {height}x{width}.")
    return BUILDERS[name](num_classes, height, width)


def graph_builder(model):
    """A region model's RegionGraph.warm, the input pipeline's prepare (see main.py); else None."""
    return next((layer.warm for layer in model.layers if isinstance(layer, RegionGraph)), None)


def load_model(path):
    """A saved model of this project, or one clear sentence (DataError) why it cannot be used."""
    return checkpoints.load(path, MODELS)


def parameter_table():
    """A markdown table of every model's parameter count (2 classes, 32x32)."""
    return "\n".join(["| model | parameters |", "|---|---:|"] + [
        f"| {name} | {build_model(name).count_params():,} |" for name in MODELS])


SegmentationLoss = losses.SegmentationLoss  # the training loss; here, so a saved model loads


if __name__ == "__main__":
    # python model.py [NAME ...]: the summary of each named model, then the table of all
    try:
        for model_name in sys.argv[1:]:
            build_model(model_name).summary()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(parameter_table())
