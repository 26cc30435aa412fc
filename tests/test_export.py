"""Exporting tickets: every format loads, gives the Keras outputs and keeps the zeros.

One small IMP run (module scope) provides the ticket; TFLite conversions are
shared through module fixtures because each costs about a second.
"""

import errno
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import compile_model, small_mlp, snapshot

import keras_lottery as kl
from keras_lottery import export
from keras_lottery._keras import keras

INPUT_DIM = 256


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, INPUT_DIM)).astype("float32")
    w = rng.normal(size=(INPUT_DIM, 10)).astype("float32")
    y = np.argmax(x @ w, axis=1).astype("int64")
    return (x[:300], y[:300]), (x[300:], y[300:])


@pytest.fixture(scope="module")
def wrapped(data):
    """A 256-256-10 MLP after 2 IMP rounds at 70%: 9% of the weights remain."""
    (x, y), _ = data
    imp = kl.IMP(rounds=2, prune_rate=0.7, rewind="0it")
    model = compile_model(imp.wrap(small_mlp(seed=3, input_dim=INPUT_DIM, hidden=(256,))))
    model.fit(x, y, batch_size=50, epochs=imp.epochs(per_round=1), verbose=0,
              callbacks=imp.callbacks(verbose=0))
    return model


@pytest.fixture(scope="module")
def plain(wrapped):
    return export.strip(wrapped)


@pytest.fixture(scope="module")
def masks(wrapped):
    """layer name -> 0/1 kernel mask."""
    return {name.split("/")[0]: m for name, m in kl.read_masks(wrapped).items()}


def kernels(model):
    return {layer.name: layer.kernel.numpy() for layer in model.layers
            if getattr(layer, "kernel", None) is not None}


def assert_zeros_match(weights_by_layer, masks):
    for name, mask in masks.items():
        kernel = weights_by_layer[name]
        assert np.all(kernel[mask == 0] == 0), name
        assert np.all(kernel[mask == 1] != 0), name


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory, plain, wrapped, data):
    """name -> flatbuffer bytes for the ticket's four variants and the dense float model."""
    (x, _), _ = data
    folder = tmp_path_factory.mktemp("tflite")
    out = {}
    for name, (sparse, int8) in export.TFLITE_VARIANTS.items():
        out[name] = export.tflite(wrapped, folder / f"{name}.tflite", sparse=sparse, int8=int8,
                                  representative_data=x[:100])
        assert (folder / f"{name}.tflite").read_bytes() == out[name]
    dense = keras.models.clone_model(plain)  # same architecture, no zeros
    out["dense"] = export.tflite(dense, allow_dense=True)
    return out


def test_strip_gives_plain_model_with_exact_zeros(wrapped, plain, masks, data):
    assert not kl.pruned_layers(plain)
    assert kl.pruned_layers(wrapped)
    assert_zeros_match(kernels(plain), masks)
    x = data[1][0]
    np.testing.assert_array_equal(plain(x).numpy(), wrapped(x).numpy())
    assert export.is_pruned(plain)  # a stripped ticket still counts as pruned


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_keras_files_load_and_match(tmp_path, plain, wrapped, masks, data, ext):
    path = export.keras_file(wrapped, tmp_path / f"ticket{ext}")
    assert os.listdir(tmp_path) == [f"ticket{ext}"]  # no temporary file left
    loaded = keras.models.load_model(path, compile=False)
    assert_zeros_match(kernels(loaded), masks)
    x = data[1][0]
    np.testing.assert_allclose(loaded(x).numpy(), plain(x).numpy(), rtol=0, atol=1e-6)


def test_saved_model_serving_signature(tmp_path, plain, wrapped, masks, data):
    path = export.saved_model(wrapped, tmp_path / "ticket_sm")
    assert sorted(os.listdir(tmp_path)) == ["ticket_sm"]
    loaded = tf.saved_model.load(os.fspath(path))
    serve = loaded.signatures["serving_default"]
    (arg_name,) = serve.structured_input_signature[1]
    x = data[1][0]
    outputs = serve(**{arg_name: tf.constant(x)})
    assert list(outputs) == ["output"]
    np.testing.assert_allclose(outputs["output"].numpy(), plain(x).numpy(), atol=1e-6)
    # the stored kernels hold the same zeros
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    stored = {tuple(shape): reader.get_tensor(key)
              for key, shape in reader.get_variable_to_shape_map().items() if len(shape) == 2}
    for name, mask in masks.items():
        kernel = stored[mask.shape]
        assert np.all(kernel[mask == 0] == 0) and np.all(kernel[mask == 1] != 0)


