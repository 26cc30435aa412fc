import pytest
import tensorflow as tf

from keras_lottery.schedule import IMPSchedule, RewindPoint, parse_rewind, weights_remaining


def test_weights_remaining_follows_the_geometric_schedule():
    assert weights_remaining(0.2, 0) == 1.0
    assert weights_remaining(0.2, 1) == pytest.approx(0.8)
    assert weights_remaining(0.2, 10) == pytest.approx(0.8**10)
    schedule = IMPSchedule(rounds=10, prune_rate=0.2)
    assert [round(schedule.sparsity(r), 6) for r in (0, 1, 2)] == [0.0, 0.2, 0.36]


def test_schedule_never_prunes_in_graph_and_reports_round_sparsity():
    schedule = IMPSchedule(rounds=3, prune_rate=0.5, steps_per_round=10)
    for step, expected in [(1, 0.0), (10, 0.0), (11, 0.5), (21, 0.75), (31, 0.875), (500, 0.875)]:
        should_prune, sparsity = schedule(tf.constant(step, tf.int64))
        assert not bool(should_prune)
        assert float(sparsity) == pytest.approx(expected)


def test_schedule_config_round_trips():
    schedule = IMPSchedule(rounds=4, prune_rate=0.3, steps_per_round=7)
    config = schedule.get_config()
    assert config["class_name"] == "IMPSchedule"
    again = IMPSchedule.from_config(config)
    assert (again.rounds, again.prune_rate, again.steps_per_round) == (4, 0.3, 7)


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True])
def test_bad_rounds_are_refused(rounds):
    with pytest.raises(ValueError, match="rounds"):
        IMPSchedule(rounds=rounds, prune_rate=0.2)


@pytest.mark.parametrize("rate", [0, 1, 1.2, -0.1, "0.2"])
def test_bad_prune_rate_is_refused(rate):
    with pytest.raises(ValueError, match="prune_rate"):
        IMPSchedule(rounds=3, prune_rate=rate)


def test_parse_rewind_accepts_iterations_and_epochs():
    assert parse_rewind("500it") == RewindPoint(500, "it")
    assert parse_rewind("2ep") == RewindPoint(2, "ep")
    assert parse_rewind(0) == RewindPoint(0, "it")
    assert parse_rewind(" 3 ep ") == RewindPoint(3, "ep")
    assert parse_rewind("2ep").to_steps(50) == 100
    assert str(parse_rewind("500it")) == "500it"


@pytest.mark.parametrize("bad", ["500", "it", "-1it", "2 epochs", "1.5ep", None, True, 2.0])
def test_malformed_rewind_is_refused(bad):
    with pytest.raises(ValueError, match="rewind point"):
        parse_rewind(bad)


def test_epoch_rewind_needs_steps_per_epoch():
    with pytest.raises(ValueError, match="steps per epoch"):
        parse_rewind("2ep").to_steps(None)
