"""fastcnn.viz: the array functions exactly on hand-made inputs, inspection that changes nothing, saliency against
finite differences, and every plot drawn from a small model trained on scikit-learn's digits."""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import fastcnn
from fastcnn import nn
from fastcnn import reference as R
from fastcnn import viz
from fastcnn.models import tutorial_cnn
from fastcnn.optim import Adam

# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", exc_type=ImportError)
    return fastcnn.datasets.load_digits()


@pytest.fixture(scope="module")
def trained(digits):
    """tutorial_cnn(4 filters, 2 stages) on the 8x8 digits, 3 epochs of a manual Adam loop; left in train mode."""
    (x, y), (x_test, y_test) = digits
    model = tutorial_cnn(filters=4, pool_size=2, conv_layers=2, input_size=8, seed=0)
    optimizer, criterion = Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    history = {"loss": [], "accuracy": [], "lr": [], "val_loss": [], "val_accuracy": []}
    threads = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)  # batches this small gain nothing from threads, and lose a lot on a busy machine
    try:
        for _ in range(3):
            losses, hits = [], 0
            for batch in np.array_split(rng.permutation(len(x)), len(x) // 64):
                logits = model(x[batch])
                losses.append(criterion(logits, y[batch]) * len(batch))
                hits += int(np.sum(logits.argmax(axis=1) == y[batch]))
                model.backward(criterion.backward(), input_grad=False)
                optimizer.step()
                optimizer.zero_grad()
            with fastcnn.no_grad():
                val_logits = model(x_test)
            history["loss"].append(sum(losses) / len(x))
            history["accuracy"].append(hits / len(x))
            history["lr"].append(1e-2)
            history["val_loss"].append(criterion(val_logits, y_test))
            history["val_accuracy"].append(float(np.mean(val_logits.argmax(axis=1) == y_test)))
    finally:
        fastcnn.set_num_threads(threads)
    assert history["val_accuracy"][-1] > 0.8, history  # it learned something worth drawing
    return model, history


# ------------------------------------------------------------------------------------------------ to_uint8


def test_to_uint8_maps_linearly_and_rounds_half_up():
    np.testing.assert_array_equal(viz.to_uint8([-1.0, 0.0, 1.0]), np.array([0, 128, 255], np.uint8))
    np.testing.assert_array_equal(viz.to_uint8([[0.0, 0.5], [2.0, -3.0]], vmin=0.0, vmax=1.0),
                                  np.array([[0, 128], [255, 0]], np.uint8))
    np.testing.assert_array_equal(viz.to_uint8(np.full((2, 2), 7.0)), np.zeros((2, 2), np.uint8))
    assert viz.to_uint8(np.arange(4)).dtype == np.uint8


def test_to_uint8_rejects_bad_input():
    with pytest.raises(ValueError, match="to_uint8: array holds NaN or infinite values"):
        viz.to_uint8([0.0, np.nan])
    with pytest.raises(ValueError, match="to_uint8: vmin and vmax must be finite with vmin <= vmax"):
        viz.to_uint8([0.0, 1.0], vmin=1.0, vmax=0.0)
    with pytest.raises(TypeError, match="to_uint8: array must hold numbers"):
        viz.to_uint8(np.array(["a"]))


# -------------------------------------------------------------------------------------------- filters_grid


def test_filters_grid_lays_out_single_channel_kernels_on_a_shared_symmetric_scale():
    weight = np.array([[[[2.0, 0.0], [0.0, -2.0]]], [[[1.0, 1.0], [1.0, 1.0]]],
                       [[[-1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.5], [-0.5, 0.0]]]])  # (4, 1, 2, 2)
    image, vmin, vmax = viz.filters_grid(weight, padding=1)
    assert (vmin, vmax) == (-2.0, 2.0)
    # w -> floor(255 * (w + 2) / 4 + 0.5): 2 -> 255, 1 -> 191, 0.5 -> 159, 0 -> 128, -0.5 -> 96, -1 -> 64, -2 -> 0
    expected = np.array([
        [255, 128, 255, 191, 191],
        [128, 0, 255, 191, 191],
        [255, 255, 255, 255, 255],
        [64, 128, 255, 128, 159],
        [128, 128, 255, 96, 128],
    ], np.uint8)
    np.testing.assert_array_equal(image, expected)
    scaled = viz.filters_grid(weight, padding=0, scale=2).image
    np.testing.assert_array_equal(scaled, np.kron(expected[np.ix_([0, 1, 3, 4], [0, 1, 3, 4])],
                                                  np.ones((2, 2), np.uint8)))
    one_row = viz.filters_grid(weight, padding=1, columns=4).image
    assert one_row.shape == (2, 11)
    np.testing.assert_array_equal(one_row[:, 3:5], expected[:2, 3:5])


def test_filters_grid_pairs_rgb_and_zero_layouts():
    pairs = np.array([[[[1.0]], [[-1.0]]], [[[0.5]], [[0.0]]], [[[0.0]], [[-0.25]]]])  # (3, 2, 1, 1)
    grid = viz.filters_grid(pairs, padding=1)
    np.testing.assert_array_equal(grid.image, np.array([[255, 255, 0], [255, 255, 255], [191, 255, 128],
                                                        [255, 255, 255], [128, 255, 96]], np.uint8))
    rgb = np.zeros((2, 3, 1, 2))
    rgb[0, :, 0, 0] = [4.0, 0.0, -4.0]
    rgb[1, 1, 0, 1] = 2.0
    image, vmin, vmax = viz.filters_grid(rgb, padding=1)
    assert image.shape == (1, 5, 3) and (vmin, vmax) == (-4.0, 4.0)
    np.testing.assert_array_equal(image[0, 0], [255, 128, 0])
    np.testing.assert_array_equal(image[0, 2], [255, 255, 255])  # the gap
    np.testing.assert_array_equal(image[0, 4], [128, 191, 128])
    zeros = viz.filters_grid(np.zeros((1, 1, 2, 2)))
    assert (zeros.vmin, zeros.vmax) == (-1.0, 1.0) and np.all(zeros.image == 128)


def test_filters_grid_takes_models_layers_and_parameters():
    model = tutorial_cnn(filters=3, conv_layers=2, input_size=8, seed=0)
    first = viz.filters_grid(model[0].weight.data).image
    for source, layer in ((model, None), (model, 0), (model, "0"), (model, model[0]), (model[0], None),
                          (model[0].weight, None)):
        np.testing.assert_array_equal(viz.filters_grid(source, layer).image, first)
    second = viz.filters_grid(model, 3).image  # (6, 3, 3, 3): C_in == 3 shows RGB tiles
    assert second.shape == (2 * 3 + 1, 3 * 3 + 2, 3)
    with pytest.raises(ValueError, match=r"filters_grid: layer '1' is a ReLU, not a Conv2d"):
        viz.filters_grid(model, 1)
    with pytest.raises(ValueError, match="filters_grid: layer index 11 is out of range for a model of 10 layers"):
        viz.filters_grid(model, 11)
    with pytest.raises(ValueError, match=r"filters_grid: expected a weight of shape \(C_out, C_in, kH, kW\)"):
        viz.filters_grid(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="filters_grid: expected a weight array"):
        viz.filters_grid("conv")
    with pytest.raises(ValueError, match="filters_grid: the model has no Conv2d layer"):
        viz.filters_grid(nn.Sequential(nn.Flatten()))


# ----------------------------------------------------------------------------------------------- maps_grid


def test_maps_grid_tiles_row_by_row_with_per_map_or_shared_scale():
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    per_map = viz.maps_grid(maps, columns=2)
    expected = np.array([
        [0, 85, 255, 0, 0],
        [170, 255, 255, 0, 0],
        [255, 255, 255, 255, 255],
        [0, 128, 255, 255, 255],
        [128, 255, 255, 255, 255],
    ], np.uint8)
    np.testing.assert_array_equal(per_map, expected)
    shared = viz.maps_grid(maps, columns=3, padding=0, normalize="shared")  # -1 -> 0, 5 -> 255
    np.testing.assert_array_equal(shared, np.array([[43, 85, 255, 255, 0, 43], [128, 170, 255, 255, 43, 85]],
                                                   np.uint8))
    assert viz.maps_grid(np.zeros((5, 3, 4))).shape == (2 * 3 + 1, 3 * 4 + 2)  # default 3 columns
    with pytest.raises(ValueError, match="maps_grid: normalize must be 'per_map' or 'shared'; got 'global'"):
        viz.maps_grid(maps, normalize="global")
    with pytest.raises(ValueError, match=r"maps_grid: expected maps of shape \(C, h, w\) or \(h, w\)"):
        viz.maps_grid(np.zeros((1, 2, 3, 4)))


# ---------------------------------------------------------------------------------------- confusion_matrix


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    counts = viz.confusion_matrix([0, 0, 1, 2, 2, 2, 1], [0, 1, 1, 2, 0, 2, 1], 4)
    np.testing.assert_array_equal(counts, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(viz.confusion_matrix([], [], 2), np.zeros((2, 2)))
    np.testing.assert_array_equal(viz.confusion_matrix(np.array([1.0]), np.array([0]), 2), [[0, 0], [1, 0]])


@pytest.mark.parametrize("y_true, y_pred, classes, error, message", [
    ([0, 3], [0, 1], 3, ValueError, r"y_true must hold labels in \[0, 3\) for 3 classes; got 3"),
    ([0, 1], [0, -1], 3, ValueError, r"y_pred must hold labels in \[0, 3\) for 3 classes; got -1"),
    ([0, 1], [0], 3, ValueError, "y_pred holds 1 labels for 2 images"),
    ([0.5], [0], 3, ValueError, "y_true must be a 1-D array of integer class labels"),
    ([[0]], [[0]], 3, ValueError, "y_true must be a 1-D array"),
    ([0], [0], 0, ValueError, "num_classes must be a positive int; got 0"),
])
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, classes, error, message):
    with pytest.raises(error, match=f"confusion_matrix: {message}"):
        viz.confusion_matrix(y_true, y_pred, classes)


# ------------------------------------------------------------------------------------------ history_arrays


def test_history_arrays_from_a_dict_and_a_history_object():
    curves = viz.history_arrays({"loss": [1.0, 0.5], "val_loss": [1.5, None], "lr": np.array([0.1, 0.05])})
    assert curves["epoch"] == [1, 2] and curves["loss"] == [1.0, 0.5] and curves["lr"] == [0.1, 0.05]
    assert curves["val_loss"][0] == 1.5 and np.isnan(curves["val_loss"][1])
    resumed = types.SimpleNamespace(history={"loss": [0.3, 0.2]}, epoch=[4, 5])
    assert viz.history_arrays(resumed) == {"epoch": [5, 6], "loss": [0.3, 0.2]}
    assert viz.history_arrays({}) == {"epoch": []}
    with pytest.raises(TypeError, match="history_arrays: expected a History or a dict"):
        viz.history_arrays([0.1, 0.2])
    with pytest.raises(ValueError, match=r"history_arrays: history\['loss'\] must hold numbers"):
        viz.history_arrays({"loss": ["low"]})


# ---------------------------------------------------------------------------------- feature and pooled maps


def small_model(seed=0):
    return tutorial_cnn(filters=3, pool_size=2, conv_layers=2, input_size=8, seed=seed)


def test_feature_maps_equal_running_the_first_layers_by_hand(rng):
    model = small_model()
    image = rng.random((1, 8, 8)).astype(np.float32)
    conv = model[0]
    by_hand = R.conv2d(image[None].astype(np.float64), conv.weight.data.astype(np.float64),
                       conv.bias.data.astype(np.float64), padding="same")[0]
    np.testing.assert_allclose(viz.feature_maps(model, image), by_hand, rtol=1e-5, atol=1e-6)
    relu = viz.feature_maps(model, image[0], layer=1)  # an (H, W) image is one channel
    np.testing.assert_allclose(relu, np.maximum(by_hand, 0), rtol=1e-5, atol=1e-6)
    for layer in ("1", -9, model[1]):
        np.testing.assert_array_equal(viz.feature_maps(model, image, layer=layer), relu)
    second = model[3]
    pooled = R.max_pool2d(np.maximum(by_hand, 0)[None], 2)
    by_hand_2 = R.conv2d(pooled, second.weight.data.astype(np.float64), second.bias.data.astype(np.float64),
                         padding="same")[0]
    maps = viz.feature_maps(model, image, layer=3)
    assert maps.shape == (6, 4, 4) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, by_hand_2, rtol=1e-4, atol=1e-5)


