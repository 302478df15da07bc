"""`benchmark.py layers`: GraphConv's sparse, dense and stencil paths against a depthwise conv.

It times one layer's forward + backward pass (gradients for the input and the weights,
in a tf.function, after a warm-up) for each variant side by side, interleaved, so that
load from anything else on the machine hits all of them alike; it reports the median.
It writes layer_speed.md and layer_speed.png in --out_dir.
"""
import statistics
import time

import numpy as np

from segm import files, graphs, plots
from segm.benchmarks.common import command_line
from segm.tf_quiet import keras, tf

CHANNELS = 32                  # C in and out, as in the (64, 32, 32, 32) target case
DENSE_LIMIT_BYTES = 2 * 2**30  # a dense (H*W)^2 float32 adjacency above this is not tried
REFERENCE = "depthwise+1x1"    # ratios are taken against DepthwiseConv2D(3) + Conv2D(32, 1)


class DenseGraphConv(keras.layers.Layer):
    """Y = Â X W + b as model.GraphConv, with Â stored as a dense (H*W, H*W) matrix: what
    GraphConv's sparse path avoids. Its own layer, not a GraphConv subclass, since nothing
    under segm/ imports model.py."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        _, h, w, c = input_shape
        self.kernel = self.add_weight((c, self.units), "glorot_uniform", name="kernel")
        self.bias = self.add_weight((self.units,), "zeros", name="bias")
        self.dense = tf.constant(graphs.gcn_propagation(h, w).toarray())   # (H*W, H*W)

    def call(self, x):
        _, h, w, _ = x.shape
        xw = tf.reshape(tf.einsum("bhwc,cu->bhwu", x, self.kernel), (-1, h * w, self.units))
        y = tf.einsum("nm,bmu->bnu", self.dense, xw)                   # (B, H*W, units)
        return tf.reshape(y, (-1, h, w, self.units)) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def variants(size, graph_conv):
    """name -> layer, or a string saying why that variant is skipped at this size.

    graph_conv: model.GraphConv, handed down by benchmark.py.
    """
    dense_bytes = (size * size) ** 2 * 4
    return {
        "GraphConv sparse": graph_conv(CHANNELS, stencil=False),
        "GraphConv dense Â": DenseGraphConv(CHANNELS)
        if dense_bytes <= DENSE_LIMIT_BYTES
        else f"skipped: Â would take {dense_bytes / 2**30:.0f} GiB",
        "GraphConv stencil": graph_conv(CHANNELS),
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


def time_config(size, batch, repeats, graph_conv):
    """Median ms of each variant on a (batch, size, size, CHANNELS) input, runs interleaved."""
    x = tf.random.stateless_normal((batch, size, size, CHANNELS), seed=(0, 0))
    steps, results = {}, {}
    for name, layer in variants(size, graph_conv).items():
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


def run(args, trio):
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant and size: retracing is expected
    command = command_line(args)
    rows = {}
    for batch in args.batches:
        for size in args.sizes:
            # repeats scale with 1 / input size: many for the noisy small cases, at least 3
            scale = (64 * 32 * 32) / (batch * size * size)
            repeats = max(3, min(5 * args.repeats, round(args.repeats * scale)))
            rows[size, batch] = time_config(size, batch, repeats, trio.model.GraphConv)
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

