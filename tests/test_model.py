"""model.py: each layer against its dense product; every model trained and reloaded; the loss."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segm import graphs
import model
from segm import pyramid_layers
from segm.tf_quiet import keras, tf
from test_graphs import sym_normalise

GRIDS = [(3, 4), (5, 5)]
RNG = np.random.default_rng(0)
# Keras 3.15's own saving code converts tensors in a way numpy 2.4 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# ---------------------------------------------------------------------- layers

def layer_with_random_weights(cls, x, **kwargs):
    layer = cls(**kwargs)
    layer.build(x.shape)
    layer.set_weights([RNG.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def dense_reference(layer, x):
    """The layer's definition in dense float64 numpy, one image at a time."""
    _, h, w, c = x.shape
    weights = [wt.numpy().astype(np.float64) for wt in layer.weights]
    kernel, bias = weights[0], weights[1]
    flat = x.numpy().reshape(len(x), h * w, c).astype(np.float64)
    if isinstance(layer, model.GraphConv):
        prop = graphs.gcn_propagation(h, w, layer.connectivity).toarray()
        out = prop @ flat @ kernel
    elif isinstance(layer, model.ChebConv):
        lt = graphs.rescaled_laplacian(h, w, layer.connectivity).toarray()
        terms = [flat, lt @ flat]
        while len(terms) < layer.K:
            terms.append(2 * lt @ terms[-1] - terms[-2])
        out = sum(t @ k for t, k in zip(terms, kernel))
    else:
        directions = graphs.direction_adjacencies(h, w, layer.connectivity)
        out = flat @ kernel[0]
        for d, k in zip(graphs.DIRECTIONS[layer.connectivity], kernel[1:]):
            out = out + directions[d].toarray() @ flat @ k
    return (out + bias).reshape(len(x), h, w, -1)


LAYERS = [
    (model.GraphConv, {"connectivity": 4}),
    (model.GraphConv, {"connectivity": 8}),
    (model.ChebConv, {"K": 1}),
    (model.ChebConv, {"K": 4, "connectivity": 8}),
    (model.DirectionalGraphConv, {"connectivity": 8}),
    (model.DirectionalGraphConv, {"connectivity": 4}),
]


