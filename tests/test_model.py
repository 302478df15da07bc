"""model.py: grid graph against dense numpy, each layer against its dense product, every model."""
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import model
from model import keras, tf

GRIDS = [(3, 4), (5, 5)]
RNG = np.random.default_rng(0)
# Keras 3.15's own saving code converts tensors in a way numpy 2.4 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def brute_adjacency(h, w, connectivity):
    """A by comparing every pair of pixels: the definition, O((HW)^2)."""
    pixels = list(itertools.product(range(h), range(w)))
    a = np.zeros((h * w, h * w))
    for (i, (yi, xi)), (j, (yj, xj)) in itertools.product(enumerate(pixels), repeat=2):
        dy, dx = abs(yi - yj), abs(xi - xj)
        a[i, j] = (dy + dx == 1) if connectivity == 4 else (max(dy, dx) == 1)
    return a


def sym_normalise(a):
    """D^-1/2 A D^-1/2 in dense numpy."""
    s = np.diag(1 / np.sqrt(a.sum(1)))
    return s @ a @ s


# ------------------------------------------------------------------ graph math

@pytest.mark.parametrize("h, w", GRIDS)
@pytest.mark.parametrize("connectivity", [4, 8])
def test_adjacency_matches_definition_and_counts(h, w, connectivity):
    a = model.grid_adjacency(h, w, connectivity).toarray()
    np.testing.assert_array_equal(a, brute_adjacency(h, w, connectivity))
    edges = 2 * h * w - h - w + (2 * (h - 1) * (w - 1) if connectivity == 8 else 0)
    assert a.sum() / 2 == edges
    deg = model.degree(model.grid_adjacency(h, w, connectivity)).reshape(h, w)
    corner, side, inner = (2, 3, 4) if connectivity == 4 else (3, 5, 8)
    assert deg[0, 0] == deg[0, -1] == deg[-1, 0] == deg[-1, -1] == corner
    assert deg[0, 1] == deg[1, 0] == deg[-1, 1] == deg[1, -1] == side
    assert deg[1, 1] == inner


@pytest.mark.parametrize("h, w", GRIDS)
@pytest.mark.parametrize("connectivity", [4, 8])
def test_laplacian_and_propagation_match_dense_formulas(h, w, connectivity):
    a = brute_adjacency(h, w, connectivity)
    eye = np.eye(h * w)
    lap = model.grid_laplacian(h, w, connectivity).toarray()
    np.testing.assert_allclose(lap, eye - sym_normalise(a), atol=1e-6)
    np.testing.assert_allclose(lap, lap.T, atol=1e-7)
    eig = np.linalg.eigvalsh(lap)
    assert eig.min() > -1e-5 and eig.max() < 2 + 1e-5
    assert abs(eig.min()) < 1e-5, "a connected graph has exactly one zero eigenvalue"
    prop = model.gcn_propagation(h, w, connectivity).toarray()
    np.testing.assert_allclose(prop, sym_normalise(a + eye), atol=1e-6)
    for lmax in (2.0, None):
        rescaled = model.rescaled_laplacian(h, w, connectivity, lmax=lmax).toarray()
        eig = np.linalg.eigvalsh(rescaled)
        assert eig.min() > -1 - 1e-5 and eig.max() < 1 + 1e-5
    np.testing.assert_allclose(rescaled, 2 * lap / np.linalg.eigvalsh(lap).max() - eye, atol=1e-5)
    assert abs(eig.max() - 1) < 1e-4, "lmax=None rescales the top eigenvalue to exactly 1"


def test_isolated_pixel_has_no_nan():
    assert model.grid_laplacian(1, 1).toarray().tolist() == [[1.0]]
    assert model.gcn_propagation(1, 1).toarray().tolist() == [[1.0]]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_direction_adjacencies_shift_pixels(connectivity):
    h, w = 3, 4
    directions = model.direction_adjacencies(h, w, connectivity)
    assert set(directions) == set(model.DIRECTIONS[connectivity])
    image = RNG.standard_normal((h, w))
    padded = np.pad(image, 1)
    for (dy, dx), a in directions.items():
        # (A_d x)[y, x] is the pixel at (y + dy, x + dx), zero outside the image.
        shifted = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        np.testing.assert_allclose((a @ image.ravel()).reshape(h, w), shifted, atol=1e-6)
        np.testing.assert_array_equal(a.T.toarray(), directions[(-dy, -dx)].toarray())
    total = sum(a.toarray() for a in directions.values())
    np.testing.assert_array_equal(total, brute_adjacency(h, w, connectivity))


