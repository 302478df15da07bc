"""benchmark.py: each subcommand writes its table or pictures; finished runs are reused."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import benchmark
from segm import metrics
from segm.benchmarks import common, compare, data, layers, names, rotation
from segm.tf_quiet import keras
import model
from helpers import TINY, call_main, says
from load_data import Datagen


def test_plots_writes_the_four_pictures(tmp_path):
    benchmark.main(["plots", "--out_dir", str(tmp_path), "--checkpoint", str(tmp_path / "none")])
    for name in ("laplacian_eigenvectors", "chebyshev_response", "receptive_field",
                 "regions_example"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name


def test_plots_with_a_missing_data_folder_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["plots", "--data_dir", str(tmp_path / "nowhere"), "--out_dir",
                        str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none")])
    assert stop.value.code == 1
    says(capsys.readouterr().err, tmp_path / "nowhere", "does not exist")
    assert not (tmp_path / "out").exists()


def test_compare_reuses_only_a_finished_run_with_the_same_settings(tmp_path):
    args = SimpleNamespace(steps=500, eval_every=50, data_dir="data")
    assert not common.same_run(tmp_path, args)                      # nothing there
    (tmp_path / "config.json").write_text(json.dumps(  # a run records its folder resolved
        {"steps": 500, "eval_every": 50, "data_dir": str(Path("data").resolve())}))
    assert not common.same_run(tmp_path, args)                      # no metrics yet
    (tmp_path / "metrics.json").write_text("{}")
    assert common.same_run(tmp_path, args)
    assert not common.same_run(tmp_path, SimpleNamespace(steps=1000, eval_every=50,
                                                            data_dir="data"))


def test_mean_spread_reports_mean_std_and_range():
    assert compare.mean_spread([0.9, 1.0]) == "0.950 ± 0.071 (0.900-1.000)"


def test_generator_speed_is_reported_per_repeat():
    gen = Datagen(source="synthetic", canvas=16, digit_size=8)
    wall, cpu = data.time_generator(gen, batch_size=8, batches=3, repeats=2)
    assert len(wall) == len(cpu) == 2 and min(wall) > 0 and min(cpu) > 0


def test_layers_table_has_every_variant_and_ratios_to_the_reference(tmp_path, capsys):
    benchmark.main(["layers", "--sizes", "8", "--batches", "2", "--repeats", "1",
                    "--out_dir", str(tmp_path)])
    table = (tmp_path / "layer_speed.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| (2, 8, 8, 32)"))
    assert row.count("x)") == 4 and "(1.00x)" in row.split("|")[5]  # the reference column
    assert (tmp_path / "layer_speed.png").stat().st_size > 10_000
    assert "GraphConv stencil" in capsys.readouterr().out


def test_the_dense_variant_is_graph_conv_with_a_dense_matrix():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    sparse, dense = model.GraphConv(4, stencil=False), layers.DenseGraphConv(4)
    sparse(x), dense(x)  # built: the same kernel and bias shapes
    weights = [np.random.default_rng(1).normal(size=(3, 4)), np.array([0.5, -1.0, 0.0, 2.0])]
    for layer in (sparse, dense):
        layer.set_weights(weights)
    np.testing.assert_allclose(dense(x).numpy(), sparse(x).numpy(), atol=1e-5)
    assert layers.DenseGraphConv.from_config(dense.get_config()).units == 4


def test_params_lists_every_model(capsys):
    benchmark.main(["params"])
    printed = capsys.readouterr().out
    for name in model.MODELS:
        assert f"| {name} | {model.build_model(name).count_params():,} |" in printed


def test_data_reports_the_generator_speed(capsys):
    benchmark.main(["data", "--batches", "2", "--repeats", "1"])
    printed = capsys.readouterr().out
    assert "data: synthetic" in printed or "data: real" in printed
    assert "images/s over 1 repeats of 2 batches" in printed


def test_forward_times_each_model_eager_and_compiled(capsys):
    benchmark.main(["forward", "--models", "fcn,unet", "--rounds", "1"])
    printed = capsys.readouterr().out
    assert "medians of 4 forward passes each" in printed
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| fcn")
            or line.startswith("| unet")]
    assert [r[0].strip() for r in rows] == ["fcn, eager", "fcn, tf.function",
                                            "unet, eager", "unet, tf.function"]
    for _, per_batch, per_image, rate in rows:  # the columns agree, up to their rounding
        batch, image, rate = float(per_batch), float(per_image), float(rate)
        assert batch > 0 and abs(image * 64 - batch) <= 0.5 + 0.005 * 64
        assert 64_000 / (batch + 0.5) - 0.5 <= rate <= 64_000 / max(batch - 0.5, 1e-9) + 0.5


@pytest.mark.parametrize("argv", [["forward", "--rounds", "0"], ["steps", "--rounds", "-1"],
                                  ["data", "--repeats", "0"], ["compare", "--steps", "0"]])
def test_a_count_below_one_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(argv)
    assert stop.value.code == 2
    assert "must be a positive whole number, not" in capsys.readouterr().err


def test_compare_names_two_close_points_one_above_and_one_below():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    compare.label_points(ax, [(51, 0.982, "unet_fused"), (62, 0.981, "unet"),
                              (144, 0.976, "dgcn"), (42, 0.89, "fcn")])
    offsets = {t.get_text(): t.xyann for t in ax.texts}
    plt.close(fig)
    assert offsets == {"fcn": (6, 4), "unet_fused": (6, 4), "unet": (6, -14), "dgcn": (6, 4)}


@pytest.mark.slow
def test_compare_trains_reuses_and_tabulates(tmp_path, capsys):
    argv = ["compare", "--models", "fcn", "--seeds", "0", "--steps", "2", "--eval_every", "1",
            "--out_dir", str(tmp_path)]
    benchmark.main(argv)
    made = json.loads((tmp_path / "records" / "compare_fcn.json").read_text())
    metrics = json.loads((tmp_path / "compare" / "fcn_seed0" / "metrics.json").read_text())
    assert made["rows"][0][:2] == ["fcn", 6582] and made["rows"][0][4].startswith(
        f"{metrics['fg_iou']:.3f} ± 0.000")
    assert made["command"] == "python benchmark.py compare --models fcn --seeds 0 --steps 2 " \
                              "--eval_every 1"  # where the output went is no part of it
    assert (tmp_path / "compare_fcn.png").is_file() and (tmp_path / "samples_fcn.png").is_file()
    log = tmp_path / "compare" / "fcn_seed0" / "output.txt"
    before = log.stat().st_mtime_ns
    benchmark.main(argv)  # the finished run is reused, not trained again
    assert log.stat().st_mtime_ns == before and "fcn seed 0" in capsys.readouterr().out


def test_rotation_merges_six_and_nine_in_the_confusion_matrix():
    cm = np.zeros((11, 11), int)             # rows: truth; classes 7 and 10 are digits 6 and 9
    cm[0, 0] = 100
    cm[7, 7], cm[7, 10], cm[7, 0] = 6, 4, 2  # a 6: 6 pixels right, 4 called 9, 2 missed
    cm[10, 10] = 8
    kept = metrics.metrics_from_confusion(cm, 1)["per_class_iou"]
    assert kept[7] == 6 / 12 and kept[10] == 8 / 12  # 6's union: 12 true + 0 false positives
    merged = rotation.merge_six_nine(cm)
    assert merged.shape == (10, 10) and merged[7, 7] == 6 + 4 + 8 and merged[7, 0] == 2
    per_class = metrics.metrics_from_confusion(merged, 1)["per_class_iou"]
    assert per_class[0] == 100 / 102 and per_class[7] == 18 / 20
    assert metrics.metrics_from_confusion(merged, 1)["miou"] == pytest.approx(
        (100 / 102 + 0.9) / 2)


def test_rotation_table_and_plot_from_hand_made_scores(tmp_path):
    results = {  # (classes, training limit, model, seed) -> {test angle: scores}
        (2, 0, "unet", 0): {0: {"fg_iou": 0.9}, 90: {"fg_iou": 0.7}},
        (2, 0, "unet", 1): {0: {"fg_iou": 0.8}, 90: {"fg_iou": 0.7}},
        (11, 180, "gunet", 0): {0: {"fg_iou": 0.95, "miou": 0.6, "miou_69": 0.65},
                                90: {"fg_iou": 0.94, "miou": 0.5, "miou_69": 0.55}},
        (2, 0, "fcn", 0): {0: {"fg_iou": 0.5}, 90: {"fg_iou": 0.25}},
    }
    summary = rotation.rotation_summary(results, model.MODELS)
    assert summary[2, 0, "unet", "fg_iou"] == ([0, 1], {0: [0.9, 0.8], 90: [0.7, 0.7]})
    table = rotation.rotation_markdown(summary, [0, 90], "python benchmark.py rotation", 500, 2000)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "model" not in line]
    assert rows == [  # models in model.MODELS order; std of (0.9, 0.8) is 0.1 / sqrt(2)
        "| fcn | 2 | upright | fg IoU | 0 | 0.500 | 0.250 |",
        "| unet | 2 | upright | fg IoU | 0,1 | 0.850 ± 0.071 | 0.700 ± 0.000 |",
        "| gunet | 11 | turned ±180° | mean IoU | 0 | 0.600 | 0.500 |",
        "| gunet | 11 | turned ±180° | mean IoU, 6=9 | 0 | 0.650 | 0.550 |",
        "| gunet | 11 | turned ±180° | fg IoU | 0 | 0.950 | 0.940 |"]
    assert "| model | classes | training | score | seeds | 0° | 90° |" in table
    assert "6=9" in table.splitlines()[0] and "counts as an error" in table.splitlines()[0]
    rotation.plot_rotation(summary, [0, 90], tmp_path / "rotation.png", model.MODELS)
    assert (tmp_path / "rotation.png").stat().st_size > 10_000


def test_rotation_reuses_only_a_run_with_the_same_classes_and_angles(tmp_path):
    args = SimpleNamespace(steps=500, eval_every=50, data_dir="")
    settings = {"num_classes": 2, "digit_angle_min": -180.0, "digit_angle_max": 180.0}
    (tmp_path / "config.json").write_text(json.dumps({"steps": 500, "eval_every": 50,
                                                      **settings}))
    (tmp_path / "metrics.json").write_text("{}")
    assert common.same_run(tmp_path, args, settings)
    assert not common.same_run(tmp_path, args, {**settings, "num_classes": 11})
    assert not common.same_run(tmp_path, args, {**settings, "digit_angle_min": 0.0})


def test_rotation_finds_main_scores_and_makes_the_same_confusion_matrix(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    status, out, _ = call_main(capsys, "--evaluate", "--out_dir", run_copy,
                               "--digit_angle_min", "90", "--digit_angle_max", "90")
    assert status == 0
    path = rotation.eval_path(run_copy, config, 90)  # main.py's name for the turned score
    assert path.is_file() and json.loads(path.read_text()) == json.loads(out.splitlines()[-1])
    cm = rotation.confusions(run_copy, config, [90], benchmark.TRIO)[90]
    assert cm.sum() == 16 * 16 * 16  # eval_images x canvas x canvas pixels
    assert metrics.metrics_from_confusion(cm, 16)["miou"] == json.loads(path.read_text())["miou"]


@pytest.mark.slow
def test_rotation_trains_scores_reuses_and_tabulates(tmp_path, capsys):
    argv = ["rotation", "--models", "fcn", "--seeds", "0", "--classes", "11", "--train_angles",
            "0", "--angles", "90", "--steps", "2", "--eval_every", "1", "--eval_images", "16",
            "--out_dir", str(tmp_path)]
    benchmark.main(argv)
    run = tmp_path / "rotation" / "11_classes_upright" / "fcn_seed0"
    turned = json.loads(next(run.glob("eval_*_digit_angle_max90.json")).read_text())
    rows = (tmp_path / "rotation.md").read_text().splitlines()[-3:]
    assert rows[0] == f"| fcn | 11 | upright | mean IoU | 0 | {turned['miou']:.3f} |"
    assert rows[1].startswith("| fcn | 11 | upright | mean IoU, 6=9 | 0 | ")
    assert rows[2] == f"| fcn | 11 | upright | fg IoU | 0 | {turned['fg_iou']:.3f} |"
    assert (tmp_path / "rotation.png").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    argv[2] = "fcn,gunet"  # as a study cut short: fcn's run and scores reused, gunet's not made
    benchmark.main(argv + ["--only_finished"])
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert "gunet seed 0, 11 classes, upright: not trained, skipped" in capsys.readouterr().out
    assert (tmp_path / "rotation.md").read_text().endswith(
        "\n\nNot measured: gunet, 11 classes, upright (seed 0).\n")
    assert not (tmp_path / "rotation" / "11_classes_upright" / "gunet_seed0").exists()


def test_rotation_digest_gives_each_trainings_scores_and_each_seeds_worst_angle():
    results = {
        (2, 0, "unet", 0): {0: {"fg_iou": 0.9}, 90: {"fg_iou": 0.7}, 180: {"fg_iou": 0.8}},
        (2, 0, "unet", 1): {0: {"fg_iou": 0.8}, 90: {"fg_iou": 0.85}, 180: {"fg_iou": 0.9}},
        (2, 180, "unet", 0): {0: {"fg_iou": 0.6}, 90: {"fg_iou": 0.6}, 180: {"fg_iou": 0.5}},
        (11, 0, "cheb", 0): {a: {"fg_iou": 0.9, "miou": m, "miou_69": m + 0.1}
                             for a, m in ((0, 0.4), (90, 0.3), (180, 0.2))},
    }
    summary = rotation.rotation_summary(results, model.MODELS)
    digest = rotation.rotation_digest(summary, [0, 90, 180], model.MODELS)
    two, eleven = digest.split("\n\n*")
    assert ("| model | seeds | upright: 0° | upright: 90° | upright: lowest | turned ±180°: 0° "
            "| turned ±180°: 90° | turned ±180°: lowest |") in two
    # unet's worst angles: 0.7 (seed 0, 90°) and 0.8 (seed 1, 0°), so 0.75 ± 0.1/sqrt(2)
    assert ("| unet | 2 / 1 | 0.850 ± 0.071 | 0.775 ± 0.106 | 0.750 ± 0.071 | 0.600 | 0.600 "
            "| 0.500 |") in two
    assert "| model | seeds | upright: 0° | upright: 90° | upright: 180° | upright: 180°, 6=9 |" \
        in eleven
    assert "| cheb | 1 | 0.400 | 0.300 | 0.200 | 0.300 |" in eleven


def test_breakdown_times_every_phase_and_counts_flops_by_hand(capsys):
    from segm.benchmarks import breakdown
    benchmark.main(["breakdown", "--models", "fcn", "--repeats", "1", "--steps_timed", "2",
                    "--", *TINY, "--steps", "4", "--eval_every", "2"])
    out = capsys.readouterr().out
    for phase in ("start-up", "data:", "training: 4 steps of 8", "validation: 2 passes",
                  "checkpoints: 4 saved", "test set: 16 images scored, compiled", "pictures"):
        assert f"| {phase}" in out
    assert "| fcn | 3.4 |" in out  # the hand count below, in MFLOP
    row = next(line for line in out.splitlines() if line.startswith("| fcn |"))
    peaks = re.search(r"at (\d+) GFLOP/s in float32 and (\d+) in bfloat16", out)
    achieved, share32, share16 = (float(c.strip(" %")) for c in row.strip("|").split("|")[3:])
    # Both figures are printed rounded to whole GFLOP/s: a tenth of slack.
    assert share32 == pytest.approx(100 * achieved / int(peaks[1]), rel=0.1, abs=1.5)
    assert share16 == pytest.approx(100 * achieved / int(peaks[2]), rel=0.1, abs=1.5)
    net = benchmark.TRIO.model.build_model("fcn", 2, 32, 32)
    # Four 5x5 convolutions at every one of 32x32 pixels: 3 -> 10 -> 12 -> 8 -> 2 channels.
    hand = 2 * 25 * 32 * 32 * (3 * 10 + 10 * 12 + 12 * 8 + 8 * 2)
    assert breakdown.forward_flops(net) == hand
    assert breakdown.forward_flops(benchmark.TRIO.model.build_model("regions", 2, 16, 16)) is None


def test_steps_times_region_graphs_in_the_step_and_from_the_pipeline(capsys, monkeypatch):
    from segm.benchmarks import steps
    monkeypatch.setattr(steps, "FIT_STEPS", 2)
    benchmark.main(["steps", "--models", "fcn,regions", "--rounds", "1"])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ")}
    for what in ("fcn", "regions", "regions: graphs ready from the input pipeline",
                 "regions: graphs built in numpy", "SLIC alone",
                 "fcn: fit on the input pipeline", "regions: fit on the input pipeline"):
        assert what in rows and float(rows[what].split(" | ")[1]) > 0
    assert "fcn: graphs built in numpy" not in rows


def test_steps_times_the_fused_batch_norm_against_keras_own(capsys, monkeypatch):
    from segm.batch_norm import FusedBatchNormalization
    from segm.benchmarks import steps
    net = model.build_model("unet_fused", 2, 16, 16)
    twin = steps.with_keras_batch_norm(net)
    kinds = [(type(a), type(b)) for a, b in zip(net.layers, twin.layers)
             if isinstance(a, FusedBatchNormalization)]
    assert kinds and set(kinds) == {(FusedBatchNormalization, keras.layers.BatchNormalization)}
    assert twin.count_params() == net.count_params()
    monkeypatch.setattr(steps, "FIT_STEPS", 1)
    benchmark.main(["steps", "--models", "fcn,unet_fused", "--rounds", "1", "--keras_batch_norm"])
    rows = [line.split(" | ")[0].lstrip("| ") for line in capsys.readouterr().out.splitlines()]
    assert "unet_fused on Keras's batch norm" in rows and "unet_fused" in rows
    assert "fcn on Keras's batch norm" not in rows


def test_time_to_quality_times_both_checkouts_in_turn_and_scores_from_their_runs(tmp_path,
                                                                                   capsys):
    root = Path(benchmark.__file__).resolve().parent
    benchmark.main(["time", "--seeds", "3", "--baseline", str(root), "--out_dir", str(tmp_path),
                    "--", *TINY, "--steps", "2", "--eval_every", "1"])
    out = tmp_path / "time_to_quality"
    made = next((tmp_path / "records").glob("time_*.json"))
    assert "/" not in made.name  # the baseline's path names no figure
    row = next(r for r in json.loads(made.read_text())["rows"] if r[0] == 3)
    cells = [float(cell) for cell in row]
    assert cells[0] == 3 and len(cells) == 8
    for name, (wall, cpu, score) in (("new", cells[1:4]), ("baseline", cells[4:7])):
        run = json.loads((out / f"{name}_seed3" / "metrics.json").read_text())
        config = json.loads((out / f"{name}_seed3" / "config.json").read_text())
        assert config["seed"] == 3 and config["steps"] == 2
        assert score == pytest.approx(run["fg_iou"], abs=1e-4)
        assert wall > run["train_seconds"] and cpu > 0.5  # start-up and scoring count too
    assert cells[7] == pytest.approx(cells[1] / cells[4], abs=0.02)


def test_time_to_quality_without_a_baseline_has_no_ratio_and_scores_11_classes_by_miou(
        tmp_path):
    benchmark.main(["time", "--seeds", "3", "--out_dir", str(tmp_path), "--", *TINY,
                    "--steps", "2", "--eval_every", "1", "--num_classes", "11"])
    made = json.loads(next((tmp_path / "records").glob("time_*.json")).read_text())
    assert made["columns"] == ["seed", "new: wall s", "new: CPU s", "new: test miou"]
    assert made["section"] == "Eleven classes"
    run = json.loads((tmp_path / "time_to_quality" / "new_seed3" / "metrics.json").read_text())
    assert made["rows"][0][3] == f"{run['miou']:.4f}" and made["rows"][1][0] == "median"


def test_time_to_quality_refuses_a_seed_among_the_main_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["time", "--out_dir", str(tmp_path), "--", "--seed", "1"])
    assert stop.value.code == 2
    says(capsys.readouterr().err, "--seeds")
    assert not (tmp_path / "time_to_quality").exists()


@pytest.mark.slow
def test_folder_records_its_figure_under_its_command(tmp_path):
    benchmark.main(["folder", "--pairs", "60", "--steps", "5", "--repeats", "1", "--groups",
                    "0123,456,789", "--border", "2", "--out_dir", str(tmp_path)])
    made = json.loads((tmp_path / "records" /
                       "folder_pairs_60_steps_5_repeats_1_groups_0123_456_789_border_2.json"
                       ).read_text())
    assert made["command"] == ("python benchmark.py folder --pairs 60 --steps 5 --repeats 1 "
                               "--groups 0123,456,789 --border 2")
    values = dict(made["rows"])
    assert len(values["per-class IoU, folder path"].split(", ")) == 4  # background + 3 groups
    assert float(values["difference"]) <= 1e-4  # the folder and the arrays score alike


def test_names_paints_each_digit_with_its_name_and_scores_it_by_hand_count():
    masks = np.zeros((3, 4, 4), np.int32)
    masks[0, :3, 0] = 4          # a 3: three pixels of class 4
    masks[1, 1:3, 2] = 8         # a 7: two pixels of class 8
    assert names.digit_of(masks).tolist() == [3, 7, -1]  # the third scene lost its digit
    painted = names.named_masks(masks, [3, 1, 5])        # the 7 named a 1
    assert painted[1, 1:3, 2].tolist() == [2, 2] and (painted[masks == 0] == 0).all()
    scores = metrics.metrics_from_confusion(names.confusion(masks, painted), 3)
    # classes 0 (IoU 43/43), 2 (0 of 2), 4 (3/3), 8 (0 of 2) occur; the rest are left out
    assert scores["miou"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert scores["fg_iou"] == 1.0  # every digit pixel found, whatever its name
    right = names.named_masks(masks, names.digit_of(masks))
    assert (right == masks).all()


def test_names_photo_crops_centre_each_digit_and_stay_inside_the_image():
    images = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32, 1)
    masks = np.zeros((2, 32, 32), np.int32)
    masks[0, 10:20, 4:9] = 3     # box rows 10-19, columns 4-8: centre (15, 6)
    masks[1, 28:32, 29:32] = 5   # at the bottom-right corner: the window stops at the edge
    got = names.crops(images, masks, side=8)
    assert got.shape == (2, 8, 8, 1)
    assert (got[0, ..., 0] == images[0, 11:19, 2:10, 0]).all()
    assert (got[1, ..., 0] == images[1, 24:32, 24:32, 0]).all()
    empty = names.crops(images[:1], np.zeros((1, 32, 32), np.int32), side=8)
    assert (empty[0, ..., 0] == images[0, 12:20, 12:20, 0]).all()  # no digit: the centre


@pytest.mark.parametrize("seen", ["mask", "photo"])
def test_names_trains_the_namer_and_records_its_accuracy(tmp_path, real_data_dir, capsys, seen):
    benchmark.main(["names", "--steps", "20", "--eval_images", "64", "--input", seen,
                    "--data_dir", str(real_data_dir), "--out_dir", str(tmp_path)])
    made = json.loads((tmp_path / "records" /
                       f"names_steps_20_eval_images_64_input_{seen}.json").read_text())
    assert made["section"] == "Eleven classes" and made["rows"][0][0] == 20
    accuracy, miou = float(made["rows"][0][1].rstrip("%")), float(made["rows"][0][2])
    assert 0 <= accuracy <= 100 and 0 < miou <= 1
    assert "of the test digits named right" in capsys.readouterr().out


def test_names_refuses_a_folder_without_mnist_and_cifar(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["names", "--steps", "20", "--data_dir", str(tmp_path),
                        "--out_dir", str(tmp_path / "out")])
    assert stop.value.code == 1
    says(capsys.readouterr().err, "holds no MNIST")
    assert not (tmp_path / "out").exists()
