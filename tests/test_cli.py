import json
import os
import re
import subprocess
import sys

import pytest

from keras_lottery.cli import main


def test_run_on_a_tiny_mnist1d_writes_table_report_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--num-samples", "600", "--rounds", "2", "--epochs-per-round", "1",
                 "--batch-size", "50", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "% weights" in printed and "early-stop it" in printed
    rows = [line.split() for line in printed.splitlines() if re.match(r"^\s+[0-2]\s+\d", line)]
    assert [r[0] for r in rows] == ["0", "1", "2"]  # the final table
    assert rows[0][1] == "100.0%" and rows[2][1].startswith("64.")
    report = json.loads((out / "imp_report.json").read_text())
    assert [row["round"] for row in report["history"]] == [0, 1, 2]
    assert report["config"]["prune_rate"] == 0.2
    assert report["history"][2]["weights_remaining_by_layer"]["fc1/kernel"] == pytest.approx(0.64, abs=1e-3)
    assert (out / "imp_history.csv").read_text().startswith("round,")
    assert (out / "tickets.png").stat().st_size > 1000
    assert (out / "wrapped_model.keras").exists()

    assert main(["report", str(out), "--plot", str(tmp_path / "again.png")]) == 0
    assert "early-stop it" in capsys.readouterr().out
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_bad_cli_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["run", "--prune-rate", "1.5", "--out", str(tmp_path)]) == 2
    assert "prune_rate" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "keras_lottery", "run", "--help"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    assert result.returncode == 0
    assert "--prune-rate" in result.stdout and "--rewind" in result.stdout
