"""The Keras twin of the seed CNN: weight mapping, parity with torch, and a short fit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ser.config import CONF_DIR, REPO_ROOT
from ser.data.labels import EMOTIONS
from ser.models.cnn1d import SeedCNN, keras_parameter_count

if importlib.util.find_spec("tensorflow") is None:  # not imported here: see conftest
    pytest.skip("the Keras twin needs the optional 'keras' extra", allow_module_level=True)

from ser.models.keras_cnn import (  # noqa: E402
    build_keras_cnn,
    keras_twin_of,
    weighted_cross_entropy,
)
from ser.training.keras_fit import compile_twin, fit_keras, predict_proba  # noqa: E402

L2_PARAMS = list(OmegaConf.load(CONF_DIR / "model" / "cnn.yaml").module.l2_params)


def test_the_network_module_imports_no_data_evaluation_training_or_tensorflow():
    """ser.models holds networks only; TensorFlow waits until a twin is built."""
    code = ("import sys, ser.models.keras_cnn; print(' '.join(sorted(m for m in sys.modules "
            "if m.startswith(('ser.', 'tensorflow', 'keras')))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout.split() == ["ser.models", "ser.models.keras_cnn"]


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


def test_torch_initialisers_draw_as_torchs_defaults():
    """U(+-1/sqrt(fan_in)) for weights and biases, layer by layer, as SeedCNN's own."""
    twin = build_keras_cnn(2376, init="torch")
    torch.manual_seed(0)
    torch_params = dict(SeedCNN().named_parameters())
    layers = {"conv0": "blocks.0.conv", "conv1": "blocks.1.conv", "conv2": "blocks.2.conv",
              "dense": "head.0", "logits": "head.3"}
    for keras_name, torch_name in layers.items():
        kernel, bias = twin.get_layer(keras_name).get_weights()
        w = torch_params[f"{torch_name}.weight"].detach()
        fan_in = w[0].numel()  # (out, in, 1, k) conv or (out, in) linear
        bound = 1 / np.sqrt(fan_in)
        for keras_w in (kernel, bias):
            assert np.abs(keras_w).max() <= bound
        assert np.abs(kernel).max() > 0.95 * bound  # hundreds of draws reach the edge
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)  # uniform's std
        assert kernel.std() == pytest.approx(w.std().item(), rel=0.1)
        assert np.abs(bias).max() > 0
    keras_default = build_keras_cnn(2376, init="keras")
    kernel, bias = keras_default.get_layer("conv0").get_weights()
    assert np.abs(kernel).max() <= np.sqrt(6 / (5 + 5 * 128)) and not bias.any()  # glorot
    with pytest.raises(ValueError, match="init"):
        build_keras_cnn(100, init="he")


def test_weighted_loss_averages_as_torch_does():
    """sum(w_y * ce) / sum(w_y), not Keras's class_weight sum(w_y * ce) / batch."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 8)).astype(np.float32)
    y = rng.integers(0, 8, 32)
    w = rng.uniform(0.3, 3.0, 8).astype(np.float32)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(y), weight=torch.from_numpy(w)).item()
    assert float(weighted_cross_entropy(w)(y, logits)) == pytest.approx(expected, rel=1e-6)
    ce = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y),
                                           reduction="none").numpy()
    keras_class_weight = float((w[y] * ce).mean())
    assert abs(keras_class_weight - expected) > 0.05  # the difference the twin removes


def test_l2_is_the_torch_modules_penalty():
    """The twin's kernel regularisers give SERClassifier's l2 * sum(w^2) on l2_params."""
    from ser.training.module import SERClassifier

    model = trained_looking_cnn(seed=5)
    module = SERClassifier(model, EMOTIONS, optimizer=torch.optim.Adam, l2=1e-4,
                           l2_params=L2_PARAMS)
    expected = module._l2_penalty().item()
    twin = keras_twin_of(model, 600, l2=1e-4)
    assert expected > 0
    assert float(sum(twin.losses)) == pytest.approx(expected, rel=1e-5)


def as_keras_kernel(weight: torch.Tensor) -> np.ndarray:
    """torch Conv2d (out, in, 1, k) or Linear (out, in) weight in Keras's kernel layout."""
    w = weight.detach().numpy()
    return (w[:, :, 0, :].transpose(2, 1, 0) if w.ndim == 4 else w.T).copy()


