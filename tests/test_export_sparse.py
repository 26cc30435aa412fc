"""What the converted TFLite file does with a ticket's kernels, read back from the file.

Block-sparse kernels in TFLite's float block shape (4 consecutive inputs of
one output unit, Keras (4, 1)) become native sparse FULLY_CONNECTED weights;
unstructured zeros go through a DENSIFY op. `kernel_ops` and the export
report must say which, from the flatbuffer, not from what was asked for.
"""

import numpy as np
import pytest

from conftest import load_script

import keras_lottery as kl
from keras_lottery import export
from keras_lottery.models import lenet_300_100

INPUTS = 64  # a narrow LeNet-300-100: the same layers, faster to convert


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_tflite_sparse.py")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(32, INPUTS)).astype("float32")


@pytest.fixture(scope="module")
def tickets(bench):
    dense = lenet_300_100((INPUTS,), seed=0)
    return {"block": bench.pruned_copy(dense, 0.9, (4, 1)),
            "unstructured": bench.pruned_copy(dense, 0.9, None)}


@pytest.fixture(scope="module")
def converted(tickets):
    return {name: export.tflite(model, sparse=True) for name, model in tickets.items()}


def _op_names(content):
    from tensorflow.lite.python import schema_py_generated as schema_fb

    model = schema_fb.Model.GetRootAsModel(content, 0)
    names = {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
             for c in map(model.OperatorCodes, range(model.OperatorCodesLength()))]
    graph = model.Subgraphs(0)
    return [names[codes[graph.Operators(j).OpcodeIndex()]] for j in range(graph.OperatorsLength())]


