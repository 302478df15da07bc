"""`benchmark.py forward`: forward passes of each model, eager and compiled, interleaved."""
from segm.benchmarks.common import min_time, print_medians
from segm.tf_quiet import keras, tf


def run(args, trio):
    """Time a forward pass of each model, interleaved on the same real batches in one
    process: eager, as metrics.score calls the model, and compiled with tf.function.
    Prints medians."""
    gen = trio.load_data.Datagen(args.data_dir or None, seed=0)
    batches = [gen.sample(64, step=k)[0] for k in range(4)]
    calls = {}
    for name in args.models:
        keras.utils.set_random_seed(0)
        net = trio.model.build_model(name, 2, 32, 32)
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
