"""Early-stopping iteration, multi-seed reports and their plots, `keras-lottery report`."""

import csv
import math

import numpy as np
import pytest
from conftest import compile_model, small_mlp
from PIL import Image

import keras_lottery as kl
from keras_lottery import early_stop, report
from keras_lottery.callback import RoundResult
from keras_lottery.cli import main as cli_main

# -- early-stopping iteration ---------------------------------------------------


def test_early_stopping_point_on_a_crafted_curve():
    # loss falls, bottoms out twice at the same value, then overfits
    curve = [(50, 1.2, 0.5), (100, 0.8, 0.6), (150, 0.41, 0.7), (200, 0.41, 0.72),
             (250, 0.6, 0.71), (300, 0.9, 0.69)]
    best = early_stop.early_stopping_point(curve)
    assert (best.step, best.val_accuracy) == (150, 0.7)  # first of a tie
    assert early_stop.early_stopping_point([]) is None
    nan_first = [(10, math.nan), (20, 0.3, 0.9, 0.8), (30, 0.5)]
    best = early_stop.early_stopping_point(nan_first)
    assert (best.step, best.test_accuracy) == (20, 0.8)


def _crafted_loss(step):
    """A U-shaped validation loss with its minimum at step 12 of each round."""
    return (step - 12) ** 2 / 100.0 + 0.1


def test_imp_callback_finds_the_minimum_at_the_eval_interval(monkeypatch, tiny_data):
    calls = []

    def fake_evaluate(self, model, step):
        calls.append(step)
        return early_stop.CurvePoint(step, _crafted_loss(step), 1.0 - _crafted_loss(step), 0.5)

    monkeypatch.setattr(early_stop.IntervalEvaluator, "evaluate", fake_evaluate)
    (x, y), val, test = tiny_data  # 240 examples, batch 20: 12 steps per epoch
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp()))
    model.fit(x, y, batch_size=20, epochs=imp.epochs(per_round=2), validation_data=val,
              callbacks=imp.callbacks(verbose=0, eval_every=4, validation_data=val), verbose=0)
    # 24 steps per round, evaluated at 4, 8, ..., 24 in both rounds
    assert calls == [4, 8, 12, 16, 20, 24] * 2
    for row in imp.history:
        assert row.early_stop_iteration == 12
        assert row.early_stop_val_accuracy == pytest.approx(0.9)
        assert row.early_stop_test_accuracy == pytest.approx(0.5)


