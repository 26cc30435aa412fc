import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from keras_lottery.cli import main


SMALL = ["run", "--num-samples", "600", "--rounds", "2", "--epochs-per-round", "1",
         "--batch-size", "50"]
TINY = SMALL + ["--controls", "reinit"]
ONE_ROUND = ["run", "--num-samples", "600", "--rounds", "1", "--epochs-per-round", "1",
             "--batch-size", "50", "--controls", "reinit"]


def _table(printed):
    """The final table's rows (round, % weights, ticket, controls..., gaps...) as lists of cells."""
    return [line.split() for line in printed.splitlines() if re.match(r"^\s+[0-2]\s+\d+\.\d\s", line)]


def _mtime(path):
    return path.stat().st_mtime_ns


def test_run_on_a_tiny_mnist1d_prints_ticket_vs_controls_and_writes_reports(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "run"
    assert main(SMALL + ["--out", str(out)]) == 0  # default controls: reinit and random
    printed = capsys.readouterr().out
    # off a terminal: one plain line per round and series while it trains
    assert len(re.findall(r"^ ticket  round \d/2 ", printed, re.M)) == 3
    assert len(re.findall(r"^ reinit  round \d/2 ", printed, re.M)) == 2
    assert len(re.findall(r"^ random  round \d/2 ", printed, re.M)) == 2
    assert "\r" not in printed and "epoch 1/1" not in printed
    assert re.search(r"% weights +ticket +re-init +random +gap vs re-init +gap vs random\n", printed)
    rows = _table(printed)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert rows[0][1] == "100.0" and rows[0][3:] == ["-"] * 4 and rows[2][1].startswith("64.")
    for row in rows[1:]:  # each gap is the ticket's column minus the control's
        for control, gap in ((3, 5), (4, 6)):
            assert float(row[gap]) == pytest.approx(float(row[2]) - float(row[control]), abs=0.051)
    report = json.loads((out / "imp_report.json").read_text())
    assert [row["round"] for row in report["history"]] == [0, 1, 2]
    assert report["config"]["prune_rate"] == 0.2
    assert report["history"][2]["weights_remaining_by_layer"]["fc1/kernel"] == pytest.approx(0.64, abs=1e-3)
    reinit = json.loads((out / "seed_0" / "reinit" / "imp_report.json").read_text())
    assert [row["round"] for row in reinit["history"]] == [1, 2]
    assert (out / "imp_history.csv").read_text().startswith("round,")
    assert Image.open(out / "tickets.png").text["Series"] == "ticket,reinit,random"
    assert (out / "wrapped_model.keras").exists()
    assert sorted(os.listdir(out / "ticket_masks")) == [f"round_00{r}.npz" for r in range(3)]
    # the controls trained with the ticket's masks of each round, kept on disk
    import numpy as np

    import keras_lottery as kl
    from keras_lottery.experiment import load_round_masks

    saved = load_round_masks(out / "ticket_masks", 2)
    ticket = kl.load_ticket(out)
    assert sorted(saved[2]) == sorted(ticket.masks)
    for name, mask in ticket.masks.items():
        np.testing.assert_array_equal(saved[2][name], mask, err_msg=name)
    assert saved[1]["fc1/kernel"].mean() == pytest.approx(0.8, abs=1e-3)
    for control in ("reinit", "random"):
        history = json.loads((out / "seed_0" / control / "imp_report.json").read_text())["history"]
        for row in history:
            assert row["weights_remaining_by_layer"] == report["history"][row["round"]]["weights_remaining_by_layer"]

    assert main(["report", str(out), "--plot", str(tmp_path / "again.png")]) == 0
    assert "early-stop it" in capsys.readouterr().out
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_rerun_resumes_by_default_and_fresh_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(ONE_ROUND + ["--out", str(out)]) == 0
    table = _table(capsys.readouterr().out)
    ticket, reinit = out / "imp_report.json", out / "seed_0" / "reinit" / "imp_report.json"
    before = {p: _mtime(p) for p in (ticket, reinit, out / "wrapped_model.keras")}

    # what SIGKILL leaves between atomic_path's write and rename: a temporary file
    # (a name of that form, and a user's file that only looks like one)
    stale = [out / ".tmp-k1ll3d_x-wrapped_model.keras", out / "seed_0" / ".tmp-abcdefgh-imp_report.json"]
    for path in stale + [out / ".tmp-mine.txt"]:
        path.write_text("half-written")

    # the same command again (and with the old --resume flag): the table, nothing trained
    for extra in ([], ["--resume"]):
        assert main(ONE_ROUND + ["--out", str(out)] + extra) == 0
        assert not any(p.exists() for p in stale) and (out / ".tmp-mine.txt").exists()
        printed = capsys.readouterr().out
        assert "nothing trained" in printed and " round " not in printed
        assert _table(printed) == table
        assert {p: _mtime(p) for p in before} == before

    # a control that did not finish is trained again; the finished ticket is not
    shutil.rmtree(out / "seed_0" / "reinit")
    assert main(ONE_ROUND + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert " ticket  round" not in printed and len(re.findall(r"^ reinit  round", printed, re.M)) == 1
    assert _table(printed) == table and _mtime(ticket) == before[ticket]

    # a changed setting is refused, pointing at --fresh ...
    assert main(ONE_ROUND + ["--out", str(out), "--lr", "0.01"]) == 2
    assert "--fresh" in capsys.readouterr().err
    # ... which deletes the old run's files (only those) and trains it all again
    (out / "notes.txt").write_text("mine")
    assert main(ONE_ROUND + ["--out", str(out), "--fresh"]) == 0
    printed = capsys.readouterr().out
    assert "--fresh: removed resume, ticket_masks, imp_report.json" in printed
    assert len(re.findall(r"^ ticket  round", printed, re.M)) == 2
    assert _table(printed) == table  # the same data order: the same results
    assert _mtime(ticket) != before[ticket] and (out / "notes.txt").read_text() == "mine"
    assert main(ONE_ROUND + ["--out", str(out), "--fresh", "--lr", "0.01"]) == 0
    assert json.loads(ticket.read_text())["config"]["lr"] == 0.01
    capsys.readouterr()


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, and main() does not catch it."""


def test_a_run_killed_before_its_ticket_and_summary_writes_them_when_rerun(tmp_path, capsys,
                                                                          monkeypatch):
    """Killed after the last round's checkpoint (and model) were written but before
    ticket.npz / ticket.json and the summary: the same command writes them, equal to
    an uninterrupted run's, and does not save the model again. On the old code the
    rerun took the checkpoint for a finished run and printed its table: no ticket
    and no summary.json were ever written."""
    import numpy as np

    import keras_lottery as kl

    argv = ONE_ROUND[:-1] + ["none"]  # --controls none: the ticket alone
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"

    def killed(*args, **kwargs):
        raise _Killed()

    monkeypatch.setattr(kl, "save_ticket", killed)
    with pytest.raises(_Killed):
        main(argv + ["--out", str(out)])
    monkeypatch.undo()
    assert (out / "wrapped_model.keras").exists() and (out / "imp_report.json").exists()
    assert not (out / "ticket.json").exists() and not (out / "summary.json").exists()
    model_mtime = _mtime(out / "wrapped_model.keras")
    capsys.readouterr()

    assert main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert " ticket  round" not in printed  # nothing trained again
    assert _mtime(out / "wrapped_model.keras") == model_mtime
    for name in ("summary.json", "summary.csv", "rounds.csv", "tickets.png"):
        assert (out / name).exists(), name
    ticket, whole = kl.load_ticket(out), kl.load_ticket(tmp_path / "whole")
    assert sorted(ticket.masks) == sorted(whole.masks)
    for name, mask in whole.masks.items():
        np.testing.assert_array_equal(ticket.masks[name], mask, err_msg=name)
    for got, want in zip(ticket.theta.values, whole.theta.values):
        np.testing.assert_array_equal(got, want)

    # killed while writing the summary (summary.json written, the plot not yet)
    (out / "tickets.png").unlink()
    assert main(argv + ["--out", str(out)]) == 0
    assert (out / "tickets.png").exists() and " ticket  round" not in capsys.readouterr().out


def test_a_ticket_stopped_mid_run_resumes_and_its_controls_match(tmp_path, capsys, monkeypatch):
    """Stopped after round 1 (its checkpoint written), the same command finishes the
    ticket from round 2 and trains the controls with the masks of all rounds: the
    table equals an uninterrupted run's."""
    from keras_lottery import experiment

    assert main(TINY + ["--out", str(tmp_path / "whole")]) == 0
    whole = _table(capsys.readouterr().out)
    save = experiment.RoundMaskWriter._save

    def stop_at_round_2(self):
        if self.imp_callback.round == 2:
            raise RuntimeError("stopped at round 2")
        save(self)

    monkeypatch.setattr(experiment.RoundMaskWriter, "_save", stop_at_round_2)
    out = tmp_path / "stopped"
    with pytest.raises(RuntimeError, match="stopped at round 2"):
        main(TINY + ["--out", str(out)])
    capsys.readouterr()
    monkeypatch.setattr(experiment.RoundMaskWriter, "_save", save)
    assert main(TINY + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.findall(r"^ ticket  round (\d)", printed, re.M) == ["2"]  # rounds 0, 1 not again
    assert len(re.findall(r"^ reinit  round", printed, re.M)) == 2
    assert _table(printed) == whole

    def rows(run, series):
        path = tmp_path / run / ("imp_report.json" if series == "ticket"
                                 else os.path.join("seed_0", series, "imp_report.json"))
        return [(r["round"], r["weights_remaining_by_layer"], r["loss"], r["test_loss"])
                for r in json.loads(path.read_text())["history"]]

    for series in ("ticket", "reinit"):  # exactly: masks, training loss, test loss
        assert rows("stopped", series) == rows("whole", series), series
    ticket = {r[0]: r[1] for r in rows("stopped", "ticket")}
    assert all(r[1] == ticket[r[0]] for r in rows("stopped", "reinit"))  # the ticket's masks


def test_controls_none_runs_the_ticket_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(SMALL + ["--out", str(out), "--controls", "none", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "early-stop it" in printed and "re-init" not in printed and " ticket  round" not in printed
    assert not (out / "seed_0").exists()


def test_bad_cli_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["run", "--prune-rate", "1.5", "--out", str(tmp_path)]) == 2
    assert "prune_rate" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


HELP_PROBE = """
import sys, time
from keras_lottery.cli import main
for argv in (["--help"], ["run", "--help"], ["report", "--help"], ["export", "--help"],
             ["tune", "--help"], ["stability", "--help"]):
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code == 0, argv
import keras_lottery as kl
print("HEAVY", sorted(m for m in ("tensorflow", "tf_keras", "tensorflow_model_optimization",
                                  "numpy", "matplotlib") if m in sys.modules))
"""


def test_help_imports_no_tensorflow():
    """`--help` of every command builds the parser without TensorFlow (or NumPy): on
    the old code `keras-lottery --help` imported TensorFlow (6 s of CPU) first."""
    result = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "--prune-rate" in result.stdout and "--fresh" in result.stdout
    assert "--progress" in result.stdout and "--verbose" in result.stdout
    assert result.stderr == ""


def test_no_command_prints_the_commands(capsys):
    """On the old code: only "error: the following arguments are required: COMMAND"."""
    assert main([]) == 2
    printed = capsys.readouterr().out
    assert "Start with: keras-lottery run" in printed
    assert all(name in printed for name in ("run", "report", "export", "tune", "stability"))


def test_lazy_package_keeps_every_public_name():
    import keras_lottery as kl

    for name in kl.__all__:
        assert getattr(kl, name) is not None, name
    assert set(kl.__all__) <= set(dir(kl))
    from keras_lottery import IMP, masks, read_masks

    assert kl.IMP is IMP and kl.masks is masks and masks.read_masks is read_masks
    namespace = {}
    exec("from keras_lottery import *", namespace)
    assert set(kl.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'IMPP'"):
        kl.IMPP  # noqa: B018


ABSL_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuda_platform|oneDNN", re.M)


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path, verbose):
    """A command that imports TensorFlow (here it stops at a bad --lr) prints only its own
    error; --verbose shows TensorFlow's start-up lines (the old default printed them)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_LOTTERY_VERBOSE")}
    argv = [sys.executable, "-m", "keras_lottery", "run", "--lr", "-1", "--out", str(tmp_path)]
    result = subprocess.run(argv + (["--verbose"] if verbose else []), capture_output=True,
                            text=True, timeout=180, env=env)
    assert result.returncode == 2
    assert "--lr -1.0 is not a learning rate" in result.stderr
    assert bool(ABSL_LINE.search(result.stderr)) == verbose, result.stderr


# -- bad input: a clear error before any training, naming the value and the fix ----

def _run_error(capsys, *argv):
    small = [] if "fashion_mnist" in argv else ["--num-samples", "400"]  # MNIST-1D only
    code = main(["run", *small, "--rounds", "1", "--epochs-per-round", "1", *argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "[IMP]" not in captured.out and "round 0/" not in captured.out  # nothing trained
    return captured.err


@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf"])
def test_a_learning_rate_that_cannot_train_is_refused(tmp_path, capsys, lr):
    """On the old code --lr -1 trained (and 'succeeded'), nan gave NaN weights."""
    err = _run_error(capsys, "--lr", lr, "--out", str(tmp_path))
    assert f"--lr {float(lr)} is not a learning rate" in err and "positive finite" in err


def test_too_few_samples_is_refused(tmp_path, capsys):
    """On the old code: a traceback from the loss (label 9 outside [0, 9))."""
    err = _run_error(capsys, "--num-samples", "10", "--out", str(tmp_path))
    assert "--num-samples 10 is too few" in err and "at least 100 (default 9000)" in err
    # Fashion-MNIST has fixed sets: on the old code --num-samples 5 was silently ignored
    # and the whole 54,000-example default run trained (the message said default 5000)
    err = _run_error(capsys, "--dataset", "fashion_mnist", "--num-samples", "5",
                     "--out", str(tmp_path))
    assert "--num-samples 5 applies to --dataset mnist1d only" in err and "drop it" in err


@pytest.mark.parametrize("command", ["stability", "tune"])
def test_stability_and_tune_check_num_samples_as_run_does(tmp_path, capsys, command):
    """On the old code both ignored --num-samples with Fashion-MNIST (the whole dataset
    trained) and took --num-samples 10 (a traceback from the loss)."""
    out = ["--out", str(tmp_path / command)]
    assert main([command, "--dataset", "fashion_mnist", "--num-samples", "5"] + out) == 2
    err = capsys.readouterr().err
    assert "--num-samples 5 applies to --dataset mnist1d only" in err and "drop it" in err
    assert main([command, "--num-samples", "10"] + out) == 2
    assert "--num-samples 10 is too few" in capsys.readouterr().err
    assert not (tmp_path / command).exists()


@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_or_lies_under_a_file_is_refused_before_training(tmp_path, capsys, under):
    """On the old code this failed only after round 0 had trained."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker / "run" if under else blocker
    err = _run_error(capsys, "--out", str(out))
    assert f"--out {out}" in err and "file, not a folder" in err
    assert (f"lies under {blocker}" in err) == under
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_is_an_error_naming_the_file_not_a_traceback(tmp_path, capsys, monkeypatch):
    """The disk fills up at a run's first write (round 0's masks). On the old code
    main() let the OSError through: a traceback ending in '[Errno 28] No space left
    on device', naming no file. (Checked by hand on a 2 MB tmpfs, for the model,
    the checkpoint and the reports: the same message, and the same command run
    again once space was freed ended bit-identical to an uninterrupted run.)"""
    from keras_lottery import report

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "shared_mode", full)  # inside atomic_path, after the write
    out = tmp_path / "run"
    assert main(ONE_ROUND + ["--controls", "none", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    mask_file = out / "ticket_masks" / "round_000.npz"
    assert f"run: error: The disk is full: {mask_file} could not be written" in err
    assert "free some space" in err and "run the command again" in err
    assert not mask_file.exists() and not [p for p in out.rglob(".tmp-*")]


def test_data_dir_that_does_not_exist_is_refused(tmp_path, capsys):
    """On the old code a wrong --data-dir silently used the system copy."""
    missing = tmp_path / "fashoin-mnist"
    err = _run_error(capsys, "--dataset", "fashion_mnist", "--data-dir", str(missing),
                        "--out", str(tmp_path / "run"))
    assert f"--data-dir {missing} is not a folder" in err
    err = _run_error(capsys, "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"))
    assert "applies to --dataset fashion_mnist only" in err


def test_non_finite_values_in_the_data_are_refused(tmp_path, capsys):
    """Float IDX images with a NaN: on the old code the run 'succeeded' with NaN weights."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()

    def write(name, array, code):
        header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / name, "wb") as f:
            f.write(header + array.tobytes())

    images = rng.random((200, 28, 28)).astype(">f4")
    images[17, 3, 3] = np.nan
    write("train-images-idx3-ubyte.gz", images, 0x0D)
    write("t10k-images-idx3-ubyte.gz", rng.random((50, 28, 28)).astype(">f4"), 0x0D)
    write("train-labels-idx1-ubyte.gz", np.arange(200, dtype=np.uint8) % 10, 0x08)
    write("t10k-labels-idx1-ubyte.gz", np.arange(50, dtype=np.uint8) % 10, 0x08)
    err = _run_error(capsys, "--dataset", "fashion_mnist", "--data-dir", str(folder),
                        "--out", str(tmp_path / "run"))
    assert "train-images-idx3-ubyte.gz holds 1 non-finite value" in err
    assert "index (17, 3, 3)" in err


def test_report_on_a_truncated_json_names_the_file(tmp_path, capsys):
    """On the old code: a JSONDecodeError without the file's name."""
    path = tmp_path / "imp_report.json"
    path.write_text('{"config": {"rounds": 2}, "history": [{"round": 0, "weig')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not valid JSON" in err and "truncated" in err
    # valid JSON that is no report: on the old code a JSON list was an AttributeError
    # traceback ('list' object has no attribute 'get'), an object without 'history'
    # silently dropped the ticket from the table
    for text, found in (("[1, 2]", "a JSON list"), ('{"a": 1}', "an object with keys ['a']")):
        path.write_text(text)
        assert main(["report", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{path} is not a keras-lottery report: it holds {found}" in err


def test_tune_and_stability_refuse_a_bad_learning_rate_or_out(tmp_path, capsys):
    """The old code refused these learning rates too, but only after loading the
    data and without naming the flag (tuning.py / WarmupStepDecay); the --out
    check is new."""
    assert main(["tune", "--lr-min", "-1", "--out", str(tmp_path)]) == 2
    assert "--lr-min -1.0 is not a learning rate" in capsys.readouterr().err
    assert main(["tune", "--lr-min", "0.01", "--lr-max", "0.001", "--out", str(tmp_path)]) == 2
    assert "above --lr-max" in capsys.readouterr().err
    assert main(["stability", "--lr", "nan", "--out", str(tmp_path)]) == 2
    assert "--lr nan is not a learning rate" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["stability", "--out", str(blocker / "x")]) == 2
    assert f"lies under {blocker}, which is a file" in capsys.readouterr().err


def test_check_sparsity_puts_a_per_batch_guard_on_the_run(tmp_path, capsys, monkeypatch):
    args = ["run", "--num-samples", "300", "--rounds", "1", "--epochs-per-round", "1",
            "--batch-size", "50", "--quiet", "--check-sparsity", "1"]
    assert main(args + ["--out", str(tmp_path / "ok")]) == 0
    assert main(args[:-1] + ["0", "--out", str(tmp_path / "zero")]) == 2
    assert "--check-sparsity must be >= 1" in capsys.readouterr().err
    # with the mask constraint disabled the guard must stop the run in round 1
    from keras_lottery import masks

    monkeypatch.setattr(masks._MaskConstraint, "__call__", lambda self, value: value)
    from keras_lottery.guard import SparsityViolation

    with pytest.raises(SparsityViolation, match="after training step"):
        main(args + ["--out", str(tmp_path / "leak")])


def test_cli_choices_match_the_package():
    """The CLI spells these out so that --help imports no TensorFlow."""
    from keras_lottery import masks, models
    from keras_lottery.cli import _args

    assert _args.SCOPES == masks.SCOPES
    for name in _args.MODELS:
        assert models.build(name, input_shape=(16, 16, 1) if name != "lenet" else (8,)) is not None
