"""keras-tuner searches over IMP settings: a 2-trial RandomSearch on tiny data."""

import json
import os

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery._keras import keras

# keras-tuner is optional: without it these tests skip. Our own module is
# imported directly, so an error in it fails the suite instead of skipping
# (importorskip skips on any ModuleNotFoundError raised inside the module,
# e.g. one of our imports renamed away).
pytest.importorskip("keras_tuner")
from keras_lottery import tuning  # noqa: E402


def _build(hp):
    keras.utils.set_random_seed(0)
    units = hp.Choice("units", [16, 24])
    return keras.Sequential([keras.Input((40,)), keras.layers.Dense(units, activation="relu", name="fc1"),
                             keras.layers.Dense(10, name="output")])


def _tuner(directory, **kwargs):
    return tuning.TicketRandomSearch(
        _build, target_weights_remaining=0.25, prune_rates=[0.5, 0.75], rewinds=["0it", "1ep"],
        learning_rate=(1e-3, 1e-2), epochs_per_round=1, max_trials=2, seed=0,
        directory=str(directory), project_name="tiny", **kwargs)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    directory = tmp_path_factory.mktemp("tuning")
    tuner = _tuner(directory)
    data = dict(x=x[:240], y=y[:240], validation_data=(x[240:], y[240:]), batch_size=60)
    tuner.search(verbose=0, **data)
    return tuner, directory, data


def test_two_trials_run_through_keras_tuner(searched):
    tuner, directory, _ = searched
    rows = tuner.results()
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    for row in rows:
        assert row["prune_rate"] in (0.5, 0.75) and row["rewind"] in ("0it", "1ep")
        assert 1e-3 <= row["learning_rate"] <= 1e-2
        assert row["rounds"] == {0.5: 2, 0.75: 1}[row["prune_rate"]]
        # every ticket ends at the target weights remaining
        assert row["weights_remaining"] == pytest.approx(0.25, abs=0.02)
        # keras-tuner's own trial folder holds the IMP report of the trial
        report = json.load(open(os.path.join(directory, "tiny", f"trial_{row['trial']}", "imp_report.json")))
        assert report["rounds_finished"] == row["rounds"] + 1
        assert report["history"][-1]["val_accuracy"] == pytest.approx(row["val_accuracy"])
    assert os.path.exists(os.path.join(directory, "tiny", "oracle.json"))


def test_best_ticket_is_the_best_trial_and_loads(searched):
    tuner, _, _ = searched
    best = tuner.best_ticket()
    assert best["score"] == max(r["val_accuracy"] for r in tuner.results())
    assert best["hyperparameters"]["units"] in (16, 24)
    model = tuner.get_best_models(1)[0]
    assert kl.overall_weights_remaining(model) == pytest.approx(0.25, abs=0.02)
    assert model.get_layer(index=0).__class__.__name__ == "PruneLowMagnitude"


def test_search_resumes_from_its_folder(searched):
    _, directory, data = searched
    again = _tuner(directory)  # overwrite=False: keras-tuner reloads the finished search
    again.search(verbose=0, **data)
    assert len(again.results()) == 2


def test_bad_settings_are_refused_early(tmp_path):
    with pytest.raises(ValueError, match="target_weights_remaining"):
        tuning.TicketRandomSearch(_build, 1.5, directory=str(tmp_path))
    with pytest.raises(ValueError, match="prune rate"):
        tuning.TicketRandomSearch(_build, 0.2, prune_rates=[1.2], directory=str(tmp_path))
    with pytest.raises(ValueError, match="past the end of round 0"):
        tuning.TicketRandomSearch(_build, 0.2, rewinds=["3ep"], epochs_per_round=2, directory=str(tmp_path))
    assert tuning.rounds_for(0.2, 0.8 ** 10) == 10
    assert [tuning.rounds_for(p, 0.1) for p in tuning.prune_rates_for(0.1, [1, 2, 5])] == [1, 2, 5]


def test_cli_tune_quiet_prints_only_the_table(tmp_path, capsys):
    from keras_lottery.cli import main

    code = main(["tune", "--num-samples", "300", "--target", "0.5", "--rounds", "1",
                 "--rewinds", "0it", "--max-trials", "1", "--epochs-per-round", "1",
                 "--out", str(tmp_path), "--project", "cli", "--quiet",
                 "--tensorboard", str(tmp_path / "tb")])
    out = capsys.readouterr().out
    assert code == 0
    assert "best: trial 0: prune_rate 0.5000 x 1 rounds" in out
    assert "Search: Running Trial" not in out  # --quiet silences keras-tuner too
    summary = json.load(open(os.path.join(tmp_path, "cli", "best_ticket.json")))
    assert summary["best"]["metrics"]["weights_remaining"] == pytest.approx(0.5, abs=0.01)
    assert os.path.exists(os.path.join(tmp_path, "cli", "trial_0", "ticket.keras"))
    assert os.listdir(tmp_path / "tb" / "trial_0" / "rounds")  # per-trial TensorBoard events
    assert main(["tune", "--target", "2"]) == 2


def test_hyperband_budget_is_epochs_per_round(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(180, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    tuner = tuning.TicketHyperband(
        _build, target_weights_remaining=0.5, prune_rates=[0.5], rewinds=["0it"],
        learning_rate=1e-2, max_epochs=2, factor=2, hyperband_iterations=1, seed=0,
        directory=str(tmp_path), project_name="hb")
    tuner.search(x[:120], y[:120], validation_data=(x[120:], y[120:]), batch_size=60, verbose=0)
    rows = [r for r in tuner.results() if r["status"] == "COMPLETED"]
    assert rows and {r["epochs_per_round"] for r in rows} == {1, 2}
    for row in rows:
        report = json.load(open(os.path.join(tmp_path, "hb", f"trial_{row['trial']}", "imp_report.json")))
        assert [h["epochs"] for h in report["history"]] == [row["epochs_per_round"]] * 2