@pytest.mark.parametrize("h, w", GRIDS)
@pytest.mark.parametrize("cls, kwargs", LAYERS)
def test_layer_equals_dense_product_on_both_paths(cls, kwargs, h, w):
    x = tf.constant(RNG.standard_normal((2, h, w, 3)), tf.float32)
    fast = layer_with_random_weights(cls, x, units=5, stencil=True, **kwargs)
    general = layer_with_random_weights(cls, x, units=5, stencil=False, **kwargs)
    general.set_weights(fast.get_weights())
    expected = dense_reference(fast, x)
    np.testing.assert_allclose(fast(x).numpy(), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(tf.function(general)(x).numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_directional_layer_is_a_3x3_convolution(connectivity):
    x = tf.constant(RNG.standard_normal((2, 5, 6, 3)), tf.float32)
    layer = layer_with_random_weights(model.DirectionalGraphConv, x, units=4,
                                      connectivity=connectivity, use_bias=False, stencil=False)
    weights = layer.get_weights()[0]
    kernel = np.zeros((3, 3, 3, 4), np.float32)
    for (dy, dx), wd in zip(((0, 0),) + graphs.DIRECTIONS[connectivity], weights):
        kernel[dy + 1, dx + 1] = wd
    expected = tf.nn.conv2d(x, kernel, 1, padding="SAME").numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    if connectivity == 4:
        assert not kernel[::2, ::2].any(), "4-connectivity is the plus-shaped kernel"


@pytest.mark.parametrize("stencil", [True, False])
def test_isotropic_layers_turn_with_their_input_and_the_directional_one_does_not(stencil):
    # Why the rotation study comes out as it does: on a square grid, GraphConv and ChebConv
    # weigh every neighbour alike, so turning the input by 90 degrees turns the output with
    # it; a weight per direction (a 3x3 kernel) does not commute with the turn.
    x = RNG.standard_normal((2, 6, 6, 3)).astype("float32")
    turned = np.rot90(x, 1, axes=(1, 2)).copy()
    for cls, kwargs, isotropic in ((model.GraphConv, {"units": 4}, True),
                                   (model.ChebConv, {"units": 4, "K": 3}, True),
                                   (model.DirectionalGraphConv, {"units": 4}, False)):
        layer = layer_with_random_weights(cls, x, stencil=stencil, **kwargs)
        gap = np.abs(np.rot90(np.asarray(layer(x)), 1, axes=(1, 2))
                     - np.asarray(layer(turned))).max()
        assert (gap < 1e-4) if isotropic else (gap > 0.1), (cls.__name__, gap)


@pytest.mark.parametrize("stencil", [True, False])
@pytest.mark.parametrize("cls, kwargs", LAYERS)
def test_gradients_reach_every_weight(cls, kwargs, stencil):
    x = tf.constant(RNG.standard_normal((2, 4, 5, 3)), tf.float32)
    layer = cls(units=4, stencil=stencil, **kwargs)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 2
    for g in grads:
        # every row: each input channel, Chebyshev order and direction gets gradient
        assert np.all(np.abs(g.numpy()).reshape(len(g), -1).sum(1) > 0)


@pytest.mark.parametrize("cls, kwargs", LAYERS + [(model.PixelCoordinates, {})])
def test_layer_config_round_trip(cls, kwargs):
    if cls is not model.PixelCoordinates:
        kwargs = {"units": 3, "stencil": False, **kwargs}
    layer = cls(**kwargs)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is cls and clone.get_config() == layer.get_config()


def test_pyramid_layers_equal_dense_products():
    h, w, level = 6, 7, 1
    s, a = (m.toarray() for m in graphs.grid_pyramid(h, w, level))
    x = tf.constant(RNG.standard_normal((2, h * w, 3)), tf.float32)
    pool = pyramid_layers.GraphPool(h, w, level)
    pooled = pool(x)
    expected = np.diag(1 / s.sum(0)) @ s.T @ x.numpy()
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-6)
    assert pool.compute_output_shape((None, h * w, 3)) == (None, s.shape[1], 3)
    np.testing.assert_allclose(pyramid_layers.GraphUnpool(h, w, level)(pooled).numpy(), s @ expected,
                               atol=1e-6)
    cheb = layer_with_random_weights(pyramid_layers.PyramidChebConv, pooled, units=4, K=3, height=h,
                                     width=w, level=level)
    kernel, bias = cheb.get_weights()
    lt = -sym_normalise(a)                                # L~ = L - I with lmax = 2
    terms = [expected, lt @ expected]
    terms.append(2 * lt @ terms[-1] - terms[-2])
    reference = sum(t @ k for t, k in zip(terms, kernel)) + bias
    np.testing.assert_allclose(tf.function(cheb)(pooled).numpy(), reference, atol=1e-5)


@pytest.mark.parametrize("layer", [
    pyramid_layers.PyramidChebConv(3, K=2, height=6, width=8, level=2, connectivity=8, use_bias=False),
    pyramid_layers.GraphPool(6, 8, level=1, connectivity=8), pyramid_layers.GraphUnpool(5, 4, level=2)])
def test_pyramid_layer_config_round_trip(layer):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_gunet_needs_the_grid_only_to_reshape():
    allowed = (keras.layers.InputLayer, keras.layers.Reshape, keras.layers.BatchNormalization,
               keras.layers.ReLU, keras.layers.Concatenate, keras.layers.Dense,
               pyramid_layers.PyramidChebConv, pyramid_layers.GraphPool, pyramid_layers.GraphUnpool)
    net = model.build_model("gunet", height=16, width=24)
    assert all(isinstance(layer, allowed) for layer in net.layers)
    assert sum(isinstance(layer, keras.layers.Reshape) for layer in net.layers) == 2
    levels = {layer.level for layer in net.layers if isinstance(layer, pyramid_layers.PyramidChebConv)}
    assert levels == {0, 1, 2}


def test_pixel_coordinates():
    out = model.PixelCoordinates()(tf.zeros((2, 3, 5, 1))).numpy()
    assert out.shape == (2, 3, 5, 3)
    np.testing.assert_allclose(out[0, :, 0, 1], [-1, 0, 1])
    np.testing.assert_allclose(out[1, 2, :, 2], [-1, -0.5, 0, 0.5, 1])


def test_bad_arguments_list_the_choices():
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        model.GraphConv(4, connectivity=6)
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        graphs.grid_laplacian(3, 3, connectivity=5)
    with pytest.raises(ValueError, match=r"K .* >= 1"):
        model.ChebConv(4, K=0)
    with pytest.raises(ValueError, match="fcn, unet, unet_fused, unet_fast, gcn, cheb, dgcn, gcn8, cheb8, hybrid"):
        model.build_model("resnet")
    with pytest.raises(ValueError, match="multiples of 4"):
        model.build_model("unet", height=30)


MIRRORED = """
import numpy as np
import model
from segm.tf_quiet import keras, tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype("float32")
y = np.random.default_rng(1).integers(0, 2, (4, 6, 6))
for stencil in (True, False):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 3))
        h = model.GraphConv(4, stencil=stencil)(inputs)
        h = model.ChebConv(4, K=3, stencil=stencil)(h)
        net = keras.Model(inputs, model.DirectionalGraphConv(2, stencil=stencil)(h))
        net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    print(net.fit(x, y, batch_size=4, epochs=2, verbose=0).history["loss"])
"""


@pytest.mark.slow
def test_both_paths_train_identically_under_mirrored_strategy():
    # logical devices must be set before TensorFlow starts, hence a fresh interpreter
    done = subprocess.run([sys.executable, "-c", MIRRORED], cwd=Path(model.__file__).parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stencil, sparse = (json.loads(line) for line in done.stdout.splitlines()[:2])
    np.testing.assert_allclose(stencil, sparse, rtol=1e-5)


# ---------------------------------------------------------------------- models

@pytest.fixture(scope="module")
def tiny_batch():
    """Four 16x16 images with a bright square to find: a fixed batch to overfit."""
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 0, (4, 16, 16, 3)).astype("float32")
    masks = np.zeros((4, 16, 16), "int32")
    for i, (y, x) in enumerate(rng.integers(0, 10, (4, 2))):
        images[i, y:y + 6, x:x + 6] += 1
        masks[i, y:y + 6, x:x + 6] = 1
    return images, masks


@pytest.mark.slow  # regions_distance: its layers are tested in test_edge_geometry.py
@pytest.mark.parametrize("name", [name for name in model.MODELS if name != "regions_distance"])
def test_model_learns_and_reloads(name, tiny_batch, tmp_path):
    images, masks = tiny_batch
    keras.utils.set_random_seed(0)
    net = model.build_model(name, num_classes=3, height=16, width=16)
    assert net.name == name and net.output_shape == (None, 16, 16, 3)
    net.compile(keras.optimizers.Adam(3e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(net.train_on_batch(images, masks)) for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0]
    path = tmp_path / f"{name}.keras"
    net.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict(images, verbose=0), net.predict(images, verbose=0),
                               atol=1e-6)


@pytest.mark.parametrize("name", model.MODELS)
def test_every_model_builds_for_a_larger_non_square_canvas(name):
    net = model.build_model(name, num_classes=11, height=48, width=64)
    logits = net(np.zeros((2, 48, 64, 3), "float32"), training=False)
    assert logits.shape == (2, 48, 64, 11) and np.isfinite(logits.numpy()).all()


def bilinear_matrix(n_out, n_in):
    """(n_out, n_in) weights of linear interpolation between pixel centres, edges clamped."""
    source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    return np.clip(1 - np.abs(source[:, None] - np.arange(n_in)), 0, None)


def test_unet_fused_adds_its_coarse_scores_upsampled_to_the_output():
    fused = model.build_model("unet_fused", num_classes=3, height=16, width=24)
    fused.set_weights([(RNG.uniform(0.5, 2, w.shape) if "variance" in w.path else  # > 0
                        RNG.standard_normal(w.shape) / 4).astype("float32") for w in fused.weights])
    heads = {layer.input.shape[1]: layer for layer in fused.layers  # scale's height -> head
             if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)}
    assert sorted(heads) == [2, 4, 16]  # 1/8, 1/4 and full scale
    x = RNG.uniform(-1, 1, (2, 16, 24, 3)).astype("float32")
    inputs = keras.Model(fused.input, [heads[h].input for h in (16, 4, 2)])(x, training=False)
    expected = 0
    for features, side in zip(inputs, (16, 4, 2)):
        kernel, bias = (w.numpy().astype(np.float64) for w in heads[side].weights)
        scores = features.numpy() @ kernel[0, 0] + bias                       # (2, h, w, 3)
        expected = expected + np.einsum("ih,bhwk,jw->bijk", bilinear_matrix(16, side), scores,
                                        bilinear_matrix(24, side * 3 // 2))
    assert np.isfinite(expected).all() and np.abs(expected).mean() > 0.1
    np.testing.assert_allclose(fused(x, training=False), expected, rtol=1e-4, atol=1e-4)


def test_unet_fast_adds_its_skips_and_is_wider_only_below_half_size():
    fast, fused = (model.build_model(name, 2, 32, 32) for name in ("unet_fast", "unet_fused"))
    assert not any(isinstance(layer, keras.layers.Concatenate) for layer in fast.layers)
    adds = [layer for layer in fast.layers if isinstance(layer, keras.layers.Add)
            and len(layer.input[0].shape) == 4 and layer.input[0].shape[-1] in (16, 32)]
    assert sorted(a.output.shape[1] for a in adds) == [16, 32]  # half and full size

    def widths(net):  # {height: convolution widths}, 3x3 convolutions only
        found = {}
        for layer in net.layers:
            if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3):
                found.setdefault(layer.output.shape[1], []).append(layer.filters)
        return found
    assert widths(fast)[32] == widths(fused)[32] and widths(fast)[16] == widths(fused)[16]
    assert widths(fast)[8] == [64, 64] and widths(fast)[4] == [128, 128]


# ------------------------------------------------------------------------ loss

def loss_reference(masks, logits, dice_weight, weights=None):
    """Cross-entropy plus dice_weight * (1 - soft Dice over classes 1..K-1), float64 numpy;
    pixels labelled 255 count in neither term, and weights[c] scales class c's cross-entropy."""
    k = logits.shape[-1]
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    known = masks != 255
    truth = np.eye(k)[np.where(known, masks, 0)] * known[..., None]  # (B, H, W, K)
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    ce = -(truth * log_p * w).sum((1, 2, 3)) / np.maximum(known.sum((1, 2)), 1e-9)  # (B,)
    p, t = np.exp(log_p)[..., 1:] * known[..., None], truth[..., 1:]
    dice = (2 * (p * t).sum((1, 2, 3)) + 1) / ((p + t).sum((1, 2, 3)) + 1)
    return np.mean(ce + dice_weight * (1 - dice))


@pytest.mark.parametrize("dice_weight", [0.0, 0.5])
def test_loss_matches_numpy_and_is_finite_on_empty_masks(dice_weight):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    loss = model.SegmentationLoss(num_classes=3, dice_weight=dice_weight)
    for masks in (rng.integers(0, 3, (2, 4, 4)), np.zeros((2, 4, 4), "int32")):
        value = float(loss(masks, logits))
        assert np.isfinite(value) and value > 0
        assert value == pytest.approx(loss_reference(masks, logits, dice_weight), rel=1e-5)


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 4.0, 1.0, 3.0]])
def test_loss_skips_unlabelled_pixels_and_weighs_classes_as_numpy_does(weights):
    rng = np.random.default_rng(3)
    logits = (3 * rng.normal(size=(3, 6, 6, 5))).astype("float32")
    masks = rng.integers(0, 5, (3, 6, 6))
    masks[0, :2] = 255  # partly unlabelled
    masks[1] = 255      # not labelled at all: adds nothing, and stays finite
    loss = model.SegmentationLoss(num_classes=5, dice_weight=1.0, class_weights=weights)
    assert float(loss(masks, logits)) == pytest.approx(
        loss_reference(masks, logits, 1.0, weights), rel=1e-5)


