"""Benchmarks: every model side by side, the layers' and the generator's speed, teaching plots.

    python benchmark.py layers [--repeats 10] [--sizes 32,64,128,256] [--batches 1,64]
    python benchmark.py params
    python benchmark.py data [--data_dir DIR]   the image/mask generator's speed in images/s
    python benchmark.py compare [--models fcn,unet,gcn,cheb,dgcn,hybrid] [--seeds 0,1,2]
    python benchmark.py rotation [--models ...] [--seeds 0,1,2] [--classes 2,11]
                                 [--train_angles 0,180] [--angles 0,30,60,90,135,180]
    python benchmark.py plots [--data_dir DIR]   teaching pictures, regions_example.png too
    python benchmark.py folder [--data_dir DIR]   a folder of scenes: the folder-data targets
    python benchmark.py steps [--models gcn,regions]   training steps side by side
    python benchmark.py forward [--models unet,gunet]   forward passes, eager and compiled

`layers` times one layer's forward + backward pass (gradients for the input and
the weights, in a tf.function, after a warm-up) for each variant side by side,
interleaved, so that load from anything else on the machine hits all of them
alike; it reports the median. It writes im/layer_speed.md and im/layer_speed.png.

`rotation` trains each model on upright digits (and, for each T > 0 in
--train_angles, on digits turned uniformly in [-T, T] degrees), scores every run
on its test set with every digit turned by each of --angles, and writes
im/rotation.md and im/rotation.png. Runs and scores are reused, so a study cut
short goes on where it stopped; --only_finished tabulates what is there.
"""
import argparse
import contextlib
import csv
import io
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

import load_data
import model
from segm import configurator, files, graphs, metrics, plots, readers, region_layers, runs
from segm.errors import DataError, FileError, UsageError
from segm.tf_quiet import keras, tf

HERE = Path(__file__).resolve().parent
FIGURES = Path("im") / "figures"  # the pictures and tables README.md and RESULTS.md show

CHANNELS = 32                  # C in and out, as in the (64, 32, 32, 32) target case
DENSE_LIMIT_BYTES = 2 * 2**30  # a dense (H*W)^2 float32 adjacency above this is not tried
REFERENCE = "depthwise+1x1"    # ratios are taken against DepthwiseConv2D(3) + Conv2D(32, 1)
TARGET_IOU = 0.9               # "time to reach foreground IoU 0.90" in the comparison
SIX, NINE = 7, 10              # 11-class labels of the digits 6 and 9 (class = digit + 1)
# What the rotation table reports, per class count: (key, label).
ROTATION_SCORES = {2: [("fg_iou", "fg IoU")],
                   11: [("miou", "mean IoU"), ("miou_69", "mean IoU, 6=9"), ("fg_iou", "fg IoU")]}


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


