"""TensorBoard event files of an IMP run hold a point per round and the mask histograms."""

import glob
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from conftest import compile_model, small_mlp


def _read_events(folder):
    """tag -> {step: value or histogram tensor} from every event file under `folder`."""
    found = {}
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, {})[event.step] = array
    return found


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    log_dir = str(tmp_path_factory.mktemp("tb"))
    imp = kl.IMP(rounds=2, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(seed=0)))
    lines = _ListHandler()
    progress_log = logging.getLogger("keras_lottery.test_progress")
    progress_log.addHandler(lines)
    progress_log.setLevel(logging.INFO)
    progress = kl.ProgressLogger(epochs_per_round=1, rounds=2, log=progress_log)
    model.fit(x[:240], y[:240], batch_size=60, epochs=imp.epochs(per_round=1),
              validation_data=(x[240:], y[240:]), verbose=0,
              callbacks=[progress] + imp.callbacks(test_data=(x[240:], y[240:]), verbose=0,
                                                   tensorboard_dir=log_dir))
    progress_log.removeHandler(lines)
    return imp, log_dir, _read_events(os.path.join(log_dir, "rounds")), \
        _read_events(os.path.join(log_dir, "epochs")), lines.messages


def test_round_scalars_match_the_history(tb_run):
    imp, _, rounds, _, _ = tb_run
    assert len(imp.history) == 3
    for row in imp.history:
        assert float(rounds["imp/weights_remaining"][row.round]) == pytest.approx(row.weights_remaining)
        assert float(rounds["imp/val_accuracy"][row.round]) == pytest.approx(row.val_accuracy)
        assert float(rounds["imp/test_accuracy"][row.round]) == pytest.approx(row.test_accuracy)
        assert float(rounds["imp/early_stop_iteration"][row.round]) == row.early_stop_iteration
        for name, value in row.weights_remaining_by_layer.items():
            assert float(rounds[f"imp/weights_remaining/{name}"][row.round]) == pytest.approx(value)
    assert [round(float(rounds["imp/weights_remaining"][r]), 2) for r in range(3)] == [1.0, 0.5, 0.25]


def test_mask_histograms_show_the_masks_each_round_trained_with(tb_run):
    _, _, rounds, _, _ = tb_run
    hist = rounds["masks/fc1/kernel"]
    assert sorted(hist) == [0, 1, 2]
    # a TF2 histogram is rows of (left edge, right edge, count)
    for step, kept in [(0, 1.0), (1, 0.5), (2, 0.25)]:
        buckets = np.asarray(hist[step])
        total = buckets[:, 2].sum()
        ones = buckets[buckets[:, 0] >= 0.5, 2].sum()
        assert total == 40 * 32
        assert ones / total == pytest.approx(kept, abs=1 / 32)
    survivors = rounds["surviving_weights/output/kernel"]
    assert np.asarray(survivors[2])[:, 2].sum() < np.asarray(survivors[0])[:, 2].sum()


def test_epoch_summaries_from_tfmot_on_a_monotonic_step(tb_run):
    _, _, _, epochs, _ = tb_run
    sparsity = [tag for tag in epochs if tag.endswith("/sparsity")]
    assert sparsity, sorted(epochs)
    assert not [tag for tag in epochs if tag.endswith("/threshold")]
    points = epochs[sparsity[0]]
    steps = sorted(points)
    assert steps == sorted(set(steps)) and len(steps) == 3  # one per epoch, never rewound
    values = [float(points[s]) for s in steps]
    assert values[0] == pytest.approx(0.0) and values[-1] > values[1] > 0.0
    assert any(tag.startswith("epoch_") for tag in epochs)  # Keras TensorBoard's own curves


def test_progress_lines_name_round_epoch_and_eta(tb_run):
    _, _, _, _, lines = tb_run
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"round {i}/2 · epoch 1/1 ({i + 1}/3) · loss ")
        assert "val_accuracy" in line and "elapsed · ETA" in line
    assert lines[-1].endswith("ETA 0s")
    assert kl.progress.format_duration(3725) == "1h02m" and kl.progress.format_duration(65) == "1m05s"
    assert kl.progress.eta_seconds(10.0, 2, 6) == pytest.approx(20.0)
