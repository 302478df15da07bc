"""`benchmark.py breakdown`: where the time of one default run goes, phase by phase, and how
close each model's training step comes to this machine's arithmetic peak.

Each phase is timed as main.py runs it, in this one process (start-up alone needs a
fresh one each time), and repeated; the table gives medians. Training is timed without
its validation passes, which get a row of their own.
"""
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segm import checkpoints, metrics, pipeline, predict, readers, recipe, records
from segm.benchmarks.common import command_line
from segm.tf_quiet import keras

MATMUL_SIDE = 2048  # the peak: a (2048, 2048) @ (2048, 2048) product, 17 GFLOP


def startup_seconds(main_py):
    """A fresh interpreter importing main.py, TensorFlow with it, and nothing more."""
    code = f"import sys; sys.path.insert(0, {str(Path(main_py).parent)!r}); import main"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - began


def timed(work):
    """(work's result, its seconds)."""
    began = time.perf_counter()
    result = work()
    return result, time.perf_counter() - began


def forward_flops(net):
    """Multiply-adds x 2 of one image's forward pass, from the layers' kernels and shapes.

    Every layer with a kernel (convolutions, dense and graph layers alike) multiplies it
    once per position: per output pixel or node, or per input pixel for a transposed
    convolution. Batch norm, activations, pooling and the fixed stencils are left out:
    they are a few operations per value, not per weight. None where a layer's node count
    depends on the image (the region graphs).
    """
    total = 0
    for layer in net.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        shape = layer.input.shape if isinstance(layer, keras.layers.Conv2DTranspose) \
            else layer.output.shape
        if len(shape) < 3 or any(side is None for side in shape[1:-1]):
            return None  # nodes, not pixels: as many as the image's regions
        total += 2 * int(np.prod(kernel.shape)) * int(np.prod(shape[1:-1]))
    return total


def one_run(cfg, trio, folder):
    """{phase: seconds} of one default run, as main.py does it, without its start-up."""
    main, load_data, seconds = trio.main, trio.load_data, {}
    readers.load_real_cached.cache_clear()  # each run reads the files, as a new process does
    (gen, tests, valid), seconds["data: files read, test and validation sets drawn"] = timed(
        lambda: (load_data.make_datagen(cfg), *load_data.held_out_sets(cfg)))
    keras.utils.set_random_seed(cfg.seed)
    net = recipe.build(trio.model.build_model, cfg)
    main.compile_model(net, cfg)
    intervals = cfg.steps // cfg.eval_every
    _, seconds[f"training: {cfg.steps} steps of {cfg.batch_size}"] = timed(lambda: net.fit(
        pipeline.make_dataset(gen, cfg.batch_size), epochs=intervals,
        steps_per_epoch=cfg.eval_every, shuffle=False, verbose=0))
    _, seconds[f"validation: {intervals} passes over {len(valid[0])} images"] = timed(
        lambda: [net.evaluate(*valid, batch_size=cfg.batch_size, verbose=0)
                 for _ in range(intervals)])
    _, seconds[f"checkpoints: {2 * intervals} saved"] = timed(
        lambda: [checkpoints.save_model(net, folder / "model.keras")
                 for _ in range(2 * intervals)])
    scores, seconds[f"test set: {len(tests[0])} images scored, compiled"] = timed(
        lambda: metrics.score(net, *tests, cfg.num_classes, cfg.batch_size))
    _, seconds[f"test set: {len(tests[0])} images scored, eager (before)"] = timed(
        lambda: [net(tests[0][i:i + cfg.batch_size], training=False)
                 for i in range(0, len(tests[0]), cfg.batch_size)])
    _, seconds["pictures: samples and input grid"] = timed(lambda: (
        predict.draw_samples(net, gen, tests, scores, cfg.sample_rows, cfg.batch_size,
                             folder / "samples.png"),
        load_data.save_grid(gen, folder / "input_data.png")))
    return seconds


def step_seconds(net, batch, repeats):
    """The median of repeats training steps on one batch, after two to trace and warm up."""
    for _ in range(2):
        net.train_on_batch(*batch)
    return statistics.median(timed(lambda: net.train_on_batch(*batch))[1]
                             for _ in range(repeats))


def run(args, trio):
    """Print the breakdown of the default run and the models' achieved GFLOP/s."""
    main = trio.main
    flags = [flag for flag in args.main_flags if flag != "--"]
    cfg = main.parse_config([*(["--data_dir", args.data_dir] if args.data_dir else []), *flags])
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            runs.append({"start-up: Python, TensorFlow and the trio imported":
                         startup_seconds(trio.main_py),
                         **one_run(cfg, trio, Path(folder))})
    print(f"`{command_line(args)}`: {'the default run' if not flags else 'a run'} "
          f"({cfg.model}, {cfg.steps} steps of "
          f"{cfg.batch_size}), each phase timed as main.py runs it; medians of "
          f"{args.repeats} runs\n")
    print("| phase | seconds |\n|---|---:|")
    whole = 0.0
    for phase in runs[0]:
        median = statistics.median(run[phase] for run in runs)
        whole += 0 if "eager" in phase else median
        print(f"| {phase} | {median:.1f} |")
    print(f"| **sum, as main.py runs it (compiled scoring)** | **{whole:.1f}** |\n")

    peak = records.matmul_peak("float32", args.repeats * 5, MATMUL_SIDE)
    peak_bf16 = records.matmul_peak("bfloat16", args.repeats * 5, MATMUL_SIDE)
    gen = trio.load_data.make_datagen(cfg)
    batch = gen.sample(cfg.batch_size, step=0)
    print(f"Training step against the peak: a {MATMUL_SIDE}x{MATMUL_SIDE} matmul runs at "
          f"{peak:.0f} GFLOP/s in float32 and {peak_bf16:.0f} in bfloat16 here. A step's "
          f"FLOPs are taken as 3x the forward pass's (forward, then the gradients of inputs "
          f"and weights); medians of {args.steps_timed} steps of {cfg.batch_size}, in "
          f"{cfg.precision} (--precision after -- for the other).\n")
    print("| model | forward MFLOP/image | ms per step | achieved GFLOP/s | share of float32 "
          "peak | share of bfloat16 peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        keras.utils.set_random_seed(0)
        cfg.model = name  # the run timed above is done: cfg now names each model in turn
        net = recipe.build(trio.model.build_model, cfg)
        main.compile_model(net, cfg)
        seconds = step_seconds(net, batch, args.steps_timed)
        flops = forward_flops(net)
        if flops is None:
            print(f"| {name} | n/a | {1000 * seconds:.0f} | n/a | n/a | n/a |")
            continue
        achieved = 3 * flops * cfg.batch_size / seconds / 1e9
        print(f"| {name} | {flops / 1e6:.1f} | {1000 * seconds:.0f} | {achieved:.0f} | "
              f"{achieved / peak:.0%} | {achieved / peak_bf16:.0%} |")