def test_interval_evaluator_matches_keras_and_leaves_training_metrics_alone(tiny_data):
    (x, y), val, test = tiny_data
    model = compile_model(small_mlp())
    model.fit(x, y, batch_size=40, epochs=1, verbose=0)
    before = [v.numpy().copy() for m in model.metrics for v in m.variables]
    point = early_stop.IntervalEvaluator(5, val, test_data=test).evaluate(model, 7)
    after = [v.numpy() for m in model.metrics for v in m.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    expected = model.evaluate(*val, verbose=0, return_dict=True)
    assert point.step == 7
    assert point.val_loss == pytest.approx(expected["loss"], rel=1e-5)
    assert point.val_accuracy == pytest.approx(expected["accuracy"])
    assert point.test_accuracy is not None


def test_eval_interval_errors():
    with pytest.raises(ValueError, match="positive"):
        early_stop.IntervalEvaluator(0, ([0], [0]))
    with pytest.raises(ValueError, match="validation_data"):
        early_stop.IntervalEvaluator(10, None)


# -- reports of several seeds and controls ----------------------------------------------


def _row(rnd, remaining, acc, es):
    return RoundResult(round=rnd, weights_remaining=remaining,
                       weights_remaining_by_layer={"fc1/kernel": remaining}, epochs=1, steps=100,
                       test_accuracy=acc, early_stop_iteration=es,
                       early_stop_test_accuracy=acc + 0.01, metrics={"loss": 0.5}).to_dict()


def _fake_experiment(root):
    expected = {}
    for seed in (0, 1, 2):
        for series, offset, first in (("ticket", 0.0, 0), ("reinit", -0.05, 1), ("random", -0.08, 1)):
            rows = [_row(r, 0.8 ** r, 0.8 + offset + 0.01 * seed + 0.001 * r, 100 - 10 * r + seed)
                    for r in range(first, 3)]
            for row in rows:
                expected.setdefault((series, row["round"]), []).append(row["test_accuracy"])
            report.write_json(root / f"seed_{seed}" / series / "imp_report.json",
                              {"config": {"seed": seed, "series": series}, "history": rows})
    return expected


def test_report_files_round_trip(tmp_path):
    expected = _fake_experiment(tmp_path)
    runs = report.collect_runs(tmp_path)
    assert [(r["series"], r["seed"]) for r in runs][:3] == [("ticket", 0), ("ticket", 1), ("ticket", 2)]
    assert len(runs) == 9
    summary = report.write_summary(tmp_path, title="fake")
    assert list(summary) == ["ticket", "reinit", "random"]
    assert [row["round"] for row in summary["reinit"]] == [1, 2]
    for series, rows in summary.items():
        for row in rows:
            values = expected[(series, row["round"])]
            assert row["n_seeds"] == 3
            assert row["test_accuracy"]["mean"] == pytest.approx(np.mean(values))
            assert row["test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
            assert row["test_accuracy"]["min"] == pytest.approx(min(values))
    # JSON and CSV on disk say the same
    assert report.read_json(tmp_path / "summary.json")["summary"] == summary
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 + 2 + 2
    first = next(r for r in table if r["series"] == "random" and r["round"] == "2")
    assert float(first["test_accuracy_mean"]) == pytest.approx(summary["random"][1]["test_accuracy"]["mean"])
    with open(tmp_path / "rounds.csv") as f:
        rounds = list(csv.DictReader(f))
    assert len(rounds) == 3 * (3 + 2 + 2)
    assert {r["series"] for r in rounds} == {"ticket", "reinit", "random"}
    assert "weights_remaining_by_layer[fc1/kernel]" in rounds[0]
    text = report.format_summary(summary)
    assert "reinit" in text and "±" in text


def test_plot_summary_writes_png_with_every_series(tmp_path):
    _fake_experiment(tmp_path)
    summary = report.summarize(report.collect_runs(tmp_path))
    path = report.plot_summary(summary, tmp_path / "fig" / "t.png", title="fake")
    image = Image.open(path)
    assert image.size[0] > 800 and image.size[1] > 300
    assert image.text["Series"] == "ticket,reinit,random"
    assert np.asarray(image.convert("L")).std() > 5  # not blank


def test_collect_runs_reads_a_single_run_and_errors_clearly(tmp_path):
    report.write_json(tmp_path / "imp_report.json",
                      {"config": {"seed": 4}, "history": [_row(0, 1.0, 0.9, 50)]})
    runs = report.collect_runs(tmp_path)
    assert [(r["series"], r["seed"]) for r in runs] == [("ticket", 4)]
    with pytest.raises(FileNotFoundError, match="imp_report.json"):
        report.collect_runs(tmp_path / "nothing")


def test_cli_report_redraws_seeds_and_controls(tmp_path, capsys):
    _fake_experiment(tmp_path)
    assert cli_main(["report", str(tmp_path), "--plot", str(tmp_path / "again.png")]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "reinit" in out and "ticket" in out
    assert "gap vs re-init" in out and "gap vs random" in out  # the run's comparison table
    assert Image.open(tmp_path / "again.png").text["Series"] == "ticket,reinit,random"
    assert (tmp_path / "summary.csv").stat().st_size > 0


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    """What a kill or an error during a save leaves: the old file, whole."""
    target = tmp_path / "wrapped_model.keras"
    target.write_bytes(b"round 0's model")

    def half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"round 1's mo")
        raise OSError(28, "No space left on device")

    # a full disk is named: the file, and what to do (on the old code: the bare
    # "[Errno 28] No space left on device", without the file)
    with pytest.raises(report.DiskFullError, match=r"The disk is full: .*wrapped_model\.keras "
                       r"could not be written \(OSError: .*No space left.*free some space") as info:
        report.atomic_path(str(target), half_then_fail)
    assert info.value.errno == 28 and info.value.filename == str(target)
    assert target.read_bytes() == b"round 0's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrapped_model.keras"]

    def other_error(tmp):
        raise OSError(13, "Permission denied")

    with pytest.raises(OSError, match="Permission denied") as info:  # passed on as it is
        report.atomic_path(str(target), other_error)
    assert not isinstance(info.value, report.DiskFullError)


def test_read_json_names_a_truncated_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"summary": {"ticket": [')
    with pytest.raises(ValueError, match=r"summary\.json is not valid JSON .*truncated"):
        report.read_json(str(path))


def _summary_rows(values, seeds=1):
    """A summary series: round r -> accuracy values over seeds (weights 0.8**r)."""
    return [{"round": r, "n_seeds": seeds, "weights_remaining": {"mean": 0.8 ** r},
             "test_accuracy": {"mean": float(np.mean(v)),
                               "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}}
            for r, v in values.items()]


def test_format_comparison_shows_ticket_controls_and_gaps():
    summary = {"ticket": _summary_rows({0: [0.60], 1: [0.612], 2: [0.60]}),
               "reinit": _summary_rows({1: [0.58], 2: [0.45]})}
    text = report.format_comparison(summary).splitlines()
    assert text[0].split() == ["round", "%", "weights", "ticket", "re-init", "gap"]
    assert text[2].split() == ["0", "100.0", "60.0", "-", "-"]
    assert text[3].split() == ["1", "80.0", "61.2", "58.0", "+3.2"]
    assert text[4].split() == ["2", "64.0", "60.0", "45.0", "+15.0"]
    assert text[-1] == ("test accuracy (%) at the end of each round; "
                        "gap = ticket - control, in points")
    # two controls: a gap column each; several seeds: mean ± std and the count
    summary = {"ticket": _summary_rows({1: [0.60, 0.62]}, seeds=2),
               "reinit": _summary_rows({1: [0.50, 0.54]}, seeds=2),
               "random": _summary_rows({1: [0.40, 0.40]}, seeds=2)}
    text = report.format_comparison(summary).splitlines()
    assert "gap vs re-init" in text[0] and "gap vs random" in text[0]
    assert text[2].split() == ["1", "80.0", "61.0", "±", "1.4", "52.0", "±", "2.8",
                               "40.0", "±", "0.0", "+9.0", "+21.0"]
    assert "mean ± std over 2 seeds" in text[-1]
    with pytest.raises(ValueError, match="no 'ticket' series"):
        report.format_comparison({"reinit": summary["reinit"]})


def test_format_table_takes_imp_history_as_it_is():
    # fails on the old code: AttributeError 'RoundResult' object has no attribute 'get'
    # (format_table(imp.history) is the first thing one tries)
    history = [RoundResult(round=r, weights_remaining=w, weights_remaining_by_layer={"fc/kernel": w},
                           epochs=1, steps=10, all_weights_remaining=a)
               for r, w, a in ((0, 1.0, 1.0), (1, 0.5, 0.5222))]
    text = report.format_table(history)
    assert text == report.format_table([r.to_dict() for r in history])
    header, _, _, last = text.splitlines()
    assert "% all params" in header and "50.0%" in last and "52.2%" in last


def test_format_comparison_shows_the_steps_of_rounds_of_varying_length():
    def rows(values, steps):
        out = _summary_rows(values)
        for row in out:
            row["steps"] = {"mean": float(steps[row["round"]])}
        return out

    # an Early-Bird run: rounds cut short, the controls follow the ticket's lengths
    summary = {"ticket": rows({0: [0.6], 1: [0.61], 2: [0.6]}, {0: 8, 1: 12, 2: 40}),
               "reinit": rows({1: [0.58], 2: [0.45]}, {1: 12, 2: 40})}
    text = report.format_comparison(summary).splitlines()
    assert text[0].split() == ["round", "%", "weights", "steps", "ticket", "re-init", "gap"]
    assert text[3].split() == ["1", "80.0", "12", "61.0", "58.0", "+3.0"]
    assert text[-1].endswith("; steps: training steps of the round")
    # a control trained to other lengths than the ticket's: every series' steps show
    summary["reinit"] = rows({1: [0.58], 2: [0.45]}, {1: 40, 2: 40})
    text = report.format_comparison(summary).splitlines()
    assert text[0].split()[3:7] == ["steps", "ticket", "steps", "re-init"]
    assert text[3].split()[:4] == ["1", "80.0", "12", "40"]
    # fixed rounds: no steps column, as before
    summary = {"ticket": rows({0: [0.6], 1: [0.61]}, {0: 40, 1: 40}),
               "reinit": rows({1: [0.58]}, {1: 40})}
    assert "steps" not in report.format_comparison(summary)
