"""Benchmarks: every model side by side, the layers' and the generator's speed, teaching plots.

    python benchmark.py layers [--repeats 10] [--sizes 32,64,128,256] [--batches 1,64]
    python benchmark.py params
    python benchmark.py data [--data_dir DIR]   the image/mask generator's speed in images/s
    python benchmark.py compare [--models fcn,unet,gcn,cheb,dgcn,hybrid] [--seeds 0,1,2]
    python benchmark.py plots

`layers` times one layer's forward + backward pass (gradients for the input and
the weights, in a tf.function, after a warm-up) for each variant side by side,
interleaved, so that load from anything else on the machine hits all of them
alike; it reports the median. It writes im/layer_speed.md and im/layer_speed.png.
"""
import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

import files
import graphs
import model
import plots
from model import keras, tf

HERE = Path(__file__).resolve().parent

CHANNELS = 32                  # C in and out, as in the (64, 32, 32, 32) target case
DENSE_LIMIT_BYTES = 2 * 2**30  # a dense (H*W)^2 float32 adjacency above this is not tried
REFERENCE = "depthwise+1x1"    # ratios are taken against DepthwiseConv2D(3) + Conv2D(32, 1)
TARGET_IOU = 0.9               # "time to reach foreground IoU 0.90" in the comparison


class DenseGraphConv(model.GraphConv):
    """GraphConv with Â stored as a dense (H*W, H*W) matrix: what the sparse path avoids."""

    def build(self, input_shape):
        super().build(input_shape)
        self.dense = tf.constant(self.propagation.toarray())          # (H*W, H*W)

    def call(self, x):
        _, h, w, _ = x.shape
        xw = tf.reshape(tf.einsum("bhwc,cu->bhwu", x, self.kernel), (-1, h * w, self.units))
        y = tf.einsum("nm,bmu->bnu", self.dense, xw)                   # (B, H*W, units)
        return tf.reshape(y, (-1, h, w, self.units)) + self.bias


def variants(size):
    """name -> layer, or a string saying why that variant is skipped at this size."""
    dense_bytes = (size * size) ** 2 * 4
    return {
        "GraphConv sparse": model.GraphConv(CHANNELS, stencil=False),
        "GraphConv dense Â": DenseGraphConv(CHANNELS, stencil=False)
        if dense_bytes <= DENSE_LIMIT_BYTES
        else f"skipped: Â would take {dense_bytes / 2**30:.0f} GiB",
        "GraphConv stencil": model.GraphConv(CHANNELS),
        REFERENCE: keras.Sequential([keras.layers.DepthwiseConv2D(3, padding="same"),
                                     keras.layers.Conv2D(CHANNELS, 1)]),
    }


def train_step(layer, x):
    """A tf.function computing the loss gradients for the input and every weight."""
    layer(x)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(layer(x)))
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        return tf.add_n([tf.reduce_sum(g) for g in grads])  # one scalar: nothing big to copy out

    return step


def time_config(size, batch, repeats):
    """Median ms of each variant on a (batch, size, size, CHANNELS) input, runs interleaved."""
    x = tf.random.stateless_normal((batch, size, size, CHANNELS), seed=(0, 0))
    steps, results = {}, {}
    for name, layer in variants(size).items():
        if isinstance(layer, str):
            results[name] = layer
        else:
            steps[name] = train_step(layer, x)
            for _ in range(2):
                steps[name](x).numpy()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step(x).numpy()
            times[name].append(1000 * (time.perf_counter() - start))
    results.update({name: statistics.median(t) for name, t in times.items()})
    return results


