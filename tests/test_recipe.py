"""segm/recipe.py: precision (bfloat16 layers, float32 logits), the schedule, weight averaging."""
import json
from pathlib import Path

import numpy as np
import pytest

import main
import model
from helpers import TINY, call_main, says
from segm import metrics, recipe
from segm.tf_quiet import keras


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (8, 16, 16, 3)).astype("float32"),
            (rng.uniform(size=(8, 16, 16)) > 0.8).astype("int32"))


def test_a_bfloat16_step_computes_in_bfloat16_and_gives_float32_logits():
    cfg = main.parse_config(TINY + ["--precision", "bfloat16", "--model", "unet_fused"])
    net = recipe.build(model.build_model, cfg)
    main.compile_model(net, cfg)
    images, masks = tiny_batch()
    loss = net.train_on_batch(images, masks)
    convolutions = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convolutions} == {"bfloat16"}
    assert {w.dtype for w in net.trainable_weights} == {"float32"}
    assert net(images).dtype == "float32" and np.isfinite(loss).all()
    # The policy was this model's only: the next one is float32 throughout.
    later = model.build_model("unet_fused", 2, 16, 16)
    assert {layer.compute_dtype for layer in later.layers} == {"float32"}


def test_the_training_step_is_traced_once():
    # The optimizer's variables exist before the first step; made inside it, they would
    # make TensorFlow trace the whole step a second time.
    cfg = main.parse_config(TINY + ["--model", "unet_fused"])
    net = recipe.build(model.build_model, cfg)
    main.compile_model(net, cfg)
    traced, step = [], net.train_step  # train_step runs in Python only while being traced

    def counted(data):
        traced.append(1)
        return step(data)
    net.train_step = counted
    net.train_on_batch(*tiny_batch())
    net.train_on_batch(*tiny_batch(1))
    assert len(traced) == 1


def test_float32_builds_the_plain_model_and_auto_follows_the_cpu():
    cfg = main.parse_config(TINY + ["--precision", "float32", "--model", "unet_fused"])
    net = recipe.build(model.build_model, cfg)
    assert {layer.compute_dtype for layer in net.layers} == {"float32"}
    assert [w.shape for w in net.weights] == [
        w.shape for w in model.build_model("unet_fused", 2, 16, 16).weights]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags  # no GPU on the test machine
    assert recipe.resolve_precision("auto", "unet_fast")[0] == ("bfloat16" if native
                                                               else "float32")
    assert recipe.resolve_precision("auto", "regions")[0] == "float32"


def test_bfloat16_for_a_graph_model_is_one_sentence(tmp_path, capsys):
    status, _, err = call_main(capsys, *TINY, "--model", "gcn", "--precision", "bfloat16",
                               "--steps", "1", "--out_dir", tmp_path / "run")
    assert status == 2
    says(err, "--precision bfloat16", "gcn")
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_bfloat16_trained_model_saves_loads_and_scores(tmp_path, capsys):
    run = tmp_path / "run"
    status, _, _ = call_main(capsys, *TINY, "--precision", "bfloat16", "--steps", "4",
                             "--eval_every", "2", "--out_dir", run)
    assert status == 0
    net = model.load_model(run / "model.keras")
    assert net.layers[-1].compute_dtype == "float32"
    assert "bfloat16" in {layer.compute_dtype for layer in net.layers}
    saved = json.loads((run / "metrics.json").read_text())
    datagen = main.load_data.make_datagen(main.parse_config(TINY + ["--seed", "2024"]),
                                          seed=2024)
    images, masks = datagen.test_set(16)
    assert net(images[:2]).dtype == "float32"
    again = metrics.score(net, images, masks, 2, 8)
    assert again["fg_iou"] == pytest.approx(saved["fg_iou"], abs=1e-6)


def test_the_schedule_warms_up_then_decays_to_the_floor():
    cfg = main.parse_config(TINY + ["--steps", "200", "--eval_every", "100",
                                    "--learning_rate", "0.01", "--lr_floor", "0"])
    rates = [float(recipe.schedule(cfg)(step)) for step in (0, 10, 105, 200)]
    np.testing.assert_allclose(rates, [0.001, 0.01, 0.005, 0.0], atol=1e-6)


def first_kernel_after_steps(flags, gradients):
    """The first kernel of a seeded fcn after each optimizer step with constant gradients."""
    cfg = main.parse_config(TINY + flags + ["--clip_norm", "0", "--learning_rate", "0.1"])
    keras.utils.set_random_seed(0)
    net = model.build_model("fcn", 2, 16, 16)
    main.compile_model(net, cfg)
    kernels = []
    for gradient in gradients:
        net.optimizer.apply_gradients([(np.full(v.shape, gradient, "float32"), v)
                                       for v in net.trainable_variables])
        kernels.append(net.trainable_variables[0].numpy().copy())
    return kernels


def test_weight_averaging_copies_the_average_into_the_model():
    plain = first_kernel_after_steps([], [1.0, -0.5, 2.0])
    averaged = first_kernel_after_steps(["--ema", "0.5", "--ema_every", "2"], [1.0, -0.5, 2.0])
    np.testing.assert_array_equal(averaged[0], plain[0])  # between copies: the plain step
    # At the copy, the model holds the average of the plain weights: the first step's
    # weights start it, then each step adds half of itself.
    np.testing.assert_allclose(averaged[1], 0.5 * plain[0] + 0.5 * plain[1], rtol=1e-6)
    assert not np.allclose(averaged[1], plain[1])