def test_block_pruning_zeroes_whole_blocks_of_four_inputs(bench, tickets):
    for _, kernel in export.formats.prunable_kernels(tickets["block"]):
        n_in = kernel.shape[0] - kernel.shape[0] % 4
        blocks = kernel[:n_in].reshape(n_in // 4, 4, -1)
        all_zero, any_zero = np.all(blocks == 0, axis=1), np.any(blocks == 0, axis=1)
        assert np.array_equal(all_zero, any_zero)  # a block is zero as a whole or not at all
        assert np.mean(all_zero) == pytest.approx(0.9, abs=0.01)


def test_block_ticket_runs_native_sparse_kernels(tickets, converted):
    content = converted["block"]
    lite = export.TFLiteModel(content)
    rows = export.kernel_ops(content, tickets["block"], lite.interpreter)
    assert [r["layer"] for r in rows] == ["fc1", "fc2", "output"]
    for row in rows:
        assert row["op"] == "FULLY_CONNECTED" and row["dtype"] == "float32"
        assert row["storage"] == "sparse", row
        assert row["block"] == "1x4" and row["keras_block"] == (4, 1)
        assert row["stored_values"] == pytest.approx(0.1 * row["weights"], rel=0.05)
        # XNNPACK does not take sparse weights: TFLite's builtin sparse kernel runs them
        assert row["runs_on"] == "builtin"
    assert "DENSIFY" not in _op_names(content)


def test_unstructured_ticket_goes_through_densify(tickets, converted):
    content = converted["unstructured"]
    lite = export.TFLiteModel(content)
    rows = export.kernel_ops(content, tickets["unstructured"], lite.interpreter)
    assert [r["storage"] for r in rows] == ["densify"] * 3
    assert all(r["block"] is None for r in rows)
    assert _op_names(content).count("DENSIFY") == 3
    assert all(r["runs_on"] == "delegate" for r in rows)  # XNNPACK takes DENSIFY + dense FC


def test_sparse_tflite_logits_equal_keras(tickets, converted, x):
    for name, content in converted.items():
        lite = export.TFLiteModel(content)
        keras_logits = tickets[name].predict(x, verbose=0)
        assert np.max(np.abs(lite.predict(x) - keras_logits)) < 1e-5, name


def test_dense_model_reports_dense_kernels(x):
    dense = lenet_300_100((INPUTS,), seed=0)
    content = export.tflite(dense, allow_dense=True)
    rows = export.kernel_ops(content, dense)
    assert [(r["storage"], r["runs_on"], r["layer"]) for r in rows] == [
        ("dense", None, "fc1"), ("dense", None, "fc2"), ("dense", None, "output")]
    builtin = export.TFLiteModel(content, xnnpack=False)
    assert "XNNPACK not used" in builtin.interpreter_name
    assert [r["runs_on"] for r in export.kernel_ops(content, dense, builtin.interpreter)] == \
        ["builtin"] * 3
    assert np.max(np.abs(builtin.predict(x) - dense.predict(x, verbose=0))) < 1e-5


def test_report_has_kernels_and_latency_per_variant(tickets, x):
    y = np.zeros(len(x), dtype="int64")
    result = export.report(tickets["block"], (x, y), formats=("tflite", "tflite_sparse"),
                           latency_batches=(1, 8), repeats=3, num_threads=1)
    lite = {r["variant"]: r for r in result["tflite"]}
    sparse = lite["tflite_sparse"]
    assert [k["storage"] for k in sparse["kernels"]] == ["sparse"] * 3
    assert sparse["kernel_storage"] == {"sparse": 3, "densify": 0, "dense": 0}
    assert [k["storage"] for k in lite["tflite"]["kernels"]] == ["dense"] * 3
    for row in lite.values():
        assert set(row["latency_ms"]) == set(row["dense_latency_ms"]) == {"1", "8"}
        assert row["latency_ratio"]["8"] == pytest.approx(
            row["latency_ms"]["8"] / row["dense_latency_ms"]["8"])
        assert row["num_threads"] == 1 and row["interpreter"].startswith("ai_edge_litert")
    text = export.format_report(result)
    assert "TFLite kernels of the ticket" in text
    kernel_lines = [line for line in text.splitlines() if line.startswith("tflite_sparse ")
                    and "FULLY_CONNECTED" in line]
    assert len(kernel_lines) == 3 and all(" sparse " in line and "1x4" in line
                                          for line in kernel_lines)


def test_cli_tflite_export_says_what_each_layer_became(tickets, tmp_path, capsys):
    from keras_lottery.cli import main

    for name, expected in (("block", "native sparse 1x4 blocks, builtin kernel"),
                           ("unstructured", "DENSIFY + dense kernel, XNNPACK")):
        path = tmp_path / f"{name}.keras"
        tickets[name].save(path)
        out = tmp_path / f"{name}.tflite"
        assert main(["export", str(path), "--format", "tflite", "--sparse", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        for layer in ("fc1", "fc2", "output"):
            assert f"  {layer}: FULLY_CONNECTED float32, {expected}" in printed, printed


def test_int8_blocks_the_converter_chose_on_an_unstructured_ticket_are_refused(bench, tmp_path):
    """An unstructured ticket with 6 inputs: for int8 the converter stores fc1 in 1x16 blocks
    of its own, ragged on a 6-wide row (0.42 off the int8 dense file when written anyway, on
    ai-edge-litert 2.3). Re-pruning in blocks cannot help, so the error says what does."""
    from keras_lottery._keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    ticket = bench.pruned_copy(keras.Model(inputs, keras.layers.Dense(10, name="output")(h)), 0.9)
    sample = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    target = tmp_path / "int8.tflite"
    with pytest.raises(export.TFLiteConversionError,
                       match=r"fc1 \(filter \[64, 6\], block 1x16\).*chose these blocks itself"
                             r".*int8 without sparse=True.*sparse without int8") as error:
        export.tflite(ticket, str(target), sparse=True, int8=True, representative_data=sample)
    assert "kl.IMP(block=" not in str(error.value)
    assert not target.exists()
    # both ways out work: the float sparse file stores no ragged blocks and matches Keras
    lite = export.TFLiteModel(export.tflite(ticket, sparse=True))
    assert not any(r["ragged_block"] for r in export.kernel_ops(lite.content, ticket))
    np.testing.assert_allclose(lite.predict(sample), ticket.predict(sample, verbose=0), atol=1e-5)
    export.tflite(ticket, str(target), int8=True, representative_data=sample)
    assert target.exists()


def test_ragged_blocks_are_flagged_and_refused(bench, tmp_path):
    """786 -> 302 -> 102 -> 10: no input size is a multiple of 4, so every 1x4 block row ends
    in a partial block; on ai-edge-litert 2.3 those files were off from Keras by 0.16."""
    from keras_lottery._keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((786,))
    h = keras.layers.Dense(302, activation="relu", name="fc1")(inputs)
    h = keras.layers.Dense(102, activation="relu", name="fc2")(h)
    ragged = bench.pruned_copy(keras.Model(inputs, keras.layers.Dense(10, name="output")(h)),
                               0.9, (4, 1))
    # refused by default (nothing written), written on request
    target = tmp_path / "ragged.tflite"
    with pytest.raises(export.TFLiteConversionError, match=r"fc1 .*allow_ragged_blocks"):
        export.tflite(ragged, str(target), sparse=True)
    assert not target.exists()
    rows = export.kernel_ops(export.tflite(ragged, sparse=True, allow_ragged_blocks=True), ragged)
    assert [(r["storage"], r["block"], r["ragged_block"]) for r in rows] == [
        ("sparse", "1x4", True)] * 3
    fitting = export.kernel_ops(export.tflite(bench.pruned_copy(
        lenet_300_100((INPUTS,), seed=0), 0.9, (4, 1)), sparse=True))
    assert not any(r["ragged_block"] for r in fitting)
    text = "\n".join(export.comparison.format_kernels(
        [{"variant": "tflite_sparse", "kernels": rows}]))
    assert text.count("warning: tflite_sparse") == 3 and "fc2" in text
