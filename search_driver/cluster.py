"""Where the search waits for the cluster: start a local Ray instance or join one (shipping this code to its
nodes), and before any trial starts, fail in one line for a request no node can run, or wait for the autoscaler to add
a node that can.

`--address` unreachable or refusing this client's token: one line at once, not ray.init's minutes of retries. A
request (CPUs + GPUs per trial) that no alive node fits and that none of the autoscaler's node types provides would
leave Tune's trials PENDING forever: refused. One that a node type provides: the search starts and Ray launches the
node when the trials ask for it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from search_driver import ROOT
from search_driver.cli import UsageError


def start_ray(args) -> None:
    import ray

    from search_driver import ray_compat
    from search_driver.data import object_store_capacity
    from trainables.models.user import ship

    ray_compat.driver_settings()
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False)
    with tempfile.TemporaryDirectory() as scratch:
        # A user's model file (or package) reaches every node as Ray py_modules, uploaded by ray.init: no shared
        # file system assumed (trainables/models/user.py).
        own = {"py_modules": modules} if (modules := ship(args.model, Path(scratch))) else {}
        own["worker_process_setup_hook"] = ray_compat.trial_process_setup
        if args.address:
            check_reachable(args.address)
            # Trials on other nodes import our packages from a copy of ROOT that Ray ships to every node. Under
            # `ray job submit --working-dir .` the job has shipped it already, and ray.init refuses a second one.
            shipped = "working_dir" in (_job_config().get("runtime_env") or {})
            runtime_env = own if shipped else {"working_dir": str(ROOT), "excludes": _EXCLUDES, **own}
            try:
                ray.init(address=args.address, runtime_env=runtime_env, **kwargs)
            except ConnectionError as e:
                raise UsageError(f"cannot join the Ray cluster at {args.address}: {_join_error(e)}") from None
        else:
            # address="local": never join a stale cluster recorded in /tmp/ray. Workers import our packages from ROOT.
            # the object store sized by the rule search_driver/data.py checked the data against
            ray.init(
                address="local",
                num_cpus=args.num_cpus,
                num_gpus=args.local_gpus,
                object_store_memory=object_store_capacity(0),
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}, **own},
                **kwargs,
            )


_EXCLUDES = [".git", "data", "experiments", "results", ".venv", "__pycache__", "*.npz", "*.pth"]


def _job_config() -> dict:
    """The job config Ray's job supervisor hands a `ray job submit` driver ({} for a plain script)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    return json.loads(raw) if raw else {}


TOKEN_REJECTED = (
    "the cluster rejected this client's token; set RAY_AUTH_MODE=token and give the cluster's token in "
    "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"
)


def check_reachable(address: str) -> None:
    """ray.init retries an unreachable or token-refusing GCS for 20 s to minutes; asking it once takes a second."""
    from search_driver.ray_compat import gcs_refuses_token

    if address in ("auto", "local") or "://" in address or ":" not in address:  # ray://: Ray Client's own checks
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise UsageError(
            f"no Ray cluster answers at --address {address} ({e}); start one (`ray start --head`, "
            "`ray up cluster.yaml`) or fix --address / RAY_ADDRESS"
        ) from None
    if gcs_refuses_token(address):
        raise UsageError(f"cannot join the Ray cluster at {address}: {TOKEN_REJECTED}")


def _join_error(e: BaseException) -> str:
    chain = []
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    # node.py folds the AuthenticationError into a RuntimeError's message text
    if any("AuthenticationError" in f"{type(c).__name__} {c}" or "InvalidAuthToken" in str(c) for c in chain):
        return TOKEN_REJECTED
    return str(chain[0]).splitlines()[0]


# What autoscaler_node_types() returns when the cluster autoscales but this driver cannot see its node types.
UNKNOWN_NODE_TYPES = {"(not visible from this driver)": None}


