"""Learning-rate rewinding (`rewind="lr"`): at each round's end the trained
survivors are kept, the pruned weights zeroed, the optimizer's slots reset and
its step set back to the round's start k."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import controls as controls_lib
from keras_lottery import masks as masks_lib
from keras_lottery._keras import keras
from keras_lottery.callback import IMPCallback
from keras_lottery.rewind import model_state_variables, optimizer_variables
from keras_lottery.schedule import RewindPoint, parse_rewind


def _data(seed=0, n=240):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1)
    return x, y


class _Boundaries(keras.callbacks.Callback):
    """Records, at every epoch end, the model's and optimizer's state (its place
    in the callback list says whether before or after IMP's round boundary)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.states.append({
            "vars": {v.name: v.numpy() for v in model_state_variables(self.model)},
            "masks": masks_lib.read_masks(self.model),
            "kernels": {w.name: w.weight.name for w in masks_lib.prunable_weights(self.model)},
            "optimizer": [v.numpy() for v in optimizer_variables(opt) if v is not opt.iterations],
            "step": int(opt.iterations.numpy()),
        })


def _fresh_slots(optimizer, model):
    """The slots of a brand-new optimizer of the same class and config, built for `model`."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    copies = [tf.Variable(tf.zeros(v.shape, v.dtype)) for v in model.trainable_variables]
    fresh.build(copies)
    return [v.numpy() for v in optimizer_variables(fresh) if v is not fresh.iterations]


def _fit_with_probes(rewind, optimizer, rounds=3, epochs_per_round=1, check_sparsity=True):
    x, y = _data()
    imp = kl.IMP(rounds=rounds, prune_rate=0.4, rewind=rewind)
    model = compile_model(imp.wrap(small_mlp(0)), optimizer)
    epochs = imp.epochs(per_round=epochs_per_round)
    callbacks = imp.callbacks(verbose=0, check_sparsity=check_sparsity)
    before, after = _Boundaries(), _Boundaries()
    at = next(i for i, cb in enumerate(callbacks) if isinstance(cb, IMPCallback))
    callbacks[at:at] = [before]  # sees the trained weights before IMP prunes
    callbacks.insert(at + 2, after)  # sees the round's start after IMP's boundary
    model.fit(x, y, batch_size=40, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0)
    return imp, model, callbacks, before.states, after.states


_ADAM = lambda: keras.optimizers.Adam(0.01)  # noqa: E731
# Adagrad's accumulators start at 0.3, not 0: "reset" must mean a fresh optimizer's values
_ADAGRAD = lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.3)  # noqa: E731


@pytest.mark.parametrize("rewind, k, make_optimizer", [
    ("lr", 0, _ADAM), ("lr:3it", 3, _ADAM), ("lr:3it", 3, _ADAGRAD)],
    ids=["adam-lr", "adam-lr:3it", "adagrad-lr:3it"])
def test_round_end_keeps_trained_survivors_and_resets_optimizer_to_k(rewind, k, make_optimizer):
    imp, model, callbacks, before, after = _fit_with_probes(rewind, make_optimizer())
    assert imp.callback.rewind_steps == k
    fresh = _fresh_slots(model.optimizer, model)
    boundaries = imp.rounds  # the last epoch end has no boundary after it
    for b in range(boundaries):
        pre, post = before[b], after[b]
        kernel_of = {v: name for name, v in pre["kernels"].items()}
        changed = 0
        for name, trained in pre["vars"].items():
            mask = post["masks"].get(kernel_of.get(name))
            if mask is None:  # biases: kept as trained, bit for bit
                np.testing.assert_array_equal(post["vars"][name], trained, err_msg=name)
            else:
                np.testing.assert_array_equal(post["vars"][name], trained * mask, err_msg=name)
                # masks only shrink, and this boundary pruned something
                assert np.all(mask <= pre["masks"][kernel_of[name]])
                changed += int((mask < pre["masks"][kernel_of[name]]).sum())
                # the survivors are the trained values, not θ0 / θk
                theta = imp.callback.theta_k.as_dict()[name]
                assert not np.array_equal(post["vars"][name], theta * mask)
        assert changed > 0
        assert post["step"] == k
        assert len(post["optimizer"]) == len(fresh)
        for got, want in zip(post["optimizer"], fresh):
            np.testing.assert_array_equal(got, want)
        # the optimizer had moved away from its fresh state during the round
        assert any(not np.array_equal(a, w) for a, w in zip(pre["optimizer"], fresh))
    guard = next(cb for cb in callbacks if isinstance(cb, kl.SparsityGuard))
    steps_per_round = 240 // 40
    assert guard.checks == (imp.rounds + 1) * steps_per_round  # after every batch, no violation


def test_weight_rewinding_is_unchanged_by_the_mode():
    """The default mode still rewinds survivors to θk (the comparison above can fail)."""
    imp, model, _, before, after = _fit_with_probes("2it", keras.optimizers.Adam(0.01), rounds=1)
    theta = imp.callback.theta_k.as_dict()
    for name, weight in after[0]["kernels"].items():
        np.testing.assert_array_equal(after[0]["vars"][weight], theta[weight] * after[0]["masks"][name])
    assert imp.callback.ticket_weights is imp.callback.theta_k


def test_ticket_stores_the_weights_the_last_round_started_from(tmp_path):
    imp, model, _, before, after = _fit_with_probes("lr:2it", keras.optimizers.Adam(0.01), rounds=2)
    start = imp.callback.ticket_weights
    assert start is not imp.callback.theta_k and start.step == 2
    last_start = after[imp.rounds - 1]["vars"]  # the state right after the last boundary
    for name, value in zip(start.names, start.values):
        np.testing.assert_array_equal(value, last_start[name])
    ticket = kl.Ticket.from_model(model, imp)
    assert ticket.step == 2 and ticket.config["rewind"] == "lr:2it"
    ticket.save(tmp_path / "ticket")
    again = kl.load_ticket(tmp_path / "ticket")
    rebuilt = again.build_model(optimizer=keras.optimizers.Adam(0.01),
                                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rebuilt_vars = model_state_variables(rebuilt)
    assert len(rebuilt_vars) == len(start.names)
    for v, name in zip(rebuilt_vars, start.names):  # same order; a rebuilt model renames
        np.testing.assert_array_equal(v.numpy(), last_start[name], err_msg=name)
    assert int(rebuilt.optimizer.iterations.numpy()) == 2  # the schedule resumes at k


def test_resume_mid_search_is_bit_identical(tmp_path):
    x, y = _data(1)

    def fit(folder, epochs=None, seed=0):
        imp = kl.IMP(rounds=3, prune_rate=0.4, rewind="lr:2it")
        model = compile_model(imp.wrap(small_mlp(seed)), keras.optimizers.Adam(0.01))
        total = imp.epochs(per_round=1)
        callbacks = imp.callbacks(verbose=0, resume_dir=folder)
        model.fit(x, y, batch_size=60, epochs=epochs or total, callbacks=callbacks,
                  initial_epoch=imp.initial_epoch(), shuffle=False, verbose=0)
        return imp, model

    ref_imp, ref_model = fit(str(tmp_path / "ref"))
    # stopped after round 1, and after round 2 (the resumed run then trains only the
    # last round, whose start it must take from the checkpoint)
    for stop in (2, 3):
        folder = str(tmp_path / f"stop{stop}")
        fit(folder, epochs=stop)
        imp, model = fit(folder, seed=9)  # another init: every value must come from the checkpoint
        assert [r.round for r in imp.history] == [0, 1, 2, 3]
        assert [r.loss for r in imp.history] == [r.loss for r in ref_imp.history]
        for got, want in zip(model.weights, ref_model.weights):
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.name)
        for got, want in zip(optimizer_variables(model.optimizer),
                             optimizer_variables(ref_model.optimizer)):
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.name)
        start, ref_start = imp.callback.ticket_weights, ref_imp.callback.ticket_weights
        assert start is not None and start.step == ref_start.step == 2
        for got, want in zip(start.values, ref_start.values):
            np.testing.assert_array_equal(got, want)


def test_a_control_of_an_lr_ticket_trains_from_theta_k_at_step_k():
    """Controls are the from-scratch baselines also for learning-rate rewinding:
    each round starts from θk (random) or fresh weights (reinit), never from the
    ticket's trained survivors, at step k."""
    x, y = _data()
    imp = kl.IMP(rounds=2, prune_rate=0.4, rewind="lr:2it")
    model = compile_model(imp.wrap(small_mlp(0)), keras.optimizers.Adam(0.01))
    data, steps = controls_lib.ordered_batches(x, y, batch_size=40, seed=0)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0)
    recorder = controls_lib.TicketRecorder(callbacks)
    model.fit(data, steps_per_epoch=steps, epochs=epochs,
              callbacks=callbacks + [recorder], verbose=0)
    starts = []

    def probe(control):
        class Start(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                starts.append(({v.name: v.numpy() for v in model_state_variables(self.model)},
                               int(self.model.optimizer.iterations.numpy())))
        return Start()

    control = controls_lib.train_control("random", model, recorder, x, y, batch_size=40, data_seed=0,
                               check_sparsity=1, callbacks=[probe])
    assert [r.round for r in control.history] == [1, 2]
    theta = imp.callback.theta_k.as_dict()
    for rnd, (values, step) in zip((1, 2), starts):
        assert step == 2
        for name, mask in control.masks_used[rnd].items():
            weight = next(w.weight.name for w in masks_lib.prunable_weights(model) if w.name == name)
            np.testing.assert_array_equal(values[weight], theta[weight] * mask)


@pytest.mark.parametrize("text", ["lr:", "lr5", "lr:5", "lrx", "lr:-1it", "LR", "lr:2ep:3"])
def test_malformed_lr_rewind_is_refused_naming_the_forms(text):
    with pytest.raises(ValueError, match="'lr'"):
        parse_rewind(text)


def test_lr_forms_parse_and_print_back():
    assert parse_rewind("lr") == RewindPoint(0, "it", mode="lr")
    assert parse_rewind(" lr : 500it ") == RewindPoint(500, "it", mode="lr")
    assert str(parse_rewind("lr:2ep")) == "lr:2ep"
    assert str(parse_rewind("lr")) == "lr" and str(parse_rewind("lr:0it")) == "lr"
    assert parse_rewind("lr") != parse_rewind("0it")  # a resume compares str(rewind)
    assert not parse_rewind("lr").rewinds_weights and parse_rewind("0it").rewinds_weights
    with pytest.raises(ValueError, match="mode"):
        RewindPoint(0, "it", mode="optimizer")


def test_lr_rewind_past_round_zero_is_refused():
    imp = kl.IMP(rounds=2, prune_rate=0.2, rewind="lr:3ep")
    with pytest.raises(ValueError, match="past the end of round 0"):
        imp.epochs(per_round=2)


def test_cli_run_takes_rewind_lr(tmp_path, capsys):
    from keras_lottery.cli import main

    out = tmp_path / "cli"
    assert main(["run", "--num-samples", "500", "--rounds", "1", "--epochs-per-round", "1",
                 "--batch-size", "50", "--controls", "none", "--rewind", "lr", "--quiet",
                 "--out", str(out)]) == 0
    payload = kl.report.read_json(out / "imp_report.json")
    assert payload["config"]["rewind"] == "lr"
    assert [r["round"] for r in payload["history"]] == [0, 1]
    assert kl.load_ticket(out / "ticket").config["rewind"] == "lr"
    capsys.readouterr()
    assert main(["run", "--num-samples", "500", "--rewind", "lr:x", "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "'lr:<N>it'" in capsys.readouterr().err