def test_training_step_matches_torch():
    """Same weights and batches, no dropout: the twin's training loss (class-weighted
    average plus L2) equals torch's, and one Adam step moves the kernels as torch's does."""
    torch.manual_seed(0)
    model = SeedCNN(dropouts=(0, 0, 0), dense_dropout=0).train()
    n_features, lr, l2 = 300, 1e-3, 1e-4
    twin = keras_twin_of(model, n_features, l2=l2)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.3, 3.0, 8).astype(np.float32)
    compile_twin(twin, w, lr)
    assert twin.optimizer.epsilon == pytest.approx(1e-8)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    layers = {"conv0": "blocks.0.conv.weight", "conv1": "blocks.1.conv.weight",
              "conv2": "blocks.2.conv.weight", "dense": "head.0.weight",
              "logits": "head.3.weight"}
    before = {k: as_keras_kernel(params[t]) for k, t in layers.items()}
    for step in range(2):  # the second loss is computed with the weights of one step
        x = rng.normal(size=(32, n_features)).astype(np.float32)
        y = rng.integers(0, 8, 32)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x)), torch.from_numpy(y), weight=torch.from_numpy(w))
        loss = loss + l2 * sum(params[n].pow(2).sum() for n in L2_PARAMS)
        keras_loss = float(np.ravel(twin.train_on_batch(x, y))[0])
        assert keras_loss == pytest.approx(loss.item(), rel=1e-5)
        if step == 0:
            loss.backward()
            opt.step()
            # Adam's first step is about lr * sign(gradient), so a weight whose gradient
            # is at rounding level may step either way: most kernel weights must agree
            # (pre-BatchNorm conv biases have only rounding-level gradients: left out)
            for keras_name, torch_name in layers.items():
                kernel = twin.get_layer(keras_name).get_weights()[0]
                expected = as_keras_kernel(params[torch_name])
                assert np.abs(expected - before[keras_name]).max() > 0.5 * lr
                assert np.mean(np.abs(kernel - expected) < 1e-6) > 0.99, keras_name


def test_keras_fit_on_a_datamodule(generated_data_dir, tmp_path):
    from ser.training.datamodule import SERDataModule

    dm = SERDataModule(generated_data_dir, fold=2, augment={"versions": ["original"]},
                       features={"kind": "hand", "audio": {"offset": 0.6, "duration": 2.5}},
                       cache_dir=tmp_path, progress=False, n_jobs=1)
    dm.setup("fit")
    result = fit_keras(dm, epochs=2, batch_size=32)
    assert result["epochs"] == 2
    assert len(result["history"]) == 2
    assert max(h["val_ua"] for h in result["history"]) == result["val/ua_best"]
    assert result["history"][0]["lr"] == pytest.approx(1e-3)
    assert result["model"].optimizer.epsilon == pytest.approx(1e-8)
    test = result["test"]
    assert sum(map(sum, test["confusion"])) == 4 * 8 * 2 and test["classes"] == list(EMOTIONS)


class _IdentityTwin:
    """A stand-in Keras model whose logits are its inputs."""

    def predict(self, x: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        return x


def test_test_versions_average_probabilities_as_the_torch_module():
    """Items with several versions score the mean of their versions' softmax, as
    SERClassifier.forward does (it returns the log of that mean)."""
    from ser.training.module import SERClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 8)).astype(np.float32)
    module = SERClassifier(torch.nn.Identity(), EMOTIONS)
    expected = module({"features": torch.from_numpy(x)}).exp().numpy()
    np.testing.assert_allclose(predict_proba(_IdentityTwin(), x), expected, rtol=1e-5)
