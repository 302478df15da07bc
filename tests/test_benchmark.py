"""benchmark.py: the teaching pictures, and which finished comparison runs are reused."""
import json
from pathlib import Path
from types import SimpleNamespace

import benchmark
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
