"""bench/bench_imp.py in tiny mode: its accounting (not its timings), and the
wrapper bypass that makes IMP's training step cheap."""

import json

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from conftest import compile_model, load_script, small_mlp

import keras_lottery as kl
from keras_lottery.wrap import bypass_wrapper_ops, pruned_layers, restore_wrapper_ops

LENET_KERNELS = 784 * 300 + 300 * 100 + 100 * 10
LENET_PARAMS = LENET_KERNELS + 300 + 100 + 10


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_imp.py")


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    results = bench.main(["--tiny", "--json", str(path)])
    return results, json.loads(path.read_text())


def _sections(run):
    return run[0]["sections"]


def test_json_file_holds_the_printed_results(run):
    results, stored = run
    assert stored == json.loads(json.dumps(results))


def test_one_section_per_strategy(run, bench):
    sections = _sections(run)
    assert [(s["model"], s["strategy"], s["replicas"]) for s in sections] == [
        ("lenet", "single device", 1), ("lenet", "MirroredStrategy", 2)]
    assert list(sections[0]["throughput"]) == list(bench.VARIANTS)
    assert list(sections[1]["throughput"]) == bench.TINY["mirrored_variants"]
    assert all(s["params"] == LENET_PARAMS for s in sections)


def test_throughput_counts_every_pruning_epoch_of_every_variant(run):
    for s in _sections(run):
        pruning_epochs = s["rounds"] * s["epochs_per_round"]
        for name, row in s["throughput"].items():
            assert row["epochs_measured"] == pruning_epochs, name
            assert row["steps_per_s"] == pytest.approx(s["steps_per_epoch"] / row["median_epoch_s"])
        dense = s["throughput"]["dense"]
        assert dense["ratio_wall"] == dense["ratio_cpu"] == dense["ratio_of_medians"] == 1.0


def test_imp_run_trained_every_round_at_the_scheduled_sparsity(run):
    for s in _sections(run):
        imp = s["imp"]
        assert imp["steps_per_round"] == [s["steps_per_epoch"] * s["epochs_per_round"]] * (s["rounds"] + 1)
        expected = [0.8 ** r for r in range(s["rounds"] + 1)]
        # within one weight per layer of (1 - p) ** r (three layers)
        assert np.allclose(imp["weights_remaining"], expected, atol=3 / LENET_KERNELS)
        assert imp["bypassed_wrappers"] == imp["wrappers"] == 3


def test_round_switches_are_counted_once_per_boundary(run):
    for s in _sections(run):
        sw = s["round_switch"]
        assert sw["count"] == len(sw["ms"]) == len(sw["prune_rewind_reset_ms"]) == s["rounds"]
        assert len(sw["prune_rewind_reset_cpu_ms"]) == s["rounds"]
        assert len(sw["round_train_s"]) == len(sw["round_train_cpu_s"]) == s["rounds"] + 1
        for inner, whole in zip(sw["prune_rewind_reset_ms"], sw["ms"]):
            assert 0 < inner <= whole
        for r, ms in enumerate(sw["ms"]):
            assert sw["fraction_of_round"][r] == pytest.approx(ms / 1e3 / sw["round_train_s"][r])
        assert sw["max_fraction_of_round"] == max(sw["fraction_of_round"])
        assert sw["median_ms"] == pytest.approx(float(np.median(sw["ms"])))


def test_nothing_is_retraced_across_round_switches(run):
    for s in _sections(run):
        traces = s["traces"]
        assert traces["final"] >= 1
        assert traces["retraces_after_first_epoch"] == traces["retraces_after_round1"] == 0
        assert traces["same_function_throughout"]


def test_total_wall_time_accounting(run):
    for s in _sections(run):
        t = s["total"]
        assert t["imp_rounds_finished"] == s["rounds"] + 1
        assert t["dense_trainings"] == len(t["dense_training_walls_s"]) == len(t["dense_training_cpus_s"])
        assert t["dense_trainings"] == s["rounds"] + 1
        assert t["dense_trainings_s"] == pytest.approx(sum(t["dense_training_walls_s"]))
        assert t["ratio"] == pytest.approx(t["imp_wall_s"] / t["dense_trainings_s"])
        assert t["ratio_cpu"] == pytest.approx(t["imp_cpu_s"] / sum(t["dense_training_cpus_s"]))
        i = t["interleaved"]
        assert i["imp_wall_s"] == pytest.approx(i["imp_fit_wall_s"] - i["peer_seconds_excluded"])
        assert 0 < i["imp_epochs_s"] < i["imp_wall_s"]
        assert i["imp_outside_epochs_s"] == pytest.approx(i["imp_wall_s"] - i["imp_epochs_s"])
        assert 0 <= i["imp_setup_s"] and 0 < i["imp_callback_epoch_end_s"]
        assert i["imp_setup_s"] + i["imp_callback_epoch_end_s"] <= i["imp_outside_epochs_s"]


