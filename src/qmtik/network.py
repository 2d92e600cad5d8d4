"""Network: the quantization-aware multilayer perceptron, with a scikit-learn style API.

    net = Network(load_config("digits.toml")).fit(x, y)
    net.predict(x_test); net.score(x_test, y_test); net.save("digits.ckpt.npz")

The constructor only stores the config; what training learns ends in an underscore.
"""

from __future__ import annotations

import functools

import numpy as np

from . import checkpoint as ckpt
from . import head
from .config import Config
from .data import check_class_names
from .errors import DataError, NotFittedError, QuantizationError, TrainingError
from .integer_model import QuantizedModel
from .layers import QuantSpec
from .output_files import check_rewritable
from .passes import integer_layers, predict_scores
from .progress import Reporter
from .quantization import input_range_problem, quantize_inputs
from .training import Split, split_validation, train
from .validate import check_inputs, encode_targets


def float32_checked(method):
    """Run a method that computes with the network with numpy's overflow and invalid operations
    raising, as one TrainingError: a network that training keeps never overflows, but one read
    from a checkpoint may hold weights up to the float32 limit, too large to compute with."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                return method(self, *args, **kwargs)
        except FloatingPointError as exc:
            raise TrainingError(
                f"network: its float32 arithmetic fails on these inputs ({exc}); its weights "
                "are too large to compute with"
            ) from None

    return checked


class Network:
    """A multilayer perceptron trained with int8 fake quantization (see the config for what)."""

    def __init__(self, config: Config | None = None):
        self.config = config if config is not None else Config()

    # --- training ---

    def fit(
        self,
        x,
        y,
        *,
        validation_data=None,
        class_names=None,
        checkpoint=None,
        resume: bool = False,
        verbose: bool = False,
        reporter: Reporter | None = None,
        init=None,
    ) -> "Network":
        """Train on inputs x and labels y (class indices, or regression targets); returns self.

        validation_data=(x, y) replaces the config's validation split. class_names, one per
        class, are what predict returns. checkpoint names a file saved after every epoch;
        resume=True goes on from it. verbose prints a line per epoch. init, layers of the
        same topology (another Network's layers_), is where training starts.
        """
        if checkpoint is not None:
            check_rewritable(checkpoint)
        if reporter is None and verbose:
            reporter = Reporter(task=self.config.task)
        self.class_names_ = check_class_names(class_names, self.config)
        x = check_inputs(x, self.config.network.inputs, "training inputs")
        targets = self._targets(y, len(x), "training labels")
        self.input_range_ = self._input_range(x)
        data = Split(quantize_inputs(x, self.input_range_), targets)
        if validation_data is not None:
            vx = check_inputs(validation_data[0], self.config.network.inputs, "validation inputs")
            val = Split(
                quantize_inputs(vx, self.input_range_), self._targets(validation_data[1], len(vx), "validation labels")
            )
        else:
            data, val = split_validation(data, self.config.training.validation_split, self.config.training.seed)
        self.layers_, self.quantized_, self.history_ = train(
            self.config,
            self.input_range_,
            data,
            val,
            checkpoint=checkpoint,
            resume=resume,
            reporter=reporter,
            class_names=self.class_names_,
            init=init,
        )
        return self

    def _targets(self, y, samples: int, name: str = "labels"):
        return encode_targets(y, self.config.task, self.config.network.outputs, samples, name)

    def _input_range(self, x) -> tuple[float, float]:
        """The configured input range, or the training data's min and max."""
        if self.config.data.input_range != "auto":
            return tuple(self.config.data.input_range)
        low, high = float(x.min()), float(x.max())
        low, high = (low, high) if high > low else (low, low + 1.0)
        problem = input_range_problem(low, high)
        if problem:
            raise DataError(
                f"training inputs: their range [{low:g}, {high:g}] {problem}; rescale them or set data.input_range"
            )
        return low, high

    # --- using it ---

    def _fitted(self):
        if not hasattr(self, "layers_"):
            raise NotFittedError("this Network is not trained yet: call fit() or Network.load() first")

    def input_codes(self, x) -> np.ndarray:
        """Raw inputs to the int8 codes the network (and the device) computes with."""
        self._fitted()
        return quantize_inputs(check_inputs(x, self.config.network.inputs), self.input_range_)

    @float32_checked
    def decision_function(self, x) -> np.ndarray:
        """Final scores: dequantized int8 scores when the network runs in int8, else float."""
        codes = self.input_codes(x)
        return predict_scores(self.layers_, codes, QuantSpec.from_config(self.config), self.quantized_)

    @float32_checked
    def predict_proba(self, x) -> np.ndarray:
        """Softmax or sigmoid of the final scores (the scores themselves for a linear output)."""
        return head.probabilities(self.config.network.output, self.decision_function(x))

    @float32_checked
    def predict(self, x) -> np.ndarray:
        """Class indices (names, when fit was given them) or output values (regression)."""
        scores = self.decision_function(x)
        if self.config.task == "classification":
            return head.named(head.classes(scores), np.asarray(self.class_names_) if self.class_names_ else None)
        return head.values(self.config.network.output, scores)

    @float32_checked
    def evaluate(self, x, y) -> dict:
        """{'loss', 'accuracy'} for classification, {'loss', 'mse', 'mae'} for regression."""
        scores = self.decision_function(x)
        net = self.config.network
        out = head.figures(self.config.task, net.output, net.cost, scores, self._targets(y, len(scores)))
        return {**out, "int8": bool(self.quantized_)}

    @float32_checked
    def score(self, x, y) -> float:
        """Accuracy for classification; the coefficient of determination R^2 for regression."""
        scores = self.decision_function(x)
        return head.score(self.config.task, self.config.network.output, scores, self._targets(y, len(scores)))

    def integer_layers(self):
        """The integer layers (int8 weights, int32 biases, multipliers) this network runs as."""
        self._fitted()
        return integer_layers(self.layers_, QuantSpec.from_config(self.config))

    # --- files ---

    def save(self, path) -> None:
        """Write the trained network as a checkpoint (.npz, no pickle), atomically."""
        self._fitted()
        ckpt.save(
            path,
            self.config,
            self.input_range_,
            self.layers_,
            self.quantized_,
            self.history_,
            class_names=self.class_names_,
        )

    @classmethod
    def load(cls, path) -> "Network":
        """A trained network from a checkpoint written by save() or by training."""
        state = ckpt.load(path)
        net = cls(state["config"])
        net.layers_, net.quantized_ = state["layers"], state["quantized"]
        net.input_range_, net.history_ = state["input_range"], state["history"]
        net.class_names_ = state["class_names"]
        return net

    def quantize(self) -> QuantizedModel:
        """The integer-only model this network stands for.

        For a network trained with fake quantization it predicts exactly what the network
        does; for one trained in float it is post-training quantization with the ranges
        observed in training.
        """
        self._fitted()
        if any(layer.weight.size and np.isnan(layer.observed).any() for layer in self.layers_):
            raise QuantizationError(
                "this network has float weights and no observed activation ranges (an import): "
                "calibrate it first (qmtik quantize CHECKPOINT --calibrate DATA, or qmtik.calibrate)"
            )
        return QuantizedModel(
            self.config.task, self.config.network.output, self.input_range_, self.integer_layers(), self.class_names_
        )
