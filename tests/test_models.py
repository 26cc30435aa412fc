import numpy as np
import pytest

from keras_lottery import models


def test_lenet_300_100_has_the_papers_shape():
    model = models.lenet_300_100((28, 28, 1))
    assert [l.units for l in model.layers if hasattr(l, "units")] == [300, 100, 10]
    assert model.count_params() == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert models.lenet_300_100((40,)).output_shape == (None, 10)


@pytest.mark.parametrize("depth,convs", [(2, 2), (4, 4), (6, 6)])
def test_conv_nets_have_their_depth_and_run_on_fashion_mnist_shape(depth, convs):
    model = models.conv_net(depth, input_shape=(28, 28, 1))
    assert sum(type(l).__name__ == "Conv2D" for l in model.layers) == convs
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)


def test_same_seed_same_initial_weights():
    a = models.lenet_300_100((40,), seed=3).get_weights()
    b = models.lenet_300_100((40,), seed=3).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_model_requests_are_refused():
    with pytest.raises(ValueError, match="depth"):
        models.conv_net(3)
    with pytest.raises(ValueError, match="image"):
        models.conv_net(2, input_shape=(40,))
    with pytest.raises(ValueError, match="Unknown model"):
        models.build("alexnet", (28, 28, 1))


def test_papers_optimizers_and_compile_helper():
    sgd = models.make_optimizer("sgd", 0.1)
    assert type(sgd).__name__ == "SGD" and float(sgd.momentum) == 0.9
    assert type(models.make_optimizer("adam", 1e-3)).__name__ == "Adam"
    with pytest.raises(ValueError, match="adam"):
        models.make_optimizer("rmsprop", 0.1)
    model = models.compile_classifier(models.lenet_300_100((40,)), "adam", 1.2e-3)
    assert model.loss.get_config()["from_logits"] is True
    history = model.fit(np.zeros((4, 40), "float32"), np.zeros(4, "int64"), epochs=1, verbose=0)
    assert "accuracy" in history.history
