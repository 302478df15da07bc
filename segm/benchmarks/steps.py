"""`benchmark.py steps`: a training step of each model, interleaved on the same batches."""
from segm import region_layers
from segm.benchmarks.common import min_time, print_medians
from segm.tf_quiet import keras


def run(args, trio):
    """Time a training step of each model, interleaved on the same real batches in one
    process (load from other jobs hits them all alike); for regions, its numpy graph
    building and SLIC alone too. Prints medians."""
    from segm import regions
    model = trio.model
    gen = trio.load_data.Datagen(args.data_dir or None, seed=0)
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
