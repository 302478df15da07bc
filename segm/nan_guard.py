"""A training callback that keeps a run alive when its loss or weights turn NaN."""
import numpy as np

from segm.tf_quiet import keras


class NanGuard(keras.callbacks.Callback):
    """At the end of an interval with a non-finite loss or weight, put back the interval's
    first weights and stop.

    The check runs once per interval (EVAL_EVERY steps), not after every step: a callback
    with a per-step hook makes Keras wait for each step before it starts the next, which
    cost about 8 ms a step here. A NaN interval is thrown away whole either way.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.good_step = int(self.model.optimizer.iterations.numpy())
        self.good = [v.numpy() for v in self._variables()]

    def on_epoch_end(self, epoch, logs=None):
        # The weights are checked too: oneDNN's ReLU maps NaN to 0, so a NaN
        # batch can poison the weights while the reported loss stays finite.
        if np.isfinite((logs or {}).get("loss", 0.0)) and all(
                np.isfinite(w).all() for w in self.model.get_weights()):
            return
        step = int(self.model.optimizer.iterations.numpy())
        for variable, value in zip(self._variables(), self.good):
            variable.assign(value)
        self.model.stop_training = True
        print(f"\nwarning: the loss or weights became NaN by step {step}; training stopped "
              f"and the weights of step {self.good_step} were restored")

    def _variables(self):
        return self.model.weights + self.model.optimizer.variables
