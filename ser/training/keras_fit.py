"""Training the Keras twin (ser.models.keras_cnn) on a `SERDataModule`'s rows.

The twin sees exactly the torch run's inputs: the vector pipeline's stage datasets, which
are already standardised with the training statistics, (items, versions, D). Training
items have one version each; a validation or test item's probability is the mean over
its versions' softmax, as `SERClassifier.forward` takes it, and the metrics are the
project's own (ser.evaluation.metrics). TensorFlow is imported only when a twin is built.

The torch recipe: Adam with torch's epsilon 1e-8 (Keras's default is 1e-7; Keras adds it
to sqrt(v), torch to sqrt(v / (1 - beta2^t)), so they still differ early in training,
only where gradients are that small), balanced class weights averaged as torch does, LR
halved as ReduceLROnPlateau(mode=max) does, early stopping on validation UA, and the
best-validation-UA weights tested.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ser.evaluation.metrics import confusion_matrix, metrics_from_confusion
from ser.models.keras_cnn import build_keras_cnn, load_keras, weighted_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from ser.training.datamodule import SERDataModule

log = logging.getLogger(__name__)

LOSSES = ("torch", "keras")


def stage_rows(dm: SERDataModule, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """A stage's (items, versions, D) float32 features, standardised by the pipeline,
    and its (items,) labels. `dm` must be set up, with a feature-vector pipeline."""
    if dm.pipeline.input_kind != "vector":
        raise ValueError(f"the Keras twin reads feature vectors, not {dm.pipeline.kind!r} "
                         f"inputs: use features=seed_hand")
    features = dm.stages[stage].dataset.features  # a CPU torch tensor
    return np.asarray(features.numpy(), dtype=np.float32), dm.labels(stage)


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(items, classes): each item's mean probability over its (items, versions, D) rows."""
    items, versions, dim = x.shape
    logits = model.predict(x.reshape(items * versions, dim), batch_size=batch_size, verbose=0)
    logits = logits - logits.max(axis=-1, keepdims=True)  # a stable softmax
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs.reshape(items, versions, -1).mean(axis=1)


def twin_metrics(model: keras.Model, x: np.ndarray, y: np.ndarray,
                 class_names: Sequence[str]) -> dict[str, Any]:
    """The project's metrics (wa, ua, macro_f1, confusion, ...) of `model` on (x, y)."""
    preds = predict_proba(model, x).argmax(axis=-1)
    return metrics_from_confusion(confusion_matrix(y, preds, len(class_names)), class_names)


def compile_twin(model: keras.Model, class_weights: Sequence[float], lr: float = 1e-3,
                 loss: str = "torch", epsilon: float = 1e-8) -> dict[int, float] | None:
    """Compile with Adam(lr, epsilon) and the class-weighted loss; returns what `fit`
    needs as `class_weight` (None with `loss="torch"`, which weights inside the loss)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    keras = load_keras()
    weights = [float(w) for w in class_weights]
    if loss == "torch":
        loss_fn, fit_weights = weighted_cross_entropy(weights), None
    else:  # Keras's own averaging: divided by the batch size
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        fit_weights = dict(enumerate(weights))
    model.compile(optimizer=keras.optimizers.Adam(lr, epsilon=epsilon), loss=loss_fn)
    return fit_weights


def fit_keras(
    dm: SERDataModule,
    epochs: int = 25,
    batch_size: int = 32,
    lr: float = 1e-3,
    patience: int = 6,
    lr_patience: int = 3,
    seed: int = 42,
    pool_padding: str = "torch",
    net: dict | None = None,
    init: str = "torch",
    loss: str = "torch",
    epsilon: float = 1e-8,
    min_lr: float = 1e-6,
) -> dict[str, Any]:
    """Train the twin with the torch recipe on `dm`'s rows; test the best-val-UA weights.

    `init="keras"`, `loss="keras"`, `epsilon=1e-7` give Keras's defaults instead (the
    seed's own recipe). `dm` must be set up ("fit"). Returns val/test metrics, the number
    of epochs run, the per-epoch history and the model.
    """
    if dm.class_weights is None:
        raise ValueError("set the datamodule up for fitting first: dm.setup('fit')")
    keras = load_keras()
    keras.utils.set_random_seed(seed)
    x_train, y_train = _training_rows(dm)
    x_val, y_val = stage_rows(dm, "val")
    model = build_keras_cnn(x_train.shape[1], dm.n_classes, pool_padding=pool_padding,
                            init=init, **(net or {}))
    fit_weights = compile_twin(model, dm.class_weights, lr, loss=loss, epsilon=epsilon)
    tracker = _BestValUA(keras, x_val, y_val, dm.class_names, patience, lr_patience, min_lr)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
              class_weight=fit_weights, callbacks=[tracker.callback])
    model.set_weights(tracker.best_weights)
    x_test, y_test = stage_rows(dm, "test")
    return {"val/ua_best": tracker.best_ua, "test": twin_metrics(model, x_test, y_test,
                                                                 dm.class_names),
            "epochs": tracker.epochs, "history": tracker.history, "model": model}


def _training_rows(dm: SERDataModule) -> tuple[np.ndarray, np.ndarray]:
    """(rows, D) and (rows,): every version of a training item is a row of its own."""
    x, y = stage_rows(dm, "train")  # the pipeline gives training items one version
    return x.reshape(-1, x.shape[-1]), np.repeat(y, x.shape[1])


class _BestValUA:
    """Validation UA each epoch: keeps the best weights, halves the LR, stops early."""

    def __init__(self, keras: Any, x: np.ndarray, y: np.ndarray, classes: Sequence[str],
                 patience: int, lr_patience: int, min_lr: float = 1e-6) -> None:
        self.best_ua, self.best_weights, self.epochs = -1.0, None, 0
        self.history: list[dict[str, float]] = []  # per epoch: val UA and the LR it ran with
        self._since_best = self._since_lr = 0
        tracker = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                tracker.epochs = epoch + 1
                ua = twin_metrics(self.model, x, y, classes)["ua"]
                lr = self.model.optimizer.learning_rate
                tracker.history.append({"val_ua": ua, "lr": float(lr.numpy())})
                log.info("keras epoch %d: val UA %.4f (best %.4f)", epoch + 1, ua, tracker.best_ua)
                if ua > tracker.best_ua:
                    tracker.best_ua, tracker.best_weights = ua, self.model.get_weights()
                    tracker._since_best = tracker._since_lr = 0
                    return
                tracker._since_best += 1
                tracker._since_lr += 1
                if tracker._since_lr > lr_patience:  # as torch's ReduceLROnPlateau counts
                    lr.assign(max(float(lr.numpy()) * 0.5, min_lr))
                    tracker._since_lr = 0
                if tracker._since_best >= patience:
                    self.model.stop_training = True

        self.callback = Callback()
