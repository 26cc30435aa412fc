"""`keras-lottery run --controls ... --seeds N`: ticket and controls per seed, one summary."""

import pytest
from PIL import Image

from keras_lottery import report
from keras_lottery.cli import build_parser, main


def test_defaults_train_the_ticket_and_both_controls_with_resume():
    args = build_parser().parse_args(["run"])
    assert args.controls == "reinit,random" and args.seeds is None and args.eval_every is None
    assert not args.fresh and args.progress == "auto"
    from keras_lottery.cli.run import parse_controls, steps_per_execution

    assert parse_controls(args.controls) == ("reinit", "random") and parse_controls("none") == ()
    assert steps_per_execution(args) == 25
    # callbacks that act after every batch get every batch
    assert steps_per_execution(build_parser().parse_args(["run", "--check-sparsity", "1"])) == 1
    assert steps_per_execution(build_parser().parse_args(["run", "--eval-every", "5"])) == 1


def test_run_with_controls_and_seeds(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--num-samples", "500", "--rounds", "1", "--epochs-per-round", "1",
                 "--batch-size", "50", "--controls", "reinit", "--seeds", "2",
                 "--eval-every", "3", "--quiet", "--out", str(out)])
    assert code == 0
    for seed in (0, 1):
        for series in ("ticket", "reinit"):
            payload = report.read_json(out / f"seed_{seed}" / series / "imp_report.json")
            assert payload["config"]["seed"] == seed
            assert payload["history"][-1]["round"] == 1
            assert payload["history"][-1]["early_stop_iteration"] is not None
    assert (out / "seed_0" / "ticket" / "wrapped_model.keras").exists()
    summary = report.read_json(out / "summary.json")["summary"]
    assert {row["n_seeds"] for rows in summary.values() for row in rows} == {2}
    assert Image.open(out / "tickets.png").text["Series"] == "ticket,reinit"
    printed = capsys.readouterr().out
    assert "re-init" in printed and "±" in printed and "over 2 seeds" in printed
    # a rerun of the same command finds every seed complete and only rewrites the summary
    argv = ["run", "--num-samples", "500", "--rounds", "1", "--epochs-per-round", "1",
            "--batch-size", "50", "--controls", "reinit", "--seeds", "2", "--eval-every", "3",
            "--quiet", "--out", str(out)]
    path = out / "seed_1" / "reinit" / "imp_report.json"
    before = path.stat().st_mtime_ns
    assert main(argv) == 0
    assert path.stat().st_mtime_ns == before
    assert "nothing trained" in capsys.readouterr().out
    # with another training setting a seed is trained again (the old code kept the
    # results of --eval-every 3 and reported them as this run's)
    path = out / "seed_0" / "reinit" / "imp_report.json"
    before = path.stat().st_mtime_ns
    argv[argv.index("--seeds") + 1] = "1"
    assert main(argv[:-5] + ["--quiet", "--out", str(out)]) == 0
    assert path.stat().st_mtime_ns != before
    assert report.read_json(path)["config"]["eval_every"] is None


def test_bad_control_name_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--controls", "reinit,shuffled", "--out", str(tmp_path)]) == 2
    assert "reinit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--seeds", "two"])
