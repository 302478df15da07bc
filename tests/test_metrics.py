"""metrics.py: every figure against a hand count on a tiny mask."""
import numpy as np
import pytest

from segm import metrics
from segm.tf_quiet import keras


def one_hot(preds, num_classes):
    """Logits whose argmax is `preds`: the 'images' that an identity model scores as known
    predictions."""
    return np.eye(num_classes, dtype=np.float32)[preds]                 # (B, H, W, K)


def identity(shape):
    """A Keras model whose output is its input: scoring it scores the logits it is given."""
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Identity()(inputs))


# ---- metrics ----------------------------------------------------------------

def test_binary_metrics_match_hand_counts():
    truth = np.array([[[0, 1, 1],
                       [0, 1, 0],
                       [0, 0, 0]]])
    pred = np.array([[[0, 1, 0],
                      [1, 1, 0],
                      [0, 0, 0]]])
    # digit: TP = 2, FP = 1 (row 1, col 0), FN = 1 (row 0, col 2); background: TP = 5.
    scores = metrics.score(identity((3, 3, 2)), one_hot(pred, 2), truth, 2)
    assert scores["fg_iou"] == pytest.approx(2 / 4)
    assert scores["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["per_class_iou"] == pytest.approx([5 / 7, 2 / 4])
    assert scores["miou"] == pytest.approx((5 / 7 + 2 / 4) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(7 / 9)
    assert scores["n_images"] == 1
    assert scores["confusion"] == [[5, 1], [1, 2]]  # rows truth: 5 + 1 background, 1 + 2 digit


def test_metrics_aggregate_over_the_dataset_not_per_batch():
    # Image 1 has a big digit found perfectly, image 2 a one-pixel digit missed:
    # dataset-level IoU is 4/5, while a mean of per-image IoUs would be 1/2.
    truth = np.zeros((2, 4, 4), int)
    truth[0, :2, :2] = 1
    truth[1, 3, 3] = 1
    pred = truth.copy()
    pred[1, 3, 3] = 0
    scores = metrics.score(identity((4, 4, 2)), one_hot(pred, 2), truth, 2, batch_size=1)
    assert scores["fg_iou"] == pytest.approx(4 / 5)


def test_eleven_class_metrics_count_wrong_digits_as_class_errors_only():
    truth = np.array([[[0, 3, 3, 5]]])
    pred = np.array([[[0, 3, 4, 0]]])
    scores = metrics.score(identity((1, 4, 11)), one_hot(pred, 11), truth, 11)
    # digit-vs-background: TP = 2 (cols 1, 2), FN = 1 (col 3), FP = 0.
    assert scores["fg_iou"] == pytest.approx(2 / 3)
    per_class = scores["per_class_iou"]
    assert per_class[0] == pytest.approx(1 / 2)      # background: 1 hit, 1 false
    assert per_class[3] == pytest.approx(1 / 2)      # class 3: 1 hit of 2 true
    assert per_class[4] == pytest.approx(0.0)        # class 4: predicted, never true
    assert per_class[5] == pytest.approx(0.0)        # class 5: true, missed
    assert per_class[1] is None                      # never true nor predicted
    present = [v for v in per_class if v is not None]
    assert scores["miou"] == pytest.approx(sum(present) / len(present))


# ---- unlabelled pixels (255) count nowhere -------------------------------------------

TRUTH_255 = np.array([[[0, 1, 255],
                       [255, 1, 0],
                       [0, 0, 1]]])
PRED_255 = np.array([[[1, 1, 1],      # the 255 pixels are predicted 1 and 0: neither counts
                      [0, 0, 0],
                      [0, 0, 1]]])
# Labelled pixels only (7): digit TP = 2, FP = 1 (row 0, col 0), FN = 1 (row 1, col 1);
# background TP = 3 (row 1 col 2, row 2 cols 0-1), so background IoU = 3 / (3 + 1 + 1).


def check_hand_counts_with_unlabelled(scores):
    assert scores["fg_iou"] == pytest.approx(2 / 4)
    assert scores["per_class_iou"] == pytest.approx([3 / 5, 2 / 4])
    assert scores["miou"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["class_pixels"] == [4, 3]  # 255 is no class's pixel


def test_unlabelled_pixels_count_in_no_metric():
    scores = metrics.score(identity((3, 3, 2)), one_hot(PRED_255, 2), TRUTH_255, 2)
    check_hand_counts_with_unlabelled(scores)


def test_unlabelled_pixels_count_in_no_metric_on_the_evaluate_path():
    from segm import predict
    # A picture of the model's own canvas is one tile, so its map is the model's output.
    # Its channels 0 and 1 are bright where the prediction is 0 or 1; the model's logits
    # are those two channels, so its argmax is the prediction.
    picture = np.zeros((3, 3, 3), np.uint8)
    picture[..., :2] = one_hot(PRED_255[0], 2) * 255
    inputs = keras.Input((3, 3, 3))
    two = keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :2])(inputs))
    scores = predict.score_pictures(two, [(picture, TRUTH_255[0])], 2)
    check_hand_counts_with_unlabelled(scores)


# ---- the compiled forward pass -------------------------------------------------------

@pytest.mark.parametrize("name", ["unet", "unet_fused", "gcn", "dgcn", "gunet", "regions"])
def test_compiled_scoring_gives_the_eager_numbers(name):
    import model
    net = model.build_model(name, num_classes=11, height=16, width=16)
    rng = np.random.default_rng(1)
    for weight in net.weights:  # away from the initial values, batch-norm statistics too
        weight.assign(weight.numpy() + 0.02 * rng.standard_normal(weight.shape).astype("float32"))
    images = rng.uniform(-1, 1, (6, 16, 16, 3)).astype(np.float32)
    masks = rng.integers(0, 11, (6, 16, 16))
    eager = net(images, training=False).numpy()
    compiled = metrics.predict_logits(net, images, batch_size=4)  # 4, then 2 padded to 4
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    truth = keras.metrics.MeanIoU(11)
    truth.update_state(masks, eager.argmax(-1))
    cm, _ = metrics.confusion_matrix(net, images, masks, 11, batch_size=4)
    np.testing.assert_array_equal(cm, truth.total_cm.numpy())
