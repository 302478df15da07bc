"""The training input pipeline: batches of a data generator as a tf.data stream, in step order."""
import contextlib

from segm.errors import DataError, FileError
from segm.tf_quiet import tf


def make_dataset(datagen, batch_size, start_step=0, replicas=(0, 1, 1), failures=None,
                 prepare=None):
    """Training batches as a prefetched tf.data stream; batch k depends only on (SEED, k).

    replicas = (first, local, total) makes the stream of one worker of several:
    for each step, the slices of global batch k that its replicas first .. first +
    local - 1 of total train on, one after another. An error of ours met while making a
    batch is appended to `failures`, for raised_as_themselves to raise. prepare(images),
    when given, runs on each batch here, ahead of its step and in parallel with training:
    a region model's graphs are built there (model.graph_builder).
    """
    first, local, total = replicas
    share, c = batch_size // total, datagen.canvas

    def piece(index):
        step, replica = divmod(int(index), local)
        rows = slice((first + replica) * share, (first + replica + 1) * share)
        try:
            images, masks = datagen.sample(batch_size, split="train", step=step, rows=rows)
        except (DataError, FileError) as error:  # TensorFlow would bury its sentence
            if failures is not None:
                failures.append(error)
            raise
        if prepare is not None:
            prepare(images)
        return images, masks

    # Indexing batches by step keeps the stream identical however often it is
    # restarted: on --resume, and when tf.distribute re-creates the iterator.
    # Batches are made several at a time (a folder's pictures decode in parallel), and
    # still arrive in step order.
    dataset = tf.data.Dataset.range(start_step * local, 2**62).map(
        lambda index: tf.numpy_function(piece, [index], (tf.float32, tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda x, y: (tf.ensure_shape(x, (share, c, c, 3)),
                                        tf.ensure_shape(y, (share, c, c))))
    return dataset.prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def raised_as_themselves(failures):
    """Inside the block, a pipeline failure recorded in `failures` leaves as our own error
    (one sentence for the user), not as the TensorFlow traceback that carried it out."""
    try:
        yield
    except tf.errors.OpError:
        if failures:
            raise failures[0] from None
        raise