def test_snapshot_memory_accounting(run):
    for s in _sections(run):
        m = s["memory"]
        assert m["param_bytes"] == 4 * LENET_PARAMS
        # θ0 and θk hold every state variable (kernels and biases) once.
        assert m["theta0_bytes"] == m["theta_k_bytes"] == s["imp"]["state_variable_bytes"] == 4 * LENET_PARAMS
        assert m["mask_bytes_per_replica"] == 4 * LENET_KERNELS
        assert m["ratio"] == pytest.approx((2 * LENET_PARAMS + LENET_KERNELS) / LENET_PARAMS)
        # tracemalloc sees what a snapshot holds (plus small Python objects).
        assert m["snapshot_accounted_bytes"] == m["theta0_bytes"]
        assert m["snapshot_accounted_bytes"] <= m["snapshot_measured_bytes"] < 1.05 * m["snapshot_accounted_bytes"]
        assert m["replicas"] == s["replicas"]


def test_report_names_every_figure(run, bench):
    text = bench.format_report(run[0])
    for name in bench.VARIANTS:
        assert f"   {name} " in text
    for heading in ("1. step throughput", "2. round switch", "tf.function traces",
                    "3. total: a whole IMP run", "4. host memory", "MirroredStrategy (2 replicas)"):
        assert heading in text


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit, match="Unknown model"):
        bench.config_from_args(bench.parse_args(["--models", "lenet5"]))
    with pytest.raises(ValueError, match="variants must include 'imp'"):
        bench.run_benchmark(dict(bench.TINY, variants=["dense"]))


def test_bypass_wrapper_ops_keeps_outputs_and_touches_imp_wrappers_only(tiny_data):
    (x, y), _, _ = tiny_data
    imp = kl.IMP(rounds=1, prune_rate=0.5)
    model = compile_model(imp.wrap(small_mlp(seed=3)))
    masks = {name: (np.arange(m.size).reshape(m.shape) % 2).astype("float32")
             for name, m in kl.read_masks(model).items()}
    kl.write_masks(model, masks)
    stock = model(x[:8]).numpy()
    steps = [int(w.pruning_step.numpy()) for w in pruned_layers(model)]
    assert bypass_wrapper_ops(model) == 3
    assert np.array_equal(model(x[:8]).numpy(), stock)
    assert [int(w.pruning_step.numpy()) for w in pruned_layers(model)] == steps
    restore_wrapper_ops(model)
    assert all("call" not in w.__dict__ for w in pruned_layers(model))

    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0)
    other = tfmot.sparsity.keras.prune_low_magnitude(small_mlp(seed=3), pruning_schedule=schedule)
    assert bypass_wrapper_ops(other) == 0
    assert all("call" not in w.__dict__ for w in pruned_layers(other))


