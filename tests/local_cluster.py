"""Ray clusters on this one machine for tests, started and stopped without touching anyone else's Ray.

`LocalCluster` runs `ray start --head --block` in a session of its own, on free ports, with its own temp dir and
token, and stops by killing exactly the processes of that session (never `ray stop`, which kills every Ray on the
machine, including other tests' instances). With `worker_types` it is an autoscaling cluster: Ray's
`fake_multinode` provider starts each "node" as extra raylet processes here, declaring the resources of its node
type (logical GPUs included), the way `ray.cluster_utils.AutoscalingCluster` does; that class is not usable as is
(it calls `ray stop --force` and reads an example file the pip wheel lacks).

The autoscaling config is written to $HOME/ray_bootstrap_config.yaml of a private HOME, the path `ray up` uses
on a real head node, so run_search.py finds the node types exactly as it does on a cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_autoscaling_config(head_resources: dict, worker_types: dict, gcs_address: str) -> dict:
    """A complete cluster config for the fake_multinode provider (the fields `ray up` would fill in)."""
    return {
        "cluster_name": "fake",
        "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "upscaling_speed": 10.0,  # start all the nodes pending trials need at once
        "idle_timeout_minutes": 5,
        # no SSH updaters: fake nodes are up-to-date Ray nodes the moment they start
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },  # fmt: skip
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, "min_workers": 0, **t} for name, t in worker_types.items()},
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class LocalCluster:
    def __init__(self, *, num_cpus: int = 1, num_gpus: int = 0, worker_types: dict | None = None, dashboard=False):
        # Short paths: Ray's unix sockets live under the temp dir and must stay under ~100 characters.
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.home = self.root / "home"
        self.home.mkdir()
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # Token auth on, with a token of our own (not ~/.ray/auth_token, which other Ray instances here share).
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` = this venv's
        }
        self.env.pop("RAY_ADDRESS", None)
        cmd = [
            RAY, "start", "--head", "--block", f"--port={self.port}", f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}", f"--temp-dir={self.root / 'ray'}", "--min-worker-port=0",
            "--max-worker-port=0", f"--ray-client-server-port={free_port()}",
            f"--dashboard-port={self.dashboard_port}", f"--dashboard-agent-listen-port={free_port()}",
            f"--include-dashboard={'true' if dashboard else 'false'}", "--disable-usage-stats",
        ]  # fmt: skip
        if worker_types:
            config = fake_autoscaling_config({"CPU": num_cpus, "GPU": num_gpus}, worker_types, self.address)
            self.config_path = self.home / "ray_bootstrap_config.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
            cmd.append(f"--autoscaling-config={self.config_path}")
            self.env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        self.log = self.root / "head.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_started()

    def _wait_started(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {self.log.read_text()[-3000:]}")
            if "--block" in self.log.read_text():  # printed once all head processes are up
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ray start did not come up in {timeout:.0f}s: {self.log.read_text()[-3000:]}")

    def session_pids(self) -> list[int]:
        """Every process of the cluster: ray start's session holds the head, the fake nodes and all workers."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        """SIGKILL the session (a test cluster keeps no state worth a graceful stop), then drop its files."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, *cmd, timeout: float = 240, **env) -> subprocess.CompletedProcess:
        """Run a command as a client of this cluster (its token, its HOME with the bootstrap config)."""
        t = time.time()
        proc = subprocess.run(
            list(map(str, cmd)), env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )
        proc.seconds = time.time() - t
        return proc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False
