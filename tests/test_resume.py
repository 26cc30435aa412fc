"""Fault tolerance: an IMP run SIGKILLed between rounds or inside a round and
started again with the same command resumes from its last finished round and
ends exactly where an uninterrupted run ends.

The killed runs are real processes (tests/imp_job.py) that this module kills
with SIGKILL at a known point; the in-process tests cover the checkpoint
files themselves.
"""

import json
import os
import shutil

import numpy as np
import pytest

import imp_job
from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import resume
from keras_lottery._keras import keras

# (hang point, epoch the resumed run must start at, rounds reported at the kill)
KILL_POINTS = {
    "between": ("between:1", 2 * imp_job.EPOCHS_PER_ROUND, 2),  # after round 1's checkpoint
    "mid": ("mid:1:2", 1 * imp_job.EPOCHS_PER_ROUND, 1),        # batch 2 of round 1's last epoch
}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """For each kill point: what was on disk at the kill, and the resumed run's result."""
    root = tmp_path_factory.mktemp("resume")
    procs = [imp_job.start_reference(tmp_path_factory.getbasetemp())]
    runs = {}
    try:
        for name, (spec, _, _) in KILL_POINTS.items():
            out = str(root / name)
            flags = ("--deterministic", "--resume-dir", os.path.join(out, "ckpt"))
            runs[name] = {"out": out, "flags": flags,
                          "proc": imp_job.start(out, *flags, "--hang-at", spec, log_name="killed")}
            procs.append(runs[name]["proc"])
        for name, run in runs.items():
            imp_job.wait_for(os.path.join(run["out"], "hanging"), run["proc"])
            imp_job.kill(run["proc"])  # SIGKILL: no handler, no cleanup runs
            run["killed_rc"] = run["proc"].returncode
            with open(os.path.join(run["out"], "report-single", "imp_report.json")) as f:
                run["report_at_kill"] = json.load(f)
            run["checkpoint_at_kill"] = resume.read_checkpoint(os.path.join(run["out"], "ckpt"))
            # Started again with the same command (less the test's hang point).
            run["proc"] = imp_job.start(run["out"], *run["flags"], log_name="resumed")
            procs.append(run["proc"])
        for run in runs.values():
            imp_job.finish(run["proc"])
            run["arrays"], run["info"] = imp_job.load(run["out"])
        yield runs
    finally:
        for proc in procs:
            imp_job.kill(proc)


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_run_resumes_and_matches_uninterrupted(killed_and_resumed, point, tmp_path_factory):
    ref_arrays, ref_info = imp_job.reference(tmp_path_factory.getbasetemp())
    run = killed_and_resumed[point]
    _, resume_epoch, _ = KILL_POINTS[point]
    assert run["killed_rc"] == -9
    assert run["checkpoint_at_kill"]["initial_epoch"] == resume_epoch
    assert run["info"]["initial_epoch"] == resume_epoch
    # Same masks, and every model variable bit-identical.
    assert sorted(run["arrays"]) == sorted(ref_arrays)
    for key, value in ref_arrays.items():
        np.testing.assert_array_equal(run["arrays"][key], value, err_msg=key)
    masks = {k: v for k, v in run["arrays"].items() if k.startswith("mask:")}
    assert len(masks) == 3
    # One row per round, equal to the uninterrupted run's (wall time aside).
    assert [r["round"] for r in run["info"]["history"]] == list(range(imp_job.ROUNDS + 1))
    assert run["info"]["history"] == ref_info["history"]


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_report_at_kill_holds_only_finished_rounds(killed_and_resumed, point):
    run = killed_and_resumed[point]
    _, _, finished = KILL_POINTS[point]
    report = run["report_at_kill"]
    assert report["rounds_finished"] == finished
    assert [r["round"] for r in report["history"]] == list(range(finished))
    assert len(run["checkpoint_at_kill"]["history"]) == finished
    with open(os.path.join(run["out"], "report-single", "imp_report.json")) as f:
        final = json.load(f)
    assert [r["round"] for r in final["history"]] == list(range(imp_job.ROUNDS + 1))
    # No temporary file is left behind in the checkpoint folder.
    assert not [n for n in os.listdir(os.path.join(run["out"], "ckpt")) if n.endswith(".tmp")]


# -- in process: the checkpoint files -------------------------------------------

def _imp_fit(data, resume_dir, rounds=2, prune_rate=0.5, initial_epoch=None, seed=0):
    (x, y), _, _ = data
    imp = kl.IMP(rounds=rounds, prune_rate=prune_rate, rewind="2it")
    model = compile_model(imp.wrap(small_mlp(seed)), keras.optimizers.Adam(0.01))
    epochs = imp.epochs(per_round=1)
    callbacks = imp.callbacks(verbose=0, resume_dir=resume_dir)
    start = imp.initial_epoch() if initial_epoch is None else initial_epoch
    fit = model.fit(x, y, batch_size=60, epochs=epochs, callbacks=callbacks,
                    initial_epoch=start, shuffle=False, verbose=0)
    return imp, model, fit


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1)
    data = ((x, y), None, None)
    folder = str(tmp_path_factory.mktemp("finished") / "ckpt")
    imp, model, _ = _imp_fit(data, folder)
    optimizer_state = [v.numpy() for v in model.optimizer.variables]
    return data, folder, imp, kl.read_masks(model), optimizer_state