def test_guard_bench_runs_and_checks_pruned_weights(capsys):
    load_script("bench/bench_guard.py").main(["--tiny"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: float(line.split()[-1]) for line in lines[1:]}
    assert set(rows) == {"no", "every=100", "every=10", "every=1"}
    assert rows["no"] == 1.0 and all(r > 0 for r in rows.values())


# -- bench/bench_cheap.py: the cheap-ticket methods side by side ------------------------


@pytest.fixture(scope="module")
def cheap(tmp_path_factory):
    bench = load_script("bench/bench_cheap.py")
    path = tmp_path_factory.mktemp("cheap") / "cheap.json"
    results = bench.main(["--tiny", "--methods", "imp,lr,oneshot,earlybird", "--json", str(path)])
    return bench, results, json.loads(path.read_text())


def test_cheap_bench_counts_every_round_up_to_the_ticket(cheap):
    bench, results, stored = cheap
    assert stored == json.loads(json.dumps(results))
    rows = {t["method"]: t for t in results["table"]}
    steps_per_round = bench.TINY["train"] // bench.TINY["batch_size"]
    # target: 2 base rounds; imp and lr train rounds 0..2, one-shot rounds 0..1
    assert rows["imp"]["steps_mean"] == rows["lr"]["steps_mean"] == 3 * steps_per_round
    assert rows["oneshot"]["steps_mean"] == 2 * steps_per_round
    assert rows["oneshot"]["steps_vs_imp"] == pytest.approx(2 / 3)
    assert rows["imp"]["steps_vs_imp"] == rows["imp"]["seconds_vs_imp"] == 1.0
    # every method reaches the same sparsity (0.8 ** 2 hidden, 0.9 ** 2 output)
    for row in rows.values():
        assert row["weights_remaining"] == pytest.approx(rows["imp"]["weights_remaining"], abs=1e-4)
    has_earlybird = bench._examples().has_round_end()
    assert ("earlybird" in rows) == has_earlybird
    assert results["skipped"] == ([] if has_earlybird else ["earlybird"])


def test_cheap_plan_merges_rounds_to_the_same_final_sparsity():
    ct = load_script("examples/cheap_tickets.py")
    [(full, full_targets)] = ct.plan("imp", (10, 15))
    assert full == dict(rounds=15, prune_rate=0.2, output_layer_rate=0.1, rewind="0it")
    assert full_targets == {10: 10, 15: 15}
    oneshots = ct.plan("lr_oneshot", (10, 15))
    assert [(kw["rounds"], kw["rewind"], t) for kw, t in oneshots] == [(1, "lr", {1: 10}), (1, "lr", {1: 15})]
    assert 1 - oneshots[0][0]["prune_rate"] == pytest.approx(0.8 ** 10)
    assert 1 - oneshots[1][0]["output_layer_rate"] == pytest.approx(0.9 ** 15)
    [(fewer, fewer_targets)] = ct.plan("fewer", (10, 15))
    assert fewer["rounds"] == 3 and fewer_targets == {2: 10, 3: 15}
    assert (1 - fewer["prune_rate"]) ** 2 == pytest.approx(0.8 ** 10)
    # Early-Bird: IMP's rounds, ended by convergence (the tolerance only when given)
    [(eb, _)] = ct.plan("earlybird", (10, 15))
    assert eb == dict(full, round_end="converged")
    [(eb, _)] = ct.plan("lr_earlybird", (10, 15), converge_tol=0.05)
    assert eb["converge_tol"] == 0.05 and eb["rewind"] == "lr"
    with pytest.raises(ValueError, match="multiples"):
        ct.plan("fewer", (10, 12))
    with pytest.raises(ValueError, match="Unknown method"):
        ct.plan("magic")


def test_tflite_sparse_bench_reports_ops_and_ratios(tmp_path):
    bench = load_script("bench/bench_tflite_sparse.py")
    results = bench.main(["--tiny", "--json", str(tmp_path / "sparse.json")])
    assert json.loads((tmp_path / "sparse.json").read_text())["rounds"] == results["rounds"] == 2
    lenet, conv = results["sections"]
    rows = {r["variant"]: r for r in lenet["rows"]}
    assert set(rows) == {"dense float", "unstructured float", "block 4x1 float", "dense int8",
                         "16x1 int8 sparse"}
    storage = {name: [(k["storage"], k["block"]) for k in r["kernels"]] for name, r in rows.items()}
    assert storage["dense float"] == [("dense", None)] * 3
    assert storage["unstructured float"] == [("densify", None)] * 3
    assert storage["block 4x1 float"] == [("sparse", "1x4")] * 3
    assert storage["16x1 int8 sparse"] == [("sparse", "1x16")] * 3
    for r in lenet["rows"] + conv["rows"]:
        ref = "dense float" if r["group"] == "float" else "dense int8"
        assert r["reference"] == (ref if r in lenet["rows"] else "Conv-2 dense float")
        for b in ("1", "16"):
            assert len(r["latency_rounds_ms"][b]) == 2 and r["latency_ms"][b] > 0
        if r["sparse"]:
            assert r["zeros"] == pytest.approx(0.9, abs=0.01)
        if r["sparse"] and r in lenet["rows"]:
            assert r["bytes"] < 0.2 * rows["dense float"]["bytes"]
        if not r["int8"]:
            assert r["max_abs_logit_diff"] < 1e-5
    assert rows["dense float"]["latency_ratio"] == {"1": 1.0, "16": 1.0}
    assert [k["layer"] for k in conv["rows"][-1]["kernels"]] == ["conv1", "conv2", "fc1", "fc2",
                                                                 "output"]
    text = bench.format_report(results)
    assert all(f"{name} " in text for name in rows) and "fc1: sparse 1x4, builtin" in text


def test_cheap_merge_joins_runs_into_one_table_and_figure(cheap, tmp_path):
    _, results, _ = cheap
    ct = load_script("examples/cheap_tickets.py")
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"args": {}, "rows": results["rows"], "runs": results["runs"]}))
    merged = ct.merge([str(part), str(part)], str(tmp_path / "all"))
    assert len(merged["rows"]) == 2 * len(results["rows"])
    assert {s["n"] for s in merged["summary"]} == {2}
    assert (tmp_path / "all" / "cheap_tickets.png").stat().st_size > 0
    table = ct.markdown_table(merged["summary"], ct.dense_baseline(merged["runs"]))
    assert table.splitlines()[2].startswith("| dense (round 0) | 100.0 |")
    assert len(table.splitlines()) == 3 + len(merged["summary"])