def test_large_grid_builds_sparse_and_fast():
    start = time.perf_counter()
    prop = model.gcn_propagation(256, 256, 8)
    lap = model.grid_laplacian(256, 256, 8)
    assert time.perf_counter() - start < 1.0
    assert prop.nnz == 256 * 256 + 2 * (4 * 256 * 256 - 6 * 256 + 2)
    assert lap.data.nbytes + lap.indices.nbytes < 5e6


def test_sparse_tensor_is_sorted_and_exact():
    matrix = model.gcn_propagation(3, 4, 8)
    st = model.to_sparse_tensor(matrix)
    idx = st.indices.numpy()
    assert np.all(np.diff(idx[:, 0] * matrix.shape[1] + idx[:, 1]) > 0)
    np.testing.assert_allclose(tf.sparse.to_dense(st).numpy(), matrix.toarray())
    np.testing.assert_array_equal(tf.sparse.reorder(st).indices.numpy(), idx)


# ------------------------------------------------------------ coarsening, pooling

def graclus_reference(a):
    """Graclus' greedy matching from its definition, on a dense matrix."""
    n, d = len(a), a.sum(1)
    cluster, count = -np.ones(n, int), 0
    for i in sorted(range(n), key=lambda i: (d[i], i)):
        if cluster[i] >= 0:
            continue
        best, best_cut = i, 0.0
        for j in range(n):
            cut = a[i, j] * (1 / d[i] + 1 / d[j]) if a[i, j] > 0 else 0.0
            if j != i and cluster[j] < 0 and cut > best_cut:
                best, best_cut = j, cut
        cluster[i] = cluster[best] = count
        count += 1
    return cluster


def random_graph(n, seed):
    """A symmetric graph with random positive weights on about a third of the pairs."""
    rng = np.random.default_rng(seed)
    a = np.triu(rng.uniform(0.1, 1, (n, n)) * (rng.uniform(size=(n, n)) < 0.35), 1)
    return a + a.T


GRAPHS = {"grid 5x6/4": model.grid_adjacency(5, 6, 4).toarray(),
          "grid 4x7/8": model.grid_adjacency(4, 7, 8).toarray(),
          "weighted coarse grid": model.grid_pyramid(8, 8, 1)[1].toarray(),
          "random": random_graph(12, 0)}


@pytest.mark.parametrize("name", GRAPHS)
def test_graclus_matches_dense_reference_and_pairs_neighbours(name):
    a = GRAPHS[name]
    cluster = model.graclus_clusters(model.sp.csr_matrix(a))
    np.testing.assert_array_equal(cluster, graclus_reference(a))
    sizes = np.bincount(cluster)
    assert sizes.min() >= 1 and sizes.max() <= 2 and sizes.sum() == len(a)
    for members in (np.flatnonzero(cluster == c) for c in np.flatnonzero(sizes == 2)):
        assert a[members[0], members[1]] > 0, "a pair is always joined by an edge"


@pytest.mark.parametrize("name", GRAPHS)
def test_coarsening_and_pooling_match_dense_formulas(name):
    a = GRAPHS[name]
    s, coarse = model.coarsen(model.sp.csr_matrix(a))
    s, coarse = s.toarray(), coarse.toarray()
    assert set(np.unique(s)) == {0, 1} and np.all(s.sum(1) == 1), "one cluster per node"
    assert np.all(s.sum(0) >= 1) and np.all(s.sum(0) <= 4), "two matchings: 1 to 4 nodes"
    expected = s.T @ a @ s
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(coarse, expected, rtol=1e-6)
    pool = model.cluster_mean(model.sp.csr_matrix(s)).toarray()
    np.testing.assert_allclose(pool, np.diag(1 / s.sum(0)) @ s.T, rtol=1e-6)
    x = RNG.standard_normal((len(a), 3))
    back = s @ pool @ x                                   # unpool(pool(x))
    for c in range(s.shape[1]):
        members = np.flatnonzero(s[:, c])
        np.testing.assert_allclose(back[members], np.tile(x[members].mean(0), (len(members), 1)),
                                   rtol=1e-5)
    np.testing.assert_allclose(pool @ np.full((len(a), 2), 7.0), 7.0, rtol=1e-6)
    again = model.coarsen(model.sp.csr_matrix(a))
    np.testing.assert_array_equal(again[0].toarray(), s)  # deterministic: a saved model rebuilds it


