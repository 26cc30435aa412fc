"""IMP inside one model.fit: what a user relies on, checked step by step."""

import numpy as np
import pytest
import tensorflow as tf

import keras_lottery as kl
from conftest import compile_model, make_tiny_data, small_mlp
from keras_lottery._keras import keras
from keras_lottery.masks import prunable_weights
from keras_lottery.rewind import model_state_variables

BATCH = 30
STEPS_PER_EPOCH = 8  # 240 examples / 30


class Recorder(keras.callbacks.Callback):
    """Placed after the IMP callbacks: sees the state the next step starts from."""

    def __init__(self, imp_callback, k):
        super().__init__()
        self.imp_callback = imp_callback
        self.k = k
        self.step = 0
        self.zero_checks = 0
        self.pruned_seen = 0
        self.violations = []
        self.weights_at_k = None
        self.after_rewind = []
        self.traces_after_first_epoch = None

    def on_train_begin(self, logs=None):
        if self.k == 0:
            self.weights_at_k = [v.numpy().copy() for v in model_state_variables(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.k:
            self.weights_at_k = [v.numpy().copy() for v in model_state_variables(self.model)]
        for w in prunable_weights(self.model):
            mask, kernel = w.mask.numpy(), w.weight.numpy()
            pruned = mask == 0
            self.pruned_seen += int(pruned.sum())
            self.zero_checks += 1
            if np.any(kernel[pruned] != 0):
                self.violations.append((self.step, w.name))

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.traces_after_first_epoch = self.model.train_function.experimental_get_tracing_count()
        cb = self.imp_callback
        if len(cb.history) > len(self.after_rewind) and cb.round == len(cb.history):
            opt = self.model.optimizer
            self.after_rewind.append({
                "round": cb.round,
                "state": [v.numpy().copy() for v in model_state_variables(self.model)],
                "masks": kl.read_masks(self.model),
                "iterations": int(opt.iterations.numpy()),
                "slots": [v.numpy().copy() for v in opt.variables if v is not opt.iterations],
            })


def run_imp(tiny_data, rewind="0it", scope="layerwise", rounds=3, per_round=2, seed=0,
            output_layer_rate=None, strategy=None, optimizer=None):
    (x, y), val, test = tiny_data
    imp = kl.IMP(rounds=rounds, prune_rate=0.3, rewind=rewind, scope=scope,
                 output_layer_rate=output_layer_rate)
    base = small_mlp(seed)
    scope_ctx = strategy.scope() if strategy else tf.init_scope()
    with scope_ctx:
        model = small_mlp(seed)
        model.set_weights(base.get_weights())
        model = compile_model(imp.wrap(model), optimizer() if optimizer else None)
    epochs = imp.epochs(per_round=per_round)
    callbacks = imp.callbacks(test_data=test, verbose=0)
    k = kl.parse_rewind(rewind).to_steps(STEPS_PER_EPOCH)
    recorder = Recorder(callbacks[-1], k)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=val, shuffle=False,
              callbacks=callbacks + [recorder], verbose=0)
    return imp, model, recorder


@pytest.fixture(scope="module")
def lth_run(request):
    return run_imp(request.getfixturevalue("tiny_data_module"), output_layer_rate=0.15)


@pytest.fixture(scope="module")
def late_rewind_run(request):
    return run_imp(request.getfixturevalue("tiny_data_module"), rewind="5it", scope="global")


@pytest.fixture(scope="module")
def tiny_data_module():
    return make_tiny_data()


def test_history_has_a_row_per_round_starting_dense(lth_run):
    imp, _, _ = lth_run
    assert [r.round for r in imp.history] == [0, 1, 2, 3]
    assert imp.history[0].weights_remaining == 1.0
    for row in imp.history:
        assert row.steps == 2 * STEPS_PER_EPOCH
        assert set(row.weights_remaining_by_layer) == {"fc1/kernel", "fc2/kernel", "output/kernel"}
        assert 0.0 <= row.test_accuracy <= 1.0 and row.val_accuracy is not None
        assert 0 < row.early_stop_iteration <= row.steps


def test_layerwise_weights_remaining_exactly_as_scheduled(lth_run):
    imp, model, _ = lth_run
    sizes = {w.name: w.size for w in prunable_weights(model)}
    for row in imp.history:
        r = row.round
        for name, fraction in row.weights_remaining_by_layer.items():
            rate = 0.15 if name.startswith("output") else 0.3
            assert abs(fraction * sizes[name] - sizes[name] * (1 - rate) ** r) <= 1, (r, name)
        # the share of all parameters counts the (never pruned) biases as kept
        kept = sum(f * sizes[n] for n, f in row.weights_remaining_by_layer.items())
        biases = sum(int(np.prod(v.shape)) for v in model.trainable_weights if "bias" in v.name)
        total = sum(sizes.values()) + biases
        assert row.all_weights_remaining == pytest.approx((kept + biases) / total)


def test_global_weights_remaining_exactly_as_scheduled(late_rewind_run):
    imp, model, _ = late_rewind_run
    total = sum(w.size for w in prunable_weights(model))
    for row in imp.history:
        assert abs(row.weights_remaining * total - total * 0.7**row.round) <= 1
    # one threshold across layers: per-layer fractions differ
    last = imp.history[-1].weights_remaining_by_layer
    assert len({round(v, 3) for v in last.values()}) > 1


@pytest.mark.parametrize("run", ["lth_run", "late_rewind_run"])
def test_pruned_weights_stay_exactly_zero_after_every_step(run, request):
    _, model, recorder = request.getfixturevalue(run)
    assert recorder.zero_checks == 4 * 2 * STEPS_PER_EPOCH * 3
    assert recorder.pruned_seen > 0, "nothing was pruned: the check would be vacuous"
    assert recorder.violations == []
    final = kl.read_masks(model)
    for w in prunable_weights(model):
        assert np.all(w.weight.numpy()[final[w.name] == 0] == 0)


@pytest.mark.parametrize("run", ["lth_run", "late_rewind_run"])
def test_survivors_equal_theta_k_bit_exactly_after_rewind(run, request):
    _, model, recorder = request.getfixturevalue(run)
    names = [v.name for v in model_state_variables(model)]
    kernels = {w.weight.name: w.name for w in prunable_weights(model)}
    assert len(recorder.after_rewind) == 3
    for snap in recorder.after_rewind:
        for name, now, at_k in zip(names, snap["state"], recorder.weights_at_k):
            if name in kernels:
                mask = snap["masks"][kernels[name]]
                assert np.array_equal(now, at_k * mask), name
                assert np.array_equal(now[mask == 1], at_k[mask == 1])
            else:
                assert np.array_equal(now, at_k), name


def test_late_rewind_point_is_not_the_initialization(late_rewind_run):
    imp, model, recorder = late_rewind_run
    cb = imp.callback
    assert cb.theta_k.step == 5 and cb.theta0.step == 0
    differs = [not np.array_equal(a, b) for a, b in zip(cb.theta0.values, cb.theta_k.values)]
    assert any(differs)
    for ours, theirs in zip(cb.theta_k.values, recorder.weights_at_k):
        assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("run,k", [("lth_run", 0), ("late_rewind_run", 5)])
def test_optimizer_slots_reset_and_step_counter_set_to_k(run, k, request):
    _, _, recorder = request.getfixturevalue(run)
    for snap in recorder.after_rewind:
        assert snap["iterations"] == k
        assert snap["slots"], "SGD with momentum has slots"
        assert all(not np.any(s) for s in snap["slots"])


def test_training_still_moves_survivors_in_later_rounds(lth_run):
    imp, model, recorder = lth_run
    last = recorder.after_rewind[-1]["state"]
    now = [v.numpy() for v in model_state_variables(model)]
    assert any(not np.array_equal(a, b) for a, b in zip(last, now))


def test_nothing_is_retraced_between_rounds(lth_run):
    _, model, recorder = lth_run
    assert recorder.traces_after_first_epoch is not None
    assert model.train_function.experimental_get_tracing_count() == recorder.traces_after_first_epoch


def test_same_seed_gives_same_masks(tiny_data_module, lth_run):
    _, first_model, _ = lth_run
    _, second_model, _ = run_imp(tiny_data_module, output_layer_rate=0.15)
    first, second = kl.read_masks(first_model), kl.read_masks(second_model)
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_mirrored_strategy_gives_the_masks_of_one_device(tiny_data_module, late_rewind_run,
                                                        mirrored_strategy):
    assert mirrored_strategy.num_replicas_in_sync == 2
    _, mirrored, recorder = run_imp(tiny_data_module, rewind="5it", scope="global",
                                    strategy=mirrored_strategy)
    single = kl.read_masks(late_rewind_run[1])
    multi = kl.read_masks(mirrored)
    assert all(np.array_equal(single[k], multi[k]) for k in single)
    assert recorder.violations == []


def test_epoch_rewind_point_is_captured_at_the_epoch_end(tiny_data_module):
    imp, _, recorder = run_imp(tiny_data_module, rewind="1ep", rounds=1)
    assert imp.callback.theta_k.step == STEPS_PER_EPOCH
    for ours, theirs in zip(imp.callback.theta_k.values, recorder.weights_at_k):
        assert np.array_equal(ours, theirs)


def test_adam_slots_are_reset_too(tiny_data_module):
    _, _, recorder = run_imp(tiny_data_module, rounds=1, per_round=1,
                             optimizer=lambda: keras.optimizers.Adam(1e-3))
    snap = recorder.after_rewind[0]
    assert len(snap["slots"]) >= 6 and all(not np.any(s) for s in snap["slots"])


def test_rewind_past_round_zero_fails_before_any_step(tiny_data_module):
    (x, y), _, _ = tiny_data_module
    imp = kl.IMP(rounds=1, prune_rate=0.2, rewind="1000it")
    model = compile_model(imp.wrap(small_mlp()))
    before = [v.numpy().copy() for v in model_state_variables(model)]
    with pytest.raises(ValueError, match="past the end of round 0"):
        model.fit(x, y, batch_size=BATCH, epochs=imp.epochs(per_round=1),
                  callbacks=imp.callbacks(verbose=0), verbose=0)
    after = [v.numpy() for v in model_state_variables(model)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert int(model.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize("again, match", [
    ("same callbacks", "already run"),
    # what the "already run" error used to suggest; it took the ticket as θ0
    ("fresh callbacks", "already pruned"),
])
def test_a_second_imp_fit_on_the_same_model_is_refused(tiny_data_module, again, match):
    (x, y), _, _ = tiny_data_module
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=callbacks, verbose=0)
    masks = kl.read_masks(model)
    if again == "fresh callbacks":
        callbacks = imp.callbacks(verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=callbacks, verbose=0)
    after = kl.read_masks(model)
    assert all(np.array_equal(masks[k], after[k]) for k in masks)


def test_more_epochs_than_the_rounds_need_are_refused(tiny_data_module):
    (x, y), _, _ = tiny_data_module
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=1)
    with pytest.raises(ValueError, match="duplicate rounds"):
        model.fit(x, y, batch_size=BATCH, epochs=epochs + 1, callbacks=imp.callbacks(verbose=0),
                  verbose=0)
    assert imp.history == []
    assert int(model.optimizer.iterations.numpy()) == 0


def test_a_new_run_started_at_a_later_epoch_is_refused(tiny_data_module):
    """initial_epoch > 0 without a resumed state: round 0 would end after its
    first epoch, rows would report epochs never trained, the last round not run."""
    (x, y), _, _ = tiny_data_module
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=2)
    with pytest.raises(ValueError, match="initial_epoch=0"):
        model.fit(x, y, batch_size=BATCH, epochs=epochs, initial_epoch=1,
                  callbacks=imp.callbacks(verbose=0), verbose=0)
    assert imp.history == []
    assert int(model.optimizer.iterations.numpy()) == 0


def test_fit_without_the_imp_callbacks_is_a_clear_error(tiny_data_module):
    (x, y), _, _ = tiny_data_module
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(0)))
    with pytest.raises(RuntimeError, match="without the IMP callbacks"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    model.predict(x[:4], verbose=0)  # inference is unaffected
    # and the real run still works on the same model afterwards
    model = compile_model(imp.wrap(small_mlp(0)))
    epochs = imp.epochs(per_round=1)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=imp.callbacks(verbose=0), verbose=0)
    assert len(imp.history) == 2
