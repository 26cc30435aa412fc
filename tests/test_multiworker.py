"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 run one IMP
search together; both end with the same masks (and bit-identical variables),
equal to the single-process run with the same global batch, and only the
chief writes files.

The workers are tests/imp_job.py processes, each with its own TF_CONFIG and
one CPU device; every wait is bounded and every process is killed at the end.
"""

import json
import os

import numpy as np
import pytest

import imp_job


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    out = str(tmp_path_factory.mktemp("multiworker"))
    procs = [imp_job.start_reference(base)]
    cluster = {"worker": [f"127.0.0.1:{imp_job.free_port()}" for _ in range(2)]}
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            procs.append(imp_job.start(
                out, "--multi-worker", "--deterministic",
                "--resume-dir", os.path.join(out, "ckpt-{task}"),
                env={"TF_CONFIG": json.dumps(tf_config)}, log_name=f"worker{index}"))
        for proc in procs[1:]:
            imp_job.finish(proc)
        results = {f"worker{i}": imp_job.load(out, f"worker{i}") for i in range(2)}
        yield out, results
    finally:
        for proc in procs:
            imp_job.kill(proc)


def test_both_workers_end_with_identical_state(workers):
    _, results = workers
    (a, info_a), (b, info_b) = results["worker0"], results["worker1"]
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("mask:")]) == 3
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert info_a["history"] == info_b["history"]
    assert [r["round"] for r in info_a["history"]] == list(range(imp_job.ROUNDS + 1))


def test_masks_equal_single_process_run_with_same_global_batch(workers, tmp_path_factory):
    ref, ref_info = imp_job.reference(tmp_path_factory.getbasetemp())
    _, results = workers
    arrays, info = results["worker0"]
    for key, value in ref.items():
        if key.startswith("mask:"):
            np.testing.assert_array_equal(arrays[key], value, err_msg=key)
            remaining = value.mean()
            assert abs(remaining - (1 - imp_job.PRUNE_RATE) ** imp_job.ROUNDS) <= 1 / value.size
        else:
            # Same training up to float summation order (per-worker gradients
            # are all-reduced instead of summed in one batch).
            np.testing.assert_allclose(arrays[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    for got, want in zip(info["history"], ref_info["history"]):
        assert got["weights_remaining_by_layer"] == want["weights_remaining_by_layer"]
        assert got["steps"] == want["steps"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_only_the_chief_writes_reports_and_checkpoints(workers):
    out, _ = workers
    assert os.path.exists(os.path.join(out, "report-worker0", "imp_report.json"))
    assert os.path.exists(os.path.join(out, "ckpt-worker0", "imp_checkpoint.json"))
    assert not os.path.exists(os.path.join(out, "report-worker1"))
    assert not os.path.exists(os.path.join(out, "ckpt-worker1"))


def _start_workers(out, cluster, *flags, log_name):
    return [imp_job.start(out, "--multi-worker", "--deterministic", *flags,
                          env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                        "task": {"type": "worker", "index": i}})},
                          log_name=f"{log_name}{i}")
            for i in range(2)]


@pytest.mark.skipif(os.environ.get("KL_SLOW_TESTS") != "1",
                    reason="about 1.5 min of CPU: set KL_SLOW_TESTS=1 to run it")
def test_killed_multiworker_run_resumes_like_uninterrupted(workers, tmp_path):
    """Both workers SIGKILLed inside round 2 and started again with the same
    command (same TF_CONFIG, a shared resume_dir) end bit-identical to the
    uninterrupted two-worker run."""
    _, results = workers
    out = str(tmp_path)
    cluster = {"worker": [f"127.0.0.1:{imp_job.free_port()}" for _ in range(2)]}
    flags = ("--resume-dir", os.path.join(out, "ckpt"))
    procs = _start_workers(out, cluster, *flags, "--hang-at", "mid:2:3", log_name="killed")
    try:
        imp_job.wait_for(os.path.join(out, "hanging"), procs[0])
        for proc in procs:
            imp_job.kill(proc)
        procs += _start_workers(out, cluster, *flags, log_name="resumed")
        for proc in procs[2:]:
            imp_job.finish(proc)
    finally:
        for proc in procs:
            imp_job.kill(proc)
    for index in range(2):
        arrays, info = imp_job.load(out, f"worker{index}")
        assert info["initial_epoch"] == 2 * imp_job.EPOCHS_PER_ROUND
        want, want_info = results[f"worker{index}"]
        for key, value in want.items():
            np.testing.assert_array_equal(arrays[key], value, err_msg=key)
        assert info["history"] == want_info["history"]