def test_saved_model_replaces_old_folder_atomically(tmp_path, wrapped, monkeypatch):
    target = tmp_path / "sm"
    export.saved_model(wrapped, target)
    before = sorted(p.name for p in target.iterdir())

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(wrapped, target)
    # the earlier export is intact and no temporary folder is left behind
    assert sorted(os.listdir(tmp_path)) == ["sm"]
    assert sorted(p.name for p in target.iterdir()) == before


def test_a_killed_folder_write_is_cleaned_up_by_the_next(tmp_path):
    """SIGKILL leaves no cleanup: a killed `export --format all` left its hidden
    .tmp-<name>-XXXXXXXX folder (a partial export) beside --out for good, and one
    killed between its two renames left no --out at all, only .old-<name>-XXXXXXXX.
    The next write removes the first and puts the second back (on the old code
    both stay)."""
    from keras_lottery.export import formats

    target = tmp_path / "export"
    partial = tmp_path / ".tmp-export-ab3_x9zq"
    (partial / "ticket").mkdir(parents=True)
    (partial / "ticket" / "model.h5").write_bytes(b"half")
    previous = tmp_path / ".old-export-0k9m2p1a"
    previous.mkdir()
    (previous / "export_report.json").write_text("{}")
    (tmp_path / ".tmp-exports-ab3_x9zq").mkdir()  # another folder's name: left alone
    assert formats.recover_interrupted_dir(target) == [previous.name, partial.name]
    assert (target / "export_report.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == [".tmp-exports-ab3_x9zq", "export"]
    # and write_dir_atomically does it before it writes
    (tmp_path / ".tmp-export-zzzzzzzz").mkdir()
    formats.write_dir_atomically(target, lambda tmp: open(os.path.join(tmp, "new"), "w").close())
    assert sorted(os.listdir(tmp_path)) == [".tmp-exports-ab3_x9zq", "export"]
    assert os.listdir(target) == ["new"]


def test_a_failed_write_removes_only_the_folders_it_made(tmp_path):
    """The writers create missing folders above the target and remove them again,
    deepest first, when the write fails; a folder something else wrote into stays."""
    from keras_lottery.export import formats

    def fail(tmp):
        raise RuntimeError("write failed")

    for write_atomically in (formats.write_file_atomically, formats.write_dir_atomically):
        with pytest.raises(RuntimeError, match="write failed"):
            write_atomically(tmp_path / "a" / "b" / "out", fail)
        assert os.listdir(tmp_path) == []

    def fail_after_a_sibling(tmp):
        (tmp_path / "a" / "sibling").write_text("kept")
        raise RuntimeError("write failed")

    with pytest.raises(RuntimeError, match="write failed"):
        formats.write_file_atomically(tmp_path / "a" / "b" / "out", fail_after_a_sibling)
    assert os.listdir(tmp_path / "a") == ["sibling"]


def tflite_weights(content):
    """2-D constant tensors of a (non-sparse) TFLite model, keyed by shape (transposed)."""
    interp = tf.lite.Interpreter(model_content=content)
    out = {}
    for detail in interp.get_tensor_details():
        if len(detail["shape"]) == 2 and detail["shape"][0] > 0 and -1 not in detail["shape_signature"]:
            try:
                out[tuple(detail["shape"][::-1])] = interp.get_tensor(detail["index"]).T
            except ValueError:  # tensors without data (activations)
                pass
    return out


@pytest.mark.parametrize("variant", ["tflite", "tflite_int8"])
def test_tflite_keeps_zeros(tflite_models, masks, variant):
    stored = tflite_weights(tflite_models[variant])
    for name, mask in masks.items():
        kernel = stored[mask.shape]
        assert np.all(kernel[mask == 0] == 0), (variant, name)
        if variant == "tflite":
            assert np.all(kernel[mask == 1] != 0)


def test_tflite_float_and_sparse_equal_keras(tflite_models, plain, data):
    x, y = data[1]
    keras_logits = plain(x).numpy()
    for variant in ("tflite", "tflite_sparse"):
        lite = export.TFLiteModel(tflite_models[variant])
        assert lite.interpreter_name.startswith("ai_edge_litert")
        np.testing.assert_allclose(lite.predict(x), keras_logits, rtol=0, atol=1e-5)


def test_tflite_int8_close_to_keras(tflite_models, plain, data):
    x, y = data[1]
    keras_logits = plain(x).numpy()
    keras_pred = np.argmax(keras_logits, 1)
    for variant in ("tflite_int8", "tflite_int8_sparse"):
        lite = export.TFLiteModel(tflite_models[variant])
        logits = lite.predict(x)
        # int8 rounding moves logits a little; predictions almost all agree
        assert np.max(np.abs(logits - keras_logits)) < 0.1 * np.max(np.abs(keras_logits))
        assert np.mean(np.argmax(logits, 1) == keras_pred) >= 0.95, variant


def test_tflite_sizes_meet_the_bars(tflite_models, wrapped):
    assert kl.overall_weights_remaining(wrapped) == pytest.approx(0.09, abs=0.002)
    dense = len(tflite_models["dense"])
    assert len(tflite_models["tflite"]) == pytest.approx(dense, rel=0.02)
    assert len(tflite_models["tflite_sparse"]) <= 0.16 * dense
    assert len(tflite_models["tflite_int8_sparse"]) <= 0.09 * dense
    assert len(tflite_models["tflite_int8_sparse"]) < len(tflite_models["tflite_int8"])


def test_report_compares_ticket_and_dense(tmp_path, wrapped, data):
    (x, y), test = data
    dense = compile_model(small_mlp(seed=4, input_dim=INPUT_DIM, hidden=(256,)))
    result = export.report(wrapped, test, dense_model=dense, out_dir=tmp_path,
                           formats=("keras", "tflite", "tflite_sparse"), repeats=3,
                           latency_batches=(1, 16))
    assert os.path.exists(tmp_path / "export_report.json")
    assert kl.report.read_json(tmp_path / "export_report.json")["files"] == result["files"]
    assert [r["layer"] for r in result["layers"]] == ["fc1", "output"]
    assert result["nonzero_params"] == sum(int(m.sum()) for m in kl.read_masks(wrapped).values())
    files = {r["format"]: r for r in result["files"]}
    assert files["tflite_sparse"]["bytes"] == os.path.getsize(tmp_path / "ticket" / "tflite_sparse.tflite")
    assert files["tflite_sparse"]["ratio"] < 0.2
    assert files["keras"]["gzip_ratio"] < 0.5 < files["keras"]["ratio"]
    lite = {r["variant"]: r for r in result["tflite"]}
    assert lite["tflite"]["max_abs_logit_diff"] < 1e-5
    assert lite["tflite"]["accuracy"] == pytest.approx(result["keras_accuracy"])
    assert lite["tflite_sparse"]["dense_accuracy"] is not None
    assert set(lite["tflite"]["latency_ms"]) == {"1", "16"}
    assert all(v > 0 for v in lite["tflite"]["dense_latency_ms"].values())
    text = export.format_report(result)
    assert "tflite_sparse" in text and "ai_edge_litert" in text


# -- bad input ------------------------------------------------------------------------


def test_never_pruned_model_is_refused_unless_asked(tmp_path):
    dense = small_mlp(seed=5)
    with pytest.raises(ValueError, match="never wrapped or pruned.*allow_dense=True"):
        export.keras_file(dense, tmp_path / "d.keras")
    assert os.listdir(tmp_path) == []
    path = export.keras_file(dense, tmp_path / "d.keras", allow_dense=True)
    assert os.path.exists(path)
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    with pytest.raises(ValueError, match="no round has pruned anything"):
        export.strip(imp.wrap(small_mlp(seed=5)))


def test_int8_without_representative_data(tmp_path, wrapped):
    with pytest.raises(ValueError, match="int8 quantization needs representative_data"):
        export.tflite(wrapped, tmp_path / "t.tflite", int8=True)
    assert os.listdir(tmp_path) == []


def test_unsupported_op_is_named(tmp_path):
    inputs = keras.Input((4,))
    odd = keras.layers.Lambda(lambda t: tf.math.igamma(t * t + 1.0, t * t + 2.0), name="gamma")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(odd))
    with pytest.raises(export.TFLiteConversionError, match=r"Igamma.*gamma \(Lambda\)"):
        export.tflite(model, tmp_path / "bad.tflite", allow_dense=True)
    assert os.listdir(tmp_path) == []


