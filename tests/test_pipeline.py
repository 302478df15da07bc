"""The input pipeline: our own errors leave it as one sentence, never as TensorFlow's traceback;
data that cannot train is refused before any work."""
import numpy as np
import pytest

from helpers import SHAPES, call_main, one_sentence
from segm import folders, pipeline
from segm.errors import DataError
from segm.tf_quiet import keras
from test_folders import write_folder
from test_load_data import write_cifar, write_mnist


class FailsAtStep:
    """A generator whose training batch `step` cannot be made, as a damaged file would."""
    canvas = 8

    def __init__(self, step):
        self.step = step

    def sample(self, batch_size, split="train", step=None, rows=None):
        if step == self.step:
            raise DataError(f"batch {step} is damaged; restore its files")
        return (np.zeros((batch_size, 8, 8, 3), np.float32),
                np.zeros((batch_size, 8, 8), np.int32))


def test_a_failure_inside_the_pipeline_leaves_fit_as_our_own_error():
    net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 1)])
    net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    failures = []
    with pytest.raises(DataError, match="^batch 3 is damaged; restore its files$"):
        with pipeline.raised_as_themselves(failures):
            net.fit(pipeline.make_dataset(FailsAtStep(3), 4, failures=failures),
                    steps_per_epoch=6, epochs=1, verbose=0)
    assert len(failures) == 1


def test_a_failure_elsewhere_in_tensorflow_is_left_as_it_is():
    with pytest.raises(Exception) as caught:
        with pipeline.raised_as_themselves([]):
            list(pipeline.make_dataset(FailsAtStep(0), 4).take(1))
    assert not isinstance(caught.value, DataError)  # nothing recorded: TensorFlow's own error


def test_a_damaged_training_picture_ends_the_run_in_one_sentence(tmp_path, capsys):
    root = write_folder(tmp_path / "own", n=20, suffix=".jpg")
    train = folders.FolderData(root, canvas=16, seed=0, test_seed=2024).parts["train"]
    # Seed 0's first training picture stays whole, so the run starts; the rest are damaged.
    first = np.random.default_rng([0, folders.ORDER_STREAM, 0]).permutation(len(train))[0]
    for pair in train:
        if pair is not train[first]:  # cut short: the header says 40x56, the pixels are gone
            pair.image.write_bytes(pair.image.read_bytes()[:-400])
    status, out, err = call_main(capsys, "--data_dir", root, "--canvas", "16", "--batch_size", "4",
                               "--steps", "2", "--model", "fcn", "--out_dir", tmp_path / "run")
    sentence = one_sentence(err)
    assert status == 1 and "is not a readable image" in sentence and "images/p0" in sentence
    assert "training fcn" in out, err  # it failed inside the pipeline, not before


def test_a_folder_of_only_the_test_files_is_refused_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    write_mnist(data / "mnist", n=0, t10k=6)
    write_cifar(data / "cifar", n=0, test=4)
    status, out, err = call_main(capsys, *SHAPES, "--data_dir", data, "--out_dir", tmp_path / "r")
    sentence = one_sentence(err)
    assert status == 1 and "holds only the test files" in sentence and str(data) in sentence
    assert "training" not in out and not (tmp_path / "r").exists()
