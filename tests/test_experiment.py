"""ExperimentSettings (checked early, serializable) and run_experiment's resume."""

import json

import numpy as np
import pytest

from conftest import compile_model, small_mlp
from keras_lottery import experiment
from keras_lottery.experiment import ExperimentSettings

BATCH = 30


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(180, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1).astype("int64")
    return (x[:120], y[:120]), (x[120:], y[120:])


def _settings(**kw):
    base = dict(rounds=2, prune_rate=0.5, epochs_per_round=1, batch_size=BATCH)
    return ExperimentSettings(**dict(base, **kw))


def test_settings_round_trip_through_json():
    settings = _settings(seeds=range(3, 5), controls="reinit, random", rewind="2it",
                         layer_rates={"fc1": 0.3}, output_layer_rate=0.1, eval_every=2,
                         run_config={"dataset": "x"}, block="4x1", resume=True,
                         round_end="converged", converge_every=3, converge_tol=0.2)
    assert settings.seeds == (3, 4) and settings.controls == ("reinit", "random")
    assert settings.block == (4, 1)
    config = json.loads(json.dumps(settings.get_config()))
    assert ExperimentSettings.from_config(config) == settings


@pytest.mark.parametrize("field, value, message", [
    ("rounds", 0, r"rounds must be an integer >= 1, got 0"),
    ("batch_size", 2.5, r"batch_size must be an integer >= 1"),
    ("prune_rate", 1.0, r"prune_rate must be in \(0, 1\), got 1.0"),
    ("seeds", (1, 1), r"repeats a seed"),
    ("seeds", (), r"one or more integers"),
    ("controls", "reinit,shuffled", r"Unknown control\(s\) \['shuffled'\]"),
    ("rewind", "soon", r"soon"),
    ("scope", "local", r"scope must be one of"),
    ("output_layer_rate", 1.5, r"'output_layer_rate' must be in \[0, 1\)"),
    ("eval_every", 0, r"eval_every must be an integer >= 1 or None"),
    ("progress", "loud", r"progress must be one of"),
    ("block_score", "l3", r"block_score must be one of"),
    ("round_end", "early", r"round_end must be one of"),
    ("converge_tol", 0.1, r"only apply with round_end='converged'"),
])
def test_bad_settings_are_refused_when_made(field, value, message):
    with pytest.raises(ValueError, match=message):
        _settings(**{field: value})


def test_from_config_names_an_unknown_key():
    with pytest.raises(ValueError, match=r"no field\(s\) \['epochs'\]"):
        ExperimentSettings.from_config(dict(_settings().get_config(), epochs=3))


def test_run_experiment_wants_one_settings_object(tmp_path):
    train, val = _data()
    with pytest.raises(TypeError, match="one ExperimentSettings"):
        experiment.run_experiment(small_mlp, compile_model, train, val, val, str(tmp_path), 2)


class _Interrupt(Exception):
    pass


# Early-Bird: 4 steps per epoch, a budget of 2 chunks of 2 steps; rounds 0 and 1 end
# at their first check (tol 0.5), so round 2 starts at fit epoch 2 as with fixed rounds
CONVERGED = dict(round_end="converged", converge_every=2, converge_tol=0.5, converge_patience=1)


@pytest.mark.parametrize("rounds", ["fixed", "converged"])
def test_resume_continues_an_interrupted_ticket_from_its_last_round(tmp_path, monkeypatch, rounds):
    """An interrupted ticket (resume=True) continues at its last finished round; same result."""
    from keras_lottery import progress

    train, val = _data()
    settings = _settings(controls=("reinit",), resume=True, verbose=0,
                         **(CONVERGED if rounds == "converged" else {}))

    def run(out):
        return experiment.run_experiment(lambda s: small_mlp(seed=s), compile_model, train, val,
                                         val, str(out), settings)

    whole = run(tmp_path / "whole")
    original = progress.RoundProgress.on_epoch_begin
    begun, stop = [], [True]

    def stop_in_round_two(self, epoch, logs=None):
        begun.append(epoch)
        if epoch == 2 and stop[0]:
            raise _Interrupt()
        return original(self, epoch, logs)

    monkeypatch.setattr(progress.RoundProgress, "on_epoch_begin", stop_in_round_two)
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut")
    assert begun == [0, 1, 2]
    begun.clear()
    stop[0] = False
    resumed = run(tmp_path / "cut")
    assert begun[0] == 2  # the ticket started at round 2, not at round 0
    for series in ("ticket", "reinit"):
        assert ([r["test_accuracy"] for r in resumed[series]]
                == [r["test_accuracy"] for r in whole[series]])
        assert [r["steps"] for r in resumed[series]] == [r["steps"] for r in whole[series]]
    if rounds == "converged":  # the control followed the ticket's cut-short rounds
        assert [r["steps"]["mean"] for r in whole["ticket"]] == [2, 2, 4]
        assert [r["steps"]["mean"] for r in whole["reinit"]] == [2, 4]
    begun.clear()
    run(tmp_path / "cut")  # finished: nothing trains again
    assert begun == []