def train_once(name, seed, folder, args, settings=None):
    """One main.py run in its own process, so its peak memory is its own; reused if done.

    settings: further main.py settings, {name: value}, that the run is made with.
    """
    settings = settings or {}
    command = [sys.executable, str(HERE / "main.py"), "--model", name, "--seed", str(seed),
               "--steps", str(args.steps), "--eval_every", str(args.eval_every),
               "--out_dir", str(folder), *(["--data_dir", args.data_dir] if args.data_dir else []),
               *(f"--{key}={value}" for key, value in settings.items())]
    folder.mkdir(parents=True, exist_ok=True)
    # An interrupted comparison picks up where it stopped: finished runs are kept
    # (delete the run folders to start afresh); a run made with other settings is replaced.
    if not same_run(folder, args, settings):
        with open(folder / "output.txt", "w") as log:  # not a tty: plain progress lines
            done = subprocess.run(command + ["--overwrite"], stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            sys.exit(f"error: {name} seed {seed} failed; see {folder / 'output.txt'}")
    metrics = json.loads((folder / "metrics.json").read_text())
    with open(folder / "log.csv") as f:
        curve = [(int(r["epoch"]) + 1) * args.eval_every for r in csv.DictReader(f)
                 if float(r.get("val_fg_iou", "nan")) >= TARGET_IOU]  # 11 classes: not logged
    metrics["seconds_to_target"] = (metrics["train_seconds"] * curve[0] / args.steps
                                    if curve else None)
    return metrics


def same_run(folder, args, settings=None):
    """True if folder holds a finished run made with these steps, interval, data and settings."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return ((folder / "metrics.json").is_file() and config["steps"] == args.steps
            and config["eval_every"] == args.eval_every
            and (not args.data_dir or config["data_dir"] == str(Path(args.data_dir).resolve()))
            and all(config.get(key) == value for key, value in (settings or {}).items()))


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


def run_rotation(args):
    """Upright- and turned-trained runs scored on turned test digits: table and picture."""
    out = Path(args.out_dir)
    if args.data_dir and not Path(args.data_dir).is_dir():
        print(f"error: --data_dir {args.data_dir} is not a folder; name the folder that holds "
              f"mnist/ and cifar/", file=sys.stderr)
        sys.exit(2)
    # Upright before turned, then seed-major, 2 classes first: a study cut short
    # still has every model at the first seeds of the first settings.
    work = [(classes, limit, name, seed) for limit in args.train_angles for seed in args.seeds
            for classes in args.classes for name in args.models]
    results = {}
    for i, (classes, limit, name, seed) in enumerate(work, 1):
        folder = (out / "rotation" / f"{classes}_classes_{setting_name(limit)}"
                  / f"{name}_seed{seed}")
        settings = {"num_classes": classes, "digit_angle_min": float(-limit),
                    "digit_angle_max": float(limit), "eval_images": args.eval_images}
        label = f"[{i}/{len(work)}] {name} seed {seed}, {classes} classes, {training_label(limit)}"
        if args.only_finished and not same_run(folder, args, settings):
            print(f"{label}: not trained, skipped")
            continue
        print(f"{label} ... ", end="", flush=True)
        try:
            train_once(name, seed, folder, args, settings)
            results[classes, limit, name, seed] = score_angles(folder, args.angles)
        except (UsageError, DataError, FileError) as error:
            sys.exit(f"\nerror: {error}")
        key, shown = ROTATION_SCORES[classes][0]
        print(f"{shown}: " + ", ".join(f"{a}° {s[key]:.3f}" for a, s in
                                       results[classes, limit, name, seed].items()))
    if not results:
        sys.exit("error: no finished run to tabulate; run without --only_finished to train them")
    summary = rotation_summary(results)
    command = "python benchmark.py " + " ".join(args.argv)
    table = rotation_markdown(summary, args.angles, command, args.steps, args.eval_images)
    missing = {}
    for classes, limit, name, seed in work:
        if (classes, limit, name, seed) not in results:
            missing.setdefault((classes, limit, name), []).append(str(seed))
    if missing:
        table += "\n\nNot measured: " + "; ".join(
            f"{name}, {classes} classes, {training_label(limit)} (seed {','.join(seeds)})"
            for (classes, limit, name), seeds in missing.items()) + "."
    intro, every = table.split("\n\n", 1)  # the command and its protocol, then every score
    table = (f"{intro}\n\n{rotation_digest(summary, args.angles)}\n\n"
             f"Every score at every angle:\n\n{every}")
    print("\n" + table)
    files.write_text(out / "rotation.md", table + "\n")
    plot_rotation(summary, args.angles, out / "rotation.png")
    print(f"wrote {out / 'rotation.md'} and {out / 'rotation.png'}")


def setting_name(limit):
    return "upright" if limit == 0 else f"turned{limit}"


def training_label(limit):
    return "upright" if limit == 0 else f"turned ±{limit}°"


def eval_path(folder, config, angle):
    """Where `main.py --evaluate` puts the run's scores with every digit turned by angle:
    a file named for the data settings that differ from the run's, here the angles."""
    data = "synthetic" if config["source"] == "synthetic" else Path(config["data_dir"]).name
    other = "".join(f"_{key}{angle:g}" for key in ("digit_angle_min", "digit_angle_max")
                    if angle != config[key])
    return folder / (f"eval_{data}_{config['eval_images']}_images_seed{config['test_seed']}"
                     f"{other}.json")


def score_angles(folder, angles):
    """{angle: scores} of a finished run, each scored once by main.py's own evaluation (its
    file is reused); 11 classes add the mean IoU with 6 and 9 merged, from confusion matrices."""
    import main
    config = json.loads((folder / "config.json").read_text())
    scores = {}
    for angle in angles:
        path = eval_path(folder, config, angle)
        if not path.is_file():
            # In this process, not a new one: TensorFlow's start-up would cost more than the
            # scoring. What it prints is dropped: the scores are read back from its file.
            with contextlib.redirect_stdout(io.StringIO()):
                main.run_evaluation(turned_config(folder, angle))
            if not path.is_file():
                sys.exit(f"error: main.py's evaluation wrote its scores elsewhere than {path}; "
                         f"make benchmark.eval_path follow main.py's file names")
        scores[angle] = json.loads(path.read_text())
    if config["num_classes"] == 11:
        for angle, cm in confusions(folder, config, angles).items():
            # The same images and model as main.py's scoring: the same mean IoU, or a bug.
            if not np.isclose(metrics.metrics_from_confusion(cm, 0)["miou"],
                              scores[angle]["miou"], rtol=0, atol=1e-9):
                sys.exit(f"error: the confusion matrix of {folder} at {angle}° disagrees with "
                         f"main.py's score; delete its eval_*_confusion.json files and rerun")
            scores[angle]["miou_69"] = metrics.metrics_from_confusion(merge_six_nine(cm),
                                                                      0)["miou"]
    return scores


def turned_config(folder, angle):
    """main.py's config for `--evaluate --out_dir folder` with every digit turned by angle."""
    import main
    return main.parse_config(["--evaluate", "--out_dir", str(folder),
                              f"--digit_angle_min={angle}", f"--digit_angle_max={angle}"])


def confusions(folder, config, angles):
    """{angle: confusion matrix} of the run on its own test set turned by angle.

    main.py writes scores only, and per-class IoU cannot be merged; so the matrix is
    made here from the data and model main.py's evaluation takes, and kept beside the
    scores (eval_*_confusion.json, which main.py --overwrite deletes with them).
    """
    import main
    trained, found = None, {}
    for angle in angles:
        path = eval_path(folder, config, angle)
        path = path.with_name(path.stem + "_confusion.json")
        if not path.is_file():
            if trained is None:
                trained = model.load_model(folder / "model.keras")
            cfg = turned_config(folder, angle)
            with contextlib.redirect_stdout(io.StringIO()):  # its notes on the turned digits
                configurator.adopt_saved_settings(cfg, config, "evaluate", main.HYPERPARAMETERS)
            images, masks = main.make_datagen(cfg, seed=cfg.test_seed).test_set(cfg.eval_images)
            cm, _ = metrics.confusion_matrix(trained, images, masks, cfg.num_classes,
                                             cfg.batch_size)
            with files.FolderLock(folder):
                runs.write_json({"confusion_matrix": cm.astype(int).tolist()}, path)
        found[angle] = np.array(json.loads(path.read_text())["confusion_matrix"])
    return found


def merge_six_nine(cm):
    """The confusion matrix with the digits 6 and 9 as one class (9's row and column added
    to 6's, then dropped): a 6 turned upside down and called 9 is then no error."""
    merged = np.array(cm, dtype=np.float64)
    merged[SIX, :] += merged[NINE, :]
    merged[:, SIX] += merged[:, NINE]
    keep = [k for k in range(len(merged)) if k != NINE]
    return merged[np.ix_(keep, keep)]


def rotation_summary(results):
    """{(classes, train limit, model, score key): (seeds, {angle: [value per seed]})}."""
    summary = {}
    for (classes, limit, name, seed), by_angle in sorted(results.items(), key=lambda kv: (
            kv[0][0], kv[0][1], list(model.MODELS).index(kv[0][2]), kv[0][3])):
        for key, _ in ROTATION_SCORES[classes]:
            seeds, values = summary.setdefault((classes, limit, name, key), ([], {}))
            seeds.append(seed)
            for angle, scores in by_angle.items():
                values.setdefault(angle, []).append(scores[key])
    return summary


def mean_std(xs):
    """'mean ± std' over seeds; one seed's value alone."""
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def rotation_digest(summary, angles):
    """The README's two tables: for each task and training, every model's score upright and
    at 90°, then at 2 classes its lowest over the angles (each seed's worst, averaged), at
    11 classes its score at 180° with and without 6 and 9 merged."""
    blocks = []
    for classes, key, title in ((2, "fg_iou", "Is it a digit? Foreground IoU, 2 classes"),
                                (11, "miou", "Which digit? Mean IoU, 11 classes")):
        limits = sorted({k[1] for k in summary if k[0] == classes})
        if not limits:
            continue
        picks = [(a, key, f"{a}°") for a in (0, 90) if a in angles]
        if classes == 2:
            picks.append(("lowest", key, "lowest"))
        elif 180 in angles:
            picks += [(180, key, "180°"), (180, "miou_69", "180°, 6=9")]
        lines = [f"*{title}* (seeds: per training, "
                 + " / ".join(training_label(t) for t in limits) + ")", "",
                 "| model | seeds | " + " | ".join(f"{training_label(t)}: {label}"
                                                    for t in limits for _, _, label in picks)
                 + " |", "|---|---|" + "---:|" * (len(limits) * len(picks))]
        for name in model.MODELS:
            found = {t: summary.get((classes, t, name, key)) for t in limits}
            if not any(found.values()):
                continue
            cells = []
            for t in limits:
                for angle, score, _ in picks:
                    _, values = summary.get((classes, t, name, score), (None, None))
                    if values is None:
                        cells.append("-")
                    elif angle == "lowest":
                        cells.append(mean_std([min(v) for v in zip(*(values[a] for a in angles))]))
                    else:
                        cells.append(mean_std(values[angle]))
            counts = " / ".join(str(len(found[t][0])) if found[t] else "0" for t in limits)
            lines.append(f"| {name} | {counts} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def rotation_markdown(summary, angles, command, steps, eval_images):
    labels = {key: label for scores in ROTATION_SCORES.values() for key, label in scores}
    lines = [f"`{command}`: each model trained for {steps} steps at main.py's defaults, on "
             f"upright digits or on digits turned by a uniform random angle in [-T, T]; scored "
             f"on the same {eval_images} test scenes with every digit turned by the column's "
             f"angle, its mask with it. Mean ± std over the seeds listed (one seed: its value). "
             "2 classes: foreground IoU. 11 classes: a turned digit keeps its true label, so a "
             "6 turned by 180° that the model calls 9 counts as an error in \"mean IoU\"; "
             "\"mean IoU, 6=9\" merges 6 and 9 into one class (from the confusion matrix; a "
             "mean over 10 classes), so that confusion is no error there; \"fg IoU\" counts any "
             "digit class as digit.", "",
             "| model | classes | training | score | seeds | "
             + " | ".join(f"{a}°" for a in angles) + " |",
             "|---|---:|---|---|---|" + "---:|" * len(angles)]
    for (classes, limit, name, key), (seeds, values) in summary.items():
        lines.append(f"| {name} | {classes} | {training_label(limit)} | {labels[key]} | "
                     f"{','.join(map(str, seeds))} | "
                     + " | ".join(mean_std(values[a]) for a in angles) + " |")
    return "\n".join(lines)


def plot_rotation(summary, angles, path):
    """IoU against test angle, a line per model, a panel per class count and training;
    one legend for all panels (a model keeps its colour throughout)."""
    from matplotlib.lines import Line2D
    counts = sorted({classes for classes, _, _, _ in summary})
    limits = sorted({limit for _, limit, _, _ in summary})
    fig, axes = plots.subplots(len(counts), len(limits), squeeze=False, layout="constrained",
                               figsize=(5.2 * len(limits), 3.9 * len(counts) + 0.6))
    colours = {name: f"C{i}" for i, name in enumerate(model.MODELS)}
    for (classes, limit), ax in zip([(c, t) for c in counts for t in limits], axes.flat):
        drawn = ("fg_iou",) if classes == 2 else ("miou", "miou_69")
        shown = [(k, v) for k, v in summary.items() if k[:2] == (classes, limit) and k[3] in drawn]
        for (_, _, name, key), (seeds, values) in shown:
            means = [statistics.mean(values[a]) for a in angles]
            spread = [statistics.stdev(values[a]) if len(seeds) > 1 else 0.0 for a in angles]
            merged = key == "miou_69"
            ax.errorbar(angles, means, yerr=spread, fmt="s--" if merged else "o-", capsize=3,
                        color=colours[name], alpha=0.5 if merged else 1.0, markersize=4)
        seed_counts = sorted({len(seeds) for _, (seeds, _) in shown})
        seeds = (f"{seed_counts[0]}" if len(seed_counts) == 1 else
                 f"{seed_counts[0]}-{seed_counts[-1]}") if shown else "no"
        ax.set(title=f"{classes} classes, trained {training_label(limit)} "
                     f"({seeds} seed{'' if seeds == '1' else 's'})",
               xlabel="test digits turned by (degrees)",
               ylabel="foreground IoU" if classes == 2 else "mean IoU")
        ax.set_xticks(angles)
        ax.grid(alpha=0.3)
        if not shown:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    names = [name for name in model.MODELS if any(k[2] == name for k in summary)]
    handles = [Line2D([], [], color=colours[n], marker="o", label=n) for n in names]
    if 11 in counts:
        handles += [Line2D([], [], color="grey", marker="o", label="mean IoU"),
                    Line2D([], [], color="grey", marker="s", linestyle="--", alpha=0.5,
                           label="6 and 9 merged")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4 * len(limits), fontsize=8,
               frameon=False)
    fig.suptitle("Turned test digits: IoU against angle (bars: ± std over seeds)")
    plots.save(fig, path)


def run_plots(args):
    """The teaching pictures: eigenvectors, Chebyshev responses, receptive fields, regions."""
    out = Path(args.out_dir)  # made by the first picture written, so a failure leaves none
    # The regions picture first: the one that reads data, so a wrong --data_dir stops
    # the command before any picture is written.
    for path, draw in ((out / "regions_example.png", lambda: plot_regions(args.data_dir)),
                       (out / "laplacian_eigenvectors.png", plot_eigenvectors),
                       (out / "chebyshev_response.png",
                        lambda: plot_chebyshev(args.checkpoint)),
                       (out / "receptive_field.png", plot_receptive_field)):
        plots.save(draw(), path)
        print(f"wrote {path}")


def plot_regions(data_dir, searched=500, typical=2, worst=2):
    """SLIC regions of test images and their ceiling: each region painted with its pixels'
    majority class, as a perfect region classifier would; the first test images, then the
    worst ceilings among the first `searched`."""
    import main
    from segm import regions
    from skimage.segmentation import mark_boundaries
    cfg = main.parse_config(["--data_dir", data_dir] if data_dir else [])
    images, masks = main.make_datagen(cfg, seed=cfg.test_seed).test_set(searched)
    labels = [regions.superpixels(image) for image in images]
    painted = [regions.paint(lab, regions.majority_labels(lab, mask, 2))
               for lab, mask in zip(labels, masks)]
    iou = np.array([np.sum((p > 0) & (m > 0)) / max(1, np.sum((p > 0) | (m > 0)))
                    for p, m in zip(painted, masks)])
    shown = list(range(typical)) + list(np.argsort(iou, kind="stable")[:worst])

    def big(a):
        return np.repeat(np.repeat(a, 8, axis=0), 8, axis=1)

    fig, axes = plots.subplots(len(shown), 5, figsize=(11, 2.35 * len(shown) + 0.6))
    for row, i in zip(axes, shown):
        picture = readers.denormalize(images[i])
        means = regions.region_means(labels[i], picture.reshape(-1, 3))[labels[i]]
        for ax, (title, drawn) in zip(row, (
                (f"test image {i}", picture),
                (f"{labels[i].max() + 1} SLIC regions",  # drawn 8x larger: thin borders
                 mark_boundaries(big(picture), big(labels[i]), color=(1, 0.85, 0))),
                ("region mean colours", means),
                ("true mask", masks[i] > 0),
                (f"ceiling: majority painted (IoU {iou[i]:.2f})",
                 plots.error_overlay(picture, masks[i], painted[i])))):
            ax.imshow(drawn, cmap="gray" if drawn.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"Region graphs: SLIC n_segments={regions.N_SEGMENTS}, compactness="
                 f"{regions.COMPACTNESS}, min_size_factor={regions.MIN_SIZE_FACTOR}\n"
                 f"rows {typical + 1}-{len(shown)}: the worst ceilings of {searched} test "
                 f"scenes; errors: blue = digit pixel in a background region, red = the "
                 f"reverse", fontsize=9)
    fig.tight_layout()
    return fig


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


# ---- your own pictures: a folder of generator scenes, read as any folder is

SCENE_CLASSES = np.array([0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], np.uint8)  # digits 0-4 -> 1, 5-9 -> 2


def write_scenes(args, folder):
    """args.pairs generator scenes as images/ and masks/ PNGs in folder (3 classes: background,
    digits 0-4, digits 5-9); returns their (images float in [-1, 1], masks) as generated."""
    from PIL import Image
    gen = load_data.Datagen(args.data_dir or None, canvas=args.scene, digit_size=args.digit_size,
                            digits_per_image=args.digits_per_image, num_classes=11, seed=args.seed)
    images, masks = gen.sample(args.pairs)
    masks = SCENE_CLASSES[masks]
    pixels = np.round(readers.denormalize(images) * 255).astype(np.uint8)
    for sub, arrays in (("images", pixels), ("masks", masks)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            with files.atomic_write(folder / sub / f"scene{i:05d}.png") as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
    print(f"wrote {args.pairs} scenes ({args.scene}x{args.scene}, {gen.describe()}) to {folder}")
    return images, masks


def run_folder(args):
    """Train main.py's default model on a folder of scenes; score its held-out split through
    the folder path and through the generator's arrays; time the folder reader."""
    from segm import folders, predict
    out = Path(args.out_dir) / "folder"
    scenes, run = out / "scenes", out / "run"
    shutil.rmtree(scenes, ignore_errors=True)
    images, masks = write_scenes(args, scenes)
    command = [sys.executable, str(HERE / "main.py"), "--data_dir", str(scenes), "--canvas",
               str(args.canvas), "--steps", str(args.steps), "--eval_every",
               str(args.steps // 5), "--batch_size", str(args.batch_size), "--out_dir", str(run),
               "--overwrite", *([] if args.augment else ["--no-augment"])]
    print("$ " + " ".join(command[1:]))
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"error: the run failed:\n{done.stdout[-2000:]}")
    scores = json.loads((run / "metrics.json").read_text())
    saved_split = json.loads((run / "config.json").read_text())["split"]
    test = [int(name.removeprefix("scene")) for name in saved_split["test"]]
    trained = model.load_model(run / "model.keras")
    # The same model and scenes twice: PNG files read and tiled, and the generator's arrays.
    data = folders.FolderData(scenes, args.canvas, 3, test_seed=2024, augment=False,
                              saved_split=saved_split)
    by_folder = predict.score_pictures(trained, data.pictures("test"), 3, 64)
    if args.scene == args.canvas:  # the model's own input size: straight through it
        by_arrays = metrics.score(trained, images[test], masks[test], 3, 64)
    else:  # tiles of the arrays, as --predict would cut them
        pixels = np.round(readers.denormalize(images[test]) * 255).astype(np.uint8)
        by_arrays = predict.score_pictures(trained, zip(pixels, masks[test]), 3, 64)
    # The reader on one thread, against the model's training step.
    reader = folders.FolderData(scenes, args.canvas, 3, seed=1, augment=args.augment)
    batch_ms = statistics.median(
        min_time(lambda k=k: reader.sample(args.batch_size, step=k), 1)
        for k in range(args.repeats)) * 1000
    step_ms = args.batch_size / scores["train_images_per_second"] * 1000
    lines = [f"`python benchmark.py {' '.join(args.argv)}`", "",
             "| figure | value |", "|---|---:|",
             f"| scenes in the folder | {args.pairs} ({len(test)} held out for testing) |",
             f"| whole run, wall clock (`main.py`, start to finish) | {wall:.0f} s |",
             f"| training alone | {scores['train_seconds']:.0f} s |",
             f"| mean IoU, folder path (PNG files, tiled) | {by_folder['miou']:.4f} |",
             f"| mean IoU, generator path (its arrays) | {by_arrays['miou']:.4f} |",
             f"| difference | {abs(by_folder['miou'] - by_arrays['miou']):.4f} |",
             f"| per-class IoU, folder path | "
             f"{', '.join(f'{iou:.3f}' for iou in by_folder['per_class_iou'])} |",
             f"| reading a batch of {args.batch_size} (one thread, median of {args.repeats}) | "
             f"{batch_ms:.1f} ms |",
             f"| training step of {args.batch_size} | {step_ms:.0f} ms |",
             f"| reading / step | {batch_ms / step_ms:.1%} |"]
    table = "\n".join(lines)
    print(table)
    files.write_text(Path(args.out_dir) / "folder_benchmark.md", table + "\n")
    print(f"wrote {Path(args.out_dir) / 'folder_benchmark.md'}; the run is in {run}")


def min_time(work, repeats):
    """The fastest of repeats timed calls of work, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best


# ---- training steps side by side

def run_steps(args):
    """Time a training step of each model, interleaved on the same real batches in one
    process (load from other jobs hits them all alike); for regions, its numpy graph
    building and SLIC alone too. Prints medians."""
    from segm import regions
    gen = load_data.Datagen(args.data_dir or None, seed=0)
    batches = [gen.sample(64, step=k) for k in range(4)]
    nets = {}
    for name in args.models:
        keras.utils.set_random_seed(0)
        nets[name] = model.build_model(name, 2, 32, 32)
        nets[name].compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), model.SegmentationLoss(2))
        for x, y in batches[:2]:  # warm-up: tracing and the first steps
            nets[name].train_on_batch(x, y)
    times = {name: [] for name in args.models}
    graph = next((layer for net in nets.values() for layer in net.layers
                  if isinstance(layer, region_layers.RegionGraph)), None)
    if graph:
        times.update({"regions: graphs built in numpy": [], "regions: SLIC alone": []})
    for _ in range(args.rounds):
        for name, net in nets.items():
            for x, y in batches:
                times[name].append(min_time(lambda: net.train_on_batch(x, y), 1))
        for x, _ in batches if graph else []:
            times["regions: graphs built in numpy"].append(min_time(lambda: graph.graphs(x), 1))
            times["regions: SLIC alone"].append(
                min_time(lambda: [regions.superpixels(image) for image in x], 1))
    print_medians(args, times, "steps")


def run_forward(args):
    """Time a forward pass of each model, interleaved on the same real batches in one
    process: eager, as metrics.score calls the model, and compiled with tf.function.
    Prints medians."""
    gen = load_data.Datagen(args.data_dir or None, seed=0)
    batches = [gen.sample(64, step=k)[0] for k in range(4)]
    calls = {}
    for name in args.models:
        keras.utils.set_random_seed(0)
        net = model.build_model(name, 2, 32, 32)
        calls[f"{name}, eager"] = lambda x, net=net: net(x, training=False)
        calls[f"{name}, tf.function"] = tf.function(lambda x, net=net: net(x, training=False))
    for call in calls.values():  # warm-up: tracing and the first calls
        for x in batches[:2]:
            call(x)
    times = {label: [] for label in calls}
    for _ in range(args.rounds):
        for label, call in calls.items():
            for x in batches:
                times[label].append(min_time(lambda: call(x), 1))
    print_medians(args, times, "forward passes")


def print_medians(args, times, what):
    """A markdown table of median seconds per batch of 64, with the command that made it."""
    print(f"`python benchmark.py {' '.join(args.argv)}` (batches of 64, medians of "
          f"{4 * args.rounds} {what} each)\n")
    print("| what | ms per batch | ms per image | images/s |\n|---|---:|---:|---:|")
    for name, taken in times.items():
        median = statistics.median(taken)
        print(f"| {name} | {1000 * median:.0f} | {1000 * median / 64:.2f} | {64 / median:.0f} |")


def positive_int(text):
    value = int(text)  # argparse words a ValueError itself
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def int_list(text):
    return [int(v) for v in text.split(",")]


def class_list(text):
    counts = int_list(text)
    if any(c not in load_data.CLASS_COUNTS for c in counts):
        raise argparse.ArgumentTypeError(f"class counts must be among "
                                         f"{', '.join(map(str, load_data.CLASS_COUNTS))}")
    return counts


def limit_list(text):
    limits = int_list(text)
    if any(not 0 <= t <= 180 for t in limits):
        raise argparse.ArgumentTypeError("training angles T must lie in [0, 180]")
    return limits


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
    layers.add_argument("--repeats", type=positive_int, default=10,
                        help="timed runs at (64, 32, 32)")
    layers.add_argument("--sizes", type=int_list, default=[32, 64, 128, 256])
    layers.add_argument("--batches", type=int_list, default=[1, 64])
    layers.add_argument("--out_dir", type=Path, default=FIGURES)
    layers.set_defaults(run=run_layers)
    params = commands.add_parser("params", help="parameter count of every model")
    params.set_defaults(run=run_params)
    data = commands.add_parser("data", help="the image/mask generator's speed")
    data.add_argument("--data_dir", default="", help="as main.py's --data_dir")
    data.add_argument("--batches", type=positive_int, default=500)
    data.add_argument("--repeats", type=positive_int, default=7)
    data.set_defaults(run=run_data)
    compare = commands.add_parser("compare", help="train every model on the same budget, seeds")
    compare.add_argument("--models", type=model_list, default=list(model.MODELS))
    compare.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    compare.add_argument("--steps", type=positive_int, default=500)
    compare.add_argument("--eval_every", type=positive_int, default=50,
                         help="curve points, for time "
                         f"to foreground IoU {TARGET_IOU}")
    compare.add_argument("--data_dir", default="",
                         help="MNIST/CIFAR-10 folder (default: main.py's own default)")
    compare.add_argument("--out_dir", type=Path, default=FIGURES)
    compare.set_defaults(run=run_compare)
    rotation = commands.add_parser("rotation", help="models trained upright or turned, scored "
                                   "on turned digits")
    rotation.add_argument("--models", type=model_list, default=list(model.MODELS))
    rotation.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    rotation.add_argument("--classes", type=class_list, default=list(load_data.CLASS_COUNTS))
    rotation.add_argument("--train_angles", type=limit_list, default=[0, 180],
                          help="T per training setting: digits turned in [-T, T]; 0 is upright")
    rotation.add_argument("--angles", type=int_list, default=[0, 30, 60, 90, 135, 180],
                          help="test angles in degrees")
    rotation.add_argument("--steps", type=positive_int, default=500)
    rotation.add_argument("--eval_every", type=positive_int, default=50)
    rotation.add_argument("--eval_images", type=positive_int, default=2000,
                          help="test scenes per angle")
    rotation.add_argument("--only_finished", action="store_true",
                          help="train nothing: tabulate the runs already finished")
    rotation.add_argument("--data_dir", default="",
                          help="MNIST/CIFAR-10 folder (default: main.py's own default)")
    rotation.add_argument("--out_dir", type=Path, default=FIGURES)
    rotation.set_defaults(run=run_rotation)
    teaching = commands.add_parser("plots", help="the teaching pictures")
    teaching.add_argument("--checkpoint", default="im/compare/cheb_seed0/model.keras",
                          help="a trained cheb model whose filters to draw (examples if absent)")
    teaching.add_argument("--data_dir", default="",
                          help="MNIST/CIFAR-10 folder for the regions picture (default: main.py's)")
    teaching.add_argument("--out_dir", type=Path, default=FIGURES)
    teaching.set_defaults(run=run_plots)
    own = commands.add_parser("folder", help="a folder of scenes: time to train, both paths' "
                              "scores, the reader's speed")
    own.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder the scenes come from")
    own.add_argument("--pairs", type=positive_int, default=3000)
    own.add_argument("--scene", type=positive_int, default=48, help="side of the pictures written")
    own.add_argument("--canvas", type=positive_int, default=32, help="main.py's training crops")
    own.add_argument("--digit_size", type=positive_int, default=20)
    own.add_argument("--digits_per_image", type=positive_int, default=2)
    own.add_argument("--steps", type=positive_int, default=500)
    own.add_argument("--batch_size", type=positive_int, default=64)
    own.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                     help="main.py's augmentation of folders (off: a mirrored 2 reads as a 5)")
    own.add_argument("--seed", type=int, default=0, help="draws the scenes")
    own.add_argument("--repeats", type=positive_int, default=20)
    own.add_argument("--out_dir", type=Path, default=FIGURES)
    own.set_defaults(run=run_folder)
    steps = commands.add_parser("steps", help="training steps of models, interleaved")
    steps.add_argument("--models", type=model_list, default=["gcn", "regions"])
    steps.add_argument("--rounds", type=positive_int, default=8,
                       help="each times 4 batches per model")
    steps.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
    steps.set_defaults(run=run_steps)
    forward = commands.add_parser("forward", help="forward passes of models, eager and "
                                  "compiled, interleaved")
    forward.add_argument("--models", type=model_list, default=["unet", "gunet"])
    forward.add_argument("--rounds", type=positive_int, default=8,
                         help="each times 4 batches per model")
    forward.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
    forward.set_defaults(run=run_forward)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        args.run(args)
    except (UsageError, DataError, FileError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, UsageError) else 1)  # as main.py does


if __name__ == "__main__":
    main()
