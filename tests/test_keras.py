"""The Keras twin of the seed CNN: weight mapping, parity with torch, and a short fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser.data.labels import EMOTIONS
from ser.models.cnn1d import SeedCNN, keras_parameter_count

pytest.importorskip("tensorflow", reason="the Keras twin needs the optional 'keras' extra")

from ser.models.keras_cnn import build_keras_cnn, fit_keras, keras_twin_of  # noqa: E402


def trained_looking_cnn(n_classes: int = 8, seed: int = 0) -> SeedCNN:
    """A SeedCNN with non-trivial BatchNorm statistics, so they are part of the check."""
    torch.manual_seed(seed)
    model = SeedCNN(n_classes=n_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("n_features", [2376, 2375, 501])
def test_copied_weights_give_the_same_logits(n_features):
    model = trained_looking_cnn()
    x = torch.randn(5, n_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    twin = keras_twin_of(model, n_features)
    np.testing.assert_allclose(twin(x.numpy(), training=False).numpy(), expected, atol=1e-5)


def test_same_parameter_count_as_the_seed_and_torch():
    assert build_keras_cnn(2376).count_params() == 50_312
    assert build_keras_cnn(2376, pool_padding="keras_same").count_params() == 50_312
    assert keras_parameter_count(SeedCNN()) == 50_312


def test_seeds_same_padding_pools_other_windows():
    """The seed's 'same' max-pool pads asymmetrically; the twin pads like torch."""
    model = trained_looking_cnn(seed=3)
    x = torch.randn(4, 2376, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x).numpy()
    seed_net = keras_twin_of(model, 2376, pool_padding="keras_same")
    assert np.abs(seed_net(x.numpy(), training=False).numpy() - expected).max() > 1e-4
    with pytest.raises(ValueError, match="pool_padding"):
        build_keras_cnn(100, pool_padding="reflect")


def test_keras_fit_on_a_datamodule(generated_data_dir, tmp_path):
    from ser.data.datamodule import FeatureDataModule

    dm = FeatureDataModule(generated_data_dir, fold=2, augment={"versions": ["original"]},
                           features={"audio": {"offset": 0.6, "duration": 2.5}},
                           cache_dir=tmp_path, progress=False, n_jobs=1)
    dm.setup("fit")
    result = fit_keras(dm, epochs=2, batch_size=32)
    assert result["epochs"] == 2 and 0 <= result["val/ua_best"] <= 1
    test = result["test"]
    assert sum(map(sum, test["confusion"])) == 4 * 8 * 2 and test["classes"] == list(EMOTIONS)
