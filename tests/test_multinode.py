"""run_search.py against Ray clusters on this machine: an autoscaling one whose GPU worker nodes start on demand,
and a fixed-size one without an autoscaler. Token authentication is on (its own token), as on a real cluster.

The GPUs are logical (no CUDA here): the nodes declare them and Ray schedules by them; the trials train on CPU.
"""

from __future__ import annotations

import json
import sys

import pytest
from cli_run import one_line_error, trial_results
from local_cluster import RAY, LocalCluster
from sample_data import ROOT

from trainables import metric_names as M

pytestmark = pytest.mark.slow

RUN_SEARCH = str(ROOT / "run_search.py")
GPU_WORKER = {"resources": {"CPU": 2, "GPU": 1}, "max_workers": 2}


@pytest.fixture(scope="module")
def autoscaling_cluster():
    """A CPU-only head (1 CPU) and a `gpu_worker` node type (2 CPUs, 1 GPU) with none running at the start."""
    cluster = LocalCluster(num_cpus=1, worker_types={"gpu_worker": GPU_WORKER})
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def fixed_cluster():
    """One node with 2 CPUs and 1 GPU, no autoscaler, the dashboard on (for `ray job submit`)."""
    cluster = LocalCluster(num_cpus=2, num_gpus=1, dashboard=True)
    yield cluster
    cluster.stop()


# Run as a client of the cluster: which node each Tune trial actor (class ImplicitFunc) ran on, from the GCS.
NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps({n["NodeID"]: n["Resources"] for n in ray.nodes()}))
"""


def node_resources(cluster: LocalCluster) -> dict[str, dict]:
    """node id -> resources, of every node that joined the cluster (alive or not)."""
    probe = cluster.run(sys.executable, "-c", NODES, cluster.address, timeout=60)
    assert probe.returncode == 0, probe.stderr[-2000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_search_scales_up_gpu_workers_and_trials_run_on_them(autoscaling_cluster, image_folder, tmp_path):
    """No node has a GPU at the start: run_search.py waits for the autoscaler instead of failing, a gpu_worker
    node starts, both trials (0.5 GPU each) train there on data from the head's object store, the search ends."""
    c = autoscaling_cluster
    proc = c.run(
        sys.executable, RUN_SEARCH, "--address", c.address, "--model", "lenet5", "--data-dir", image_folder,
        "--num-samples", 2, "--max-epochs", 2, "--grace-period", 2, "--gpus-per-trial", 0.5, "--train-on-cpu",
        "--storage-path", tmp_path, "--name", "mn",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (
        "waiting for the autoscaler to add a node for trials of 1 CPU + 0.5 GPU (node types that fit: gpu_worker)"
        in (proc.stdout)
    )
    results = trial_results(tmp_path / "mn")
    assert len(results) == 2 and all(len(rows) == 2 for rows in results.values())
    assert all(set(M.REPORT_KEYS) <= set(rows[-1]) for rows in results.values())

    nodes = node_resources(c)
    head = next(n for n, res in nodes.items() if "node:__internal_head__" in res)
    workers = {n for n, res in nodes.items() if res.get("GPU") == 1}  # gpu_worker nodes that joined (alive or not)
    assert workers, f"no GPU worker node joined: {nodes}"
    for trial, rows in results.items():
        node = rows[-1][M.NODE_ID]  # reported by the trial itself (trainables/tune_trial.py)
        assert node in workers and node != head, f"{trial} ran on {node}, not on a GPU worker"


def test_impossible_gpu_request_fails_fast_on_autoscaling_cluster(autoscaling_cluster, image_folder, tmp_path):
    """2 GPUs per trial: neither a running node nor any node type has them, so waiting would be forever."""
    c = autoscaling_cluster
    proc = c.run(
        sys.executable, RUN_SEARCH, "--address", c.address, "--data-dir", image_folder, "--gpus-per-trial", 2,
        "--storage-path", tmp_path, "--smoke-test",
    )  # fmt: skip
    line = one_line_error(proc)
    assert "node type (gpu_worker)" in line and "largest: 1" in line


def test_gpu_request_no_node_has_fails_fast_on_fixed_cluster(fixed_cluster, image_folder, tmp_path):
    c = fixed_cluster
    proc = c.run(
        sys.executable, RUN_SEARCH, "--address", c.address, "--data-dir", image_folder, "--gpus-per-trial", 2,
        "--storage-path", tmp_path, "--smoke-test",
    )  # fmt: skip
    line = one_line_error(proc)
    assert "no node of the Ray cluster has 2 GPUs (largest: 1)" in line


def test_unreachable_address_and_wrong_token_fail_in_one_line(fixed_cluster, image_folder, tmp_path):
    args = ["--data-dir", image_folder, "--storage-path", tmp_path, "--smoke-test"]
    dead = fixed_cluster.run(sys.executable, RUN_SEARCH, "--address", "127.0.0.1:9", *args)
    assert "no Ray cluster answers at --address 127.0.0.1:9" in one_line_error(dead, within=30)
    wrong = fixed_cluster.run(
        sys.executable, RUN_SEARCH, "--address", fixed_cluster.address, *args, RAY_AUTH_TOKEN="0" * 32
    )
    assert "rejected this client's token" in one_line_error(wrong, within=30)


def test_ray_job_submit_with_working_dir(fixed_cluster, image_folder, tmp_path):
    """The README's command: the job ships the code (--working-dir), run_search.py joins the job's cluster
    (RAY_ADDRESS) without shipping it a second time, and 2 trials of 0.5 GPU share the node's GPU."""
    c = fixed_cluster
    proc = c.run(
        RAY, "job", "submit", "--address", c.dashboard_url, "--working-dir", ROOT, "--",
        "python", "run_search.py", "--model", "lenet5", "--data-dir", image_folder, "--smoke-test",
        "--gpus-per-trial", 0.5, "--train-on-cpu", "--storage-path", tmp_path, "--name", "job",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "succeeded" in proc.stdout + proc.stderr
    results = trial_results(tmp_path / "job")
    assert len(results) == 2 and all(rows for rows in results.values())


NODE_TYPES = """
import json, sys, ray
sys.path.insert(0, sys.argv[2])
from search_driver.cluster import autoscaler_node_types
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps(autoscaler_node_types()))
"""


def test_node_types_seen_by_a_driver_off_the_head(autoscaling_cluster, fixed_cluster, tmp_path):
    """A driver without ~/ray_bootstrap_config.yaml (not on the head) still tells an autoscaling cluster, from the
    autoscaler's status in the GCS, from a fixed one; with the file it reads the node types' resources."""

    def node_types(cluster, home):
        probe = cluster.run(sys.executable, "-c", NODE_TYPES, cluster.address, ROOT, HOME=home, timeout=60)
        assert probe.returncode == 0, probe.stderr[-2000:]
        return json.loads(probe.stdout.strip().splitlines()[-1])

    from search_driver.cluster import UNKNOWN_NODE_TYPES

    assert node_types(autoscaling_cluster, autoscaling_cluster.home) == {"gpu_worker": {"CPU": 2, "GPU": 1}}
    assert node_types(autoscaling_cluster, tmp_path) == UNKNOWN_NODE_TYPES
    assert node_types(fixed_cluster, tmp_path) is None
