"""cluster.yaml: Ray's own validation (what `ray up` runs first) and the properties docs/cluster.md promises.

No cloud account here: these check the file, not a launch. The multi-node behaviour is in test_multinode.py.
"""

from __future__ import annotations

import copy
import re

import pytest
import ray
import yaml
from conftest import ROOT
from ray.autoscaler._private.util import prepare_config, validate_config


def load(path=ROOT / "cluster.yaml") -> dict:
    return yaml.safe_load(path.read_text())


def ray_up_validate(config: dict) -> dict:
    """The first steps of `ray up` (commands._bootstrap_config): fill in the provider defaults, then the schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return ray_up_validate(load())


def gpu_types(config: dict) -> dict:
    return {n: t for n, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


def test_cluster_yaml_passes_ray_validation(config):
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]


def test_gpu_worker_type_autoscales_from_zero(config):
    types = gpu_types(config)
    assert len(types) == 1, "one GPU worker type"
    (name, gpu), head = next(iter(types.items())), config["available_node_types"][config["head_node_type"]]
    assert name != config["head_node_type"] and head["resources"].get("GPU", 0) == 0, "CPU head"
    assert gpu["min_workers"] == 0 and 1 <= gpu["max_workers"] <= config["max_workers"]
    # whole resources per node; 0.25 GPU per trial then packs 4 trials on each worker, with a CPU for each
    assert gpu["resources"]["GPU"] == 1 and gpu["resources"]["CPU"] >= 4
    assert all(isinstance(v, int) for t in config["available_node_types"].values() for v in t["resources"].values())
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5."))
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["idle_timeout_minutes"] > 0


def test_nodes_get_the_project_and_its_requirements(config):
    mounts = config["file_mounts"]
    project = next(remote for remote, local in mounts.items() if local == ".")
    head, workers = " ".join(config["head_setup_commands"]), " ".join(config["worker_setup_commands"])
    assert f"pip install -q -r {project}/requirements.txt" in head  # the driver: the CPU stack, as CI
    assert f"pip install -q -r {project}/requirements-gpu.txt" in workers  # GPU workers: TF's CUDA build

    # the GPU file = the CPU file with tensorflow[and-cuda] for tensorflow-cpu, same versions
    def pins(name):
        lines = (ROOT / name).read_text().splitlines()
        return {ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()}

    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    dev = {p for p in cpu if p.startswith(("pytest", "ruff"))}
    assert gpu - cpu == {"tensorflow[and-cuda]==2.21.0"} and cpu - gpu - dev == {"tensorflow-cpu==2.21.0"}
    # Ray in the image = Ray pinned in requirements.txt = Ray running here: clients and cluster must match.
    pinned = re.search(r"^ray\[[^\]]*\]==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert pinned == ray.__version__
    assert all(f"rayproject/ray:{pinned}-" in config["docker"][k] for k in ("image", "head_image"))
    # run_search.py reads the node types from the bootstrap config the head is started with
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in c for c in config["head_start_ray_commands"])


def test_no_credentials_and_no_ports_open_to_the_world():
    text = (ROOT / "cluster.yaml").read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "ssh_private_key:", "RAY_AUTH_TOKEN="):
        assert not re.search(rf"^\s*[^#\s].*{re.escape(secret)}", text, re.M | re.I), secret
    config = load()
    assert not config["provider"].get("security_group", {}).get("IpPermissions"), "no extra inbound rules"
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "0.0.0.0" not in starts and "--dashboard-host=127.0.0.1" in starts
    assert starts.count("RAY_AUTH_MODE=token") == 2, "token auth on head and workers"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token", "token comes from the user's file"


@pytest.mark.parametrize(
    "typo",
    [
        lambda c: c["available_node_types"]["gpu_worker"].update(max_worker=4),  # misspelled key
        lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.25),  # fraction on a node
        lambda c: c.update(head_node_type="gpu-worker"),  # not a node type
    ],
)
def test_validation_catches_typos(typo):
    config = load()
    typo(config)
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError or ValueError, as `ray up` reports
        ray_up_validate(config)


def readme_gcp_block() -> dict:
    """The GCP switch in docs/cluster.md: a YAML block that replaces the AWS-specific parts of cluster.yaml."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "cluster.md").read_text(), re.S)
    gcp = [yaml.safe_load(b) for b in blocks if "type: gcp" in b]
    assert len(gcp) == 1, "docs/cluster.md has one GCP block"
    return gcp[0]


def test_readme_gcp_variant_passes_ray_validation():
    config = load()
    config.update(readme_gcp_block())
    prepared = ray_up_validate(config)
    assert prepared["provider"]["type"] == "gcp"
    (gpu,) = gpu_types(prepared).values()
    assert gpu["min_workers"] == 0 and gpu["node_config"]["scheduling"]["provisioningModel"] == "SPOT"