def test_feature_maps_address_layers_inside_nested_sequentials(rng):
    inner = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, seed=0), nn.Tanh())
    model = nn.Sequential(inner, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3, seed=0))
    image = rng.standard_normal((1, 4, 4)).astype(np.float32)
    with fastcnn.no_grad():
        expected = inner(image[None])[0]
    np.testing.assert_array_equal(viz.feature_maps(model, image, layer="0.1"), expected)
    np.testing.assert_array_equal(viz.feature_maps(model, image, layer=inner[1]), expected)
    before, after = viz.pooled_maps(model, image, layer="0.1")  # the pool follows the container
    np.testing.assert_array_equal(before, expected)
    np.testing.assert_array_equal(after, R.max_pool2d(expected[None], 2)[0])


def test_pooled_maps_after_is_the_max_pool_of_before(rng):
    model = tutorial_cnn(filters=3, pool_size=3, conv_layers=1, input_size=8, seed=0)
    image = rng.random((1, 8, 8)).astype(np.float32)
    before, after = viz.pooled_maps(model, image)  # default: the first pooling layer
    np.testing.assert_array_equal(before, viz.feature_maps(model, image, layer=1))
    assert before.shape == (3, 8, 8) and after.shape == (3, 2, 2)
    np.testing.assert_array_equal(after, R.max_pool2d(before[None], 3)[0])
    for layer in (0, 1, 2, "2"):
        got = viz.pooled_maps(model, image, layer=layer)
        np.testing.assert_array_equal(got[0], before)
        np.testing.assert_array_equal(got[1], after)
    with pytest.raises(ValueError, match=r"^pooled_maps: no MaxPool2d or AvgPool2d follows layer '3' \(Flatten\)$"):
        viz.pooled_maps(model, image, layer=3)


