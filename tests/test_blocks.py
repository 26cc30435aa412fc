"""Block-structured masks: IMP(block=(4, 1)) prunes whole blocks of a kernel.

The mask arithmetic is checked on NumPy arrays (counts, partial last blocks,
the block score, scopes); one tiny block ticket is trained once per module
(3 rounds, a partial block in the first kernel, every pruned weight checked
after every batch) and checked at every round boundary, then its random-block
control, its ticket file, its resume settings and the CLI.
"""

import os

import numpy as np
import pytest
from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import blocks, controls, masks as masks_lib, resume
from keras_lottery._keras import keras
from keras_lottery.rewind import model_state_variables

ROUNDS = 3
RATE = 0.5
OUTPUT_RATE = 0.25
BLOCK = (4, 1)
INPUTS = 30  # 30 % 4 = 2: fc1's kernel has a partial last block in every column


def _n_blocks(shape, block):
    return int(np.prod(blocks.block_grid_shape(shape, block)))


def _expected_blocks(n, rate, rnd):
    """(1 - p) ** r of the blocks, rounded, at least one."""
    return max(1, int(round(n * (1.0 - rate) ** rnd)))


# -- parsing --------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("4x1", (4, 1)), ("4X1", (4, 1)), (" 1x16 ", (1, 16)), ("2,2", (2, 2)), ((4, 1), (4, 1)),
    ([8, 1], (8, 1)), ((1, 1), None), ("1x1", None), (None, None), (np.array([4, 1]), (4, 1)),
])
def test_parse_block(value, expected):
    assert blocks.parse_block(value) == expected


@pytest.mark.parametrize("bad", ["4x0", "x", "3x3x3", "4", "", "4x", "ax1", "4x1.5", (0, 1),
                                 (4,), (4, -1), (True, 1), (4.5, 1), 4])
def test_bad_block_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match=r"two positive integers.*got"):
        blocks.parse_block(bad)
    with pytest.raises(ValueError, match="block"):
        kl.IMP(rounds=1, prune_rate=0.2, block=bad)


def test_bad_block_score_and_layers_are_refused():
    with pytest.raises(ValueError, match=r"block_score must be one of \('l1', 'l2'\), got 'l3'"):
        kl.IMP(rounds=1, prune_rate=0.2, block=(4, 1), block_score="l3")
    with pytest.raises(ValueError, match="block_layers must be one of"):
        kl.IMP(rounds=1, prune_rate=0.2, block=(4, 1), block_layers="outputs")


def test_imp_config_round_trip():
    imp = kl.IMP(rounds=4, prune_rate=0.2, block="4x1", block_score="l2", block_layers="hidden")
    config = imp.get_config()
    assert config["block"] == [4, 1] and config["block_score"] == "l2"
    again = kl.IMP.from_config(config)
    assert kl.IMP(rounds=1, prune_rate=0.2, block=(4, 1)).block_score == "l2"  # the default
    assert again.block == (4, 1) and again.get_config() == config
    assert kl.IMP(rounds=1, prune_rate=0.2, block=(1, 1)).block is None


# -- mask arithmetic ------------------------------------------------------------


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    weights = {"a/kernel": rng.normal(size=(INPUTS, 7)), "b/kernel": rng.normal(size=(12, 5)),
               "c/kernel": rng.normal(size=(5, 3))}
    return weights, {n: np.ones(w.shape, np.float32) for n, w in weights.items()}


@pytest.mark.parametrize("scope", ["layerwise", "global", "erk"])
def test_every_round_keeps_whole_blocks_exact_counts_and_only_shrinks(scope):
    weights, masks = _arrays()
    per_weight = {"a/kernel": BLOCK, "b/kernel": BLOCK, "c/kernel": None}
    units = {n: _n_blocks(w.shape, per_weight[n] or (1, 1)) for n, w in weights.items()}
    for rnd in range(1, 8):
        new = masks_lib.compute_masks(weights, masks, rnd, 0.2, scope, blocks=per_weight)
        for name, mask in new.items():
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert np.all(mask <= masks[name]), f"{name} grew in round {rnd}"
            if per_weight[name]:
                assert blocks.is_block_structured(mask, BLOCK), f"{name}, round {rnd}"
        kept = {n: int(blocks.block_alive(m, per_weight[n]).sum()) if per_weight[n]
                else int(m.sum()) for n, m in new.items()}
        if scope == "layerwise":
            assert kept == {n: _expected_blocks(u, 0.2, rnd) for n, u in units.items()}
        else:  # one count over every tensor, in blocks (a weight of c is a 1x1 block)
            assert sum(kept.values()) == _expected_blocks(sum(units.values()), 0.2, rnd)
        masks = new


