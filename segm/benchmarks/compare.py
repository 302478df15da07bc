"""`benchmark.py compare`: every model trained with the same data, budget and seeds, side by side.

Each run is main.py in its own process (common.train_once), in --out_dir/compare/; a
finished run with the same settings is reused, so a comparison cut short goes on where
it stopped. It writes the record compare_MODELS (records/compare_MODELS.json), its picture
compare_MODELS.png and each model's samples_NAME.png.
"""
import json
import shutil
import statistics
from pathlib import Path

from segm import files, plots
from segm.benchmarks.common import TARGET_IOU, record, train_once


def run(args, trio):
    """Train every model with the same data, budget and seeds; table and picture."""
    out = Path(args.out_dir)
    # Seed-major order: a comparison cut short still has every model at the first seeds.
    runs = [(name, seed) for seed in args.seeds for name in args.models]
    results = {}
    for i, (name, seed) in enumerate(runs, 1):
        folder = out / "compare" / f"{name}_seed{seed}"
        print(f"[{i}/{len(runs)}] {name} seed {seed} ... ", end="", flush=True)
        results[name, seed] = train_once(name, seed, folder, args, trio.main_py)
        r = results[name, seed]
        print(f"foreground IoU {r['fg_iou']:.4f}, {r['train_seconds']:.0f} s")
    summary = summarise(results, args, trio.model.build_model)
    name = "compare_" + "-".join(args.models)  # one figure per set of models
    plot_comparison(summary, out / f"{name}.png")
    for model in args.models:  # the first seed's pictures stand for the model
        with files.atomic_write(out / f"samples_{model}.png") as tmp:
            shutil.copyfile(out / "compare" / f"{model}_seed{args.seeds[0]}" /
                            f"samples_{model}.png", tmp)
    columns, rows, caption = compare_table(summary, args)
    best = max(summary, key=lambda m: statistics.mean(summary[m]["fg_iou"]))
    record(args, name, columns, rows, caption,
           headline=(f"foreground IoU, {', '.join(args.models)}",
                     f"{best}: {mean_spread(summary[best]['fg_iou'])}"),
           section="CNNs against graph convolutions", pictures=[out / f"{name}.png"],
           seconds=sum(r["command_seconds"] or r["train_seconds"] for r in results.values()))


def summarise(results, args, build_model):
    """Per model: mean and spread over seeds of the scores, medians of the costs.

    build_model: model.build_model, handed down by benchmark.py, for the parameter counts.
    """
    summary = {}
    for name in args.models:
        runs = [results[name, seed] for seed in args.seeds]

        def values(key):
            return [r[key] for r in runs if r[key] is not None]

        reached = values("seconds_to_target")
        summary[name] = {
            "parameters": build_model(name).count_params(),
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


def compare_table(summary, args):
    """The comparison's columns, rows and caption."""
    batch = json.loads((Path(args.out_dir) / "compare" / f"{args.models[0]}_seed{args.seeds[0]}"
                        / "config.json").read_text())["batch_size"]
    columns = ["model", "parameters", "train images/s", "inference ms/image", "foreground IoU",
               "mean IoU", "peak memory MB", f"time to IoU {TARGET_IOU}"]
    rows = [[name, s["parameters"], f"{s['images_per_second']:.0f}", f"{s['inference_ms']:.2f}",
             mean_spread(s["fg_iou"]), mean_spread(s["miou"]), f"{s['peak_memory_mb']:.0f}",
             s["to_target"]] for name, s in summary.items()]
    caption = (f"{args.steps} steps x {batch} images, seeds {','.join(map(str, args.seeds))}; "
               "IoU: mean ± std (min-max) over seeds; costs: medians over seeds, the runs made "
               "one after another.")
    return columns, rows, caption


def label_points(ax, points):
    """Name each (x, y, name) point above and right of it; a point near one named so (within
    a sixth of the x range and a twentieth of the y range) is named below it, so no two
    names overlap."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width, height = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 1
    above = []
    for x, y, name in sorted(points):
        near = any(abs(x - u) < width / 6 and abs(y - v) < height / 20 for u, v in above)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, -14 if near else 4))
        if not near:
            above.append((x, y))


def plot_comparison(summary, path):
    """Foreground IoU against parameters and against training time, seeds as error bars."""
    fig, axes = plots.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key in zip(axes, ("parameters", "train_seconds")):
        points = []
        for name, s in summary.items():
            mean = statistics.mean(s["fg_iou"])
            err = [[mean - min(s["fg_iou"])], [max(s["fg_iou"]) - mean]]
            ax.errorbar(s[key], mean, yerr=err, fmt="o", capsize=4, label=name)
            points.append((s[key], mean, name))
        label_points(ax, points)
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