def test_inspection_changes_nothing_and_restores_every_mode(rng):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, seed=0), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Dropout(0.5, seed=0), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4, seed=1))
    model.train()
    model[2].eval()  # mixed modes must come back as they were, module by module
    modes = [m.training for m in model.modules()]
    state = model.state_dict()
    for p in model.parameters():
        p.grad[...] = 0.25
    image = rng.random((4, 4)).astype(np.float32)
    maps = viz.feature_maps(model, image, layer=3)
    np.testing.assert_array_equal(maps, viz.feature_maps(model, image, layer=2))  # eval: Dropout is the identity
    viz.pooled_maps(model, image, layer=1)
    viz.filters_grid(model)
    assert [m.training for m in model.modules()] == modes
    for (name, before), after in zip(state.items(), model.state_dict().values()):
        np.testing.assert_array_equal(before, after, err_msg=name)  # BatchNorm's running statistics included
    assert all(np.all(p.grad == 0.25) for p in model.parameters())
    with pytest.raises(RuntimeError, match="no recorded forward pass"):
        model.backward(np.ones((1, 4), np.float32))


def test_feature_maps_errors_name_the_problem(rng):
    model = small_model()
    image = rng.random((1, 8, 8)).astype(np.float32)
    cases = [
        (dict(image=image[None]), ValueError, r"feature_maps: expected one image of shape \(C, H, W\) or \(H, W\); "
                                              r"got shape \(1, 1, 8, 8\) \(for a batch, pass one image"),
        (dict(image=np.zeros((3, 8, 8))), ValueError, "the image has 3 channel\\(s\\) but the model's first Conv2d "
                                                      "expects 1"),
        (dict(image=np.full((1, 8, 8), np.nan)), ValueError, "image holds NaN or infinite values"),
        (dict(image=image, layer=10), ValueError, "layer index 10 is out of range for a model of 10 layers"),
        (dict(image=image, layer="features.0"), ValueError, "the model has no layer named 'features.0'; its layers "
                                                            "are 0, 1, 2"),
        (dict(image=image, layer=6), ValueError, r"layer '6' \(Flatten\) outputs shape \(1, 24\), not feature maps"),
        (dict(image=image, layer=nn.ReLU()), ValueError, "the layer ReLU given is not part of the model"),
        (dict(image=image, layer=True), TypeError, "layer must be an int index, a name or a Module"),
        (dict(image=image, layer=1.0), TypeError, "layer must be an int index, a name or a Module"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            viz.feature_maps(model, **kwargs)
    with pytest.raises(TypeError, match="feature_maps: model must be a fastcnn.nn.Module"):
        viz.feature_maps(lambda x: x, image)
    residual = nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, seed=0))))
    with pytest.raises(ValueError, match="they sit in a Residual, and only layers reached through Sequential"):
        viz.feature_maps(residual, image, layer="0.block.0")


