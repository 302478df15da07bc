"""`benchmark.py steps`: a training step of each model, interleaved on the same batches."""
from segm import pipeline, region_layers
from segm.batch_norm import FusedBatchNormalization
from segm.benchmarks.common import min_time, print_medians
from segm.tf_quiet import keras

FIT_STEPS = 24  # steps of each model's timed fit on fresh batches, per round


def with_keras_batch_norm(net):
    """The same network, with Keras's own BatchNormalization wherever it has the fused one."""
    def swap(layer):
        kind = (keras.layers.BatchNormalization if isinstance(layer, FusedBatchNormalization)
                else type(layer))
        return kind.from_config(layer.get_config())
    return keras.models.clone_model(net, clone_function=swap)


def run(args, trio):
    """Time a training step of each model, interleaved on the same real batches in one
    process (load from other jobs hits them all alike). A region model is timed twice:
    building its graphs inside the step, and with them built ahead (what the input
    pipeline hands it); and its numpy graph building and SLIC alone. With keras_batch_norm,
    a model whose batch norm trains on the fused kernel is timed again with Keras's own
    layer in its place. Then every model fits FIT_STEPS fresh batches from the input
    pipeline, where a region model's graphs are built on the pipeline's threads while the
    step before trains. Prints medians."""
    from segm import regions
    model = trio.model
    gen = trio.load_data.Datagen(args.data_dir or None, seed=0)
    batches = [gen.sample(64, step=k) for k in range(4)]
    nets = {}
    for name in args.models:
        keras.utils.set_random_seed(0)
        nets[name] = model.build_model(name, 2, 32, 32)
        if args.keras_batch_norm and any(isinstance(layer, FusedBatchNormalization)
                                         for layer in nets[name].layers):
            nets[f"{name} on Keras's batch norm"] = with_keras_batch_norm(nets[name])
    for net in nets.values():
        net.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), model.SegmentationLoss(2))
        for x, y in batches[:2]:  # warm-up: tracing and the first steps
            net.train_on_batch(x, y)
        net.fit(pipeline.make_dataset(gen, 64, start_step=50), steps_per_epoch=2,
                shuffle=False, verbose=0)  # and fit's own first call
    graphs = {name: layer for name, net in nets.items() for layer in net.layers
              if isinstance(layer, region_layers.RegionGraph)}
    times = {name: [] for name in nets}
    for name in graphs:
        times.update({f"{name}: graphs ready from the input pipeline": [],
                      f"{name}: graphs built in numpy": []})
    if graphs:
        times["SLIC alone"] = []
    times.update({f"{name}: fit on the input pipeline": [] for name in nets})
    cache = region_layers.CACHE.entries
    for round_ in range(args.rounds):
        for name, net in nets.items():
            for x, y in batches:
                times[name].append(min_time(lambda: (cache.clear(), net.train_on_batch(x, y)), 1))
                if name in graphs:
                    graphs[name].warm(x)
                    times[f"{name}: graphs ready from the input pipeline"].append(
                        min_time(lambda: net.train_on_batch(x, y), 1))
                    times[f"{name}: graphs built in numpy"].append(
                        min_time(lambda: (cache.clear(), graphs[name].graphs(x)), 1))
        for x, _ in batches if graphs else []:
            times["SLIC alone"].append(
                min_time(lambda: [regions.superpixels(image) for image in x], 1))
        for name, net in nets.items():
            stream = pipeline.make_dataset(gen, 64, start_step=100 + round_ * FIT_STEPS,
                                           prepare=model.graph_builder(net))
            seconds = min_time(lambda: net.fit(stream, steps_per_epoch=FIT_STEPS, epochs=1,
                                               shuffle=False, verbose=0), 1)
            times[f"{name}: fit on the input pipeline"] += [seconds / FIT_STEPS] * 4
    print_medians(args, times, "steps")
