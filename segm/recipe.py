"""The training recipe: precision, optimizer, learning-rate schedule and weight averaging.

main.py keeps the constants (PRECISION, LEARNING_RATE, LR_FLOOR, EMA, ...) and calls
build() and compile_model(); `benchmark.py compare` pins each of them with flags, so its
protocol (500 steps of 64, Adam at 3e-3, warm-up, cosine decay to 1% of the peak,
float32, no averaging) stays the same whatever the default recipe becomes.
"""
from pathlib import Path

from segm import losses, readers
from segm.errors import UsageError
from segm.tf_quiet import keras, tf

PRECISIONS = ("float32", "bfloat16", "auto")
# auto: bfloat16 only where it was measured faster than float32: the models whose batch
# norm is fused (a step 1.45x faster for unet_fused, 1.34x for unet_fast, on this
# project's avx512_bf16 CPU), on a CPU that multiplies it natively (avx512_bf16, AMX) or
# a GPU of compute capability 8 or more. Never float16 on a CPU.
BFLOAT16_GPU_CAPABILITY = (8, 0)
AUTO_BFLOAT16_MODELS = ("unet_fused", "unet_fast")
# The convolutional models can be asked for bfloat16; the graph models' sparse products
# take float32 only.
BFLOAT16_MODELS = ("fcn", "unet", *AUTO_BFLOAT16_MODELS)


def resolve_precision(asked, model_name):
    """(float32 or bfloat16, why): `auto` resolved for this machine and model."""
    if asked == "bfloat16" and model_name not in BFLOAT16_MODELS:
        raise UsageError(f"--precision bfloat16 is for {', '.join(BFLOAT16_MODELS)}; "
                         f"{model_name}'s sparse graph products take float32 only")
    if asked != "auto":
        return asked, "as asked"
    if model_name not in AUTO_BFLOAT16_MODELS:
        return "float32", f"auto: {model_name} was not measured faster in bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # Keras trains on the GPU: its arithmetic decides
        capability = tf.config.experimental.get_device_details(gpus[0]).get(
            "compute_capability") or (0, 0)
        if tuple(capability) >= BFLOAT16_GPU_CAPABILITY:
            return "bfloat16", f"auto: a GPU of compute capability {capability[0]}.{capability[1]}"
        return "float32", "auto: this GPU has no fast bfloat16"
    if cpu_has_bfloat16():
        return "bfloat16", "auto: this CPU has avx512_bf16 or AMX"
    return "float32", "auto: no bfloat16 arithmetic on this CPU"


def cpu_has_bfloat16():
    """True if this CPU multiplies bfloat16 natively (avx512_bf16 or AMX), as Linux reports."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build(build_model, cfg):
    """build_model(cfg.model, ...) in cfg.precision, with its logits in float32.

    bfloat16 is Keras's mixed_bfloat16 policy: weights stay float32, layers compute in
    bfloat16; a last float32 identity layer hands the loss and metrics float32 logits.
    """
    precision, why = resolve_precision(cfg.precision, cfg.model)
    print(f"precision: {precision} ({why})")
    if precision == "float32":
        return build_model(cfg.model, cfg.num_classes, cfg.canvas, cfg.canvas)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:  # only this model's layers take the policy: later models are float32 again
        net = build_model(cfg.model, cfg.num_classes, cfg.canvas, cfg.canvas)
    finally:
        keras.config.set_dtype_policy(previous)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(net.output)
    return keras.Model(net.input, logits, name=net.name)


def schedule(cfg):
    """A short linear warm-up from a tenth of the peak, then cosine decay to LR_FLOOR x peak."""
    warmup = max(1, cfg.steps // 20)
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 10, decay_steps=max(1, cfg.steps - warmup), alpha=cfg.lr_floor,
        warmup_target=cfg.learning_rate, warmup_steps=warmup)


def compile_model(model, cfg):
    """Adam (AdamW with a decay) on the schedule, clipping, weight averaging; loss, metrics.

    EMA > 0 keeps an exponential moving average of the weights and copies it into the
    model every EMA_EVERY steps and at the end of training, so the average is what is
    validated, saved and scored.
    """
    tracked = [keras.metrics.MeanIoU(cfg.num_classes, sparse_y_pred=False, name="miou",
                                     ignore_class=readers.IGNORE)]
    if cfg.num_classes == 2:
        tracked.insert(0, keras.metrics.IoU(2, [1], sparse_y_pred=False, name="fg_iou",
                                            ignore_class=readers.IGNORE))
    averaging = dict(use_ema=True, ema_momentum=cfg.ema,
                     ema_overwrite_frequency=cfg.ema_every) if cfg.ema else {}
    optimizer = keras.optimizers.Adam(schedule(cfg), clipnorm=cfg.clip_norm or None,
                                      weight_decay=cfg.weight_decay or None, **averaging)
    # cfg.weights: the classes' weights run_training drew from the data (None: all alike).
    loss = losses.SegmentationLoss(cfg.num_classes, cfg.dice_weight,
                                   getattr(cfg, "weights", None))
    model.compile(optimizer, loss, metrics=tracked)
    # Built now, its variables exist before the training step is traced; built inside
    # the first step instead, TensorFlow traces the step twice (about 2 s here).
    optimizer.build(model.trainable_variables)
