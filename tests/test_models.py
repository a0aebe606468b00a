"""fastcnn.models: the tutorial CNN's architecture for every setting, LeNet-5, and the shared hyperparameter table."""
import json
import math
import re

import numpy as np
import pytest

from fastcnn import nn
from fastcnn.models import HYPERPARAMETERS, feature_size, lenet5, tutorial_cnn, validate_hyperparameters


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --------------------------------------------------------------------------------------------- tutorial_cnn

def expected_parameters(filters, k, pool, layers, in_channels=1, classes=10, size=28):
    count, channels, width = 0, in_channels, filters
    for _ in range(layers):
        count += width * channels * k * k + width
        channels, width = width, 2 * width
        size //= pool
    return count + (channels * size * size * 128 + 128) + (128 * classes + classes)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("pool", [1, 2, 3, 4])
def test_tutorial_cnn_shapes_for_every_pooling_and_depth(layers, pool):
    model = tutorial_cnn(filters=4, filter_size=3, pool_size=pool, conv_layers=layers, seed=0)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * layers + [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    size, channels = 28, 1
    for stage in range(layers):
        conv, pooling = model[3 * stage], model[3 * stage + 2]
        assert conv.in_channels == channels and conv.out_channels == 4 * 2**stage
        assert conv.padding == "same" and pooling.kernel_size == (pool, pool)
        x = pooling(model[3 * stage + 1](conv(x)))
        size, channels = size // pool, conv.out_channels
        assert x.shape == (2, channels, size, size)
    assert size == feature_size(28, pool, layers)
    assert model[-3].in_features == channels * size * size and model[-3].out_features == 128
    assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert model.num_parameters() == expected_parameters(4, 3, pool, layers)


def test_tutorial_cnn_parameter_counts_by_hand():
    # conv 32*9+32 = 320; 14x14x32 = 6272 -> 128: 802,944; 128 -> 10: 1,290
    assert tutorial_cnn(seed=0).num_parameters() == 804_554
    # + conv 64*32*9+64 = 18,496; 7x7x64 = 3136 -> 128: 401,536
    assert tutorial_cnn(conv_layers=2, seed=0).num_parameters() == 320 + 18_496 + 401_536 + 1_290


def test_tutorial_cnn_pool_size_1_keeps_an_identity_pooling_layer():
    model = tutorial_cnn(filters=2, pool_size=1, input_size=8, seed=0)
    assert isinstance(model[2], nn.MaxPool2d) and model[2].kernel_size == (1, 1)
    maps = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model[2](maps), maps)
    # the state-dict keys do not depend on pool_size
    assert list(model.state_dict()) == list(tutorial_cnn(filters=2, pool_size=2, input_size=8, seed=0).state_dict())


def test_tutorial_cnn_channels_classes_filter_size_and_seed():
    model = tutorial_cnn(filters=3, filter_size=7, in_channels=3, num_classes=5, input_size=8, seed=4)
    assert model[0].weight.shape == (3, 3, 7, 7)
    assert model(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 5)
    again = tutorial_cnn(filters=3, filter_size=7, in_channels=3, num_classes=5, input_size=8, seed=4)
    other = tutorial_cnn(filters=3, filter_size=7, in_channels=3, num_classes=5, input_size=8, seed=5)
    for (name, a), b, c in zip(model.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert not np.array_equal(a, c), name


@pytest.mark.parametrize("kwargs, message", [
    ({"filter_size": 4}, "tutorial_cnn: filter_size must be an odd int between 3 and 7; got 4"),
    ({"filters": 0}, "tutorial_cnn: filters must be an int between 1 and 64; got 0"),
    ({"conv_layers": 3}, "tutorial_cnn: conv_layers must be 1 or 2; got 3"),
    ({"pool_size": 4, "conv_layers": 2, "input_size": 8},
     "tutorial_cnn: pool_size 4 with 2 conv layers shrinks the 8x8 input to 0x0; use a smaller pool_size or "
     "fewer layers"),
    ({"num_classes": 0}, "tutorial_cnn: num_classes must be a positive int; got 0"),
    ({"in_channels": 1.5}, "tutorial_cnn: in_channels must be a positive int; got 1.5"),
    ({"input_size": 0}, "tutorial_cnn: input_size must be a positive int; got 0"),
])
def test_tutorial_cnn_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=exactly(message)):
        tutorial_cnn(**kwargs)


# --------------------------------------------------------------------------------------------------- lenet5

def test_lenet5_architecture_and_parameter_count():
    model = lenet5(seed=0)
    assert model.num_parameters() == 61_706
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
        "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert model[0].weight.shape == (6, 1, 5, 5) and model[0].padding == (2, 2)
    assert model[3].weight.shape == (16, 6, 5, 5) and model[3].padding == (0, 0)
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(400, 120), (120, 84),
                                                                                           (84, 10)]
    assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert lenet5(num_classes=3, in_channels=3, seed=0)(np.zeros((1, 3, 28, 28), np.float32)).shape == (1, 3)


# ----------------------------------------------------------------------------------------- hyperparameters

BOUNDARIES = [
    ("filters", 1), ("filters", 64), ("filter_size", 3), ("filter_size", 5), ("filter_size", 7),
    ("pool_size", 1), ("pool_size", 4), ("conv_layers", 1), ("conv_layers", 2),
    ("learning_rate", 1e-4), ("learning_rate", 1.0), ("epochs", 1), ("epochs", 20),
    ("batch_size", 1), ("batch_size", 4096),
]