@pytest.mark.parametrize("score", ["l1", "l2"])
def test_partial_last_block_is_one_block_scored_by_its_mean(score):
    # 6 inputs in blocks of 4: a full block of 0.8s and a partial block of two 1.0s.
    # By mean |w| or RMS the partial block wins (1.0 > 0.8); a plain L1 or L2 norm
    # (2.0 < 3.2, 1.41 < 1.6) would drop it.
    w = {"d/kernel": np.array([[0.8], [0.8], [0.8], [-0.8], [1.0], [-1.0]])}
    m = {"d/kernel": np.ones((6, 1), np.float32)}
    new = masks_lib.compute_masks(w, m, 1, 0.5, blocks={"d/kernel": BLOCK},
                                  block_score=score)["d/kernel"]
    assert new.ravel().tolist() == [0, 0, 0, 0, 1, 1]
    assert blocks.block_grid_shape((300, 100), BLOCK) == (75, 100)
    assert blocks.block_grid_shape((30, 7), BLOCK) == (8, 7)


def test_l1_and_l2_block_scores_rank_differently():
    # block A: four 1.0s (mean |w| 1, RMS 1); block B: one 3.5 (mean |w| 0.875, RMS 1.75)
    w = {"d/kernel": np.array([[1.0], [1.0], [-1.0], [1.0], [3.5], [0.0], [0.0], [0.0]])}
    m = {"d/kernel": np.ones((8, 1), np.float32)}
    l1 = masks_lib.compute_masks(w, m, 1, 0.5, blocks={"d/kernel": BLOCK}, block_score="l1")
    l2 = masks_lib.compute_masks(w, m, 1, 0.5, blocks={"d/kernel": BLOCK}, block_score="l2")
    assert l1["d/kernel"].ravel().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert l2["d/kernel"].ravel().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(blocks.block_scores(w["d/kernel"], BLOCK, "l2").ravel(), [1.0, 1.75])


def test_conv_block_runs_along_input_channels_of_one_output_channel():
    rng = np.random.default_rng(1)
    w = {"conv/kernel": rng.normal(size=(3, 3, 8, 4))}
    m = {"conv/kernel": np.ones((3, 3, 8, 4), np.float32)}
    new = masks_lib.compute_masks(w, m, 2, 0.5, blocks={"conv/kernel": (1, 1, 4, 1)})
    grid = new["conv/kernel"].reshape(3, 3, 2, 4, 4)  # cin 8 = 2 blocks of 4
    assert np.all((grid.min(axis=3) == grid.max(axis=3)))
    assert int(blocks.block_alive(new["conv/kernel"], (1, 1, 4, 1)).sum()) == 18  # 72 / 4


def test_mask_not_made_of_blocks_is_refused():
    weights, masks = _arrays()
    masks["a/kernel"][1, 0] = 0.0  # one weight of a 4x1 block pruned alone
    with pytest.raises(ValueError, match=r"'a/kernel' is not made of whole 4x1 blocks.*block setting"):
        masks_lib.compute_masks(weights, masks, 1, 0.2, blocks={"a/kernel": BLOCK})
    with pytest.raises(ValueError, match="positive block size for each of its 2 axes"):
        masks_lib.compute_masks(weights, masks, 1, 0.2, blocks={"b/kernel": (4,)})


