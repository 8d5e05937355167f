"""Callbacks of our own (the rest of conf/callbacks are Lightning's)."""

from __future__ import annotations

import lightning as L


class EpochSeed(L.Callback):
    """Every training epoch starts from a seed of its own, `seed + epoch`.

    Shuffling, augmentation draws and dropout masks of epoch k then depend on the seed
    and k alone, so a run continued from its `last.ckpt` trains the later epochs exactly
    as the uninterrupted run did (the checkpoint holds weights, optimiser, scheduler and
    callback states; this fixes the random streams).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer, pl_module)  # the loader's iterator (and its workers) follow

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: object, batch_idx: int) -> None:
        # again at the epoch's first step: a resumed run's loop draws from the generators
        # between the epoch's start and its first batch where a fresh run doesn't
        if batch_idx == 0:
            self._reseed(trainer, pl_module)

    def _reseed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)
        for module in pl_module.modules():
            reset = getattr(module, "reset_rng", None)
            if callable(reset):
                reset()
