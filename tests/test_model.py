import torch

from ser.models.cnn1d import SeedCNN, keras_parameter_count


def test_parameter_count_matches_keras_original():
    assert keras_parameter_count(SeedCNN(n_classes=8)) == 50_312


def test_pool_before_relu_is_the_same_function():
    torch.manual_seed(0)
    model = SeedCNN().eval()
    x = torch.randn(3, 2376)
    fast = model(x)
    for block in model.blocks:
        block.pool_first = False
    assert torch.equal(fast, model(x))


def test_output_shape_and_lengths():
    model = SeedCNN(n_classes=6).eval()
    assert model(torch.randn(2, 2376)).shape == (2, 6)
    assert model(torch.randn(2, 1, 500)).shape == (2, 6)