def test_kernel_blocks_rule():
    inputs = keras.Input((6, 6, 8))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Conv2DTranspose(4, 3, name="deconv")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, name="fc")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    emb_in = keras.Input((5,), dtype="int32")
    emb = keras.layers.Flatten()(keras.layers.Embedding(20, 4, name="emb")(emb_in))
    model = keras.Model([inputs, emb_in], [outputs, keras.layers.Dense(2, name="head2")(emb)])
    imp = kl.IMP(rounds=1, prune_rate=0.2, block=BLOCK, block_layers="hidden")
    wrapped = imp.wrap(model)
    entries = masks_lib.prunable_weights(wrapped)
    found = blocks.kernel_blocks(entries, imp.block, imp.block_exempt_for(wrapped))
    assert found == {"conv/kernel": (1, 1, 4, 1), "deconv/kernel": None, "fc/kernel": (4, 1),
                     "out/kernel": None, "emb/embeddings": None, "head2/kernel": None}
    assert blocks.kernel_blocks(entries, imp.block)["out/kernel"] == (4, 1)
    assert set(blocks.kernel_blocks(entries, None).values()) == {None}


def test_random_block_masks_keep_each_tensors_block_count():
    weights, masks = _arrays()
    per_weight = {"a/kernel": BLOCK, "b/kernel": BLOCK, "c/kernel": None}
    for rnd in range(1, 4):
        masks = masks_lib.compute_masks(weights, masks, rnd, 0.3, blocks=per_weight)
    drawn = controls.random_masks(masks, seed=3, blocks=per_weight)
    for name, mask in drawn.items():
        block = per_weight[name]
        if block:
            assert blocks.is_block_structured(mask, block)
            assert blocks.block_alive(mask, block).sum() == blocks.block_alive(masks[name], block).sum()
        else:
            assert mask.sum() == masks[name].sum()
        assert not np.array_equal(mask, masks[name])
    np.testing.assert_array_equal(controls.random_masks(masks, 3, per_weight)["a/kernel"],
                                  drawn["a/kernel"])


# -- a trained block ticket -----------------------------------------------------


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, INPUTS)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(INPUTS, 10)), axis=1).astype("int64")
    return (x[:240], y[:240]), (x[240:], y[240:])


class BoundaryCheck(keras.callbacks.Callback):
    """At every round boundary (after IMPCallback pruned and rewound): the
    new masks, their block counts, and the weights (θ0 ⊙ m, bit-exact)."""

    def __init__(self, imp):
        super().__init__()
        self.imp = imp
        self.seen = {}
        self.failures = []

    def on_train_begin(self, logs=None):
        self.previous = masks_lib.read_masks(self.model)

    def on_epoch_end(self, epoch, logs=None):
        cb = self.imp.callback
        rnd = cb.round
        if rnd in self.seen or rnd == 0:
            return
        entries = masks_lib.prunable_weights(self.model)
        per_weight = blocks.kernel_blocks(entries, cb.block, cb.block_exempt)
        current = masks_lib.read_masks(self.model)
        rates = cb.layer_rates
        for w in entries:
            mask, block = current[w.name], per_weight[w.name]
            if block is None:
                self.failures.append(f"{w.name} has no block")
                continue
            if not blocks.is_block_structured(mask, block):
                self.failures.append(f"round {rnd}: {w.name} not block-structured")
                continue
            if np.any(mask > self.previous[w.name]):
                self.failures.append(f"round {rnd}: {w.name} grew")
            want = _expected_blocks(_n_blocks(mask.shape, block), rates.get(w.layer_name, RATE), rnd)
            got = int(blocks.block_alive(mask, block).sum())
            if got != want:
                self.failures.append(f"round {rnd}: {w.name} keeps {got} blocks, not {want}")
        theta0 = cb.theta0.values
        by_id = {id(w.weight): current[w.name] for w in entries}
        for variable, start in zip(model_state_variables(self.model), theta0):
            expected = start * by_id[id(variable)] if id(variable) in by_id else start
            if not np.array_equal(variable.numpy(), expected.astype(start.dtype)):
                self.failures.append(f"round {rnd}: {variable.name} not rewound to θ0 ⊙ m")
        self.seen[rnd] = current
        self.previous = current


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    folder = tmp_path_factory.mktemp("block_ticket")
    (x, y), val = _data()
    imp = kl.IMP(rounds=ROUNDS, prune_rate=RATE, output_layer_rate=OUTPUT_RATE, block=BLOCK)
    model = imp.wrap(small_mlp(seed=3, input_dim=INPUTS))
    compile_model(model)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, report_dir=str(folder / "report"),
                              resume_dir=str(folder / "resume"),
                              tensorboard_dir=str(folder / "tb"), check_sparsity=1)
    recorder = controls.TicketRecorder(callbacks)
    check = BoundaryCheck(imp)
    data, steps = controls.ordered_batches(x, y, 30, seed=5)
    model.fit(data, steps_per_epoch=steps, epochs=epochs, validation_data=val,
              callbacks=callbacks + [recorder, check], verbose=0)
    guard = next(cb for cb in callbacks if isinstance(cb, kl.SparsityGuard))
    return {"imp": imp, "model": model, "recorder": recorder, "check": check, "x": x, "y": y,
            "val": val, "folder": folder, "guard": guard, "steps": steps}


