"""SparsityGuard: it must see a leak wherever one can be, every replica included."""

import numpy as np
import pytest

from conftest import small_mlp

import keras_lottery as kl
from keras_lottery._keras import keras
from keras_lottery.guard import SparsityViolation


def _pruned_model(tiny_data, strategy=None, policy="float32"):
    """A small MLP after one IMP round at 50% (masks written, survivors rewound)."""
    (x, y), _, _ = tiny_data
    keras.mixed_precision.set_global_policy(policy)
    try:
        scope = strategy.scope() if strategy is not None else _null()
        with scope:
            imp = kl.IMP(rounds=1, prune_rate=0.5)
            model = imp.wrap(small_mlp(0))
            model.compile(keras.optimizers.SGD(0.05),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=40, epochs=imp.epochs(per_round=1),
                  callbacks=imp.callbacks(verbose=0), shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _first_pruned(model):
    """(entry, flat index) of the first pruned position of the first kernel."""
    entry = kl.masks.prunable_weights(model)[0]
    return entry, int(np.flatnonzero(entry.mask.numpy().ravel() == 0)[0])


def _leak(variable, index, value=0.25):
    kernel = variable.numpy()
    kernel.flat[index] = value
    variable.assign(kernel)


def test_a_leak_is_named_with_its_weight_count_and_step(tiny_data):
    model = _pruned_model(tiny_data)
    guard = kl.SparsityGuard(every=1, model=model)
    checked = guard.check(step=5)
    assert checked == sum(int((m == 0).sum()) for m in kl.read_masks(model).values())
    entry, index = _first_pruned(model)
    _leak(entry.weight, index)
    with pytest.raises(SparsityViolation, match=rf"{entry.name}: 1 pruned weight\(s\) are "
                                                r"non-zero after training step 7 \(largest "
                                                r"magnitude 0\.25\)") as error:
        guard.check(step=7)
    assert (error.value.weight, error.value.count, error.value.step) == (entry.name, 1, 7)
    assert error.value.replica is None


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_a_leak_in_one_replica_only_is_seen(tiny_data, mirrored_strategy, policy):
    """`variable.numpy()` reads the primary replica; a leak on the second device alone
    must not pass (under mixed precision, through the AutoCastVariable's float32 copy)."""
    model = _pruned_model(tiny_data, mirrored_strategy, policy)
    guard = kl.SparsityGuard(every=1, model=model)
    guard.check()
    entry, index = _first_pruned(model)
    variable = entry.weight
    while getattr(variable, "_variable", None) is not None:  # AutoCastVariable
        variable = variable._variable
    replicas = variable.values
    assert len(replicas) == 2
    _leak(replicas[1], index)
    assert entry.weight.numpy().flat[index] == 0  # the primary copy still looks clean
    with pytest.raises(SparsityViolation, match="in replica 1's copy") as error:
        guard.check()
    assert error.value.replica == 1 and error.value.count == 1


def test_every_must_be_a_positive_integer_and_round_trips():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="every must be an integer >= 1"):
            kl.SparsityGuard(every=bad)
    guard = kl.SparsityGuard.from_config(kl.SparsityGuard(every=7).get_config())
    assert guard.every == 7
