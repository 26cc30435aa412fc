"""Code paths that matter on accelerators and under tf.distribute, on CPU:
`steps_per_execution` > 1 (the usual TPU setting: one batch callback per N
steps) and resuming under MirroredStrategy (2 logical CPU devices, set up by
conftest), where a restore must reach every replica.
"""

import numpy as np
import pytest

from conftest import check_nadam_resume_refused, small_mlp

import keras_lottery as kl
from keras_lottery._keras import keras
from keras_lottery.masks import _component_variables


def _compile(model, steps_per_execution=1):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps_per_execution)
    return model


def _run(data, steps_per_execution, rewind="4it"):
    (x, y), _, _ = data
    imp = kl.IMP(rounds=1, prune_rate=0.5, rewind=rewind)
    model = _compile(imp.wrap(small_mlp(0)), steps_per_execution)
    epochs = imp.epochs(per_round=2)
    model.fit(x, y, batch_size=20, epochs=epochs, callbacks=imp.callbacks(verbose=0),
              shuffle=False, verbose=0)
    return imp, model


def test_steps_per_execution_counts_steps_and_rewinds_to_step_k(tiny_data):
    imp1, model1 = _run(tiny_data, 1)
    imp4, model4 = _run(tiny_data, 4)
    assert [r.steps for r in imp4.history] == [r.steps for r in imp1.history] == [24, 24]
    assert imp4.callback.theta_k.step == 4
    for a, b in zip(imp4.callback.theta_k.values, imp1.callback.theta_k.values):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    masks1, masks4 = kl.read_masks(model1), kl.read_masks(model4)
    for name in masks1:
        np.testing.assert_array_equal(masks4[name], masks1[name])


def test_rewind_point_inside_an_execution_is_refused(tiny_data):
    with pytest.raises(ValueError, match="multiple of the model's steps_per_execution"):
        _run(tiny_data, 4, rewind="3it")


def test_resume_under_mirrored_strategy_restores_every_replica(tiny_data, tmp_path,
                                                              mirrored_strategy):
    (x, y), _, _ = tiny_data
    strategy = mirrored_strategy
    folder = str(tmp_path / "ckpt")
    results = []
    for seed in (0, 7):  # the second run restores the first one's finished state
        with strategy.scope():
            imp = kl.IMP(rounds=1, prune_rate=0.5, rewind="2it")
            model = _compile(imp.wrap(small_mlp(seed)))
        epochs = imp.epochs(per_round=1)
        model.fit(x, y, batch_size=40, epochs=epochs,
                  callbacks=imp.callbacks(verbose=0, resume_dir=folder),
                  initial_epoch=imp.initial_epoch(), shuffle=False, verbose=0)
        results.append((imp, model))
    (imp_a, model_a), (imp_b, model_b) = results
    assert imp_b.initial_epoch() == 2 and len(imp_b.history) == 2
    masks = kl.read_masks(model_a)
    assert all(abs(m.mean() - 0.5) <= 1 / m.size for m in masks.values())
    for w in kl.masks.prunable_weights(model_b):
        # _component_variables lists the distributed variable itself, then its replicas
        replicas = [c for c in _component_variables(w.mask) if c is not w.mask]
        assert len(replicas) == 2
        for component in replicas:
            np.testing.assert_array_equal(component.numpy(), masks[w.name])
        for component in _component_variables(w.weight):
            np.testing.assert_array_equal(component.numpy(), w.weight.numpy())


def test_controls_and_export_of_a_ticket_found_under_mirrored_strategy(tiny_data, tmp_path,
                                                                       mirrored_strategy):
    (x, y), _, _ = tiny_data
    strategy = mirrored_strategy
    with strategy.scope():
        imp = kl.IMP(rounds=2, prune_rate=0.5, rewind="2it")
        model = _compile(imp.wrap(small_mlp(0)))
    data, steps = kl.controls.ordered_batches(x, y, 40, seed=0)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0)
    recorder = kl.controls.TicketRecorder(callbacks)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks + [recorder],
              verbose=0)
    control = kl.controls.train_control("random", model, recorder, x, y, batch_size=40,
                                        data_seed=0)
    assert [(r.round, r.weights_remaining) for r in control.history] == [(1, 0.5), (2, 0.25)]
    path = str(tmp_path / "ticket.keras")
    kl.export.keras_file(model, path)
    plain = keras.models.load_model(path)
    for name, mask in kl.read_masks(model).items():
        kernel = plain.get_layer(name.split("/")[0]).kernel.numpy()
        np.testing.assert_array_equal(kernel == 0, mask == 0)
    np.testing.assert_allclose(plain(x[:8]).numpy(), model(x[:8]).numpy(), rtol=1e-6, atol=1e-6)


def test_resumable_run_with_nadam_under_mirrored_strategy_is_refused(tiny_data, tmp_path,
                                                                    mirrored_strategy):
    """Creating Nadam's state before the first step (what a resume does) makes
    the replicas' momentum-schedule products diverge; legacy Nadam is fine."""
    (x, y), _, _ = tiny_data
    check_nadam_resume_refused(x, y, str(tmp_path), mirrored_strategy)