# -------------------------------------------------------------------------------------------------- saliency


def smooth_model():
    """No kinks (Tanh, average pooling), so central differences match the gradient closely."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, seed=0), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(27, 4, seed=1))


def needs_input_gradient():
    training = pytest.importorskip("fastcnn.training", exc_type=ImportError)
    if not hasattr(training, "input_gradient"):
        pytest.skip("fastcnn.training.input_gradient is not written yet")


def test_saliency_matches_finite_differences_of_the_class_score(rng):
    needs_input_gradient()
    model = smooth_model()
    image = rng.standard_normal((2, 6, 6)).astype(np.float32)

    def score(x, target):
        with fastcnn.no_grad():
            return float(np.asarray(model(x[None]), dtype=np.float64)[0, target])

    eps = 1e-2
    for target in (0, 3):
        numeric = np.zeros(image.shape)
        for index in np.ndindex(image.shape):
            up, down = image.copy(), image.copy()
            up[index] += eps
            down[index] -= eps
            numeric[index] = (score(up, target) - score(down, target)) / (2 * eps)
        expected = np.abs(numeric).max(axis=0)
        expected /= expected.max()
        saliency = viz.saliency_map(model, image, target=target)
        assert saliency.shape == (6, 6) and saliency.dtype == np.float32
        assert saliency.max() == 1.0 and saliency.min() >= 0.0
        np.testing.assert_allclose(saliency, expected, atol=2e-3)
    with fastcnn.no_grad():
        predicted = int(np.argmax(model(image[None])))
    np.testing.assert_array_equal(viz.saliency_map(model, image), viz.saliency_map(model, image, target=predicted))


def test_saliency_leaves_gradients_alone_and_checks_its_target(rng):
    needs_input_gradient()
    model = smooth_model()
    for p in model.parameters():
        p.grad[...] = 0.5
    image = rng.standard_normal((2, 6, 6)).astype(np.float32)
    viz.saliency_map(model, image)
    assert all(np.all(p.grad == 0.5) for p in model.parameters())
    assert model.training
    with pytest.raises(ValueError, match=r"saliency_map: target must be a class index in \[0, 4\); got 4"):
        viz.saliency_map(model, image, target=4)
    with pytest.raises(ValueError, match=r"saliency_map: the model cannot take input of shape \(2, 5, 5\)"):
        viz.saliency_map(model, image[:, :5, :5])


# ----------------------------------------------------------------------------------------------------- plots


@pytest.fixture(scope="module")
def image_tools():
    pytest.importorskip("matplotlib", exc_type=ImportError)
    return pytest.importorskip("PIL.Image", exc_type=ImportError)


def check_png(path, figure, image_tools):
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary file left behind
    with image_tools.open(path) as png:
        assert png.format == "PNG"
        assert png.size == tuple(round(v) for v in figure.get_size_inches() * figure.dpi)
        pixels = np.asarray(png.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "the picture is (nearly) blank"


def draw(kind, model, history, digits, path):
    (x, y), (x_test, y_test) = digits
    if kind == "filters":
        return viz.plot_filters(model, path=path)
    if kind == "filters_pairs":
        return viz.plot_filters(model, layer=3, path=path)
    if kind == "feature_maps":
        return viz.plot_feature_maps(model, x_test[0], layer=1, path=path)
    if kind == "pooled_maps":
        return viz.plot_pooled_maps(model, x_test[0], path=path)
    if kind == "history":
        return viz.plot_history(history, path=path)
    if kind == "confusion_matrix":
        return viz.plot_confusion_matrix(model, x_test, y_test, path=path)
    if kind == "saliency":
        needs_input_gradient()
        return viz.plot_saliency(model, x_test[0], path=path)
    if kind == "predictions":
        return viz.plot_predictions(model, x_test, y_test, count=12, path=path)
    raise AssertionError(kind)


# kind -> axes: a colour bar is an axes of its own
EXPECTED_AXES = {"filters": 2, "filters_pairs": 2, "feature_maps": 4, "pooled_maps": 8, "history": 3,
                 "confusion_matrix": 1, "saliency": 3, "predictions": 12}


@pytest.mark.parametrize("kind", list(EXPECTED_AXES))
def test_each_plot_draws_its_axes_and_saves_a_real_png(kind, trained, digits, image_tools, tmp_path):
    model, history = trained
    modes = [m.training for m in model.modules()]
    path = tmp_path / f"{kind}.png"
    figure = draw(kind, model, history, digits, path)
    assert len(figure.axes) == EXPECTED_AXES[kind]
    check_png(str(path), figure, image_tools)
    assert [m.training for m in model.modules()] == modes


def test_plot_filters_shows_the_grid_with_a_labelled_colour_bar(trained, image_tools):
    model, _ = trained
    figure = viz.plot_filters(model, layer="3")
    grid = viz.filters_grid(model, layer="3")
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, grid.image)
    assert grid.image.shape == (8 * 3 + 7, 4 * 3 + 3)  # one row per filter, one column per input channel
    colour_bar = figure.axes[1]
    assert colour_bar.get_ylabel() == "weight value"
    assert colour_bar.get_ylim() == pytest.approx((grid.vmin, grid.vmax))


def test_plot_confusion_matrix_annotates_every_count(trained, digits, image_tools):
    model, _ = trained
    _, (x_test, y_test) = digits
    names = [f"digit {d}" for d in range(10)]
    figure = viz.plot_confusion_matrix(model, x_test, y_test, class_names=names)
    with fastcnn.no_grad():
        predicted = np.argmax(model.eval()(x_test), axis=1)
    model.train()
    counts = viz.confusion_matrix(y_test, predicted, 10)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.texts] == [str(c) for c in counts.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"


def test_plot_predictions_marks_mistakes_in_red(trained, digits, image_tools):
    from matplotlib.colors import to_rgba

    model, _ = trained
    _, (x_test, y_test) = digits
    x = x_test[:6]
    with fastcnn.no_grad():
        predicted = np.argmax(model.eval()(x), axis=1)
    model.train()
    labels = predicted.copy()
    labels[[1, 4]] = (labels[[1, 4]] + 1) % 10  # two deliberate mistakes
    figure = viz.plot_predictions(model, x, labels, count=16)
    assert len(figure.axes) == 6  # count is capped by the images given
    for index, ax in enumerate(figure.axes):
        wrong = index in (1, 4)
        assert ax.get_title() == f"pred {predicted[index]}\ntrue {labels[index]}"
        assert to_rgba(ax.title.get_color()) == to_rgba("tab:red" if wrong else "black")
        assert (to_rgba(ax.spines["left"].get_edgecolor()) == to_rgba("tab:red")) == wrong
    assert figure.get_suptitle() == "4 of 6 correct"


def test_plots_reject_bad_input(trained, digits, image_tools, tmp_path):
    model, _ = trained
    _, (x_test, y_test) = digits
    with pytest.raises(ValueError, match=r"plot_confusion_matrix: expected x of shape \(N, C, H, W\) with N >= 1"):
        viz.plot_confusion_matrix(model, x_test[:0], y_test[:0])
    with pytest.raises(ValueError, match="plot_predictions: y holds 3 labels for 359 images"):
        viz.plot_predictions(model, x_test, y_test[:3])
    with pytest.raises(ValueError, match="plot_predictions: class_names has 2 names but the model predicts 10"):
        viz.plot_predictions(model, x_test, y_test, class_names=["a", "b"])
    with pytest.raises(TypeError, match="plot_confusion_matrix: class_names must be a list of names"):
        viz.plot_confusion_matrix(model, x_test, y_test, class_names="digits")
    with pytest.raises(ValueError, match="plot_predictions: count must be a positive int; got 0"):
        viz.plot_predictions(model, x_test, y_test, count=0)
    with pytest.raises(ValueError, match="plot_history: the history holds no epochs"):
        viz.plot_history({"loss": []})
    with pytest.raises(ValueError, match="plot_feature_maps: layer index 12 is out of range"):
        viz.plot_feature_maps(model, x_test[0], layer=12)
    with pytest.raises(ValueError, match=r"plot_pooled_maps: the image has 3 channel\(s\)"):
        viz.plot_pooled_maps(model, np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="plot_filters: padding must be an int >= 0; got -1"):
        viz.plot_filters(model, padding=-1)
    with pytest.raises(ValueError, match=r"plot_saliency: expected one image of shape \(C, H, W\)"):
        viz.plot_saliency(model, x_test[:2])
    with pytest.raises(FileNotFoundError):
        viz.plot_history({"loss": [1.0]}, path=tmp_path / "missing" / "curves.png")
    assert os.listdir(tmp_path) == []


def test_plot_history_without_validation_or_learning_rate(image_tools):
    figure = viz.plot_history({"loss": [0.9, 0.5, 0.4], "accuracy": [0.6, 0.8, 0.9]})
    loss, accuracy, lr = figure.axes
    assert [line.get_label() for line in loss.lines] == ["training"]
    np.testing.assert_array_equal(loss.lines[0].get_xdata(), [1, 2, 3])
    assert [t.get_text() for t in lr.texts] == ["not recorded"]
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy", "learning rate"]


def test_importing_viz_and_models_loads_neither_matplotlib_nor_training():
    code = ("import sys, fastcnn.viz, fastcnn.models; "
            "print([m for m in ('matplotlib', 'fastcnn.training') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
