"""The Fashion-MNIST examples run end to end on a few hundred examples."""


import pytest
from PIL import Image

from keras_lottery import data, report

from conftest import load_script



def _load(name):
    return load_script(f"examples/{name}.py")


def _need_fashion_mnist():
    try:
        data._find_fashion_dir(None)
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not installed here: {err}")


def test_lenet_example_tiny_run(tmp_path):
    _need_fashion_mnist()
    out = tmp_path / "lenet"
    summary = _load("lenet_fashion_mnist").main([
        "--train-limit", "360", "--rounds", "1", "--epochs-per-round", "1", "--seeds", "1",
        "--eval-every", "2", "--out", str(out)])
    assert list(summary) == ["ticket", "reinit", "random"]
    ticket = summary["ticket"]
    assert [row["round"] for row in ticket] == [0, 1]
    # hidden layers at 20%, the output layer at 10%: the weighted overall fraction
    by_layer = report.read_json(out / "seed_0" / "ticket" / "imp_report.json")["history"][1]["weights_remaining_by_layer"]
    assert by_layer["fc1/kernel"] == pytest.approx(0.8, abs=1e-3)
    assert by_layer["output/kernel"] == pytest.approx(0.9, abs=1e-2)
    assert report.read_json(out / "seed_0" / "reinit" / "imp_report.json")["config"]["control"] == "reinit"
    assert Image.open(out / "tickets.png").text["Series"] == "ticket,reinit,random"
    assert (out / "rounds.csv").stat().st_size > 0


def test_conv_example_layer_rates_and_tiny_run(tmp_path):
    module = _load("conv_fashion_mnist")
    assert module.layer_rates(4) == {"conv1": 0.15, "conv2": 0.15, "conv3": 0.15, "conv4": 0.15,
                                     "output": 0.1}
    _need_fashion_mnist()
    out = tmp_path / "conv2"
    summary = module.main(["--depth", "2", "--train-limit", "150", "--rounds", "1",
                           "--epochs-per-round", "1", "--seeds", "1", "--controls", "none",
                           "--batch-size", "30", "--eval-every", "2", "--out", str(out)])
    assert list(summary) == ["ticket"]
    layers = report.read_json(out / "seed_0" / "ticket" / "imp_report.json")["history"][1]["weights_remaining_by_layer"]
    assert layers["conv1/kernel"] == pytest.approx(0.85, abs=1e-2)
    assert layers["fc1/kernel"] == pytest.approx(0.8, abs=1e-3)
    assert layers["output/kernel"] == pytest.approx(0.9, abs=1e-2)
