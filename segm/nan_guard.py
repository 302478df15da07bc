"""A training callback that keeps a run alive when its loss or weights turn NaN."""
import numpy as np

from segm.tf_quiet import keras


class NanGuard(keras.callbacks.Callback):
    """At a non-finite loss or weight, put back the interval's first weights and stop."""

    def on_epoch_begin(self, epoch, logs=None):
        self.good_step = int(self.model.optimizer.iterations.numpy())
        self.good = [v.numpy() for v in self._variables()]

    def on_train_batch_end(self, batch, logs=None):
        # The weights are checked too: oneDNN's ReLU maps NaN to 0, so a NaN
        # batch can poison the weights while the reported loss stays finite.
        if np.isfinite(logs["loss"]) and all(np.isfinite(w).all()
                                             for w in self.model.get_weights()):
            return
        step = int(self.model.optimizer.iterations.numpy())
        for variable, value in zip(self._variables(), self.good):
            variable.assign(value)
        self.model.stop_training = True
        print(f"\nwarning: the loss or weights became NaN at step {step}; training stopped "
              f"and the weights of step {self.good_step} were restored")

    def _variables(self):
        return self.model.weights + self.model.optimizer.variables