def autoscaler_node_types() -> dict[str, dict | None] | None:
    """Worker node types the cluster's autoscaler may launch -> their resources (None: not declared).

    None when the cluster does not autoscale. Sources, in order: the cluster config reported to the GCS (KubeRay,
    autoscaler v2); ~/ray_bootstrap_config.yaml, which `ray up` writes on the head node, where `ray job submit`
    drivers run (Tune reads the same file to tell an autoscaling cluster); else the autoscaler's status in the GCS,
    which says whether it runs from a config but not what that config holds.
    """
    from search_driver.ray_compat import autoscaler_status, reported_node_groups

    groups = reported_node_groups()
    if groups is not None:
        return groups or None
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    if bootstrap.exists():
        import yaml

        config = yaml.safe_load(bootstrap.read_text())
        head, cap = config.get("head_node_type"), config.get("max_workers", 0)
        types = {
            name: t.get("resources") or None
            for name, t in config.get("available_node_types", {}).items()
            if name != head and min(t.get("max_workers", cap), cap) > 0
        }
        return types or None
    status = autoscaler_status()
    # Without a config (plain `ray start`) the autoscaler runs read-only and names each node's type "node_<id>".
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return UNKNOWN_NODE_TYPES if any(not t.startswith("node_") for t in mapping.values()) else None


def _fits(resources: dict, need: dict) -> bool:
    return all(resources.get(k, 0) >= v for k, v in need.items() if v > 0)


def check_resources(args) -> None:
    """Fail at once, in one line, for a request no node can ever satisfy (Tune would leave it PENDING forever).

    On an autoscaling cluster the right node may not exist yet: when one of the autoscaler's node types provides
    the request, wait for it (Ray launches it once the trials ask). Only a request no node type fits fails.
    """
    import ray

    from analysis.experiment import is_uri

    need = {"CPU": args.cpus_per_trial, "GPU": 1 if args.gpus_per_trial == "auto" else args.gpus_per_trial}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    types = autoscaler_node_types() if args.address else None
    if args.address and not is_uri(args.storage_path) and (len(nodes) > 1 or types):
        print(
            f"note: --storage-path {args.storage_path} is a local folder; on a multi-node cluster give s3://, gs:// "
            "or a shared filesystem, or each node keeps its own trials' checkpoints",
            file=sys.stderr,
        )
    if any(_fits(r, need) for r in nodes):
        return
    if types is not None:
        fitting = [name for name, res in types.items() if res is None or _fits(res, need)]
        if fitting:
            print(
                f"waiting for the autoscaler to add a node for trials of {_describe(need)} "
                f"(node types that fit: {', '.join(fitting)})",
                flush=True,
            )
            return
        nodes = nodes + [r for r in types.values() if r]
        where = f"no node and no node type ({', '.join(types)}) of the autoscaling cluster"
    else:
        where = "no node of the Ray cluster"
    max_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
    max_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
    gpus = need["GPU"]
    asked = "auto" if args.gpus_per_trial == "auto" else f"{gpus:g}"
    if gpus > 0 and not any(_fits(r, {"GPU": gpus}) for r in nodes):
        raise UsageError(
            f"--gpus-per-trial {asked} asked, but {where} has "
            f"{'GPUs' if max_gpu == 0 else f'{gpus:g} GPUs (largest: {max_gpu:g})'}; "
            "use --gpus-per-trial 0 on CPU or --address a cluster with GPU nodes"
        )
    raise UsageError(
        f"--cpus-per-trial {args.cpus_per_trial:g} with --gpus-per-trial {need['GPU']:g} fits {where} "
        f"(largest: {max_cpu:g} CPUs, {max_gpu:g} GPUs)"
    )


def check_one_gpu_per_trial(args) -> None:
    """A trial trains on one device (fit has no data parallelism): 2+ GPUs per trial would hold GPUs it never
    uses. Checked after check_resources, whose message covers requests no node can satisfy."""
    if args.gpus_per_trial != "auto" and args.gpus_per_trial > 1:
        raise UsageError(
            f"--gpus-per-trial {args.gpus_per_trial:g}: a trial trains on one GPU (no data parallelism); use 1, a "
            "fraction (0.25 packs 4 trials per GPU) or auto"
        )


def _describe(need: dict) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in need.items() if v > 0)
