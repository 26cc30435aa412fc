"""Mixed precision (`mixed_float16`, `mixed_bfloat16`): IMP's masks and
rewinding stay exact in the float32 variables.

Pruned weights are checked after every batch by a `SparsityGuard` (a check
at epoch end would run after tfmot's `UpdatePruningStep` re-masks kernels
and could not fail); tests/test_exact.py covers more layers, heads and
optimizers under both policies.

Under a mixed policy Keras keeps every variable in float32 and computes in
16 bits; masks are float32 0/1 variables, snapshots are float32 copies, and
rewinding assigns them back, so nothing passes through 16 bits.
"""

import numpy as np
import pytest

from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery._keras import keras


class RewindProbe(keras.callbacks.Callback):
    """Right after each round boundary, compares the model with θk ⊙ m."""

    def __init__(self, imp):
        super().__init__()
        self.imp = imp
        self.checked = []

    def on_epoch_end(self, epoch, logs=None):
        cb = self.imp.callback
        if (epoch + 1) % cb.epochs_per_round or cb.round == 0 or len(self.checked) >= cb.round:
            return
        theta_k = cb.theta_k.as_dict()
        for w in kl.masks.prunable_weights(self.model):
            mask = w.mask.numpy()
            value = w.weight.numpy()
            assert w.weight.dtype == "float32" and mask.dtype == np.float32
            assert set(np.unique(mask)) <= {0.0, 1.0}
            np.testing.assert_array_equal(value, theta_k[w.weight.name] * mask)
        self.checked.append(cb.round)


def _optimizer(policy):
    sgd = keras.optimizers.SGD(0.05, momentum=0.9)
    if policy != "mixed_float16":
        return sgd
    # A small loss scale that doubles every 3 finite steps, so that it moves
    # away from its initial value within this short run.
    return keras.mixed_precision.LossScaleOptimizer(sgd, initial_scale=2.0,
                                                    dynamic_growth_steps=3)


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_masks_and_rewinding_exact_under_mixed_precision(policy, tiny_data, tmp_path):
    (x, y), _, _ = tiny_data
    imp = kl.IMP(rounds=2, prune_rate=0.5, rewind="3it")
    model = compile_model(imp.wrap(small_mlp(0)), _optimizer(policy))
    assert model.layers[1].compute_dtype in ("float16", "bfloat16")
    probe = RewindProbe(imp)
    epochs = imp.epochs(per_round=2)
    callbacks = imp.callbacks(verbose=0, resume_dir=str(tmp_path / "ckpt"),
                              check_sparsity=1) + [probe]
    model.fit(x, y, batch_size=40, epochs=epochs, callbacks=callbacks,
              shuffle=False, verbose=0)
    assert probe.checked == [1, 2]
    guard = next(c for c in callbacks if isinstance(c, kl.SparsityGuard))
    assert guard.checks == epochs * 6 and guard.weights_checked > 0
    # θ0 and θk are float32 host copies.
    assert all(v.dtype == np.float32 for v in imp.callback.theta_k.values)
    masks = kl.read_masks(model)
    for w in kl.masks.prunable_weights(model):
        mask, value = masks[w.name], w.weight.numpy()
        assert abs(mask.mean() - 0.25) <= 1 / mask.size
        # The last round trained the survivors away from θk.
        assert not np.array_equal(value, imp.callback.theta_k.as_dict()[w.weight.name] * mask)
    assert [r.round for r in imp.history] == [0, 1, 2]
    assert all(np.isfinite(r.loss) for r in imp.history)
    if policy == "mixed_float16":
        optimizer = model.optimizer
        assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        # Resetting the optimizer at each rewind leaves the loss scale alone.
        scale = float(optimizer.loss_scale.numpy())
        assert np.isfinite(scale) and scale >= 1.0 and scale != optimizer.initial_scale
        # And a resumed (here: finished) run gets the same loss scale back.
        imp2 = kl.IMP(rounds=2, prune_rate=0.5, rewind="3it")
        model2 = compile_model(imp2.wrap(small_mlp(3)), _optimizer(policy))
        epochs2 = imp2.epochs(per_round=2)
        model2.fit(x, y, batch_size=40, epochs=epochs2,
                   callbacks=imp2.callbacks(verbose=0, resume_dir=str(tmp_path / "ckpt")),
                   initial_epoch=imp2.initial_epoch(), verbose=0)
        assert float(model2.optimizer.loss_scale.numpy()) == scale
        assert int(model2.optimizer.dynamic_counter.numpy()) == int(optimizer.dynamic_counter.numpy())
        for name, mask in kl.read_masks(model2).items():
            np.testing.assert_array_equal(mask, masks[name])


def test_legacy_optimizer_run_resumes_bit_identical_under_mixed_float16(tiny_data, tmp_path):
    """A legacy optimizer inside the LossScaleOptimizer creates its slots under
    the loss scaler's tf.cond ('cond_1/SGD/...'), an eager build on resume
    does not: the checkpoint must still match, and the resumed run end where
    the uninterrupted one does."""
    (x, y), _, _ = tiny_data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        def run(resume_dir, epochs=None):
            imp = kl.IMP(rounds=2, prune_rate=0.5, rewind="3it")
            model = compile_model(imp.wrap(small_mlp(0)),
                                  keras.optimizers.legacy.SGD(0.05, momentum=0.9))
            total = imp.epochs(per_round=1)
            callbacks = imp.callbacks(verbose=0, resume_dir=str(resume_dir))
            model.fit(x, y, batch_size=40, epochs=epochs or total, shuffle=False, verbose=0,
                      callbacks=callbacks, initial_epoch=imp.initial_epoch())
            return imp, model

        _, reference = run(tmp_path / "whole")
        run(tmp_path / "cut", epochs=2)  # stops after round 1's checkpoint
        imp, resumed = run(tmp_path / "cut")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert [r.round for r in imp.history] == [0, 1, 2]
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    inner = [reference.optimizer.inner_optimizer, resumed.optimizer.inner_optimizer]
    for a, b in zip(*(o.variables() for o in inner)):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
