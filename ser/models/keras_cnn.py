"""The seed's Keras 1D CNN, as a twin of `SeedCNN` (TensorFlow is imported only when used).

Same layers and parameter count (50,312) as the seed's notebook, with one deliberate
difference: the seed's `MaxPool1D(pool, 2, padding="same")` pads asymmetrically (for
an even length, 1 left and 2 right for pool 5), while torch's `max_pool(padding=k//2)`
pads k//2 on both sides, so the windows sit one sample apart. The twin pads like torch
(`pool_padding="torch"`): zeros k//2 each side, then a "valid" pool. Zeros stand in for
torch's -inf because the pool follows a ReLU (every value >= 0, so a zero never wins
over a real one). `pool_padding="keras_same"` builds the seed's exact network.

`copy_torch_weights` moves a trained `SeedCNN` into the twin (parity: same logits). Only
the network lives here; `ser.training.keras_fit` trains it on a datamodule's rows with the
torch recipe. Where Keras's defaults differ from torch's, the twin follows torch:

- initialisers (`init="torch"`): torch's Conv/Linear default, kaiming_uniform(a=sqrt(5))
  weights and bias, is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both; Keras's default is
  glorot_uniform weights and zero bias (`init="keras"`, the seed's). For the first conv
  (fan_in 5, fan_out 640) glorot's bound is 0.096 against torch's 0.447.
- class-weighted loss (`weighted_cross_entropy`): torch's `cross_entropy(weight=w)`
  averages as sum(w_y * ce) / sum(w_y) over the batch; Keras's `class_weight` divides by
  the batch size instead, so the step size moves with the batch's class mix.
- L2 1e-4 * sum(w^2) on the first conv and the first dense kernel, added to the loss: the
  same in both (`SERClassifier._l2_penalty` with `l2_params` of conf/model/cnn.yaml).
- Adam's epsilon and the LR schedule belong to the training loop (ser.training.keras_fit).

Not matched: torch's BatchNorm running variance takes the unbiased batch variance, Keras's
the biased one (a factor 32/31 for the dense layer's batches of 32); torch trains in
bf16-mixed unless `trainer=fp32`, the twin in float32; and the random streams (initial
draws, shuffles, dropout masks). Per-step parity is tested: from the same weights and
batch, without dropout, the twin's loss and Adam step are torch's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from ser.models.cnn1d import SeedCNN

POOL_PADDINGS = ("torch", "keras_same")
INITS = ("torch", "keras")


def load_keras() -> Any:
    """Import Keras on TensorFlow lazily, quietly, and with a clear error if absent."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the Keras twin needs TensorFlow: pip install -e '.[keras]'") from err
    return keras


