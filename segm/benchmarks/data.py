"""`benchmark.py data`: the image/mask generator's speed in images/s, at main.py's defaults."""
import time

import numpy as np


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


def run(args, trio):
    """The generator's speed at main.py's defaults, on the data main.py would use."""
    main = trio.main
    gen = trio.load_data.make_datagen(main.parse_config(["--data_dir", args.data_dir] if args.data_dir
                                              else []))
    print(f"data: {gen.describe()}")
    wall, cpu = time_generator(gen, main.BATCH_SIZE, args.batches, args.repeats)
    print(f"sample({main.BATCH_SIZE}): median {np.median(wall):,.0f} images/s over {len(wall)} "
          f"repeats of {args.batches} batches (min {min(wall):,.0f}, max {max(wall):,.0f}); "
          f"{np.median(cpu):,.0f} per CPU-second")