@pytest.mark.parametrize("h, w, connectivity", [(8, 8, 4), (10, 12, 8)])
def test_pyramid_laplacians_have_spectra_in_0_2(h, w, connectivity):
    sizes = []
    for level in range(4):
        s, a = model.grid_pyramid(h, w, level, connectivity)
        sizes.append(a.shape[0])
        assert s.shape == (sizes[level - 1] if level else h * w, a.shape[0])
        eig = np.linalg.eigvalsh(model.normalized_laplacian(a).toarray())
        assert eig.min() > -1e-5 and eig.max() < 2 + 1e-5, "Chebyshev with lmax=2 needs [0, 2]"
        assert np.sum(eig < 1e-5) == 1, "coarsening keeps the graph connected"
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] >= sizes[0] / 4 ** 3


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
        prop = model.gcn_propagation(h, w, layer.connectivity).toarray()
        out = prop @ flat @ kernel
    elif isinstance(layer, model.ChebConv):
        lt = model.rescaled_laplacian(h, w, layer.connectivity).toarray()
        terms = [flat, lt @ flat]
        while len(terms) < layer.K:
            terms.append(2 * lt @ terms[-1] - terms[-2])
        out = sum(t @ k for t, k in zip(terms, kernel))
    else:
        directions = model.direction_adjacencies(h, w, layer.connectivity)
        out = flat @ kernel[0]
        for d, k in zip(model.DIRECTIONS[layer.connectivity], kernel[1:]):
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
    for (dy, dx), wd in zip(((0, 0),) + model.DIRECTIONS[connectivity], weights):
        kernel[dy + 1, dx + 1] = wd
    expected = tf.nn.conv2d(x, kernel, 1, padding="SAME").numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    if connectivity == 4:
        assert not kernel[::2, ::2].any(), "4-connectivity is the plus-shaped kernel"


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
    s, a = (m.toarray() for m in model.grid_pyramid(h, w, level))
    x = tf.constant(RNG.standard_normal((2, h * w, 3)), tf.float32)
    pool = model.GraphPool(h, w, level)
    pooled = pool(x)
    expected = np.diag(1 / s.sum(0)) @ s.T @ x.numpy()
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-6)
    assert pool.compute_output_shape((None, h * w, 3)) == (None, s.shape[1], 3)
    np.testing.assert_allclose(model.GraphUnpool(h, w, level)(pooled).numpy(), s @ expected,
                               atol=1e-6)
    cheb = layer_with_random_weights(model.PyramidChebConv, pooled, units=4, K=3, height=h,
                                     width=w, level=level)
    kernel, bias = cheb.get_weights()
    lt = -sym_normalise(a)                                # L~ = L - I with lmax = 2
    terms = [expected, lt @ expected]
    terms.append(2 * lt @ terms[-1] - terms[-2])
    reference = sum(t @ k for t, k in zip(terms, kernel)) + bias
    np.testing.assert_allclose(tf.function(cheb)(pooled).numpy(), reference, atol=1e-5)