def test_loss_config_round_trips():
    loss = model.SegmentationLoss(num_classes=3, dice_weight=0.25, name="segmentation")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(clone) is model.SegmentationLoss and clone.get_config() == loss.get_config()


RELOAD = """
import sys
import numpy as np
import model
net = model.keras.saving.load_model(sys.argv[1])
assert "main" not in sys.modules and type(net.loss) is model.SegmentationLoss, net.loss
batch = np.load(sys.argv[2])
print(net.evaluate(batch["images"], batch["masks"], verbose=0))
"""


@pytest.mark.slow
def test_saved_model_with_its_loss_loads_with_model_py_alone(tiny_batch, tmp_path):
    images, masks = tiny_batch
    keras.utils.set_random_seed(0)
    net = model.build_model("fcn", num_classes=2, height=16, width=16)
    net.compile("adam", model.SegmentationLoss(num_classes=2, dice_weight=0.5))
    net.save(tmp_path / "m.keras")
    np.savez(tmp_path / "batch.npz", images=images, masks=masks)
    done = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "m.keras"),
                           str(tmp_path / "batch.npz")], cwd=Path(model.__file__).parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) == pytest.approx(net.evaluate(images, masks, verbose=0), rel=1e-6)


def test_the_ladder_differs_only_in_its_graph_layer():
    """gcn8, cheb8 and dgcn: the same grid, depth, width and everything else; only the layer."""
    def shape_of(name):
        net = model.build_model(name)
        graph = [layer for layer in net.layers if isinstance(layer, model._GridGraphLayer)]
        rest = [type(layer).__name__ for layer in net.layers if layer not in graph]
        return {(layer.connectivity, layer.units) for layer in graph}, len(graph), rest
    shapes = {name: shape_of(name) for name in ("gcn8", "cheb8", "dgcn")}
    assert shapes["gcn8"] == shapes["cheb8"] == shapes["dgcn"] == ({(8, 32)}, 8, shapes["dgcn"][2])
    assert shape_of("gcn") != shapes["dgcn"]  # the 4-connected, 12-layer gcn is not on the ladder
