"""Fault tolerance: an IMP run SIGKILLed between rounds or inside a round and
started again with the same command resumes from its last finished round and
ends exactly where an uninterrupted run ends.

The killed runs are real processes (tests/imp_job.py) that this module kills
with SIGKILL at a known point; the in-process tests cover the checkpoint
files themselves.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import imp_job
from conftest import check_nadam_resume_refused, compile_model, small_mlp

import keras_lottery as kl
from keras_lottery import masks as masks_lib
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

def _imp_fit(data, resume_dir, rounds=2, prune_rate=0.5, initial_epoch=None, seed=0, lr=0.01):
    (x, y), _, _ = data
    imp = kl.IMP(rounds=rounds, prune_rate=prune_rate, rewind="2it")
    model = compile_model(imp.wrap(small_mlp(seed)), keras.optimizers.Adam(lr))
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


def test_checkpoint_keeps_last_two_rounds_and_names_data_by_size_and_hash(finished_run):
    _, folder, _, _, _ = finished_run
    names = sorted(os.listdir(folder))
    assert names == ["imp_checkpoint.json", "imp_round_002.json", "imp_round_002.npz",
                     "imp_round_003.json", "imp_round_003.npz"]
    # A crash while writing a newer round leaves at most a temporary file
    # nobody names: the last complete checkpoint wins.
    with open(os.path.join(folder, ".tmp-x-imp_round_004.npz"), "wb") as f:
        f.write(b"partial")
    meta = resume.read_checkpoint(folder)
    assert meta["data_file"] == "imp_round_003.npz"
    assert meta["data_bytes"] == os.path.getsize(os.path.join(folder, "imp_round_003.npz"))
    assert resume.initial_epoch(folder) == 3
    os.remove(os.path.join(folder, ".tmp-x-imp_round_004.npz"))


def test_state_dict_holds_the_callbacks_run_state(finished_run):
    _, _, imp, _, _ = finished_run
    state = imp.callback.state_dict()
    assert state["round"] == 2 and [r["round"] for r in state["history"]] == [0, 1, 2]
    assert state["rewind_steps"] == 2 and state["steps_per_epoch"] == 4
    assert state["theta_k"].step == 2 and state["theta0"].step == 0
    assert state["theta_k"] is not state["theta0"]


def _copy(folder, tmp_path):
    target = str(tmp_path / "ckpt")
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("damage", ["truncated", "missing", "flipped"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path,
                                                                 damage, caplog):
    """A cut-short (or missing, or altered) newest .npz: the run resumes from
    the round before and ends as the uninterrupted run did. On the old code a
    truncated .npz raised BadZipFile."""
    data, folder, first, masks, _ = finished_run
    folder = _copy(folder, tmp_path)
    newest = os.path.join(folder, "imp_round_003.npz")
    if damage == "missing":
        os.remove(newest)
    else:
        with open(newest, "rb") as f:
            raw = bytearray(f.read())
        if damage == "truncated":
            raw = raw[: len(raw) // 2]
        else:
            raw[len(raw) // 2] ^= 0xFF
        with open(newest, "wb") as f:
            f.write(bytes(raw))
    with caplog.at_level("WARNING", logger="keras_lottery"):
        assert resume.initial_epoch(folder) == 2
        assert resume.read_checkpoint(folder)["next_round"] == 2
    assert "imp_round_003.npz" in caplog.text and "previous complete checkpoint" in caplog.text
    # once per process (the CLI reads the folder three times; the old code warned thrice)
    assert caplog.text.count("previous complete checkpoint") == 1
    stale = os.path.join(folder, ".tmp-k1ll3d-imp_round_003.npz")  # a killed write's leftover
    with open(stale, "wb") as f:
        f.write(b"partial")
    imp, model, fit = _imp_fit(data, folder, seed=5)
    assert not os.path.exists(stale)
    assert len(fit.history["loss"]) == 1  # round 2 trained again
    assert [r.round for r in imp.history] == [0, 1, 2]
    assert imp.history[2].loss == first.history[2].loss
    for name, mask in kl.read_masks(model).items():
        np.testing.assert_array_equal(mask, masks[name])
    assert resume.read_checkpoint(folder)["data_file"] == "imp_round_003.npz"


def test_truncated_pointer_falls_back_to_the_round_metadata(finished_run, tmp_path):
    _, folder, _, _, _ = finished_run
    folder = _copy(folder, tmp_path)
    with open(os.path.join(folder, resume.CHECKPOINT_FILE), "r+") as f:
        f.truncate(40)
    assert resume.read_checkpoint(folder)["data_file"] == "imp_round_003.npz"


def test_no_complete_checkpoint_is_an_error_naming_the_files(finished_run, tmp_path):
    data, folder, _, _, _ = finished_run
    folder = _copy(folder, tmp_path)
    for name in ("imp_round_002.npz", "imp_round_003.npz"):
        with open(os.path.join(folder, name), "r+b") as f:
            f.truncate(100)
    with pytest.raises(resume.CheckpointError,
                       match=r"(?s)imp_round_003\.npz is truncated.*imp_round_002\.npz is truncated"
                             r".*Delete .* to start the run afresh"):
        resume.read_checkpoint(folder)
    with pytest.raises(ValueError, match="No complete IMP checkpoint"):
        _imp_fit(data, folder)


def test_settings_mismatch_is_refused_listing_every_difference(finished_run):
    data, folder, _, _, _ = finished_run
    with pytest.raises(ValueError, match=r"(?s)other settings.*prune_rate: 0\.5 -> 0\.3"
                                         r".*same settings.*new resume_dir.*start over"):
        _imp_fit(data, folder, prune_rate=0.3)


def test_changed_learning_rate_is_refused(finished_run):
    """On the old code a resume with another learning rate was accepted."""
    data, folder, _, _, _ = finished_run
    with pytest.raises(ValueError, match=r"optimizer_config\.learning_rate: 0\.01 -> 0\.02"):
        _imp_fit(data, folder, lr=0.02)


def test_settings_diff_and_its_format():
    diff = resume.settings_diff(
        {"lr": 0.1, "seed": 0, "optimizer_config": {"class": "Adam", "beta_1": 0.9}},
        {"lr": 0.2, "seed": 0, "optimizer_config": {"class": "SGD", "beta_1": 0.9}})
    assert diff == [("lr", 0.1, 0.2), ("optimizer_config.class", "Adam", "SGD")]
    assert resume.format_settings_diff(diff, {"lr": "--lr"}).splitlines() == [
        "  --lr: 0.1 -> 0.2", '  optimizer_config.class: "Adam" -> "SGD"']
    assert resume.settings_diff({"a": 1}, {"a": 1, "b": 2}, keys=["a"]) == []


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
    # output-only flags may change
    assert main(argv + ["--tensorboard", str(tmp_path / "tb")]) == 0
    capsys.readouterr()

    # A changed training setting is refused before anything is built, listing
    # every difference and the ways out. On the old code --lr and --seed were
    # accepted: the run mixed two learning rates and reported the new one.
    assert main(argv + ["--lr", "0.01", "--seed", "3", "--num-samples", "500"]) == 2
    err = capsys.readouterr().err
    assert "--lr: 0.0012 -> 0.01" in err and "--seed: 0 -> 3" in err
    assert "--num-samples: 400 -> 500" in err and "data (SHA-256):" in err
    assert "same command as before" in err and "new --out" in err and "delete" in err
    assert "--rounds" not in err and "--out" not in err.split("(setting")[1].split("Run the")[0]
    assert resume.read_checkpoint(str(tmp_path / "resume")) == meta


# -- through the CLI: `keras-lottery run`, SIGKILLed, then the same command --------

CLI_RUN = ["run", "--num-samples", "1500", "--rounds", "2", "--epochs-per-round", "3",
           "--batch-size", "50",
           # the ticket alone, and a log line per epoch to kill at (off a terminal the
           # CLI writes one line per round by default)
           "--controls", "none", "--progress", "epoch"]
# kill point -> (progress line to kill at, epoch the resumed run must restart at)
CLI_KILLS = {
    "round1-mid": ("round 1/2 · epoch 1/3", 3),
}


def _start_cli(out, *flags):
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "..", os.path.basename(out) + ".log"), "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "keras_lottery", *CLI_RUN, "--out", out, *flags],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log.name
    log.close()
    return proc


def _log_has(proc, text):
    with open(proc.log_path) as f:
        return text in f.read()


def _run_result(out):
    """Every array a CLI run leaves (ticket and wrapped model) and its table."""
    arrays = {}
    with np.load(os.path.join(out, "ticket.npz")) as npz:
        arrays.update({f"ticket:{k}": npz[k] for k in npz.files})
    arrays.update({f"model:{k}": v for k, v in _keras_file_arrays(os.path.join(out, "wrapped_model.keras")).items()})
    with open(os.path.join(out, "imp_report.json")) as f:
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in json.load(f)["history"]]
    return arrays, history


def _keras_file_arrays(path):
    """Every variable (model and optimizer) stored in a .keras file."""
    import h5py

    found = {}
    with zipfile.ZipFile(path) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
            h5.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                          if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.fixture(scope="module")
def cli_killed_and_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_resume")
    reference = _start_cli(str(root / "reference"), "--resume")
    runs, procs = {}, [reference]
    try:
        for name in CLI_KILLS:
            runs[name] = {"out": str(root / name)}
            runs[name]["proc"] = _start_cli(runs[name]["out"], "--resume")
            procs.append(runs[name]["proc"])
        # and one without --resume, killed in its last round
        plain = {"out": str(root / "no-resume")}
        plain["proc"] = _start_cli(plain["out"])
        procs.append(plain["proc"])
        # every run is watched at once (one after the other, a run could go on
        # past its kill point while the one before it was awaited)
        pending = {name: (run, CLI_KILLS[name][0]) for name, run in runs.items()}
        pending["no-resume"] = (plain, "round 2/2 · epoch 1/3")
        deadline = time.monotonic() + imp_job.JOB_TIMEOUT
        while pending:
            for name, (run, line) in list(pending.items()):
                if _log_has(run["proc"], line):
                    imp_job.kill(run["proc"])  # SIGKILL: no handler, no cleanup runs
                    run["killed_rc"] = run["proc"].returncode
                    run["checkpoint_at_kill"] = resume.read_checkpoint(os.path.join(run["out"], "resume"))
                    del pending[name]
                elif run["proc"].poll() is not None:
                    raise AssertionError(f"{name} ended (rc={run['proc'].returncode}) before "
                                         f"{line!r}:\n" + imp_job.log_tail(run["proc"]))
            assert time.monotonic() < deadline, f"not all kill points reached: {sorted(pending)}"
            time.sleep(0.02)
        for run in runs.values():  # the same command again
            run["proc"] = _start_cli(run["out"], "--resume")
            procs.append(run["proc"])
        imp_job.finish(reference)
        for run in runs.values():
            imp_job.finish(run["proc"])
            run["result"] = _run_result(run["out"])
        yield _run_result(str(root / "reference")), runs, plain
    finally:
        for proc in procs:
            imp_job.kill(proc)


@pytest.mark.parametrize("point", sorted(CLI_KILLS))
def test_cli_run_killed_and_rerun_ends_bit_identical(cli_killed_and_resumed, point):
    """The CLI's default data order is a function of (seed, epoch). On the old
    code (Keras-shuffled arrays) the resumed rounds trained on another order:
    other masks and accuracies."""
    (ref_arrays, ref_history), runs, _ = cli_killed_and_resumed
    run = runs[point]
    assert run["killed_rc"] == -9
    meta = run["checkpoint_at_kill"]
    assert (0 if meta is None else meta["initial_epoch"]) == CLI_KILLS[point][1]
    arrays, history = run["result"]
    assert sorted(arrays) == sorted(ref_arrays)
    for key, value in ref_arrays.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)
    assert [r["round"] for r in history] == [0, 1, 2]
    assert history == ref_history
    masks = [v for k, v in arrays.items() if k.startswith("ticket:mask_")]
    assert masks and all(0 < m.mean() < 1 for m in masks)


def test_cli_run_killed_without_resume_leaves_its_last_rounds_model(cli_killed_and_resumed, tmp_path):
    """Killed in round 2, a run without --resume has round 1's trained model in
    --out, and `keras-lottery export` works on it (the old code saved the model
    only after the last round)."""
    from keras_lottery.cli import main
    from keras_lottery.imp import load_wrapped_model

    (ref_arrays, _), _, plain = cli_killed_and_resumed
    assert plain["killed_rc"] == -9
    with open(os.path.join(plain["out"], "imp_report.json")) as f:
        rows = json.load(f)["history"]
    assert [r["round"] for r in rows] == [0, 1]
    model = load_wrapped_model(os.path.join(plain["out"], "wrapped_model.keras"), compile=False)
    masks = kl.read_masks(model)
    kept = sum(float(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())
    assert kept == pytest.approx(rows[1]["weights_remaining"], abs=1e-6) and kept < 0.9
    # round 1's masks (80%), not round 2's (64%) that IMP writes right after
    # round 1 ends; pruned weights are zero
    for entry in masks_lib.prunable_weights(model):
        assert np.all(entry.weight.numpy()[entry.mask.numpy() == 0] == 0)
    # SIGKILL during a save (the run may have gone on to round 2's end before the
    # kill landed) leaves only atomic_path's temporary, which the next run removes
    from keras_lottery.report import remove_stale_temporaries

    left = sorted(n for n in os.listdir(plain["out"]) if n.startswith(".tmp-"))
    assert remove_stale_temporaries(plain["out"]) == left
    assert not [n for n in os.listdir(plain["out"]) if n.startswith(".tmp-")]
    target = tmp_path / "ticket.keras"
    assert main(["export", plain["out"], "--format", "keras", "--out", str(target), "--quiet"]) == 0
    assert target.stat().st_size > 1000


def test_resumable_run_with_nadam_is_refused_on_one_device(tiny_data, tmp_path):
    """tf_keras's Nadam trains differently when built before its first step
    (what a resume does) than when built inside it, so a resumed run could not
    match the uninterrupted one: refused before training; legacy Nadam runs."""
    (x, y), _, _ = tiny_data
    weights = []
    for eager in (False, True):  # the reason, in plain tf_keras
        model = small_mlp(0)
        model.compile(keras.optimizers.Nadam(0.01), "sparse_categorical_crossentropy")
        if eager:
            model.optimizer.build(model.trainable_variables)
        model.fit(x[:80], y[:80], batch_size=40, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(*weights))
    check_nadam_resume_refused(x, y, str(tmp_path))