def test_sparse_matmul_gradient_is_the_transpose():
    matrix = model.cluster_mean(model.grid_pyramid(5, 6, 1)[0])          # not symmetric
    x = tf.constant(RNG.standard_normal((2, 30, 3)), tf.float32)
    weights = tf.constant(RNG.standard_normal((2, matrix.shape[0], 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model._sparse_matmul(matrix, x) * weights)
    expected = np.einsum("nm,bnc->bmc", matrix.toarray(), weights.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("layer", [
    model.PyramidChebConv(3, K=2, height=6, width=8, level=2, connectivity=8, use_bias=False),
    model.GraphPool(6, 8, level=1, connectivity=8), model.GraphUnpool(5, 4, level=2)])
def test_pyramid_layer_config_round_trip(layer):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_gunet_needs_the_grid_only_to_reshape():
    allowed = (keras.layers.InputLayer, keras.layers.Reshape, keras.layers.BatchNormalization,
               keras.layers.ReLU, keras.layers.Concatenate, keras.layers.Dense,
               model.PyramidChebConv, model.GraphPool, model.GraphUnpool)
    net = model.build_model("gunet", height=16, width=24)
    assert all(isinstance(layer, allowed) for layer in net.layers)
    assert sum(isinstance(layer, keras.layers.Reshape) for layer in net.layers) == 2
    levels = {layer.level for layer in net.layers if isinstance(layer, model.PyramidChebConv)}
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
        model.grid_laplacian(3, 3, connectivity=5)
    with pytest.raises(ValueError, match=r"K .* >= 1"):
        model.ChebConv(4, K=0)
    with pytest.raises(ValueError, match="fcn, unet, gcn, cheb, dgcn, hybrid"):
        model.build_model("resnet")
    with pytest.raises(ValueError, match="multiples of 4"):
        model.build_model("unet", height=30)


# TensorFlow 2.21's start-up lines, as recorded on a CPU-only machine, and from
# CUDA machines the ones that say a plugin was registered twice.
TF_NOISE = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795980236.592129    4614 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1795980151.973939    3084 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795980152.070001    3084 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795980178.529310    3585 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1712345678.123456   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
E0000 00:00:1712345678.123456   12345 cuda_fft.cc:607] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
E0000 00:00:1712345678.123456   12345 cuda_blas.cc:1515] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
W0000 00:00:1712345678.123456   12345 computation_placer.cc:177] computation placer already registered. Please check linkage and avoid linking the same target more than once.
W0000 00:00:1712345678.123456   12345 py_utils.cc:38] TF-TRT Warning: Could not find TensorRT
"""
FATAL = "F0000 fake.cc:1] Check failed: this TensorFlow cannot start\n"
FAKE_TENSORFLOW = f"""
import os
os.write(2, {(TF_NOISE + FATAL).encode()!r})
raise ImportError("the fake TensorFlow")
"""


def run_python(code, **env):
    """`python -c code` in the project folder; env changes the environment, None unsets."""
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], cwd=Path(model.__file__).parent,
                          env=env, capture_output=True, text=True, timeout=120)


def test_filter_drops_the_known_notices_and_keeps_everything_else():
    noise = TF_NOISE.splitlines(keepends=True)
    assert all(any(notice in line for line in noise) for notice in model.TF_STARTUP_NOTICES)
    real = ["F0000 00:00:1795980151.000000    3084 op_kernel.cc:1] Check failed: x == y\n",
            "UserWarning: a real warning from an import\n", "\n", "a last line without newline"]
    mixed = [noise[0], real[0], *noise[1:5], real[1], real[2], *noise[5:], real[3]]
    assert model.drop_startup_notices("".join(mixed)) == "".join(real)
    assert model.drop_startup_notices(TF_NOISE) == ""


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}],
                         ids=["default", "tf-log-level-0"])
def test_import_is_silent(env):
    # TF_CPP_MIN_LOG_LEVEL=0 lets TensorFlow print every notice, the cuInit error too.
    done = run_python("import model; model.tf.constant(0)", **env)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


@pytest.mark.slow
def test_segm_tf_logs_shows_what_tensorflow_prints():
    done = run_python("import os, model; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))",
                      SEGM_TF_LOGS="1", TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL=None)
    assert done.returncode == 0 and done.stdout == "None\n"
    assert "oneDNN custom operations are on" in done.stderr


def test_a_failing_tensorflow_import_shows_its_own_lines_before_the_error(tmp_path):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    done = run_python("import model", PYTHONPATH=str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == FATAL.strip()
    assert lines[-1] == "ImportError: the fake TensorFlow"
    assert not any(notice in done.stderr for notice in model.TF_STARTUP_NOTICES)


MIRRORED = """
import numpy as np
import model
from model import keras, tf
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


@pytest.mark.slow
@pytest.mark.parametrize("name", model.MODELS)
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


# ------------------------------------------------------------------------ loss

def loss_reference(masks, logits, dice_weight):
    """Cross-entropy plus dice_weight * (1 - soft Dice over classes 1..K-1), float64 numpy."""
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    truth = np.eye(logits.shape[-1])[masks]                       # (B, H, W, K)
    ce = -(truth * log_p).sum(-1).mean((1, 2))                    # (B,)
    p, t = np.exp(log_p)[..., 1:], truth[..., 1:]
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
