"""`keras-lottery export` end to end: a tiny `keras-lottery run`, then every export path."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import small_mlp, snapshot

import keras_lottery as kl
from keras_lottery import export
from keras_lottery._keras import keras
from keras_lottery.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lenet"
    rc = main(["run", "--rounds", "1", "--prune-rate", "0.5", "--epochs-per-round", "1",
               "--num-samples", "400", "--out", os.fspath(out), "--quiet"])
    assert rc == 0
    return out


def test_run_saves_its_ticket(run_dir):
    ticket = kl.load_ticket(run_dir)
    model = kl.load_wrapped_model(os.fspath(run_dir / "wrapped_model.keras"), compile=False)
    assert ticket.weights_remaining == pytest.approx(kl.overall_weights_remaining(model))
    assert ticket.config["dataset"] == "mnist1d"


def test_export_tflite_int8_sparse_from_run(run_dir, tmp_path, capsys):
    out = tmp_path / "t.tflite"
    rc = main(["export", os.fspath(run_dir), "--format", "tflite", "--sparse", "--int8",
               "--out", os.fspath(out)])
    assert rc == 0
    assert "wrote tflite int8 sparse" in capsys.readouterr().out
    model = export.strip(kl.load_wrapped_model(os.fspath(run_dir / "wrapped_model.keras"),
                                               compile=False))
    x = np.random.default_rng(0).normal(size=(64, 40)).astype("float32")
    keras_pred = np.argmax(model(x).numpy(), 1)
    lite_pred = np.argmax(export.TFLiteModel(os.fspath(out)).predict(x), 1)
    assert np.mean(lite_pred == keras_pred) >= 0.9


def test_export_keras_and_savedmodel_from_run(run_dir, tmp_path):
    wrapped = kl.load_wrapped_model(os.fspath(run_dir / "wrapped_model.keras"), compile=False)
    masks = kl.read_masks(wrapped)
    assert main(["export", os.fspath(run_dir), "--format", "keras",
                 "--out", os.fspath(tmp_path / "ticket.keras")]) == 0
    loaded = keras.models.load_model(tmp_path / "ticket.keras", compile=False)
    for layer in loaded.layers[1:]:
        mask = masks[f"{layer.name}/kernel"]
        assert np.all(layer.kernel.numpy()[mask == 0] == 0)
    assert main(["export", os.fspath(tmp_path / "ticket.keras"), "--format", "savedmodel",
                 "--out", os.fspath(tmp_path / "sm")]) == 0
    serve = tf.saved_model.load(os.fspath(tmp_path / "sm")).signatures["serving_default"]
    x = np.random.default_rng(1).normal(size=(8, 40)).astype("float32")
    (arg,) = serve.structured_input_signature[1]
    np.testing.assert_allclose(serve(**{arg: tf.constant(x)})["output"].numpy(),
                               loaded(x).numpy(), atol=1e-6)


def test_export_all_writes_report_and_keeps_it_on_error(run_dir, tmp_path, capsys,
                                                         monkeypatch):
    out = tmp_path / "all"
    assert main(["export", os.fspath(run_dir), "--format", "all", "--out", os.fspath(out),
                 "--repeats", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "export_report.json").read_text())
    assert {r["format"] for r in report["files"]} == set(export.ALL_FORMATS)
    assert all(v["max_abs_logit_diff"] < 1e-5 for v in report["tflite"]
               if v["variant"] in ("tflite", "tflite_sparse"))
    assert "tflite_int8_sparse" in printed and "dense reference" in printed
    assert sorted(os.listdir(out)) == ["dense", "export_report.json", "ticket"]

    # the same export failing part-way leaves the first one as it was, and no temporary folder
    before = snapshot(out)
    calls = []
    real_convert = export.lite.convert

    def fail_on_the_third(*a, **kw):  # ticket tflite, ticket sparse, then this one
        calls.append(1)
        if len(calls) == 3:
            raise export.TFLiteConversionError("injected converter failure")
        return real_convert(*a, **kw)

    monkeypatch.setattr(export.lite, "convert", fail_on_the_third)
    assert main(["export", os.fspath(run_dir), "--format", "all", "--out", os.fspath(out),
                 "--repeats", "1"]) == 2
    assert "injected converter failure" in capsys.readouterr().err
    assert snapshot(out) == before
    assert os.listdir(tmp_path) == ["all"]


def test_errors_are_clear_and_leave_nothing(tmp_path, capsys):
    missing = os.fspath(tmp_path / "nope")
    assert main(["export", missing, "--format", "keras", "--out", os.fspath(tmp_path / "a.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err

    dense_path = tmp_path / "dense.keras"
    small_mlp(seed=0).save(dense_path)
    out = tmp_path / "out" / "d.tflite"
    assert main(["export", os.fspath(dense_path), "--format", "tflite", "--out", os.fspath(out)]) == 2
    assert "never wrapped or pruned" in capsys.readouterr().err
    assert main(["export", os.fspath(dense_path), "--format", "tflite", "--int8",
                 "--allow-dense", "--out", os.fspath(out)]) == 2
    assert "--int8 needs representative data" in capsys.readouterr().err
    assert main(["export", os.fspath(dense_path), "--format", "keras", "--sparse",
                 "--out", os.fspath(tmp_path / "x.keras")]) == 2
    assert "--format tflite only" in capsys.readouterr().err
    assert main(["export", os.fspath(dense_path), "--format", "h5", "--allow-dense",
                 "--out", os.fspath(tmp_path / "x.keras")]) == 2
    assert "end --out in .h5" in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "x.keras")
    # representative data of the wrong shape, into folders that do not exist yet
    import numpy as np

    np.save(tmp_path / "wrong.npy", np.zeros((8, 41), "float32"))
    deep = tmp_path / "deep" / "er" / "d.tflite"
    assert main(["export", os.fspath(dense_path), "--format", "tflite", "--int8",
                 "--allow-dense", "--representative", os.fspath(tmp_path / "wrong.npy"),
                 "--out", os.fspath(deep)]) == 2
    assert "representative_data does not fit the model's input" in capsys.readouterr().err
    # a failed export leaves no folder it made (on the old code: empty out/ and deep/er/)
    assert not (tmp_path / "out").exists() and not (tmp_path / "deep").exists()
    assert main(["export", os.fspath(dense_path), "--format", "tflite", "--allow-dense",
                 "--out", os.fspath(out)]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["d.tflite"]


def test_truncated_model_file_is_named(tmp_path, capsys):
    for ext in (".keras", ".h5"):
        path = tmp_path / f"model{ext}"
        small_mlp(seed=0).save(path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        assert main(["export", os.fspath(path), "--format", "tflite", "--allow-dense",
                     "--out", os.fspath(tmp_path / "t.tflite")]) == 2
        err = capsys.readouterr().err
        assert f"Cannot read the model file {path}" in err and "truncated" in err
        assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "t.tflite")


def test_lstm_model_exports_with_unroll(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,), dtype="int32")
    h = keras.layers.LSTM(8)(keras.layers.Embedding(30, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    path = tmp_path / "lstm.keras"
    model.save(path)
    out = tmp_path / "lstm.tflite"
    base = ["export", os.fspath(path), "--format", "tflite", "--allow-dense", "--out", os.fspath(out)]
    assert main(base + ["--unroll"]) == 0
    x = np.random.default_rng(0).integers(0, 30, size=(7, 10)).astype("int32")
    np.testing.assert_allclose(export.TFLiteModel(os.fspath(out)).predict(x),
                               model.predict(x, verbose=0), rtol=0, atol=1e-5)
    assert main(base + ["--batch-size", "0"]) == 2
    assert "batch_size must be a positive integer" in capsys.readouterr().err
    assert main(["export", os.fspath(path), "--format", "keras", "--unroll", "--allow-dense",
                 "--out", os.fspath(tmp_path / "x.keras")]) == 2
    assert "--unroll applies to --format tflite" in capsys.readouterr().err
