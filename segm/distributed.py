"""Training on several devices or machines with tf.distribute: strategies and the cluster loop.

    python main.py --strategy mirrored                   every visible GPU of this machine
    python main.py --strategy mirrored --cpu_devices 2   no GPU: split the CPU into 2 devices

BATCH_SIZE is the global batch: each of the N replicas gets 1/N of it, and batch
normalisation takes its statistics over the whole global batch, so the same flags
give the same training whatever N is, with one exception: Keras 3 clips each
replica's share of a gradient before the shares are summed, so while clipping acts,
N replicas clip at up to N times CLIP_NORM.

For several machines, start the same command on each, with a TF_CONFIG that lists
the whole cluster and says which member it is; here worker 0 of two, and the same
with "index": 1 on host2:

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \
    python main.py --strategy multiworker --data_dir data --out_dir /shared/run

The cluster trains on exactly the batches one device would. The chief (worker 0,
or a task of type chief) writes the checkpoint, log, metrics and pictures; the
others write nothing. A task whose peers have not started says which one it waits
for and gives up after --worker_timeout seconds; Ctrl-C ends the wait at once. Name
an --out_dir on a disk every worker can read, for --resume. Under this strategy
main.py uses the loop below, because Keras 3's fit fails inside
MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""
import json
import os
import socket
import sys
import time

import numpy as np

from segm import metrics
from segm.readers import IGNORE
from segm.tf_quiet import keras, tf


STRATEGIES = ("default", "mirrored", "multiworker")


class ClusterError(Exception):
    """A strategy or cluster that cannot be set up; one sentence, exit status 2."""


def make_strategy(name, cpu_devices=0, worker_timeout=300):
    """(strategy, is_chief) for default | mirrored | multiworker; prints the replica count."""
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    chief = True
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multiworker":
        workers, task = read_tf_config()
        wait_for_peers(workers, task, worker_timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        # The chief (or worker 0 if the cluster names no chief) writes every file.
        chief = strategy.extended.should_checkpoint
        print(f"worker: {task[0]} {task[1]} of {len(workers)}{' (chief)' if chief else ''}")
    else:
        strategy = tf.distribute.get_strategy()
    n = strategy.num_replicas_in_sync
    print(f"strategy: {name}, {n} replica{'s' if n > 1 else ''} in sync")
    return strategy, chief


def read_tf_config():
    """([(type, index, "host:port")] for every task in TF_CONFIG, this task's (type, index))."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", ""))
        cluster, task = config["cluster"], config["task"]
        workers = [(kind, i, address) for kind in ("chief", "worker")
                   for i, address in enumerate(cluster.get(kind, []))]
        me = (task["type"], int(task["index"]))
        if not cluster.get("worker") or me not in [(k, i) for k, i, _ in workers]:
            raise KeyError(me)
        for _, _, address in workers:
            host, port = address.rsplit(":", 1)
            int(port)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ClusterError("--strategy multiworker needs TF_CONFIG, the JSON that names every "
                           "worker as host:port and this one's task (see the README's "
                           "example)") from None
    return workers, me


def wait_for_peers(workers, me, timeout, every=3.0):
    """Return once every other task's address answers; say whom we wait for, give up after timeout.

    Until TensorFlow starts its own server here, a plain socket listens on this task's
    port, so that peers waiting the same way see this one as present.
    """
    address = next(a for k, i, a in workers if (k, i) == me)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(address.rsplit(":", 1)[1])))
        listener.listen()
    except OSError as error:
        raise ClusterError(f"this task's address {address} cannot be listened on "
                           f"({error.strerror}); fix TF_CONFIG or free the port") from None
    began, told = time.monotonic(), 0.0
    waiting = [(k, i, a) for k, i, a in workers if (k, i) != me]
    try:
        while waiting:
            waiting = [peer for peer in waiting if not _answers(peer[2])]
            elapsed = time.monotonic() - began
            if waiting and elapsed > timeout:
                kind, i, where = waiting[0]
                raise ClusterError(f"{kind} {i} at {where} did not answer within {timeout:g} s; "
                                   f"start it, or raise --worker_timeout")
            if waiting and elapsed - told >= every:
                told = elapsed
                names = ", ".join(f"{k} {i} at {a}" for k, i, a in waiting)
                print(f"waiting for {names} ({elapsed:.0f} of {timeout:g} s)", flush=True)
            time.sleep(0.2 if waiting else 0)
    finally:
        listener.close()


def _answers(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


def fit_multiworker(model, strategy, make_stream, valid, callbacks, steps, eval_every, start,
                    batch_size):
    """model.fit's work under MultiWorkerMirroredStrategy, where Keras 3's fit fails
    (keras-team/keras#20585): a strategy.run step, the same callbacks and log.

    make_stream(first, local, total) gives one worker's batches; valid is the
    (images, masks) pair the interval's held-out loss and IoU are measured on.
    """
    replicas = strategy.num_replicas_in_sync

    def per_worker(context):
        local = replicas // context.num_input_pipelines
        return make_stream(context.input_pipeline_id * local, local, replicas)

    batches = iter(strategy.distribute_datasets_from_function(per_worker))
    loss_fn, num_classes = model.loss, model.output_shape[-1]

    def replica_step(images, masks):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.nn.compute_average_loss(loss_fn.call(masks, logits),
                                              global_batch_size=batch_size)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        labels, predicted = tf.reshape(masks, [-1]), tf.reshape(tf.argmax(logits, -1), [-1])
        known = labels != IGNORE  # unlabelled pixels count in no class, as in metrics.py
        confusion = tf.math.confusion_matrix(tf.boolean_mask(labels, known),
                                             tf.boolean_mask(predicted, known),
                                             num_classes, dtype=tf.float32)
        return loss, confusion

    @tf.function
    def train_step():
        loss, confusion = strategy.run(replica_step, args=next(batches))
        return (strategy.reduce("SUM", loss, axis=None),
                strategy.reduce("SUM", confusion, axis=None))

    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    for epoch in range(start // eval_every, steps // eval_every):
        hooks.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(eval_every, verbose=1 if sys.stdout.isatty() else 2,
                                  stateful_metrics=["loss"])
        losses, confusion = [], 0
        for batch in range(eval_every):
            loss, step_confusion = train_step()
            losses.append(float(loss))
            confusion = confusion + step_confusion.numpy()
            hooks.on_train_batch_end(batch, {"loss": losses[-1]})
            if model.stop_training:  # as in fit: the interval still ends and is logged
                break
            bar.update(batch + 1, [("loss", np.mean(losses))])
        val_confusion, val_loss = metrics.confusion_matrix(model, *valid, num_classes,
                                                           batch_size, loss_fn)
        logs = {**metrics.interval_logs(float(np.mean(losses)), confusion, num_classes),
                **metrics.interval_logs(val_loss, val_confusion, num_classes, "val_")}
        print(" - ".join(f"{key}: {value:.4f}" for key, value in logs.items()))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()
