"""`benchmark.py rotation`: models trained upright or turned, scored on turned test digits.

It trains each model on upright digits (and, for each T > 0 in --train_angles, on
digits turned uniformly in [-T, T] degrees), scores every run on its test set with
every digit turned by each of --angles, and writes rotation.md and rotation.png in
--out_dir. Runs and scores are reused, so a study cut short goes on where it stopped;
--only_finished tabulates what is there.
"""
import contextlib
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from segm import configurator, files, metrics, plots, runs
from segm.benchmarks.common import command_line, same_run, train_once
from segm.errors import DataError, FileError, UsageError

SIX, NINE = 7, 10              # 11-class labels of the digits 6 and 9 (class = digit + 1)
# What the rotation table reports, per class count: (key, label).
ROTATION_SCORES = {2: [("fg_iou", "fg IoU")],
                   11: [("miou", "mean IoU"), ("miou_69", "mean IoU, 6=9"), ("fg_iou", "fg IoU")]}


def run(args, trio):
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
            train_once(name, seed, folder, args, trio.main_py, settings)
            results[classes, limit, name, seed] = score_angles(folder, args.angles, trio)
        except (UsageError, DataError, FileError) as error:
            sys.exit(f"\nerror: {error}")
        key, shown = ROTATION_SCORES[classes][0]
        print(f"{shown}: " + ", ".join(f"{a}° {s[key]:.3f}" for a, s in
                                       results[classes, limit, name, seed].items()))
    if not results:
        sys.exit("error: no finished run to tabulate; run without --only_finished to train them")
    summary = rotation_summary(results, trio.model.MODELS)
    command = command_line(args)
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
    table = (f"{intro}\n\n{rotation_digest(summary, args.angles, trio.model.MODELS)}\n\n"
             f"Every score at every angle:\n\n{every}")
    print("\n" + table)
    files.write_text(out / "rotation.md", table + "\n")
    plot_rotation(summary, args.angles, out / "rotation.png", trio.model.MODELS)
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


def score_angles(folder, angles, trio):
    """{angle: scores} of a finished run, each scored once by main.py's own evaluation (its
    file is reused); 11 classes add the mean IoU with 6 and 9 merged, from confusion matrices."""
    config = json.loads((folder / "config.json").read_text())
    scores = {}
    for angle in angles:
        path = eval_path(folder, config, angle)
        if not path.is_file():
            # In this process, not a new one: TensorFlow's start-up would cost more than the
            # scoring. What it prints is dropped: the scores are read back from its file.
            with contextlib.redirect_stdout(io.StringIO()):
                trio.main.run_evaluation(turned_config(folder, angle, trio.main))
            if not path.is_file():
                sys.exit(f"error: main.py's evaluation wrote its scores elsewhere than {path}; "
                         "make eval_path in segm/benchmarks/rotation.py follow main.py's names")
        scores[angle] = json.loads(path.read_text())
    if config["num_classes"] == 11:
        for angle, cm in confusions(folder, config, angles, trio).items():
            # The same images and model as main.py's scoring: the same mean IoU, or a bug.
            if not np.isclose(metrics.metrics_from_confusion(cm, 0)["miou"],
                              scores[angle]["miou"], rtol=0, atol=1e-9):
                sys.exit(f"error: the confusion matrix of {folder} at {angle}° disagrees with "
                         f"main.py's score; delete its eval_*_confusion.json files and rerun")
            scores[angle]["miou_69"] = metrics.metrics_from_confusion(merge_six_nine(cm),
                                                                      0)["miou"]
    return scores


def turned_config(folder, angle, main):
    """main.py's config for `--evaluate --out_dir folder` with every digit turned by angle."""
    return main.parse_config(["--evaluate", "--out_dir", str(folder),
                              f"--digit_angle_min={angle}", f"--digit_angle_max={angle}"])


def confusions(folder, config, angles, trio):
    """{angle: confusion matrix} of the run on its own test set turned by angle.

    main.py writes scores only, and per-class IoU cannot be merged; so the matrix is
    made here from the data and model main.py's evaluation takes, and kept beside the
    scores (eval_*_confusion.json, which main.py --overwrite deletes with them).
    """
    main = trio.main
    trained, found = None, {}
    for angle in angles:
        path = eval_path(folder, config, angle)
        path = path.with_name(path.stem + "_confusion.json")
        if not path.is_file():
            if trained is None:
                trained = trio.model.load_model(folder / "model.keras")
            cfg = turned_config(folder, angle, main)
            with contextlib.redirect_stdout(io.StringIO()):  # its notes on the turned digits
                configurator.adopt_saved_settings(cfg, config, "evaluate", main.HYPERPARAMETERS)
            tests = trio.load_data.make_datagen(cfg, seed=cfg.test_seed)
            images, masks = tests.test_set(cfg.eval_images)
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


def rotation_summary(results, models):
    """{(classes, train limit, model, score key): (seeds, {angle: [value per seed]})}, in the
    order of models (model.MODELS)."""
    summary = {}
    for (classes, limit, name, seed), by_angle in sorted(results.items(), key=lambda kv: (
            kv[0][0], kv[0][1], list(models).index(kv[0][2]), kv[0][3])):
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


def rotation_digest(summary, angles, models):
    """The README's two tables: for each task and training, every model's score upright and
    at 90°, then at 2 classes its lowest over the angles (each seed's worst, averaged), at
    11 classes its score at 180° with and without 6 and 9 merged; models in the order of
    models (model.MODELS)."""
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
        for name in models:
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


def plot_rotation(summary, angles, path, models):
    """IoU against test angle, a line per model, a panel per class count and training;
    one legend for all panels (a model keeps its colour, from its place in models)."""
    from matplotlib.lines import Line2D
    counts = sorted({classes for classes, _, _, _ in summary})
    limits = sorted({limit for _, limit, _, _ in summary})
    fig, axes = plots.subplots(len(counts), len(limits), squeeze=False, layout="constrained",
                               figsize=(5.2 * len(limits), 3.9 * len(counts) + 0.6))
    colours = {name: f"C{i}" for i, name in enumerate(models)}
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
    names = [name for name in models if any(k[2] == name for k in summary)]
    handles = [Line2D([], [], color=colours[n], marker="o", label=n) for n in names]
    if 11 in counts:
        handles += [Line2D([], [], color="grey", marker="o", label="mean IoU"),
                    Line2D([], [], color="grey", marker="s", linestyle="--", alpha=0.5,
                           label="6 and 9 merged")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4 * len(limits), fontsize=8,
               frameon=False)
    fig.suptitle("Turned test digits: IoU against angle (bars: ± std over seeds)")
    plots.save(fig, path)
