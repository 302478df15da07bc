"""`benchmark.py time`: time to quality, the whole command as a user runs it.

Each run is `python main.py [flags]` in a process of its own, timed from start-up to the
last picture (as the MLPerf training rules count it): its wall time, its CPU time (user
and system, of the process and its children) and its test-set score from metrics.json.
With --baseline DIR, the main.py of another checkout (e.g. `git worktree add /tmp/old
d12aecb`) runs the same flags in turn with this one, seed by seed, so the speed-up is a
ratio of runs that shared the machine's load. It writes its record, records/time_*.json.
"""
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from segm.benchmarks.common import figure_name, record
from segm.errors import FileError, UsageError


def cpu_seconds_of_children():
    """User plus system seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(main_py, flags, folder):
    """{wall, cpu, score, metric} of one main.py run into folder (made afresh)."""
    command = [sys.executable, str(main_py), *flags, "--out_dir", str(folder), "--overwrite"]
    folder.mkdir(parents=True, exist_ok=True)
    cpu = cpu_seconds_of_children()
    began = time.perf_counter()
    with open(folder.with_name(folder.name + ".txt"), "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              cwd=Path(main_py).parent)
    wall = time.perf_counter() - began
    if done.returncode:
        raise FileError(f"{main_py} failed with {' '.join(flags)}; see {log.name}")
    scores = json.loads((folder / "metrics.json").read_text())
    metric = "fg_iou" if len(scores["per_class_iou"]) == 2 else "miou"  # 11 classes: mean IoU
    return {"wall": wall, "cpu": cpu_seconds_of_children() - cpu, "score": scores[metric],
            "metric": metric}


def table(results, args, recipes):
    """The columns and rows: one row per seed, recipes side by side, then the medians; with a
    baseline, the wall ratio."""
    columns = ["seed"] + [f"{r}: {what}" for r in recipes
                          for what in ("wall s", "CPU s", "test " + results[r][0]["metric"])]
    columns += ["wall ratio"] if len(recipes) == 2 else []
    rows, ratios = [], []
    for i, seed in enumerate(args.seeds):
        runs = [results[r][i] for r in recipes]
        rows.append([seed] + [f"{x:.{d}f}" for run in runs for x, d in
                              ((run["wall"], 1), (run["cpu"], 1), (run["score"], 4))])
        if len(runs) == 2:
            ratios.append(runs[0]["wall"] / runs[1]["wall"])
            rows[-1].append(f"{ratios[-1]:.2f}")
    medians = [statistics.median(run[key] for run in results[r])
               for r in recipes for key in ("wall", "cpu", "score")]
    rows.append(["median"] + [f"**{m:.{d}f}**" for m, d in zip(medians, (1, 1, 4) * 2)]
                + ([f"**{statistics.median(ratios):.2f}**"] if ratios else []))
    return columns, rows


def run(args, trio):
    """Run main.py (and the baseline's) for every seed in turn; print and write the table."""
    flags = [flag for flag in args.main_flags if flag != "--"]
    if any(flag.split("=")[0] in ("--seed", "--out_dir") for flag in flags):
        raise UsageError("--seed and --out_dir are the benchmark's own: give --seeds and "
                         "--out_dir before the -- instead")
    scripts = {"new": trio.main_py}
    if args.baseline:
        scripts["baseline"] = Path(args.baseline) / "main.py"
        if not scripts["baseline"].is_file():
            raise UsageError(f"--baseline {args.baseline} holds no main.py; give a checkout "
                             f"of this project (e.g. git worktree add /tmp/old d12aecb)")
    data = ["--data_dir", str(Path(args.data_dir).resolve())] if args.data_dir else []
    out = Path(args.out_dir) / "time_to_quality"
    results = {name: [] for name in scripts}
    for seed in args.seeds:
        for name, main_py in scripts.items():  # in turn: both see the same load
            result = timed_run(main_py, [*data, *flags, "--seed", str(seed)],
                               (out / f"{name}_seed{seed}").resolve())
            results[name].append(result)
            print(f"{name} seed {seed}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU, "
                  f"test {result['metric']} {result['score']:.4f}", flush=True)
    columns, rows = table(results, args, list(scripts))
    print("\n".join(" | ".join(map(str, row)) for row in [columns, *rows]))
    name = figure_name("time", args)
    caption = ("Each run the whole `python main.py` command, start-up to the last picture, "
               "seed by seed" + (", the baseline checkout's in turn with this one's, so both "
                                 "shared the machine's load; the baseline is "
                                 "`git worktree add /tmp/old d12aecb`, the code before the "
                                 "recipe of segm/recipe.py" if args.baseline else "") + ".")
    headline = (f"whole `{' '.join(['python main.py', *flags])}`, median of seeds",
                f"{rows[-1][1].strip('*')} s wall, test score {rows[-1][3].strip('*')}"
                + (f", {rows[-1][-1].strip('*')}x the baseline's wall time"
                   if args.baseline else ""))
    eleven = "--num_classes 11" in " ".join(flags).replace("=", " ")
    record(args, name, columns, rows, caption, headline,
           "Eleven classes" if eleven else "The default run's time")
