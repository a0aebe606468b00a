"""fastcnn.nn used as a user would: layers against the reference and PyTorch, state dicts, freezing, modes."""
import numpy as np
import pytest

import fastcnn
from fastcnn import _core, nn
from fastcnn import reference as R


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


@pytest.mark.parametrize("shape", [(64, 400, 120), (1, 5, 3), (37, 70, 13), (300, 17, 520)])
def test_matmul_kernel_matches_numpy_for_every_transpose(rng, shape):
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    for transpose_a in (False, True):
        for transpose_b in (False, True):
            left = np.ascontiguousarray(a.T) if transpose_a else a
            right = np.ascontiguousarray(b.T) if transpose_b else b
            got = _core.matmul(left, right, transpose_a, transpose_b)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_matmul_and_relu_are_thread_count_invariant(rng):
    a = rng.standard_normal((130, 257)).astype(np.float32)
    b = rng.standard_normal((257, 70)).astype(np.float32)
    x = rng.standard_normal((3, 5, 70, 70)).astype(np.float32)
    fastcnn.set_num_threads(1)
    serial = (_core.matmul(a, b), _core.relu_forward(x), _core.relu_backward(x, x))
    fastcnn.set_num_threads(3)
    parallel = (_core.matmul(a, b), _core.relu_forward(x), _core.relu_backward(x, x))
    for s, p in zip(serial, parallel):
        np.testing.assert_array_equal(s, p)


def test_matmul_rejects_mismatched_operands():
    with pytest.raises(ValueError, match="matmul: inner dimensions differ"):
        _core.matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))


def test_relu_keeps_nan_and_zeroes_negatives():
    x = np.array([[-1.0, 0.0, 2.0, np.nan]], np.float32)
    y = nn.ReLU()(x)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 2.0, np.nan]])


def test_conv_layer_matches_the_reference_and_initialises_like_pytorch():
    conv = nn.Conv2d(3, 8, 3, padding="same", seed=0)
    fan_in = 3 * 3 * 3
    bound = 1 / np.sqrt(fan_in)
    assert conv.weight.shape == (8, 3, 3, 3) and conv.bias.shape == (8,)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    expected = R.conv2d(x.astype(np.float64), conv.weight.data.astype(np.float64),
                        conv.bias.data.astype(np.float64), padding="same")
    np.testing.assert_allclose(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_same_seed_gives_the_same_model():
    fastcnn.manual_seed(7)
    a = lenet()
    fastcnn.manual_seed(7)
    b = lenet()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_manual_training_loop_reduces_the_loss_and_gradients_accumulate(rng):
    fastcnn.manual_seed(0)
    model = lenet()
    y = rng.integers(0, 10, 32)
    x = (0.3 * rng.random((32, 1, 28, 28))).astype(np.float32)
    for i, label in enumerate(y):  # a learnable task: a bright square whose position is the class
        row, col = divmod(int(label), 4)
        x[i, 0, 7 * row:7 * row + 7, 7 * col:7 * col + 7] += 1.0
    criterion = nn.CrossEntropyLoss()
    first = criterion(model(x), y)
    model.backward(criterion.backward())
    once = [p.grad.copy() for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    criterion(model(x), y)
    model.backward(criterion.backward())
    for g, before, after in zip(once, grads, model.parameters()):
        assert after.grad is before  # never rebound
        np.testing.assert_allclose(after.grad, 2 * g, rtol=1e-5, atol=1e-7)
    model.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())
    for _ in range(60):
        criterion(model(x), y)
        model.backward(criterion.backward(), input_grad=False)
        for p in model.parameters():
            p.data -= 0.1 * p.grad
        model.zero_grad()
    assert criterion(model(x), y) < 0.5 * first


def test_eval_mode_and_no_grad_record_nothing(rng):
    model = lenet()
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    model.eval()
    model(x)
    with pytest.raises(RuntimeError, match="no recorded forward pass"):
        model.backward(np.ones((2, 10), np.float32))
    model.train()
    with fastcnn.no_grad():
        model(x)
    with pytest.raises(RuntimeError, match="no recorded forward pass"):
        model.backward(np.ones((2, 10), np.float32))


def test_looking_at_the_model_between_forward_and_backward_changes_nothing(rng):
    fastcnn.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3))
    x = rng.random((5, 1, 8, 8)).astype(np.float32)
    criterion = nn.CrossEntropyLoss()
    criterion(model(x), np.arange(5) % 3)
    model.backward(criterion.backward())
    expected = [p.grad.copy() for p in model.parameters()]
    statistics = model[1].running_mean.copy()
    model.zero_grad()

    criterion(model(x), np.arange(5) % 3)
    after_forward = model[1].running_mean.copy()
    with fastcnn.no_grad():
        model(rng.random((2, 1, 8, 8)))  # an inspection in training mode: records nothing, updates nothing
    np.testing.assert_array_equal(model[1].running_mean, after_forward)
    assert not np.array_equal(after_forward, statistics)  # the recorded forward did update them
    model.backward(criterion.backward())
    for got, want in zip((p.grad for p in model.parameters()), expected):
        np.testing.assert_array_equal(got, want)


