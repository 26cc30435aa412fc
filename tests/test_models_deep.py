"""ResNet-20 and VGG-16 (CIFAR-style, batch norm): shapes, sizes, wrapping, training, CLI defaults."""

import numpy as np
import pytest

from keras_lottery import masks as masks_lib
from keras_lottery import models
from keras_lottery._keras import keras
from keras_lottery.cli import build_parser
from keras_lottery.guard import SparsityGuard
from keras_lottery.schedule import IMPSchedule
from keras_lottery.wrap import pruned_layers, wrap_model


def _kernels(model):
    return [layer for layer in model.layers if hasattr(layer, "kernel")]


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_resnet20_structure(shape):
    model = models.build("resnet20", shape, num_classes=10, seed=0)
    assert model.output_shape == (None, 10)
    kernels = _kernels(model)
    # 19 3x3 convolutions + 2 projection shortcuts + the output layer
    assert len(kernels) == 22
    assert sum(1 for k in kernels if k.kernel.shape[:2] == (1, 1)) == 2
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 21 and all(bn.momentum == 0.9 for bn in bns)
    n = sum(int(np.prod(k.kernel.shape)) for k in kernels)
    assert 265_000 < n < 275_000  # ~0.27M prunable weights, as in the papers
    assert all(not getattr(k, "use_bias", True) for k in kernels if isinstance(k, keras.layers.Conv2D))


@pytest.mark.parametrize("shape, final", [((28, 28, 1), 1), ((32, 32, 3), 2)])
def test_vgg16_structure(shape, final):
    model = models.vgg16(shape, width_multiplier=0.125, seed=0)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 13 and [c.filters for c in convs][-1] == 64
    assert model.get_layer("conv13_conv").output_shape[1] == final
    assert model.output_shape == (None, 10)
    if shape == (32, 32, 3):  # the full-size network, once
        full = models.build("vgg16", shape)
        n = sum(int(np.prod(k.kernel.shape)) for k in _kernels(full))
        assert 14_600_000 < n < 14_800_000


def test_same_seed_same_weights_and_errors():
    a = models.resnet20((28, 28, 1), seed=3, width=4)
    b = models.resnet20((28, 28, 1), seed=3, width=4)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="image inputs"):
        models.resnet20((784,))
    with pytest.raises(ValueError, match="at least 16x16"):
        models.vgg16((8, 8, 1))
    with pytest.raises(ValueError, match="width"):
        models.resnet20((28, 28, 1), width=0)
    with pytest.raises(ValueError, match="weight_decay"):
        models.vgg16((32, 32, 3), weight_decay=-1)
    reg = models.resnet20((28, 28, 1), width=4, weight_decay=1e-4)
    assert len(reg.losses) == 22


def test_wrapped_resnet_trains_with_global_masks_and_bn_untouched():
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    wrapped = wrap_model(models.resnet20((28, 28, 1), seed=0, width=4), IMPSchedule(1, 0.5))
    assert len(pruned_layers(wrapped)) == 22  # every conv and the output; BN never wrapped
    assert not any(isinstance(w.layer, keras.layers.BatchNormalization) for w in pruned_layers(wrapped))
    entries = masks_lib.prunable_weights(wrapped)
    new = masks_lib.compute_masks({w.name: w.weight.numpy() for w in entries},
                                  masks_lib.read_masks(wrapped), 1, 0.5, "global")
    masks_lib.write_masks(wrapped, new)
    masks_lib.attach_mask_constraints(wrapped)
    wrapped.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    import tensorflow_model_optimization as tfmot

    # pruned weights exactly zero after every batch (an after-fit check cannot
    # fail: UpdatePruningStep re-masks the kernels at the epoch's end)
    guard = SparsityGuard(every=1)
    history = wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0,
                          callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), guard])
    assert np.isfinite(history.history["loss"][0])
    assert guard.checks == 2 and guard.weights_checked > 0
    assert masks_lib.overall_weights_remaining(wrapped) == pytest.approx(0.5, abs=1e-3)


def test_cli_scope_default_is_global_for_deep_nets(monkeypatch):
    from keras_lottery.cli import run as run_cli

    seen = {}
    monkeypatch.setattr(run_cli, "run_seeds", lambda args: seen.update(scope=args.scope))
    for model, scope in (("resnet20", "global"), ("vgg16", "global"), ("lenet", "layerwise")):
        args = build_parser().parse_args(["run", "--model", model, "--seeds", "1"])
        assert args.scope is None
        args.func(args)
        assert seen["scope"] == scope
    args = build_parser().parse_args(["run", "--model", "resnet20", "--scope", "layerwise", "--seeds", "1"])
    args.func(args)
    assert seen["scope"] == "layerwise"  # an explicit choice is kept