def test_ticket_masks_are_blocks_with_exact_counts_and_rewound_every_round(ticket):
    check = ticket["check"]
    assert sorted(check.seen) == list(range(1, ROUNDS + 1))
    assert check.failures == []
    fc1 = check.seen[ROUNDS]["fc1/kernel"]
    assert fc1.shape == (INPUTS, 32)
    # the partial blocks (rows 28-29) are kept or pruned like whole ones
    assert 0 < fc1[28:].sum() < fc1[28:].size


def test_pruned_weights_are_zero_after_every_batch(ticket):
    guard = ticket["guard"]
    assert guard.every == 1
    assert guard.checks == (ROUNDS + 1) * ticket["steps"]


def test_report_and_tensorboard_record_the_block_setting(ticket):
    report = kl.report.read_json(os.path.join(ticket["folder"], "report", "imp_report.json"))
    assert report["config"]["block"] == "4x1" and report["config"]["block_score"] == "l2"
    assert [r["round"] for r in report["history"]] == list(range(ROUNDS + 1))
    events = [f for _, _, files in os.walk(ticket["folder"] / "tb") for f in files
              if "tfevents" in f]
    assert events


def test_random_block_control_draws_blocks_with_the_tickets_counts(ticket):
    control = controls.train_control("random", ticket["model"], ticket["recorder"], ticket["x"],
                                     ticket["y"], batch_size=30, data_seed=5, seed=1,
                                     check_sparsity=1)
    assert control.block == BLOCK
    assert control.sparsity_guard.checks == ROUNDS * ticket["steps"]
    for rnd in range(1, ROUNDS + 1):
        ours, theirs = control.masks_used[rnd], ticket["recorder"].masks[rnd]
        for name, mask in ours.items():
            assert blocks.is_block_structured(mask, BLOCK), (rnd, name)
            assert (blocks.block_alive(mask, BLOCK).sum()
                    == blocks.block_alive(theirs[name], BLOCK).sum()), (rnd, name)
            assert not np.array_equal(mask, theirs[name])
    final = kl.read_masks(control.trained_model)
    for name, mask in final.items():
        np.testing.assert_array_equal(mask, control.masks_used[ROUNDS][name])


def test_ticket_file_keeps_blocks_and_the_setting(ticket, tmp_path):
    saved = kl.save_ticket(str(tmp_path / "ticket"), ticket["model"], ticket["imp"])
    loaded = kl.load_ticket(str(tmp_path / "ticket"))
    assert loaded.config["block"] == [4, 1] and loaded.config["block_score"] == "l2"
    assert kl.parse_block(loaded.config["block"]) == BLOCK
    for name, mask in loaded.masks.items():
        assert blocks.is_block_structured(mask, BLOCK)
        np.testing.assert_array_equal(mask, saved.masks[name])


def test_resume_refuses_a_changed_block_setting(ticket):
    folder = str(ticket["folder"] / "resume")
    meta = resume.read_checkpoint(folder)
    assert meta["config"]["block"] == "4x1" and meta["config"]["block_score"] == "l2"
    (x, y), val = _data()
    for change in ({"block": (2, 1)}, {"block": None}, {"block_score": "l1"}):
        settings = dict(block=BLOCK, block_score="l2")
        settings.update(change)
        imp = kl.IMP(rounds=ROUNDS, prune_rate=RATE, output_layer_rate=OUTPUT_RATE, **settings)
        model = imp.wrap(small_mlp(seed=3, input_dim=INPUTS))
        compile_model(model)
        epochs = imp.epochs(per_round=1)
        callbacks = imp.callbacks(verbose=0, resume_dir=folder)
        data, steps = controls.ordered_batches(x, y, 30, seed=5, start_epoch=imp.initial_epoch())
        with pytest.raises(ValueError, match=r"(?s)other settings.*block"):
            model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks,
                      initial_epoch=imp.initial_epoch(), verbose=0)


