"""benchmark.py: each subcommand writes its table or pictures; finished comparison runs are reused."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import benchmark
import model
from load_data import Datagen


def test_plots_writes_the_three_pictures(tmp_path):
    benchmark.main(["plots", "--out_dir", str(tmp_path), "--checkpoint", str(tmp_path / "none")])
    for name in ("laplacian_eigenvectors", "chebyshev_response", "receptive_field"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name


def test_compare_reuses_only_a_finished_run_with_the_same_settings(tmp_path):
    args = SimpleNamespace(steps=500, eval_every=50, data_dir="data")
    assert not benchmark.same_run(tmp_path, args)                      # nothing there
    (tmp_path / "config.json").write_text(json.dumps(  # a run records its folder resolved
        {"steps": 500, "eval_every": 50, "data_dir": str(Path("data").resolve())}))
    assert not benchmark.same_run(tmp_path, args)                      # no metrics yet
    (tmp_path / "metrics.json").write_text("{}")
    assert benchmark.same_run(tmp_path, args)
    assert not benchmark.same_run(tmp_path, SimpleNamespace(steps=1000, eval_every=50,
                                                            data_dir="data"))


def test_mean_spread_reports_mean_std_and_range():
    assert benchmark.mean_spread([0.9, 1.0]) == "0.950 ± 0.071 (0.900-1.000)"


def test_generator_speed_is_reported_per_repeat():
    gen = Datagen(source="synthetic", canvas=16, digit_size=8)
    wall, cpu = benchmark.time_generator(gen, batch_size=8, batches=3, repeats=2)
    assert len(wall) == len(cpu) == 2 and min(wall) > 0 and min(cpu) > 0


def test_layers_table_has_every_variant_and_ratios_to_the_reference(tmp_path, capsys):
    benchmark.main(["layers", "--sizes", "8", "--batches", "2", "--repeats", "1",
                    "--out_dir", str(tmp_path)])
    table = (tmp_path / "layer_speed.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| (2, 8, 8, 32)"))
    assert row.count("x)") == 4 and "(1.00x)" in row.split("|")[5]  # the reference column
    assert (tmp_path / "layer_speed.png").stat().st_size > 10_000
    assert "GraphConv stencil" in capsys.readouterr().out


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


@pytest.mark.slow
def test_compare_trains_reuses_and_tabulates(tmp_path, capsys):
    argv = ["compare", "--models", "fcn", "--seeds", "0", "--steps", "2", "--eval_every", "1",
            "--out_dir", str(tmp_path)]
    benchmark.main(argv)
    table = (tmp_path / "comparison.md").read_text()
    metrics = json.loads((tmp_path / "compare" / "fcn_seed0" / "metrics.json").read_text())
    assert "| fcn | 6,582 |" in table and f"{metrics['fg_iou']:.3f} ± 0.000" in table
    assert (tmp_path / "comparison.png").is_file() and (tmp_path / "samples_fcn.png").is_file()
    log = tmp_path / "compare" / "fcn_seed0" / "output.txt"
    before = log.stat().st_mtime_ns
    benchmark.main(argv)  # the finished run is reused, not trained again
    assert log.stat().st_mtime_ns == before and "fcn seed 0" in capsys.readouterr().out