def test_rerun_of_finished_run_trains_nothing_and_keeps_results(finished_run):
    data, folder, first, masks, optimizer_state = finished_run
    meta = resume.read_checkpoint(folder)
    assert meta["finished"] and meta["initial_epoch"] == 3
    imp, model, fit = _imp_fit(data, folder, seed=5)  # other init: all restored
    assert fit.history == {} or all(len(v) == 0 for v in fit.history.values())
    assert [r.to_dict() for r in imp.history] == [r.to_dict() for r in first.history]
    for name, mask in kl.read_masks(model).items():
        np.testing.assert_array_equal(mask, masks[name])
    assert imp.callback.round == 2
    # The restored optimizer state (step counter, Adam's m and v) is the finished run's.
    restored = [v.numpy() for v in model.optimizer.variables]
    assert len(restored) == len(optimizer_state) == 1 + 2 * 6
    for got, want in zip(restored, optimizer_state):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations.numpy()) == 2 + 4  # rewind k + last round's steps


def test_checkpoint_keeps_last_two_round_files_and_atomic_pointer(finished_run):
    _, folder, _, _, _ = finished_run
    names = sorted(os.listdir(folder))
    assert names == ["imp_checkpoint.json", "imp_round_002.npz", "imp_round_003.npz"]
    # A crash while writing a newer round leaves a temporary file and maybe a
    # data file the pointer does not name: the last complete checkpoint wins.
    with open(os.path.join(folder, "imp_round_004.npz.tmp"), "wb") as f:
        f.write(b"partial")
    meta = resume.read_checkpoint(folder)
    assert meta["data_file"] == "imp_round_003.npz"
    assert resume.initial_epoch(folder) == 3
    os.remove(os.path.join(folder, "imp_round_004.npz.tmp"))


def test_settings_mismatch_is_refused(finished_run):
    data, folder, _, _, _ = finished_run
    with pytest.raises(ValueError, match="other settings.*prune_rate"):
        _imp_fit(data, folder, prune_rate=0.3)


def test_wrong_initial_epoch_is_refused(tmp_path, finished_run):
    data, folder, _, _, _ = finished_run
    # A checkpoint that resumes at round 1 (epoch 1), fit started at epoch 0.
    partial = str(tmp_path / "ckpt")
    os.makedirs(partial)
    meta = resume.read_checkpoint(folder)
    shutil.copy(os.path.join(folder, meta["data_file"]), partial)
    meta.update(initial_epoch=1, next_round=1, finished=False, history=meta["history"][:1])
    with open(os.path.join(partial, resume.CHECKPOINT_FILE), "w") as f:
        json.dump(meta, f)
    with pytest.raises(RuntimeError, match="initial_epoch"):
        _imp_fit(data, partial, initial_epoch=0)


def test_no_checkpoint_means_start_at_zero(tmp_path):
    assert resume.read_checkpoint(str(tmp_path)) is None
    assert resume.initial_epoch(str(tmp_path)) == 0
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    with pytest.raises(ValueError, match="resume_dir"):
        imp.initial_epoch()


def test_legacy_optimizer_resumes_after_a_shortened_fit(tmp_path):
    """A fit stopped after round 1 (here: too few epochs) and run again with
    the full command ends with the masks of an uninterrupted run; the legacy
    optimizer's slots, created lazily, are built and restored by name."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 40)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(40, 10)), axis=1)

    def fit(folder, epochs=None, seed=0):
        imp = kl.IMP(rounds=2, prune_rate=0.5, rewind="2it")
        model = compile_model(imp.wrap(small_mlp(seed)), keras.optimizers.legacy.Adam(0.01))
        total = imp.epochs(per_round=1)
        callbacks = imp.callbacks(verbose=0, resume_dir=folder)
        model.fit(x, y, batch_size=60, epochs=epochs or total, callbacks=callbacks,
                  initial_epoch=imp.initial_epoch(), shuffle=False, verbose=0)
        return imp, model

    fit(str(tmp_path / "a"), epochs=2)
    assert resume.initial_epoch(str(tmp_path / "a")) == 2
    imp, model = fit(str(tmp_path / "a"), seed=9)
    ref_imp, ref_model = fit(str(tmp_path / "b"))
    assert [r.round for r in imp.history] == [0, 1, 2]
    assert [r.to_dict()["loss"] for r in imp.history[:2]] == [r.loss for r in ref_imp.history[:2]]
    ref_masks = kl.read_masks(ref_model)
    for name, mask in kl.read_masks(model).items():
        np.testing.assert_array_equal(mask, ref_masks[name])


def test_cli_run_resume_continues_a_finished_run(tmp_path, capsys):
    from keras_lottery.cli import main

    argv = ["run", "--rounds", "1", "--epochs-per-round", "1", "--num-samples", "400",
            "--resume", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    meta = resume.read_checkpoint(str(tmp_path / "resume"))
    assert meta["finished"] and meta["initial_epoch"] == 2
    assert main(argv) == 0  # the same command again: nothing left to train
    second = capsys.readouterr().out
    table = lambda out: [l for l in out.splitlines() if l.strip()[:1].isdigit()]  # noqa: E731
    assert table(first) and table(second) == table(first)