@pytest.mark.parametrize("name, value", BOUNDARIES)
def test_validate_hyperparameters_accepts_every_boundary_value(name, value):
    checked = validate_hyperparameters(**{name: value})
    assert checked[name] == value and type(checked[name]) is HYPERPARAMETERS[name].type


BAD_VALUES = [
    ("filters", 0, "filters must be an int between 1 and 64; got 0"),
    ("filters", 65, "filters must be an int between 1 and 64; got 65"),
    ("filters", 3.5, "filters must be an int between 1 and 64; got 3.5"),
    ("filters", True, "filters must be an int between 1 and 64; got True"),
    ("filters", "many", "filters must be an int between 1 and 64; got 'many'"),
    ("filter_size", 4, "filter_size must be an odd int between 3 and 7; got 4"),
    ("filter_size", 1, "filter_size must be an odd int between 3 and 7; got 1"),
    ("filter_size", 9, "filter_size must be an odd int between 3 and 7; got 9"),
    ("pool_size", 0, "pool_size must be an int between 1 and 4; got 0"),
    ("pool_size", 5, "pool_size must be an int between 1 and 4; got 5"),
    ("conv_layers", 0, "conv_layers must be 1 or 2; got 0"),
    ("conv_layers", 3, "conv_layers must be 1 or 2; got 3"),
    ("learning_rate", 0, "learning_rate must be a number between 0.0001 and 1; got 0"),
    ("learning_rate", 5e-5, "learning_rate must be a number between 0.0001 and 1; got 5e-05"),
    ("learning_rate", 1.5, "learning_rate must be a number between 0.0001 and 1; got 1.5"),
    ("learning_rate", math.nan, "learning_rate must be a number between 0.0001 and 1; got nan"),
    ("learning_rate", math.inf, "learning_rate must be a number between 0.0001 and 1; got inf"),
    ("learning_rate", "fast", "learning_rate must be a number between 0.0001 and 1; got 'fast'"),
    ("epochs", 0, "epochs must be an int between 1 and 20; got 0"),
    ("epochs", 21, "epochs must be an int between 1 and 20; got 21"),
    ("batch_size", 0, "batch_size must be an int between 1 and 4096; got 0"),
    ("batch_size", 4097, "batch_size must be an int between 1 and 4096; got 4097"),
    ("batch_size", [64], "batch_size must be an int between 1 and 4096; got [64]"),
]


@pytest.mark.parametrize("name, value, message", BAD_VALUES)
def test_validate_hyperparameters_rejects_each_bad_value_with_the_exact_message(name, value, message):
    with pytest.raises(ValueError, match=exactly(message)):
        validate_hyperparameters(**{name: value})


def test_validate_hyperparameters_normalises_and_fills_defaults():
    assert validate_hyperparameters() == {name: spec.default for name, spec in HYPERPARAMETERS.items()}
    checked = validate_hyperparameters(filters="16", filter_size=5.0, learning_rate="1e-3", epochs=np.int64(3),
                                       batch_size=None)
    assert checked["filters"] == 16 and type(checked["filters"]) is int
    assert checked["filter_size"] == 5 and type(checked["filter_size"]) is int
    assert checked["learning_rate"] == 1e-3 and type(checked["learning_rate"]) is float
    assert checked["epochs"] == 3 and type(checked["epochs"]) is int
    assert checked["batch_size"] == HYPERPARAMETERS["batch_size"].default
    assert list(checked) == list(HYPERPARAMETERS)


def test_validate_hyperparameters_requires_the_pooled_maps_to_fit():
    assert validate_hyperparameters(input_size=8, pool_size=2, conv_layers=2)["pool_size"] == 2  # 8 -> 4 -> 2
    assert validate_hyperparameters(input_size=28, pool_size=4, conv_layers=2)["pool_size"] == 4  # 28 -> 7 -> 1
    with pytest.raises(ValueError, match=exactly("pool_size 4 with 2 conv layers shrinks the 8x8 input to 0x0; "
                                                 "use a smaller pool_size or fewer layers")):
        validate_hyperparameters(input_size=8, pool_size=4, conv_layers=2)
    with pytest.raises(ValueError, match=exactly("pool_size 3 with 1 conv layer shrinks the 2x2 input to 0x0; "
                                                 "use a smaller pool_size or fewer layers")):
        validate_hyperparameters(input_size=2, pool_size=3, conv_layers=1)


def test_validate_hyperparameters_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'; expected one of filters, filter_size"):
        validate_hyperparameters(lr=0.1)


def test_hyperparameter_table_is_consistent_and_json_ready():
    assert set(HYPERPARAMETERS) == {"filters", "filter_size", "pool_size", "conv_layers", "learning_rate", "epochs",
                                    "batch_size"}
    for name, spec in HYPERPARAMETERS.items():
        assert spec.name == name
        assert spec.validate(spec.default) == spec.default
        assert spec.minimum <= spec.default <= spec.maximum
        for choice in spec.choices or ():
            assert spec.validate(choice) == choice
    described = json.loads(json.dumps([spec.as_dict() for spec in HYPERPARAMETERS.values()]))
    assert described[1] == {"name": "filter_size", "type": "int", "min": 3, "max": 7, "choices": [3, 5, 7],
                            "default": 3, "odd": True, "rule": "an odd int between 3 and 7",
                            "help": HYPERPARAMETERS["filter_size"].help}