def test_batchnorm_running_statistics_follow_pytorch(rng):
    bn = nn.BatchNorm2d(3)
    x = (rng.standard_normal((8, 3, 5, 5)) * 2 + 1).astype(np.float32)
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * unbiased, rtol=1e-5)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    assert int(bn.num_batches_tracked) == 1
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    bn.eval()
    expected = (x - bn.running_mean[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-5, atol=1e-5)


def test_layers_match_pytorch_forward_and_backward(rng):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    fastcnn.manual_seed(3)
    ours = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Tanh())),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.Linear(16, 5),
    )

    class TorchResidual(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(x) + x

    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.LeakyReLU(0.1), torch.nn.AvgPool2d(2),
        TorchResidual(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=2), torch.nn.Tanh())),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 16), torch.nn.BatchNorm1d(16),
        torch.nn.Sigmoid(), torch.nn.Linear(16, 5),
    )
    state = {k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)  # same names and layouts, so the state dict moves across as it is
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(ours(x), labels)
    ours.backward(criterion.backward())
    tx = torch.from_numpy(x)
    t_loss = torch.nn.functional.cross_entropy(theirs(tx), torch.from_numpy(labels), label_smoothing=0.1)
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    for name, param in ours.named_parameters():
        t_param = dict(theirs.named_parameters())[name]
        np.testing.assert_allclose(param.grad, t_param.grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)
    for name, buffer in ours.named_buffers():
        np.testing.assert_allclose(buffer, dict(theirs.named_buffers())[name].numpy(), rtol=1e-5, atol=1e-6)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), theirs(tx).numpy(), rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_strict_and_not(rng):
    model = lenet()
    other = lenet()
    other.load_state_dict(model.state_dict())
    x = rng.random((3, 1, 28, 28)).astype(np.float32)
    model.eval(), other.eval()
    np.testing.assert_array_equal(model(x), other(x))
    assert list(model.state_dict())[:2] == ["0.weight", "0.bias"]
    state = model.state_dict()
    state.pop("11.bias")
    state["extra"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: 11.bias; unexpected in the checkpoint: extra"):
        other.load_state_dict(state)
    report = other.load_state_dict(state, strict=False)
    assert report == {"missing_keys": ["11.bias"], "unexpected_keys": ["extra"]}
    bad = model.state_dict()
    bad["0.weight"] = np.zeros((8, 1, 5, 5))
    with pytest.raises(ValueError, match=r"size mismatch for 0.weight: checkpoint has \(8, 1, 5, 5\), model has \(6, 1, 5, 5\)"):
        other.load_state_dict(bad)


def test_freezing_keeps_parameters_and_their_gradients(rng):
    model = lenet()
    model[0].freeze()
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    criterion = nn.CrossEntropyLoss()
    criterion(model(x), np.arange(4))
    model.backward(criterion.backward())
    assert not model[0].weight.grad.any() and not model[0].bias.grad.any()
    assert model[3].weight.grad.any()
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 156
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_sequential_indexing_replacing_and_summary():
    model = lenet()
    assert isinstance(model[0], nn.Conv2d) and len(model) == 12
    head = model[:7]
    assert isinstance(head, nn.Sequential) and len(head) == 7
    model[11] = nn.Linear(84, 3)
    assert model(np.zeros((2, 1, 28, 28))).shape == (2, 3)
    table = model.summary((1, 28, 28), print_fn=None)
    assert "(None, 6, 28, 28)" in table and "Total params: 61,111" in table
    with pytest.raises(IndexError, match="out of range"):
        model[12]


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: nn.Conv2d(0, 6, 5), ValueError, r"Conv2d: in_channels must be a positive int; got 0"),
        (lambda: nn.Conv2d(3, 6, (3, 0)), ValueError, r"Conv2d: kernel_size must be .*got \(3, 0\)"),
        (lambda: nn.Conv2d(3, 6, 3, groups=2), ValueError, r"Conv2d: groups must divide in_channels"),
        (lambda: nn.Linear(10, -1), ValueError, r"Linear: out_features must be a positive int; got -1"),
        (lambda: nn.MaxPool2d(2, padding=2), ValueError, r"MaxPool2d: padding must be at most half of kernel_size"),
        (lambda: nn.Dropout(1.0), ValueError, r"Dropout: p must be in \[0, 1\); got 1.0"),
        (lambda: nn.BatchNorm2d(0), ValueError, r"BatchNorm2d: num_features must be a positive int"),
        (lambda: nn.Normalize([0.5], [0.0]), ValueError, r"Normalize: std must be positive"),
        (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, r"Sequential: layer 1 must be a Module; got str"),
        (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_constructor_errors_name_the_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_forward_errors_name_the_layer_and_shape():
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(N, C_in, H, W\) with C_in=1; got \(2, 3, 28, 28\)"):
        lenet()(np.zeros((2, 3, 28, 28)))
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(N, 400\); got \(2, 10\)"):
        nn.Linear(400, 10)(np.zeros((2, 10)))
    criterion = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: labels must be in \[0, 10\) for 10 classes; got 10"):
        criterion(np.zeros((2, 10)), np.array([1, 10]))
    with pytest.raises(TypeError, match="CrossEntropyLoss: target must hold integer class labels"):
        criterion(np.zeros((2, 10)), np.array([0.5, 1.0]))


def test_cross_entropy_is_stable_for_huge_logits():
    criterion = nn.CrossEntropyLoss()
    loss = criterion(np.array([[1e4, 0.0, -1e4]], np.float32), np.array([1]))
    assert loss == pytest.approx(1e4)
    grad = criterion.backward()
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], atol=1e-6)


def test_modules_walks_nested_models_in_named_modules_order():
    inner = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Residual(inner), nn.Flatten(), nn.Linear(8, 3))
    named = [module for _, module in model.named_modules()]
    assert list(model.modules()) == named and len(named) == 8
    assert [name for name, _ in model.named_modules()][:4] == ["", "0", "1", "1.block"]