def markdown(rows, names, command):
    """The results as a markdown table: ms, ratio to the reference, ns per pixel."""
    lines = [f"Forward + backward of one layer, {CHANNELS} channels in and out, median ms; "
             f"in brackets the ratio to {REFERENCE}. Command: `{command}`", "",
             "| input (B, H, W, C) | " + " | ".join(names) + " | stencil ns/pixel |",
             "|---|" + "---:|" * (len(names) + 1)]
    for (size, batch), result in rows.items():
        ref = result[REFERENCE]
        cells = [f"{v:.2f} ({v / ref:.2f}x)" if isinstance(v, float) else v
                 for v in (result[n] for n in names)]
        per_pixel = 1e6 * result["GraphConv stencil"] / (batch * size * size)
        lines.append(f"| ({batch}, {size}, {size}, {CHANNELS}) | " + " | ".join(cells)
                     + f" | {per_pixel:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows, names, path):
    """Time against pixel count, one panel per batch size, log-log."""
    import matplotlib.ticker
    batches = sorted({b for _, b in rows})
    fig, axes = plots.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.2), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        sizes = sorted(s for s, b in rows if b == batch)
        for name in names:
            pts = [(s * s, rows[s, batch][name]) for s in sizes
                   if isinstance(rows[s, batch][name], float)]
            ax.loglog(*zip(*pts), "o-", label=name)
        pixels = np.array([s * s for s in sizes], float)
        ref = rows[sizes[0], batch][REFERENCE]
        ax.loglog(pixels, ref * pixels / pixels[0], "k:", label="∝ pixels")
        ax.set(title=f"batch {batch}", xlabel="pixels per image (H·W)",
               ylabel="ms, forward+backward")
        ax.set_xticks(pixels, [f"{s}²" for s in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Graph convolution vs depthwise+1x1 convolution, {CHANNELS} channels")
    fig.tight_layout()
    plots.save(fig, path)


def run_layers(args):
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant and size: retracing is expected
    command = "python benchmark.py " + " ".join(args.argv)
    rows = {}
    for batch in args.batches:
        for size in args.sizes:
            # repeats scale with 1 / input size: many for the noisy small cases, at least 3
            scale = (64 * 32 * 32) / (batch * size * size)
            repeats = max(3, min(5 * args.repeats, round(args.repeats * scale)))
            rows[size, batch] = time_config(size, batch, repeats)
            print(f"({batch}, {size}, {size}, {CHANNELS}) x{repeats}: "
                  + ", ".join(f"{k} {v:.1f} ms" if isinstance(v, float) else f"{k} {v}"
                              for k, v in rows[size, batch].items()), flush=True)
    names = list(next(iter(rows.values())))
    table = markdown(rows, names, command)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(args.out_dir / "layer_speed.md", table)
    plot(rows, names, args.out_dir / "layer_speed.png")
    print("\n" + table)
    print(f"wrote {args.out_dir / 'layer_speed.md'} and {args.out_dir / 'layer_speed.png'}")


def run_compare(args):
    """Train every model with the same data, budget and seeds; table and picture."""
    out = Path(args.out_dir)
    # Seed-major order: a comparison cut short still has every model at the first seeds.
    runs = [(name, seed) for seed in args.seeds for name in args.models]
    results = {}
    for i, (name, seed) in enumerate(runs, 1):
        folder = out / "compare" / f"{name}_seed{seed}"
        print(f"[{i}/{len(runs)}] {name} seed {seed} ... ", end="", flush=True)
        results[name, seed] = train_once(name, seed, folder, args)
        r = results[name, seed]
        print(f"foreground IoU {r['fg_iou']:.4f}, {r['train_seconds']:.0f} s")
    summary = summarise(results, args)
    table = compare_markdown(summary, args)
    print(table)
    files.write_text(out / "comparison.md", table + "\n")
    plot_comparison(summary, out / "comparison.png")
    for name in args.models:  # the first seed's pictures stand for the model
        with files.atomic_write(out / f"samples_{name}.png") as tmp:
            shutil.copyfile(out / "compare" / f"{name}_seed{args.seeds[0]}" /
                            f"samples_{name}.png", tmp)
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.png'} and samples_*.png")


def train_once(name, seed, folder, args):
    """One main.py run in its own process, so its peak memory is its own; reused if done."""
    command = [sys.executable, str(HERE / "main.py"), "--model", name, "--seed", str(seed),
               "--steps", str(args.steps), "--eval_every", str(args.eval_every),
               "--out_dir", str(folder), *(["--data_dir", args.data_dir] if args.data_dir else [])]
    folder.mkdir(parents=True, exist_ok=True)
    # An interrupted comparison picks up where it stopped: finished runs are kept
    # (delete im/compare to start afresh); a run made with other settings is replaced.
    if not same_run(folder, args):
        with open(folder / "output.txt", "w") as log:  # not a tty: plain progress lines
            done = subprocess.run(command + ["--overwrite"], stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            sys.exit(f"error: {name} seed {seed} failed; see {folder / 'output.txt'}")
    metrics = json.loads((folder / "metrics.json").read_text())
    with open(folder / "log.csv") as f:
        curve = [(int(r["epoch"]) + 1) * args.eval_every for r in csv.DictReader(f)
                 if float(r["val_fg_iou"]) >= TARGET_IOU]
    metrics["seconds_to_target"] = (metrics["train_seconds"] * curve[0] / args.steps
                                    if curve else None)
    return metrics


def same_run(folder, args):
    """True if folder holds a finished run made with these steps, interval and data."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return ((folder / "metrics.json").is_file() and config["steps"] == args.steps
            and config["eval_every"] == args.eval_every
            and (not args.data_dir or config["data_dir"] == str(Path(args.data_dir).resolve())))


def summarise(results, args):
    """Per model: mean and spread over seeds of the scores, medians of the costs."""
    summary = {}
    for name in args.models:
        runs = [results[name, seed] for seed in args.seeds]

        def values(key):
            return [r[key] for r in runs if r[key] is not None]

        reached = values("seconds_to_target")
        summary[name] = {
            "parameters": model.build_model(name).count_params(),
            "fg_iou": values("fg_iou"), "miou": values("miou"),
            "train_seconds": statistics.median(values("train_seconds")),
            "images_per_second": statistics.median(values("train_images_per_second")),
            "inference_ms": statistics.median(values("inference_ms_per_image")),
            "peak_memory_mb": statistics.median(values("peak_memory_mb")),
            "to_target": (f"{statistics.median(reached):.0f} s ({len(reached)}/{len(runs)})"
                          if reached else f"not reached (0/{len(runs)})"),
        }
    return summary


def mean_spread(xs):
    """'mean ± standard deviation (min-max)' over seeds."""
    spread = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {spread:.3f} ({min(xs):.3f}-{max(xs):.3f})"


def compare_markdown(summary, args):
    command = "python benchmark.py " + " ".join(args.argv)
    batch = json.loads((Path(args.out_dir) / "compare" / f"{args.models[0]}_seed{args.seeds[0]}"
                        / "config.json").read_text())["batch_size"]
    lines = [f"`{command}` ({args.steps} steps x {batch} images, seeds "
             f"{','.join(map(str, args.seeds))}, {len(args.seeds)} runs per model; "
             "IoU: mean ± std (min-max) over seeds; costs: medians)", "",
             "| model | parameters | train images/s | inference ms/image | foreground IoU | "
             f"mean IoU | peak memory MB | time to IoU {TARGET_IOU} |",
             "|---|---:|---:|---:|---|---|---:|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['parameters']:,} | {s['images_per_second']:.0f} | "
                     f"{s['inference_ms']:.2f} | {mean_spread(s['fg_iou'])} | "
                     f"{mean_spread(s['miou'])} | {s['peak_memory_mb']:.0f} | {s['to_target']} |")
    return "\n".join(lines)


def plot_comparison(summary, path):
    """Foreground IoU against parameters and against training time, seeds as error bars."""
    fig, axes = plots.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, s in summary.items():
        mean = statistics.mean(s["fg_iou"])
        err = [[mean - min(s["fg_iou"])], [max(s["fg_iou"]) - mean]]
        for ax, x in zip(axes, (s["parameters"], s["train_seconds"])):
            ax.errorbar(x, mean, yerr=err, fmt="o", capsize=4, label=name)
            ax.annotate(name, (x, mean), textcoords="offset points", xytext=(6, 4))
    axes[0].set_xlabel("parameters")
    axes[1].set_xlabel("training time, s (median over seeds)")
    axes[0].set_ylabel("foreground IoU on the test set")
    for ax in axes:
        ax.axhline(TARGET_IOU, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    fig.suptitle("CNNs and graph convolutions, same data, budget and seeds "
                 "(bars: min to max over seeds)")
    fig.tight_layout()
    plots.save(fig, path)


def run_plots(args):
    """The three teaching pictures: eigenvectors, Chebyshev responses, receptive fields."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path, draw in ((out / "laplacian_eigenvectors.png", plot_eigenvectors),
                       (out / "chebyshev_response.png",
                        lambda: plot_chebyshev(args.checkpoint)),
                       (out / "receptive_field.png", plot_receptive_field)):
        plots.save(draw(), path)
        print(f"wrote {path}")


def plot_eigenvectors(side=32, count=16):
    """The grid Laplacian's lowest-frequency eigenvectors: the graph's Fourier basis."""
    laplacian = graphs.grid_laplacian(side, side)
    # Shift-invert around a point just below 0 finds the smallest eigenvalues fast.
    values, vectors = scipy.sparse.linalg.eigsh(laplacian.tocsc(), k=count, sigma=-1e-3)
    order = np.argsort(values)
    fig, axes = plots.subplots(2, count // 2, figsize=(count * 0.9, 4.2))
    for ax, i in zip(axes.ravel(), order):
        v = vectors[:, i].reshape(side, side)
        limit = np.abs(v).max()
        ax.imshow(v, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"λ = {values[i]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"First {count} eigenvectors of the normalised Laplacian of a {side}x{side} "
                 "4-connected grid (red +, blue -): the graph's low frequencies", fontsize=10)
    fig.tight_layout()
    return fig


def plot_chebyshev(checkpoint):
    """g(λ) = Σ_k θ_k T_k(λ - 1) of learned ChebConv filters, or of example ones."""
    lam = np.linspace(0, 2, 400)
    x = lam - 1  # rescaled Laplacian eigenvalues, lmax = 2
    basis = [np.ones_like(x), x]
    fig, ax = plots.subplots(figsize=(7, 4.2))
    layers = []
    if checkpoint and Path(checkpoint).is_file():
        trained = keras.saving.load_model(checkpoint)
        layers = [l for l in trained.layers if isinstance(l, model.ChebConv)]
    if layers:
        kernel = layers[0].kernel.numpy()                             # (K, C, units)
        K = kernel.shape[0]
        while len(basis) < K:
            basis.append(2 * x * basis[-1] - basis[-2])
        rng = np.random.default_rng(0)
        pairs = rng.choice(kernel.shape[1] * kernel.shape[2], 8, replace=False)
        for p in pairs:
            theta = kernel[:, p // kernel.shape[2], p % kernel.shape[2]]
            ax.plot(lam, sum(t * b for t, b in zip(theta, basis[:K])), alpha=0.8)
        title = (f"Frequency responses of 8 learned filters (first ChebConv of "
                 f"{Path(checkpoint).parent.name}, K={K})")
    else:
        basis.append(2 * x * basis[-1] - basis[-2])
        for theta, name in (((0.5, -0.5, 0.0), "low-pass: θ = (½, -½, 0)"),
                            ((0.5, 0.5, 0.0), "high-pass: θ = (½, ½, 0)"),
                            ((0.5, 0.0, -0.5), "band-pass: θ = (½, 0, -½)")):
            ax.plot(lam, sum(t * b for t, b in zip(theta, basis)), label=name)
        ax.legend()
        title = "Frequency responses of example Chebyshev filters (K=3)"
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Laplacian eigenvalue λ (0 = smooth, 2 = checkerboard)")
    ax.set_ylabel("gain g(λ)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_receptive_field(side=33, depths=(1, 2, 4, 8)):
    """Where an impulse at the centre reaches after k GCN layers and after k 3x3 convs."""
    impulse = np.zeros(side * side)
    impulse[(side // 2) * side + side // 2] = 1.0
    gcn = graphs.gcn_propagation(side, side)                           # Â, 4-connected
    box = graphs.grid_adjacency(side, side, connectivity=8) + scipy.sparse.identity(side * side)
    fig, axes = plots.subplots(2, len(depths) + 1, figsize=(3 * (len(depths) + 1), 6.2))
    reach = {"GCN (Â, 4-neighbours)": [], "3x3 convolution": []}
    for row, (label, step) in enumerate(zip(reach, (gcn, box / 9.0))):
        field = impulse
        for k in range(1, max(depths) + 1):
            field = step @ field
            reach[label].append(np.count_nonzero(field > 1e-12))
            if k in depths:
                ax = axes[row, depths.index(k)]
                ax.imshow(field.reshape(side, side) / field.max(), cmap="magma")
                ax.set_title(f"{label}\n{k} layer{'s' if k > 1 else ''}", fontsize=9)
                ax.axis("off")
    ax = axes[0, -1]
    gs = ax.get_gridspec()
    for a in axes[:, -1]:
        a.remove()
    ax = fig.add_subplot(gs[:, -1])
    for label, radii in reach.items():
        ax.plot(range(1, max(depths) + 1), radii, "o-", label=label)
    ax.set_xlabel("layers k")
    ax.set_ylabel("pixels that can influence the centre")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("Where one pixel's information reaches after k layers: a square of (2k+1)² "
                 "pixels for 3x3 convolutions, a diamond of 2k²+2k+1 for the 4-neighbour GCN, "
                 "whose fixed weights fade like a diffusion", fontsize=10)
    fig.tight_layout()
    return fig


def run_params(args):
    print(model.parameter_table())


def time_generator(gen, batch_size=64, batches=500, repeats=7):
    """Images per second of gen.sample(batch_size) per timed repeat: (wall clock, CPU time)."""
    gen.sample(batch_size)  # warm-up: first-call allocations are not the steady state
    wall, cpu = [], []
    for _ in range(repeats):  # CPU time too: on a shared machine the wall clock counts others
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            gen.sample(batch_size)
        wall.append(batches * batch_size / (time.perf_counter() - start))
        cpu.append(batches * batch_size / (time.process_time() - start_cpu))
    return wall, cpu


def run_data(args):
    """The generator's speed at main.py's defaults, on the data main.py would use."""
    import main
    gen = main.make_datagen(main.parse_config(["--data_dir", args.data_dir] if args.data_dir
                                              else []))
    print(f"data: {gen.describe()}")
    wall, cpu = time_generator(gen, main.BATCH_SIZE, args.batches, args.repeats)
    print(f"sample({main.BATCH_SIZE}): median {np.median(wall):,.0f} images/s over {len(wall)} "
          f"repeats of {args.batches} batches (min {min(wall):,.0f}, max {max(wall):,.0f}); "
          f"{np.median(cpu):,.0f} per CPU-second")


def int_list(text):
    return [int(v) for v in text.split(",")]


def model_list(text):
    names = text.split(",")
    unknown = [n for n in names if n not in model.MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model {unknown[0]!r}; choose from "
                                         f"{', '.join(model.MODELS)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    layers = commands.add_parser("layers", help="GraphConv paths against depthwise+1x1 conv")
    layers.add_argument("--repeats", type=int, default=10, help="timed runs at (64, 32, 32)")
    layers.add_argument("--sizes", type=int_list, default=[32, 64, 128, 256])
    layers.add_argument("--batches", type=int_list, default=[1, 64])
    layers.add_argument("--out_dir", type=Path, default=Path("im"))
    layers.set_defaults(run=run_layers)
    params = commands.add_parser("params", help="parameter count of every model")
    params.set_defaults(run=run_params)
    data = commands.add_parser("data", help="the image/mask generator's speed")
    data.add_argument("--data_dir", default="", help="as main.py's --data_dir")
    data.add_argument("--batches", type=int, default=500)
    data.add_argument("--repeats", type=int, default=7)
    data.set_defaults(run=run_data)
    compare = commands.add_parser("compare", help="train every model on the same budget, seeds")
    compare.add_argument("--models", type=model_list, default=list(model.MODELS))
    compare.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    compare.add_argument("--steps", type=int, default=500)
    compare.add_argument("--eval_every", type=int, default=50, help="curve points, for time "
                         f"to foreground IoU {TARGET_IOU}")
    compare.add_argument("--data_dir", default="",
                         help="MNIST/CIFAR-10 folder (default: main.py's own default)")
    compare.add_argument("--out_dir", type=Path, default=Path("im"))
    compare.set_defaults(run=run_compare)
    teaching = commands.add_parser("plots", help="the teaching pictures")
    teaching.add_argument("--checkpoint", default="im/compare/cheb_seed0/model.keras",
                          help="a trained cheb model whose filters to draw (examples if absent)")
    teaching.add_argument("--out_dir", type=Path, default=Path("im"))
    teaching.set_defaults(run=run_plots)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.run(args)


if __name__ == "__main__":
    main()
