"""Determinism: with a seed and `tf.config.experimental.enable_op_determinism()`,
two IMP runs in separate processes give identical masks, variables and history.

Op determinism is a process-wide switch that cannot be turned off again, so
the runs are tests/imp_job.py processes (the pytest process is left alone).
"""

import numpy as np
import pytest

import imp_job


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference run, the same command again, and the same with seed 2."""
    base = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("determinism")
    procs = [imp_job.start(str(out / "again"), "--deterministic"),
             imp_job.start(str(out / "seed2"), "--deterministic", "--seed", "2")]
    try:
        imp_job.start_reference(base)
        for proc in procs:
            imp_job.finish(proc)
        yield (imp_job.reference(base), imp_job.load(str(out / "again")),
               imp_job.load(str(out / "seed2")))
    finally:
        for proc in procs:
            imp_job.kill(proc)


def test_two_seeded_deterministic_runs_are_identical(runs):
    (ref, ref_info), (arrays, info), _ = runs
    assert sorted(arrays) == sorted(ref)
    for key, value in ref.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)
    assert info["history"] == ref_info["history"]
    assert len(info["history"]) == imp_job.ROUNDS + 1
    # Real IMP masks, not trivially equal ones.
    masks = [v for k, v in arrays.items() if k.startswith("mask:")]
    assert len(masks) == 3 and all(0 < m.mean() < 1 for m in masks)


def test_another_seed_gives_another_ticket(runs):
    (ref, _), _, (arrays, _) = runs
    differ = [k for k in ref if k.startswith("mask:") and not np.array_equal(arrays[k], ref[k])]
    assert differ, "a different seed should give a different ticket"
