"""keras-lottery reproduce: every protocol resolves; the small variants run end to end on tiny data."""

import dataclasses
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_lottery import reproduce
from keras_lottery.cli import main

# a few steps per round on a few examples: the real code path, at test size
TINY = dict(train_size=90, val_size=30, test_size=40, training_steps=3, rounds=1)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """Fashion-MNIST-shaped IDX files (random pixels) read by the package's real loader."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 150), ("t10k", 50)):
        _write_idx(str(folder / f"{prefix}-images-idx3-ubyte.gz"),
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(str(folder / f"{prefix}-labels-idx1-ubyte.gz"),
                   np.arange(n, dtype=np.uint8) % 10)
    return str(folder)


def _tiny(name, **extra):
    plan = reproduce.resolve(name, budget="small")
    return dataclasses.replace(plan, **dict(TINY, **extra))


# -- protocols ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(reproduce.PROTOCOLS))
@pytest.mark.parametrize("budget", reproduce.BUDGETS)
def test_every_protocol_resolves_to_a_model_optimizer_rates_and_schedule(name, budget):
    from keras_lottery import IMP, models
    from keras_lottery.lr_schedule import WarmupStepDecay

    plan = reproduce.resolve(name, budget=budget)
    model = models.MODELS[plan.model](input_shape=(28, 28, 1), num_classes=10, seed=0,
                                      **plan.model_kwargs)
    optimizer = models.make_optimizer(plan.optimizer, plan.learning_rate)
    assert float(optimizer.learning_rate) == pytest.approx(plan.learning_rate)
    imp = IMP(rounds=plan.rounds, prune_rate=plan.prune_rate, scope=plan.scope,
              layer_rates=plan.layer_rates, output_layer_rate=plan.output_layer_rate)
    if plan.layer_rates:  # every per-layer rate names a pruned layer (IMP.wrap refuses an unknown name)
        imp.wrap(model)
    for series in plan.series:
        lr, warmup, boundaries, rewind = reproduce._schedule(plan, series)
        schedule = WarmupStepDecay(lr, warmup_steps=warmup, boundaries=boundaries)
        assert int(rewind[:-2]) < plan.training_steps
        if boundaries:  # x0.1 at each drop
            after = float(schedule(boundaries[-1]))
            assert after == pytest.approx(lr * 0.1 ** len(boundaries), rel=1e-5)
    if budget == "paper":
        assert plan.scale == 1.0 and plan.train_size is None


def test_the_papers_settings():
    lenet = reproduce.resolve("lenet")
    assert (lenet.model, lenet.optimizer, lenet.learning_rate, lenet.batch_size) == ("lenet", "adam", 1.2e-3, 60)
    assert (lenet.prune_rate, lenet.output_layer_rate, lenet.training_steps) == (0.2, 0.1, 50_000)
    assert lenet.seeds == 3 and lenet.series[0].controls == ("reinit", "random")
    assert 0.034 < 0.8 ** lenet.rounds < 0.037  # to about 3.5% of the weights
    for depth, lr, conv_rate, steps in ((2, 2e-4, 0.10, 20_000), (4, 3e-4, 0.10, 25_000),
                                        (6, 3e-4, 0.15, 30_000)):
        plan = reproduce.resolve(f"conv{depth}")
        assert (plan.learning_rate, plan.training_steps, plan.prune_rate) == (lr, steps, 0.2)
        assert plan.layer_rates == {f"conv{i + 1}": conv_rate for i in range(depth)}
        assert plan.output_layer_rate == 0.1
    for name, late, final in (("resnet20", 2000, 0.168), ("vgg16", 1000, 0.015)):
        plan = reproduce.resolve(name)
        assert (plan.optimizer, plan.learning_rate, plan.batch_size, plan.scope) == ("sgd", 0.1, 128, "global")
        assert plan.lr_boundaries == (32_000, 48_000) and plan.training_steps == 63_000
        assert plan.model_kwargs["weight_decay"] == 5e-5  # Keras L2 5e-5 = SGD weight decay 1e-4
        assert [s.name for s in plan.series] == ["theta0", "late", "warmup"]
        assert plan.series[1].rewind_steps == late and plan.series[2].warmup_steps == 30_000
        assert 0.8 ** plan.rounds == pytest.approx(final, abs=0.001)
        small = reproduce.resolve(name, budget="small")
        assert (1 - small.prune_rate) ** small.rounds == pytest.approx(final, abs=0.002)
        _, warmup, boundaries, rewind = reproduce._schedule(small, small.series[2])
        assert boundaries == [round(32_000 * small.scale), round(48_000 * small.scale)]
        assert warmup == round(30_000 * small.scale)


def test_bad_name_budget_and_dataset_are_clear_errors(capsys):
    with pytest.raises(ValueError, match=r"Unknown experiment 'lenet5'.*'conv2'.*--list"):
        reproduce.resolve("lenet5")
    with pytest.raises(ValueError, match=r"Unknown budget 'tiny'.*\['paper', 'small'\]"):
        reproduce.resolve("lenet", budget="tiny")
    assert main(["reproduce", "resnet50", "--budget", "small"]) == 2
    assert "Unknown experiment 'resnet50'" in capsys.readouterr().err
    assert main(["reproduce", "lenet", "--budget", "huge"]) == 2
    assert "Unknown budget 'huge'" in capsys.readouterr().err
    assert main(["reproduce", "lenet", "--dataset", "imagenet"]) == 2
    assert "Unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    assert "needs an experiment NAME" in capsys.readouterr().err


def test_list_names_every_protocol_without_loading_tensorflow():
    code = ("import sys; from keras_lottery.cli import main; rc = main(['reproduce', '--list']); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow loaded'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name, protocol in reproduce.PROTOCOLS.items():
        assert f"{name:<9} {protocol.summary}" in done.stdout
        assert f"--budget small: {protocol.small_note}" in done.stdout


# -- end to end, small variants on tiny data -------------------------------------------


def _check_outputs(out, plan, series):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == plan.name and summary["budget"] == "small"
    assert sorted(summary["series"]) == sorted(series)
    for name in series:  # controls start at round 1 (round 0 is the dense network)
        first = 1 if name in ("reinit", "random") else 0
        assert [r["round"] for r in summary["series"][name]] == list(range(first, plan.rounds + 1))
    rows = summary["comparison"]
    assert len(rows) == len(plan.protocol.paper)
    for row, figure in zip(rows, plan.protocol.paper):
        assert row["paper"] == figure.value and row["source"] == figure.source
        assert row["paper_dataset"] == figure.dataset and row["our_dataset"] == plan.dataset
    report = (out / "report.md").read_text()
    assert "## Against the paper" in report and "The small budget changes:" in report
    assert all(source in report for source in plan.protocol.sources.values())
    assert (out / "figure.png").stat().st_size > 5000
    assert (out / "comparison.csv").read_text().count("\n") == len(rows) + 1
    return summary


def test_lenet_small_end_to_end_through_the_cli(tmp_path, fashion_dir, monkeypatch, capsys):
    protocol = reproduce.PROTOCOLS["lenet"]
    monkeypatch.setitem(reproduce.PROTOCOLS, "lenet", dataclasses.replace(
        protocol, small=dict(protocol.small, **TINY, eval_every=1)))
    out = tmp_path / "lenet"
    argv = ["reproduce", "lenet", "--budget", "small", "--data-dir", fashion_dir,
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ticket ES it" in printed and "reinit acc %" in printed and "random acc %" in printed
    assert "dense early-stopping iteration" in printed and "5,900 it" in printed and "MNIST" in printed
    plan = reproduce.resolve("lenet", budget="small")
    summary = _check_outputs(out, plan, ["ticket", "reinit", "random"])
    dense = summary["series"]["ticket"][0]
    assert 1 <= dense["early_stop_iteration"]["mean"] <= summary["steps_per_round"]
    by_measure = {r["what"]: r for r in summary["comparison"]}
    assert by_measure["dense early-stopping iteration"]["ours"] == dense["early_stop_iteration"]["mean"]
    # a rerun trains nothing (every run finished); --fresh starts over
    before = (out / "runs" / "ticket" / "seed_0" / "ticket" / "imp_report.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "runs" / "ticket" / "seed_0" / "ticket" / "imp_report.json").stat().st_mtime_ns == before


def test_fresh_removes_only_the_files_reproduce_writes(tmp_path):
    for name in reproduce.OUTPUT_FILES:
        (tmp_path / name).write_text("old")
    (tmp_path / "runs").unlink()
    (tmp_path / "runs" / "ticket").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    from keras_lottery.report import remove_outputs

    assert sorted(remove_outputs(str(tmp_path), reproduce.OUTPUT_FILES)) == sorted(reproduce.OUTPUT_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_conv2_small_end_to_end(tmp_path, fashion_dir):
    plan = _tiny("conv2", eval_every=2, resume=False)  # resume: the lenet test and test_experiment
    summary = reproduce.run(plan, str(tmp_path / "conv2"), data_dir=fashion_dir)
    _check_outputs(tmp_path / "conv2", plan, ["ticket", "reinit", "random"])
    assert summary["examples"] == {"train": 90, "val": 30, "test": 40}
    by_layer = json.loads((tmp_path / "conv2" / "runs" / "ticket" / "seed_0" / "ticket"
                           / "imp_report.json").read_text())["history"][1]["weights_remaining_by_layer"]
    rates = {name.split("/")[0]: kept for name, kept in by_layer.items()}
    assert rates["conv1"] == pytest.approx(0.9, abs=0.01) and rates["fc1"] == pytest.approx(0.8, abs=0.01)
    assert rates["output"] == pytest.approx(0.9, abs=0.01)
    speedup = [r for r in summary["comparison"] if r["what"].startswith("best early-stop")][0]
    assert speedup["paper"] == 3.5 and speedup["paper_dataset"] == "CIFAR-10"


def test_vgg16_small_end_to_end_on_cifar10_through_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from keras_lottery import data

    data._TFDS_FAILED.clear()
    plan = _tiny("vgg16", dataset="cifar10", batch_size=30, resume=False,
                 model_kwargs=dict(reproduce.resolve("vgg16", "small").model_kwargs,
                                   width_multiplier=0.03))
    with tfds.testing.mock_data(num_examples=130):
        summary = reproduce.run(plan, str(tmp_path / "vgg16"))
    _check_outputs(tmp_path / "vgg16", plan, ["theta0", "late", "warmup"])
    assert summary["examples"] == {"train": 90, "val": 30, "test": 40}
    assert summary["input_shape"] == [32, 32, 3]  # CIFAR-10's images, not Fashion-MNIST's
    report = json.loads((tmp_path / "vgg16" / "runs" / "late" / "seed_0" / "ticket"
                         / "imp_report.json").read_text())
    assert report["config"]["plan"]["dataset"] == "cifar10" and report["config"]["series_name"] == "late"
    gaps = [r for r in summary["comparison"] if r["what"].startswith(("rewind to θ0", "late", "θ0 with"))]
    assert [r["paper_text"].split(" (")[0] for r in gaps] == ["not matching", "matching", "matching"]
    for row in gaps:
        assert row["ours_where"].startswith(("matching", "not matching"))
    late = summary["series"]["late"]
    assert late[1]["weights_remaining"]["mean"] == pytest.approx(1 - plan.prune_rate, abs=0.02)
