"""Early-Bird round ends (`round_end="converged"`): semantics pinned on a tiny MLP.

The would-be masks are recorded by a callback of the test's own (placed before
the IMPCallback, so it sees the same weights at the same steps), and the step
at which each round should end is computed here from those masks, with this
file's own distance and criterion code.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from keras_lottery import convergence, resume
from keras_lottery._keras import keras
from keras_lottery.cli import main
from tests.conftest import compile_model, small_mlp

ROUNDS, RATE, EVERY, TOL, PATIENCE = 3, 0.5, 4, 0.05, 2
BUDGET = 40          # steps per round: 10 chunks of EVERY steps
BATCH = 20


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1)
    return x, y


class WouldBeMasks(keras.callbacks.Callback):
    """Records, per round, its starting masks and the masks `compute_masks` gives
    at step 0 and every EVERY steps (not in the last round, which has no next mask)."""

    def __init__(self, imp_callback):
        super().__init__()
        self.imp_callback = imp_callback
        self.rounds = {}

    def on_epoch_begin(self, epoch, logs=None):
        rnd = self.imp_callback.round
        if rnd not in self.rounds:
            self.rounds[rnd] = {"start": kl.read_masks(self.model), "checks": []}
            self.steps = 0
            self._record(rnd)

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % EVERY == 0:
            self._record(self.imp_callback.round)

    def _record(self, rnd):
        if rnd == ROUNDS:
            return
        entries = kl.masks.prunable_weights(self.model)
        weights = {w.name: w.weight.numpy() for w in entries}
        new = kl.compute_masks(weights, kl.read_masks(self.model), rnd + 1, RATE)
        self.rounds[rnd]["checks"].append((self.steps, new))


def _flat(masks):
    return np.concatenate([masks[k].ravel() > 0.5 for k in sorted(masks)])


def expected_end(record):
    """(first step at which the criterion holds or None, [step, distance] per check)."""
    start = _flat(record["start"])
    flats = [_flat(m) for _, m in record["checks"]]
    pruned = int(start.sum() - flats[0].sum())
    curve, end = [], None
    for c, (step, _) in enumerate(record["checks"]):
        back = [np.sum(flats[c] != flats[c - j]) / (2.0 * pruned)
                for j in range(1, PATIENCE + 1) if c - j >= 0]
        curve.append([step, max(back) if back else None])
        if end is None and len(back) == PATIENCE and max(back) <= TOL:
            end = step
            break
    return end, curve


def _imp(**kwargs):
    settings = dict(rounds=ROUNDS, prune_rate=RATE, rewind="0it", round_end="converged",
                    converge_every=EVERY, converge_tol=TOL, converge_patience=PATIENCE)
    settings.update(kwargs)
    return kl.IMP(**settings)


def _fit(resume_dir=None, seed=0, stop_at=None, tensorboard_dir=None, start=None, **settings):
    """One converged IMP run on chunked data; `stop_at=(round, step)` raises there."""
    x, y = _data()
    imp = _imp(**settings)
    model = compile_model(imp.wrap(small_mlp(seed)))
    kwargs = imp.fit_kwargs(steps_per_round=BUDGET)
    callbacks = imp.callbacks(verbose=0, check_sparsity=1, resume_dir=resume_dir,
                              tensorboard_dir=tensorboard_dir)
    recorder = WouldBeMasks(imp.callback)
    callbacks.insert(callbacks.index(imp.callback), recorder)
    if stop_at is not None:
        callbacks.append(_Crash(imp.callback, *stop_at))
    if start is None:
        start = imp.initial_epoch() if resume_dir else 0
    data, steps = kl.chunked_batches(x, y, BATCH, imp.chunk_steps, seed=0, start_chunk=start)
    fit = model.fit(data, initial_epoch=start, callbacks=callbacks, verbose=0, **kwargs)
    return imp, model, fit, recorder, callbacks


class _Crash(keras.callbacks.Callback):
    """Stands in for a process killed at step `step` of round `rnd` (mid-chunk)."""

    def __init__(self, imp_callback, rnd, step):
        super().__init__()
        self.imp_callback, self.rnd, self.step = imp_callback, rnd, step

    def on_train_batch_end(self, batch, logs=None):
        cb = self.imp_callback
        if cb.round == self.rnd and cb._round_steps == self.step:
            raise KeyboardInterrupt("killed")


@pytest.fixture(scope="module")
def converged_run(tmp_path_factory):
    tb = str(tmp_path_factory.mktemp("tb"))
    imp, model, fit, recorder, callbacks = _fit(tensorboard_dir=tb)
    guard = next(cb for cb in callbacks if isinstance(cb, kl.SparsityGuard))
    return imp, model, fit, recorder, guard, tb


def test_round_ends_exactly_at_the_first_check_where_the_mask_converged(converged_run):
    imp, _, _, recorder, _, _ = converged_run
    ended_early = deep = 0
    for result in imp.history[:-1]:
        record = recorder.rounds[result.round]
        end, curve = expected_end(record)
        assert result.converged_step == end
        assert result.steps == (BUDGET if end is None else end)
        assert result.epochs == result.steps // EVERY
        np.testing.assert_allclose([d if d is not None else -1 for _, d in result.mask_distances],
                                   [d if d is not None else -1 for _, d in curve], rtol=1e-12)
        # the next round trains the mask of the check the round ended at
        step, masks = record["checks"][-1]
        assert step == result.steps
        for name, mask in recorder.rounds[result.round + 1]["start"].items():
            np.testing.assert_array_equal(mask, masks[name])
        ended_early += result.steps < BUDGET
        deep += end is not None and end > PATIENCE * EVERY
    # not vacuous: rounds end before their budget, and one only after the
    # condition failed at an eligible check (not at the first possible one)
    assert ended_early >= 1 and deep >= 1


def test_masks_only_shrink_and_counts_follow_the_schedule(converged_run):
    imp, model, _, recorder, _, _ = converged_run
    starts = [recorder.rounds[r]["start"] for r in range(ROUNDS + 1)]
    for r in range(1, ROUNDS + 1):
        for name, mask in starts[r].items():
            assert np.all(mask <= starts[r - 1][name])
            assert int(mask.sum()) == int(round(mask.size * (1 - RATE) ** r))
    for name, mask in kl.read_masks(model).items():
        np.testing.assert_array_equal(mask, starts[ROUNDS][name])


def test_pruned_weights_are_zero_after_every_batch(converged_run):
    imp, _, fit, _, guard, _ = converged_run
    steps = sum(r.steps for r in imp.history)
    assert guard.every == 1 and guard.checks == steps  # it raises at the first violation


def test_last_round_trains_its_whole_budget_and_fit_stops_after_it(converged_run):
    imp, _, fit, _, _, _ = converged_run
    last = imp.history[-1]
    assert [r.round for r in imp.history] == list(range(ROUNDS + 1))
    assert last.steps == BUDGET and last.converged_step is None and last.mask_distances is None
    assert len(fit.epoch) == sum(r.epochs for r in imp.history) < (ROUNDS + 1) * BUDGET // EVERY
    assert imp.callback.model.stop_training


@pytest.mark.parametrize("rewind", ["0it", "lr"])
def test_a_loose_tolerance_ends_every_round_but_the_last_at_its_first_eligible_check(rewind):
    imp, _, fit, _, _ = _fit(converge_tol=0.9, converge_patience=1, rewind=rewind)
    assert [r.steps for r in imp.history] == [EVERY] * ROUNDS + [BUDGET]
    assert [r.converged_step for r in imp.history] == [EVERY] * ROUNDS + [None]
    assert len(fit.epoch) == ROUNDS + BUDGET // EVERY


def test_report_and_tensorboard_carry_the_distance_curve(converged_run):
    imp, _, _, _, _, tb = converged_run
    rows = imp.callback.history_rows()
    assert rows[0]["mask_distances"] == imp.history[0].mask_distances
    found = {}
    for path in glob.glob(os.path.join(tb, "rounds", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("early_bird/"):
                    found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    for result in imp.history[:-1]:
        curve = found[f"early_bird/mask_distance/round_{result.round}"]
        expected = {s: d for s, d in result.mask_distances if d is not None}
        assert sorted(curve) == sorted(expected)
        np.testing.assert_allclose([curve[s] for s in sorted(curve)],
                                   [expected[s] for s in sorted(expected)], rtol=1e-6)


def test_resume_after_a_kill_mid_round_is_bit_identical(converged_run, tmp_path):
    ref_imp, ref_model, _, _, _, _ = converged_run
    folder = str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        _fit(resume_dir=folder, stop_at=(2, 6))   # killed inside round 2
    first_two = sum(r.epochs for r in ref_imp.history[:2])
    assert first_two < 2 * BUDGET // EVERY       # the rounds before were cut short
    assert resume.initial_epoch(folder) == first_two
    imp, model, _, _, _ = _fit(resume_dir=folder, seed=7)  # other init: all comes from the checkpoint
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(imp.callback.history_rows()) == strip(ref_imp.callback.history_rows())
    for got, want in zip(model.weights, ref_model.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.name)
    # a rerun of the finished run trains nothing
    again, _, fit, _, _ = _fit(resume_dir=folder, seed=7)
    assert fit.epoch == [] and len(again.history) == ROUNDS + 1


class _RoundStarts(keras.callbacks.Callback):
    """Records the fit epoch at which each round of a series starts."""

    def __init__(self, imp_callback):
        super().__init__()
        self.imp_callback, self.starts = imp_callback, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.setdefault(self.imp_callback.round, epoch)


@pytest.mark.parametrize("kind", ["reinit", "random"])
def test_a_control_trains_each_round_as_long_as_the_converged_ticket(converged_run, kind):
    imp, model, _, would_be, _, _ = converged_run
    x, y = _data()
    recorder = kl.TicketRecorder(imp.callback)
    recorder.masks = {r: would_be.rounds[r]["start"] for r in range(ROUNDS + 1)}
    starts = []
    control = kl.train_control(kind, model, recorder, x, y, batch_size=BATCH, data_seed=0, seed=1,
                               check_sparsity=1,
                               callbacks=[lambda c: starts.append(_RoundStarts(c)) or starts[-1]])
    ticket_steps = [r.steps for r in imp.history]
    assert len(set(ticket_steps)) > 1  # not vacuous: the ticket's rounds differ in length
    assert [r.round for r in control.history] == list(range(1, ROUNDS + 1))
    assert [r.steps for r in control.history] == ticket_steps[1:]
    assert [r.epochs for r in control.history] == [r.epochs for r in imp.history[1:]]
    # each round starts at the chunk the ticket's did: the same batches (chunked_batches)
    ticket_starts = np.cumsum([0] + [r.epochs for r in imp.history])[:-1]
    assert starts[0].starts == {r: int(ticket_starts[r]) for r in range(1, ROUNDS + 1)}
    # the pruned weights were zero after every batch of every round
    assert control.sparsity_guard.every == 1
    assert control.sparsity_guard.checks == sum(ticket_steps[1:])
    for rnd, masks in control.masks_used.items():
        for name, mask in masks.items():
            assert mask.sum() == would_be.rounds[rnd]["start"][name].sum()
    assert control.run_config["round_end"] == "converged"


def test_a_control_of_an_unfinished_converged_ticket_is_refused(converged_run):
    imp, _, _, would_be, _, _ = converged_run
    recorder = kl.TicketRecorder(imp.callback)
    recorder.masks = {r: would_be.rounds[r]["start"] for r in range(ROUNDS + 1)}
    saved = list(imp.callback.history)
    try:
        imp.callback.history = saved[:-1]
        with pytest.raises(ValueError, match=r"history holds rounds \[0, 1, 2\], not 0..3"):
            kl.ControlCallback("reinit", recorder)
    finally:
        imp.callback.history = saved


@pytest.mark.parametrize("kwargs, match", [
    (dict(round_end="early"), "round_end must be one of"),
    (dict(converge_every=0), "converge_every must be an integer"),
    (dict(converge_every=2.5), "converge_every must be an integer"),
    (dict(converge_every=True), "converge_every must be an integer"),
    (dict(converge_tol=0.0), "converge_tol must be a fraction"),
    (dict(converge_tol=1.0), "converge_tol must be a fraction"),
    (dict(converge_tol=float("nan")), "converge_tol must be a fraction"),
    (dict(converge_tol="0.1"), "converge_tol must be a fraction"),
    (dict(converge_patience=0), "converge_patience must be an integer"),
    (dict(rewind="1ep"), "give the rewind point in iterations"),
    (dict(round_end="epochs", converge_tol=0.1), "only apply with round_end='converged'"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _imp(**kwargs)
    if "rewind" not in kwargs:  # the callback itself checks the same way
        settings = dict(round_end="converged", converge_every=EVERY, converge_tol=TOL,
                        converge_patience=PATIENCE)
        settings.update(kwargs)
        with pytest.raises(ValueError, match=match):
            kl.IMPCallback(kl.IMPSchedule(ROUNDS, RATE), 2, **settings)


def test_fit_without_chunk_epochs_is_refused_before_any_step():
    x, y = _data()
    imp = _imp()
    model = compile_model(imp.wrap(small_mlp()))
    with pytest.raises(ValueError, match=r"steps_per_epoch=4"):
        model.fit(x, y, batch_size=BATCH, epochs=imp.epochs(per_round=2),
                  callbacks=imp.callbacks(verbose=0), verbose=0)
    with pytest.raises(ValueError, match="fit_kwargs is for round_end='converged'"):
        kl.IMP(rounds=1, prune_rate=0.5).fit_kwargs(steps_per_round=10)
    assert imp.fit_kwargs(steps_per_round=41) == {"epochs": 44, "steps_per_epoch": 4}


def test_cli_defaults_match_the_library():
    from keras_lottery.cli import _args

    assert _args.ROUND_ENDS == convergence.ROUND_ENDS
    assert _args.CONVERGE_DEFAULTS == convergence.ConvergenceCriterion().get_config()


@pytest.mark.parametrize("flags, match", [
    (["--round-end", "converged", "--converge-tol", "1.5"], "--converge-tol must be a fraction"),
    (["--round-end", "converged", "--converge-every", "0"], "--converge-every must be >= 1"),
    (["--round-end", "converged", "--converge-patience", "0"], "--converge-patience must be >= 1"),
    (["--converge-tol", "0.1"], "only apply with --round-end converged"),
])
def test_cli_refuses_bad_round_end_flags(flags, match, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path), *flags]) == 2
    assert match in capsys.readouterr().err


def test_cli_run_converged(tmp_path, capsys):
    out = str(tmp_path / "run")
    flags = ["run", "--num-samples", "400", "--rounds", "2", "--epochs-per-round", "2",
             "--round-end", "converged", "--converge-every", "5", "--converge-tol", "0.5",
             "--converge-patience", "1", "--controls", "none", "--progress", "none",
             "--out", out]
    assert main(flags) == 0
    report = kl.report.read_json(os.path.join(out, "imp_report.json"))
    assert report["config"]["round_end"] == "converged"
    assert report["config"]["converge_every"] == 5
    rows = report["history"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    # 180 training examples: 3 batches per epoch, a budget of 6 steps -> 2 chunks of 5
    assert rows[0]["converged_step"] == rows[0]["steps"] == 5  # tol 0.5: at the first check
    assert rows[-1]["converged_step"] is None and rows[-1]["steps"] == 10
    # the printed table gives each round's length (fails on the old code: no steps column)
    table = capsys.readouterr().out
    table = table[table.index("    round"):].splitlines()
    assert table[0].split()[:2] == ["round", "steps"]
    assert [line.split()[1] for line in table[2:5]] == ["5", "5", "10"]


def _series_epoch_lines(text):
    """(series, round) -> [(round, epoch in round, of)] from `--progress epoch` output."""
    import re

    found, pending = {}, []
    for line in text.splitlines():
        epoch = re.match(r"round (\d+)/\d+ · epoch (\d+)/(\d+) \(", line)
        row = re.match(r"\s*(ticket|reinit|random)\s+round\s+(\d+)/\d+ ", line)
        if epoch:
            pending.append(tuple(int(g) for g in epoch.groups()))
        elif row:
            found[(row.group(1), int(row.group(2)))] = pending
            pending = []
    return found


def test_cli_run_converged_with_controls(tmp_path, capsys):
    # fails on the old code: 'pass --controls none' (refused); with the refusal
    # lifted alone, the controls trained [9, 9] steps for the ticket's [2, 6]; the
    # rerun below was refused: "--epochs-per-round: 3 -> 2" (chunks vs epochs of data)
    out = str(tmp_path / "run")
    flags = ["run", "--num-samples", "400", "--rounds", "2", "--epochs-per-round", "2",
             "--round-end", "converged", "--converge-every", "2", "--converge-tol", "0.5",
             "--converge-patience", "1", "--controls", "reinit,random", "--progress", "epoch",
             "--check-sparsity", "1", "--out", out]
    assert main(flags) == 0
    printed = capsys.readouterr().out
    ticket = kl.report.read_json(os.path.join(out, "imp_report.json"))["history"]
    steps = [r["steps"] for r in ticket]
    # 180 training examples: 3 batches per epoch, a budget of 6 steps -> 3 chunks of 2
    assert steps[-1] == 6 and min(steps[:-1]) < 6   # rounds cut short, the last one not
    rows = {}
    for kind in ("reinit", "random"):
        rows[kind] = kl.report.read_json(
            os.path.join(out, "seed_0", kind, "imp_report.json"))["history"]
        assert [r["round"] for r in rows[kind]] == [1, 2]
        assert [r["steps"] for r in rows[kind]] == steps[1:]
        assert [r["epochs"] for r in rows[kind]] == [r["epochs"] for r in ticket[1:]]
    # summary and table carry each series' steps per round
    summary = kl.report.read_json(os.path.join(out, "summary.json"))["summary"]
    for series, srows in summary.items():
        assert [r["steps"]["mean"] for r in srows] == steps[3 - len(srows):]
    table = printed[printed.index("round  % weights"):].splitlines()
    assert table[0].split()[:5] == ["round", "%", "weights", "steps", "ticket"]
    assert [line.split()[2] for line in table[2:5]] == [str(s) for s in steps]
    # --progress epoch: every fit epoch labelled with its own round, 1..n of that round
    lines = _series_epoch_lines(printed)
    for series, history in [("ticket", ticket)] + list(rows.items()):
        for r in history:
            got = lines[(series, r["round"])]
            budget = 3 if series == "ticket" else r["epochs"]
            assert got == [(r["round"], e, budget) for e in range(1, r["epochs"] + 1)], series
    # an interrupted control is trained again on the resumed ticket (history from
    # the checkpoint, masks from ticket_masks/), as the uninterrupted run did
    os.remove(os.path.join(out, "seed_0", "random", "imp_report.json"))
    assert main(flags) == 0
    capsys.readouterr()
    again = kl.report.read_json(os.path.join(out, "seed_0", "random", "imp_report.json"))["history"]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(again) == strip(rows["random"])
    # a changed budget is still refused before any step (by the checkpoint's own check)
    changed = [f if f != "2" or flags[i - 1] != "--epochs-per-round" else "3"
               for i, f in enumerate(flags)]
    assert main(changed) == 2
    assert "epochs_per_round: 3 -> 5" in capsys.readouterr().err


def test_cli_run_converged_over_seeds_with_controls(tmp_path, capsys):
    # fails on the old code: '--round-end converged runs one seed at a time: drop --seeds'
    out = str(tmp_path / "seeds")
    assert main(["run", "--num-samples", "400", "--rounds", "2", "--epochs-per-round", "2",
                 "--round-end", "converged", "--converge-every", "2", "--converge-tol", "0.5",
                 "--converge-patience", "1", "--controls", "reinit", "--seeds", "2",
                 "--check-sparsity", "1", "--progress", "none", "--out", out]) == 0
    capsys.readouterr()
    steps = {}
    for seed in (0, 1):
        for series in ("ticket", "reinit"):
            payload = kl.report.read_json(os.path.join(out, f"seed_{seed}", series, "imp_report.json"))
            assert payload["config"]["round_end"] == "converged"
            steps[seed, series] = [r["steps"] for r in payload["history"]]
        assert steps[seed, "ticket"][-1] == 6 and min(steps[seed, "ticket"][:-1]) < 6
        assert steps[seed, "reinit"] == steps[seed, "ticket"][1:]
    summary = kl.report.read_json(os.path.join(out, "summary.json"))["summary"]
    for series, rows in summary.items():
        assert [r["steps"]["mean"] for r in rows] == [
            np.mean([steps[seed, series][i] for seed in (0, 1)]) for i in range(len(rows))]
