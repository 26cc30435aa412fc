"""What `keras-lottery run` shows while it trains: in place on a terminal, plain lines elsewhere."""

import io
import re

import pytest
from conftest import compile_model, small_mlp

import keras_lottery as kl
from keras_lottery.progress import RoundProgress, format_round_row, resolve_mode

EPOCHS_PER_ROUND = 2
ROUNDS = 1
BATCH = 40


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _fit(tiny_data, stream, mode="auto", interval=0.0):
    (x, y), val, test = tiny_data
    imp = kl.IMP(rounds=ROUNDS, prune_rate=0.5)
    model = imp.wrap(small_mlp())
    compile_model(model)
    epochs = imp.epochs(per_round=EPOCHS_PER_ROUND)
    callbacks = imp.callbacks(test_data=test, verbose=0)
    progress = RoundProgress(imp.callback, "ticket", mode=mode, stream=stream, interval=interval)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=val, callbacks=callbacks + [progress], verbose=0, shuffle=False)
    return progress, stream.getvalue()


ROW = re.compile(r"^ ticket  round (\d)/1 +\d+\.\d% weights  test acc 0\.\d{4}  val acc 0\.\d{4}")


def test_on_a_terminal_one_line_per_round_updates_in_place(tiny_data):
    progress, text = _fit(tiny_data, FakeTerminal())
    assert progress.mode == "bar"
    steps = 240 // BATCH
    # every batch redraws the line (interval 0): carriage return, text, clear to end of line
    assert progress.updates == (ROUNDS + 1) * EPOCHS_PER_ROUND * steps
    assert text.count("\r") == progress.updates + progress.rows
    # the only newlines end the rows, one per round: nothing scrolls while a round trains
    lines = text.split("\n")
    assert len(lines) == ROUNDS + 2 and lines[-1] == ""
    for rnd, line in enumerate(lines[:-1]):
        updates, row = line.rsplit("\r\x1b[K", 1)
        assert ROW.match(row) and ROW.match(row).group(1) == str(rnd), row
        last = updates.split("\r")[-1]
        assert f"round {rnd}/1  epoch 2/2  step {steps}/{steps}  loss " in last
        assert "elapsed  ETA " in last and last.endswith("\x1b[K")
        assert f"epoch 1/2  step 1/{steps}" in updates


def test_off_a_terminal_plain_lines_one_per_round(tiny_data):
    progress, text = _fit(tiny_data, io.StringIO())
    assert progress.mode == "round" and progress.updates == 0
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == ROUNDS + 1
    assert [ROW.match(line).group(1) for line in lines] == ["0", "1"]


def test_epoch_mode_adds_a_line_per_epoch_and_none_is_silent(tiny_data):
    _, text = _fit(tiny_data, io.StringIO(), mode="epoch")
    lines = text.splitlines()
    assert len(lines) == (ROUNDS + 1) * (EPOCHS_PER_ROUND + 1)
    assert lines[2].startswith(" ticket  round 0/1")
    assert lines[3].startswith("round 1/1 · epoch 1/2 (3/4) · loss ")  # ProgressLogger's format
    progress, text = _fit(tiny_data, FakeTerminal(), mode="none")
    assert text == "" and progress.rows == 0


def test_mode_names_and_rows():
    assert resolve_mode("auto", FakeTerminal()) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "round"
    closed = io.StringIO()
    closed.close()
    assert resolve_mode("auto", closed) == "round"
    assert resolve_mode("round", FakeTerminal()) == "round"
    with pytest.raises(ValueError, match="Unknown progress mode 'fancy'"):
        resolve_mode("fancy", io.StringIO())
    row = {"round": 3, "weights_remaining": 0.512, "test_accuracy": 0.61234, "val_accuracy": None,
           "early_stop_iteration": 120, "seconds": 2.46}
    assert format_round_row("reinit", row, 8) == (
        " reinit  round 3/8   51.2% weights  test acc 0.6123  early stop 120  2.5s")