def build_keras_cnn(
    n_features: int,
    n_classes: int = 8,
    channels: Sequence[int] = (128, 64, 32),
    kernels: Sequence[int] = (5, 5, 3),
    pools: Sequence[int] = (5, 5, 3),
    dropouts: Sequence[float] = (0.4, 0.3, 0.3),
    dense: int = 32,
    dense_dropout: float = 0.5,
    l2: float = 1e-4,
    pool_padding: str = "torch",
    init: str = "torch",
) -> keras.Model:
    """The seed's CNN; (batch, n_features) standardised features in, logits out.

    `init="torch"` draws weights and biases as torch's Conv/Linear defaults do,
    `init="keras"` keeps Keras's (glorot_uniform, zero bias).
    """
    if pool_padding not in POOL_PADDINGS:
        raise ValueError(f"pool_padding must be one of {POOL_PADDINGS}, got {pool_padding!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    keras = load_keras()
    layers = keras.layers

    def initialisers(fan_in: int) -> dict[str, Any]:
        if init == "keras":
            return {}
        return {"kernel_initializer": _torch_default_initializer(keras, fan_in),
                "bias_initializer": _torch_default_initializer(keras, fan_in)}

    inputs = keras.Input((n_features,), name="features")
    x = layers.Reshape((n_features, 1))(inputs)
    c_in = 1
    for i, (c, k, p, d) in enumerate(zip(channels, kernels, pools, dropouts, strict=True)):
        reg = keras.regularizers.L2(l2) if i == 0 and l2 else None  # the seed's first conv only
        x = layers.Conv1D(c, k, padding="same", kernel_regularizer=reg, name=f"conv{i}",
                          **initialisers(c_in * k))(x)
        c_in = c
        x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"bn{i}")(x)
        x = layers.ReLU()(x)
        if pool_padding == "torch":
            x = layers.ZeroPadding1D(p // 2)(x)
            x = layers.MaxPooling1D(p, strides=2, padding="valid")(x)
        else:
            x = layers.MaxPooling1D(p, strides=2, padding="same")(x)
        x = layers.Dropout(d)(x)
    x = layers.GlobalAveragePooling1D()(x)
    reg = keras.regularizers.L2(l2) if l2 else None
    x = layers.Dense(dense, kernel_regularizer=reg, name="dense", **initialisers(c_in))(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name="bn_dense")(x)
    x = layers.Dropout(dense_dropout)(x)
    logits = layers.Dense(n_classes, name="logits", **initialisers(dense))(x)
    return keras.Model(inputs, logits, name="seed_cnn")


def _torch_default_initializer(keras: Any, fan_in: int) -> Any:
    """torch's Conv/Linear default for weights and biases alike: U(+-1/sqrt(fan_in)).

    (kaiming_uniform with a=sqrt(5): gain sqrt(2/6), bound gain*sqrt(3/fan_in).)
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def weighted_cross_entropy(class_weights: Sequence[float]) -> Any:
    """torch's `cross_entropy(logits, y, weight=w)`: sum(w_y * ce) / sum(w_y) per batch.

    A Keras loss on integer labels and logits; the weights are applied here, so `fit`
    takes no `class_weight` (whose average divides by the batch size instead).
    """
    keras = load_keras()
    ops = keras.ops
    weights = np.asarray(class_weights, dtype=np.float32)

    class WeightedCrossEntropy(keras.losses.Loss):
        def __init__(self) -> None:
            super().__init__(name="weighted_cross_entropy", reduction="sum")

        def call(self, y_true: Any, y_pred: Any) -> Any:
            y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
            ce = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
            w = ops.take(ops.convert_to_tensor(weights), y)
            return w * ce / ops.sum(w)

    return WeightedCrossEntropy()


def keras_twin_of(model: SeedCNN, n_features: int, **kwargs: Any) -> keras.Model:
    """A Keras twin with `model`'s shape and weights."""
    blocks = list(model.blocks)
    twin = build_keras_cnn(
        n_features,
        n_classes=model.head[-1].out_features,
        channels=[b.conv.out_channels for b in blocks],
        kernels=[b.conv.kernel_size[1] for b in blocks],
        pools=[b.pool for b in blocks],
        dropouts=[b.dropout.p for b in blocks],
        dense=model.head[0].out_features,
        dense_dropout=model.head[2].p,
        **kwargs,
    )
    copy_torch_weights(model, twin)
    return twin


def copy_torch_weights(model: SeedCNN, twin: keras.Model) -> None:
    """Copy a `SeedCNN`'s weights and BatchNorm statistics into its Keras twin.

    Torch's Conv2d weight is (out, in, 1, k) whatever its memory format; Keras's Conv1D
    kernel is (k, in, out). Linear weights are (out, in), Dense kernels (in, out).
    """
    for i, block in enumerate(model.blocks):
        w = _np(block.conv.weight)[:, :, 0, :].transpose(2, 1, 0)
        twin.get_layer(f"conv{i}").set_weights([w, _np(block.conv.bias)])
        twin.get_layer(f"bn{i}").set_weights(_bn_weights(block.bn))
    twin.get_layer("dense").set_weights([_np(model.head[0].weight).T, _np(model.head[0].bias)])
    twin.get_layer("bn_dense").set_weights(_bn_weights(model.head[1]))
    twin.get_layer("logits").set_weights([_np(model.head[3].weight).T, _np(model.head[3].bias)])


def _np(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().float().contiguous().numpy()


def _bn_weights(bn: Any) -> list[np.ndarray]:
    """Keras order: gamma, beta, moving mean, moving variance."""
    return [_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)]