# -- the CLI --------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["4x0", "x", "3x3x3"])
def test_cli_bad_block_is_a_clear_error(bad, capsys):
    from keras_lottery.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--block", bad])
    err = capsys.readouterr().err
    assert f"argument --block: {bad!r} is not a block" in err and "e.g. 4x1" in err


@pytest.mark.parametrize("flag, value", [("--block-score", "l2"), ("--block-layers", "hidden")])
def test_cli_block_options_need_block(flag, value, tmp_path, capsys):
    from keras_lottery.cli import main

    assert main(["run", flag, value, "--out", str(tmp_path)]) == 2
    assert f"{flag} {value} applies to block masks: pass --block too" in capsys.readouterr().err


def test_cli_run_with_block_then_a_changed_block_is_refused(tmp_path, capsys):
    from keras_lottery.cli import main

    argv = ["run", "--rounds", "1", "--epochs-per-round", "1", "--num-samples", "400",
            "--controls", "random", "--block", "4x1", "--check-sparsity", "1", "--quiet",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    report = kl.report.read_json(tmp_path / "imp_report.json")
    assert report["config"]["block"] == "4x1" and report["config"]["block_score"] == "l2"
    with np.load(tmp_path / "ticket_masks" / "round_001.npz") as npz:
        names = [str(n) for n in npz["names"]]
        for i, name in enumerate(names):
            assert blocks.is_block_structured(npz[f"mask_{i}"], BLOCK), name
    random = kl.report.read_json(tmp_path / "seed_0" / "random" / "imp_report.json")
    assert random["config"]["block"] == "4x1"
    assert main(argv[:-1] + [str(tmp_path)] + ["--block", "2x1"]) == 2
    err = capsys.readouterr().err
    assert '--block: "4x1" -> "2x1"' in err


def test_conv_model_trains_with_blocks_along_input_channels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)  # cin 8: 2 blocks of 4
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="output")(x)
    imp = kl.IMP(rounds=2, prune_rate=0.5, block=BLOCK)
    model = compile_model(imp.wrap(keras.Model(inputs, outputs)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 10, size=60)
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, check_sparsity=1)
    model.fit(x, y, batch_size=20, epochs=epochs, callbacks=callbacks, verbose=0)
    masks = kl.read_masks(model)
    per_weight = blocks.kernel_blocks(masks_lib.prunable_weights(model), BLOCK)
    assert per_weight["conv2/kernel"] == (1, 1, 4, 1)
    assert per_weight["conv1/kernel"] == (1, 1, 4, 1)  # cin 3: one partial block per tap
    for name, mask in masks.items():
        block = per_weight[name]
        assert blocks.is_block_structured(mask, block), name
        n = _n_blocks(mask.shape, block)
        assert int(blocks.block_alive(mask, block).sum()) == _expected_blocks(n, 0.5, 2), name


def test_global_floor_is_counted_in_blocks():
    # "small" has magnitudes 100x below "big": one global threshold would empty it,
    # the floor keeps ceil(floor * (1 - p) ** r * its blocks) of its blocks
    rng = np.random.default_rng(2)
    weights = {"big/kernel": rng.normal(size=(40, 10)), "small/kernel": 0.01 * rng.normal(size=(40, 10))}
    masks = {n: np.ones(w.shape, np.float32) for n, w in weights.items()}
    per_weight = {n: BLOCK for n in weights}
    new = masks_lib.compute_masks(weights, masks, 3, 0.5, "global", blocks=per_weight, layer_floor=0.2)
    small = int(blocks.block_alive(new["small/kernel"], BLOCK).sum())
    assert small == int(np.ceil(0.2 * 0.5 ** 3 * 100))  # 100 blocks of 4x1 -> 3
    total = sum(int(blocks.block_alive(m, BLOCK).sum()) for m in new.values())
    assert total == _expected_blocks(200, 0.5, 3)
    assert blocks.is_block_structured(new["small/kernel"], BLOCK)
