"""The model zoo, a representative subset of bench/zoo.py: keras.applications
and hand-built models of both flavours (tf_keras, Keras 3) through one IMP
round at 50% with every pruned weight checked after every batch, and a sparse
TFLite export whose logits match Keras. Marked `zoo` (pytest -m zoo runs only
these, -m "not zoo" skips them)."""

import logging

import numpy as np
import pytest

import keras_lottery as kl

from conftest import load_script


pytestmark = pytest.mark.zoo


@pytest.fixture(scope="module")
def zoo():
    return load_script("bench/zoo.py", "zoo_bench")


def _keras3():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 is not installed")
    return keras3


def _check_works(row, tflite=True):
    assert row["status"] == "works", row.get("message")
    # 1 round at 50%, layer-wise: each tensor keeps round(size / 2) weights
    assert row["prunable"] == pytest.approx(0.5, abs=1e-3)
    assert row["guard_checks"] == row["steps"]  # every batch of both rounds checked
    assert not row["dead"]
    # biases, normalization and dense layers are not pruned: all > prunable
    assert row["prunable"] < row["all"] < 1.0
    if tflite:
        assert row["tflite_diff"] <= 1e-4


def test_mobilenet_v2_depthwise_kernels_pruned_and_tflite_matches(zoo):
    row = zoo.run_case("MobileNetV2", zoo.application("MobileNetV2", alpha=0.35), zoo.SHAPE,
                       "tf_keras")
    _check_works(row)
    depthwise = {n: v for n, v in row["by_layer"].items() if n.endswith("depthwise_kernel")}
    assert len(depthwise) == 17 and all(v == pytest.approx(0.5, abs=0.02) for v in depthwise.values())


@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
def test_attention_block_prunes_query_key_value_output(zoo, flavour):
    if flavour == "keras3":
        _keras3()
    row = zoo.run_case("attention block", zoo.attention_block, (8, 16), flavour)
    _check_works(row)
    for part in ("query", "key", "value", "attention_output"):
        assert row["by_layer"][f"mha/{part}/kernel"] == 0.5
    assert row["by_layer"]["head/kernel"] == 0.5


def test_keras3_mobilenet_v3_small_converts_and_prunes(zoo):
    _keras3()  # hard_silu / hard_sigmoid activations and `x + 3.0` operations
    row = zoo.run_case("MobileNetV3Small", zoo.application("MobileNetV3Small"), zoo.SHAPE,
                       "keras3", export=False)
    _check_works(row, tflite=False)
    # its 11 converted DepthwiseConv2D kernels are pruned, not left dense
    depthwise = [v for n, v in row["by_layer"].items() if n.endswith("depthwise_kernel")]
    assert len(depthwise) == 11 and all(v == pytest.approx(0.5, abs=0.02) for v in depthwise)


def test_convnext_like_global_scope_keeps_every_layer_alive(zoo, caplog):
    def small(flavour):
        return zoo.convnext_like(flavour, stages=(1, 1, 1), width=8)

    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        row = zoo.run_case("ConvNeXt-like", small, zoo.SHAPE, "tf_keras", scope="global")
    assert row["status"] == "works" and row["guard_checks"] == row["steps"]
    assert row["prunable"] == pytest.approx(0.5, abs=1e-3)
    assert row["tflite_diff"] <= 1e-4
    held = [r.getMessage() for r in caplog.records if "per-layer floor" in r.getMessage()]
    assert len(held) == 1 and "s2b0_pw2/kernel" in held[0]
    assert not row["dead"]
    assert row["by_layer"]["s2b0_pw2/kernel"] == pytest.approx(0.05, abs=1e-3)
    # the case is a real one: a bare global threshold empties those kernels
    model = small("tf_keras")
    wrapped = kl.IMP(rounds=1, prune_rate=0.5).wrap(model)
    entries = kl.masks.prunable_weights(wrapped)
    bare = kl.compute_masks({w.name: w.weight.numpy() for w in entries},
                            {w.name: np.ones(w.weight.shape) for w in entries}, 1, 0.5,
                            scope="global", layer_floor=0.0)
    assert bare["s2b0_pw2/kernel"].sum() <= 1

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_lottery"):
        erk = zoo.run_case("ConvNeXt-like", small, zoo.SHAPE, "tf_keras", scope="erk", export=False)
    assert erk["status"] == "works" and not erk["dead"]
    assert erk["prunable"] == pytest.approx(0.5, abs=1e-3)
    assert erk["min_layer"] > 0.05
    assert not [r for r in caplog.records if "per-layer floor" in r.getMessage()]


def test_keras3_lambda_is_refused_before_training(zoo):
    _keras3()
    row = zoo.run_case("Lambda", zoo.lambda_model, zoo.SHAPE, "keras3")
    assert row["status"] == "refused"
    assert "'twice' (Lambda)" in row["message"] and "not a built-in layer" in row["message"]