def test_bad_paths(tmp_path, wrapped):
    with pytest.raises(ValueError, match="must end in .keras or .h5"):
        export.keras_file(wrapped, tmp_path / "ticket.pb")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="a file of that name exists"):
        export.saved_model(wrapped, tmp_path / "afile")
    with pytest.raises(FileNotFoundError):
        export.TFLiteModel(tmp_path / "missing.tflite")
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_representative_data_forms():
    x = np.arange(12, dtype="float32").reshape(6, 2)
    y = np.zeros(6, "int64")
    for data in (x, (x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
                 tf.data.Dataset.from_tensor_slices(x)):
        batches = list(export.lite.calibration_batches(data, _dense_on_2_features())())
        assert len(batches) == 6 and all(b[0].shape == (1, 2) for b in batches)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    with pytest.raises(ValueError, match="at least one example"):
        export.lite.calibration_batches(np.zeros((0, 2)), _dense_on_2_features())


def _dense_on_2_features():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


# -- atomic exports --------------------------------------------------------------------


def small_report(model, test, out_dir, formats):
    return export.report(model, test, out_dir=out_dir, formats=formats, repeats=1,
                         latency_batches=(1,))


def test_report_replaces_its_folder_only_when_every_format_succeeded(tmp_path, wrapped, data,
                                                                     monkeypatch):
    target = tmp_path / "exp"
    small_report(wrapped, data[1], target, ("keras", "tflite", "tflite_sparse"))
    before = snapshot(target)
    assert "ticket/model.keras" in before and "dense/tflite_sparse.tflite" in before

    real_convert = export.lite.convert

    def failing_convert(plain, path, *args, **kwargs):
        if "dense" in os.fspath(path) and "sparse" in os.path.basename(path):
            raise RuntimeError("injected failure in the dense sparse TFLite writer")
        return real_convert(plain, path, *args, **kwargs)

    monkeypatch.setattr(export.lite, "convert", failing_convert)
    with pytest.raises(RuntimeError, match="injected"):
        small_report(wrapped, data[1], target, ("h5", "tflite", "tflite_sparse"))
    # the ticket's new h5 and tflite files were written before the failure: none shows
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["exp"]  # no temporary or half-renamed folder
    monkeypatch.undo()

    # a new export with other formats holds none of the old export's files
    small_report(wrapped, data[1], target, ("tflite",))
    assert sorted(snapshot(target)) == ["dense/tflite.tflite", "export_report.json",
                                        "ticket/tflite.tflite"]
    assert os.listdir(tmp_path) == ["exp"]


def test_report_refuses_a_folder_with_other_files(tmp_path, wrapped, data):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not a previous export \(notes.txt"):
        small_report(wrapped, data[1], tmp_path, ("tflite",))
    assert os.listdir(tmp_path) == ["notes.txt"]


class _Usage:
    def __init__(self, free):
        self.total, self.used, self.free = 10 ** 12, 0, free


def test_too_little_disk_space_is_a_clear_error(tmp_path, wrapped, data, monkeypatch):
    target = tmp_path / "exp"
    small_report(wrapped, data[1], target, ("h5",))
    before = snapshot(target)
    monkeypatch.setattr(export.formats.shutil, "disk_usage", lambda path: _Usage(50_000))
    for call in (lambda: export.keras_file(wrapped, tmp_path / "t.h5"),
                 lambda: small_report(wrapped, data[1], target, ("keras", "h5"))):
        with pytest.raises(export.ExportError, match="Not enough free disk space") as info:
            call()
        assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["exp"]


def test_disk_filling_up_during_a_keras_write(tmp_path, wrapped, monkeypatch):
    def save_then_fill_up(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_then_fill_up)
    with pytest.raises(export.ExportError, match=r"disk filled up while writing .*t\.h5"):
        export.keras_file(wrapped, tmp_path / "t.h5")
    assert os.listdir(tmp_path) == []
