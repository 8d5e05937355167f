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


def test_2d_channels_last_layout_equals_a_plain_conv1d_stack():
    """The 2D/channels-last implementation computes the Keras-style Conv1D network."""
    torch.manual_seed(1)
    model = SeedCNN().eval()
    x = torch.randn(4, 2376)
    h = x[:, None, :]
    for block in model.blocks:
        w = block.conv.weight.squeeze(2)
        h = torch.nn.functional.conv1d(h, w, block.conv.bias, padding=w.shape[-1] // 2)
        bn = block.bn
        h = (h - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        h = h * bn.weight[:, None] + bn.bias[:, None]
        h = torch.nn.functional.max_pool1d(torch.relu(h), block.pool, 2, block.pool // 2)
    expected = model.head(h.mean(dim=-1))
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_fast_dropout_keeps_the_right_fraction_and_scale():
    from ser.models.cnn1d import FastDropout

    torch.manual_seed(0)
    drop = FastDropout(0.4).train()
    out = drop(torch.ones(200_000))
    kept = out > 0
    assert abs(kept.float().mean().item() - 0.6) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.6))
    assert torch.equal(drop.eval()(torch.ones(5)), torch.ones(5))
