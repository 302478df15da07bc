"""The `regions` model (model.py on regions.py): against numpy, batch by batch, saved, run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import model
from segm import region_layers
from segm import regions
from helpers import TINY, call_main, one_sentence
from segm.tf_quiet import keras, tf

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def blocks(n, side, seed):
    """(n, side, side, 3) float32 in [-1, 1]: flat coloured rectangles and a little noise,
    so SLIC's regions vary in number and shape from image to image."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, 1, 1, 3)) + rng.normal(0, 0.05, (n, side, side, 3))
    for image in images:
        for _ in range(4):
            y, x = rng.integers(0, side - 3, 2)
            h, w = rng.integers(3, side // 2, 2)
            image[y:y + h, x:x + w] = rng.uniform(-1, 1, 3)
    return np.clip(images, -1, 1).astype(np.float32)


def randomise(net, seed):
    """Normal random weights, and batch norm variances that are positive."""
    rng = np.random.default_rng(seed)
    for w in net.weights:
        value = rng.standard_normal(w.shape)
        w.assign(np.abs(value) + 0.5 if "variance" in w.path else 0.3 * value)


def reference(net, images):
    """The regions model in float64 numpy, from regions.py's graphs and the layers' weights."""
    graph = net.get_layer(index=1)
    options = (graph.n_segments, graph.compactness, graph.min_size_factor)
    labels = np.stack([regions.superpixels(image, *options) for image in images])
    batch = regions.batch_graphs([(regions.region_features(image, one),
                                   regions.region_adjacency(one, graph.knn))
                                  for image, one in zip(images, labels)])
    rescaled = regions.rescaled_laplacian(batch.adjacency).toarray().astype(np.float64)
    weights = {layer.name: [w.numpy().astype(np.float64) for w in layer.weights]
               for layer in net.layers}

    def norm(layer, x):
        gamma, beta, mean, variance = weights[layer.name]
        return (x - mean) / np.sqrt(variance + layer.epsilon) * gamma + beta

    def dense(layer, x):
        kernel, bias = weights[layer.name]
        return x @ kernel + bias

    def cheb(layer, x):
        kernel = weights[layer.name][0]
        terms = [x, rescaled @ x]
        while len(terms) < layer.K:
            terms.append(2 * rescaled @ terms[-1] - terms[-2])
        return sum(t @ k for t, k in zip(terms, kernel))

    kinds = {}
    for layer in net.layers:
        kinds.setdefault(type(layer), []).append(layer)
    norms, denses = kinds[keras.layers.BatchNormalization], kinds[keras.layers.Dense]
    x = dense(denses[0], norm(norms[0], batch.features.astype(np.float64)))     # (N, C)
    for conv, bn in zip(kinds[region_layers.RegionChebConv], norms[1:]):
        x = x + np.maximum(norm(bn, cheb(conv, x)), 0)
    nodes = dense(denses[1], x)                                                  # (N, K)
    return regions.paint(regions.stacked(labels), nodes)                         # (B, H, W, K)


# ---------------------------------------------------------------- layers

def test_model_equals_numpy_on_regions_graphs():
    images = blocks(3, 16, seed=0)
    net = model.build_model("regions", num_classes=3, height=16, width=16)
    randomise(net, seed=1)
    expected = reference(net, images)
    np.testing.assert_allclose(net(images, training=False).numpy(), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_features_equal_regions_py_and_have_finite_gradients():
    images = blocks(2, 12, seed=2)
    labels = np.stack([regions.superpixels(image) for image in images])
    labels[0, 0, 0] = labels[0].max() + 1                    # a one-pixel region: std 0
    labels = np.stack([np.unique(one, return_inverse=True)[1].reshape(one.shape)
                       for one in labels])
    for shape in (False, True):
        expected = np.concatenate([regions.region_features(image, one, shape)
                                   for image, one in zip(images, labels)])
        x = tf.constant(images)
        layer = region_layers.RegionFeatures(shape)
        with tf.GradientTape() as tape:
            tape.watch(x)
            features = layer([x, tf.constant(regions.stacked(labels))])
            total = tf.reduce_sum(features)
        np.testing.assert_allclose(features.numpy(), expected, atol=1e-5)
        assert np.isfinite(tape.gradient(total, x).numpy()).all()
        assert layer.compute_output_shape([images.shape, labels.shape])[-1] == expected.shape[1]
        assert type(layer).from_config(layer.get_config()).shape == shape


def test_symmetric_matmul_and_its_gradient_equal_the_dense_product():
    rng = np.random.default_rng(3)
    a = scipy.sparse.random(9, 9, density=0.3, random_state=4, dtype=np.float32)
    matrix = (a + a.T).tocoo()
    order = np.lexsort((matrix.col, matrix.row))
    sparse = tf.SparseTensor(np.stack([matrix.row[order], matrix.col[order]], 1),
                             matrix.data[order], matrix.shape)
    x, upstream = (tf.constant(rng.standard_normal((9, 4)).astype(np.float32)) for _ in "xu")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = region_layers.symmetric_matmul(sparse, x)
    dense = matrix.toarray()
    np.testing.assert_allclose(y.numpy(), dense @ x.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, x, upstream).numpy(),
                               dense.T @ upstream.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [region_layers.RegionGraph(n_segments=40, compactness=3.0,
                                                     min_size_factor=0.2, knn=2),
                                   region_layers.RegionChebConv(5, K=2, use_bias=False)])
def test_region_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# ---------------------------------------------------------------- the model

def test_a_batch_gives_what_each_image_gives_alone():
    images = blocks(3, 16, seed=5)
    net = model.build_model("regions", num_classes=2, height=16, width=16)
    randomise(net, seed=6)
    together = net(images, training=False).numpy()
    alone = np.concatenate([net(images[i:i + 1], training=False).numpy() for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_save_and_load_give_the_same_outputs(tmp_path):
    images = blocks(2, 16, seed=7)
    net = model.build_model("regions", num_classes=3, height=16, width=16)
    randomise(net, seed=8)
    net.save(tmp_path / "regions.keras")
    again = keras.saving.load_model(tmp_path / "regions.keras")
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in net.layers]
    np.testing.assert_array_equal(again(images, training=False).numpy(),
                                  net(images, training=False).numpy())


RELOAD = """
import sys
import numpy as np
import model
net = model.keras.saving.load_model(sys.argv[1])
assert "main" not in sys.modules and "segm.region_layers" in sys.modules
print(net(np.load(sys.argv[2]), training=False).numpy().tolist())
"""


@pytest.mark.slow
def test_saved_model_loads_with_model_py_alone(tmp_path):
    images = blocks(2, 16, seed=8)
    net = model.build_model("regions", num_classes=2, height=16, width=16)
    randomise(net, seed=9)
    net.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", images)
    done = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "m.keras"),
                           str(tmp_path / "x.npy")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.array(json.loads(done.stdout)),
                                  net(images, training=False).numpy())


def test_main_trains_evaluates_predicts_and_refuses_to_export(tmp_path, capsys):
    from PIL import Image
    out = tmp_path / "run"
    status, _, err = call_main(capsys, *TINY, "--model", "regions", "--steps", "1",
                               "--eval_every", "1", "--out_dir", out)
    assert status == 0, err
    assert {"samples_regions.png", "metrics.json", "best.keras"} <= {p.name for p in out.iterdir()}
    status, stdout, err = call_main(capsys, "--evaluate", "--out_dir", out)
    assert status == 0, err
    assert 0 <= json.loads(stdout.strip().splitlines()[-1])["fg_iou"] <= 1
    photo = tmp_path / "photo.png"
    pixels = blocks(1, 40, seed=10)[0, :, :27] * 127.5 + 127.5          # 40x27: twelve 16x16 tiles
    Image.fromarray(pixels.astype(np.uint8)).save(photo)
    status, _, err = call_main(capsys, "--predict", photo, "--out_dir", out)
    assert status == 0 and (out / "prediction_photo.png").is_file(), err
    status, _, err = call_main(capsys, "--export", tmp_path / "served", "--out_dir", out)
    assert status == 2 and "SavedModel" in one_sentence(err)
    assert not (tmp_path / "served").exists()
