"""cluster.yaml (AWS) and cluster-gcp.yaml: Ray's own validation (what `ray up` runs first) and the properties
docs/cluster.md promises.

No cloud account here: these check the file, not a launch. The multi-node behaviour is in test_multinode.py.
"""

from __future__ import annotations

import copy
import re

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from sample_data import ROOT

AWS, GCP = ROOT / "cluster.yaml", ROOT / "cluster-gcp.yaml"


def load(path=AWS) -> dict:
    return yaml.safe_load(path.read_text())


def ray_up_validate(config: dict) -> dict:
    """The first steps of `ray up` (commands._bootstrap_config): fill in the provider defaults, then the schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return ray_up_validate(load())


@pytest.fixture(scope="module")
def gcp_config() -> dict:
    return ray_up_validate(load(GCP))


@pytest.fixture(scope="module", params=[AWS, GCP], ids=["aws", "gcp"])
def each_file(request):
    """The path of each cluster file, and the file as `ray up` prepares it."""
    return request.param, ray_up_validate(load(request.param))


def gpu_types(config: dict) -> dict:
    return {n: t for n, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


def test_cluster_yaml_passes_ray_validation(config):
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]


def gpu_worker(config: dict) -> dict:
    """The one GPU worker type, checked for what both clouds promise: from 0 nodes, a CPU head, whole resources."""
    types = gpu_types(config)
    assert len(types) == 1, "one GPU worker type"
    (name, gpu), head = next(iter(types.items())), config["available_node_types"][config["head_node_type"]]
    assert name != config["head_node_type"] and head["resources"].get("GPU", 0) == 0, "CPU head"
    assert gpu["min_workers"] == 0 and 1 <= gpu["max_workers"] <= config["max_workers"]
    # whole resources per node; 0.25 GPU per trial then packs 4 trials on each worker, with a CPU for each
    assert gpu["resources"]["GPU"] == 1 and gpu["resources"]["CPU"] >= 4
    assert all(isinstance(v, int) for t in config["available_node_types"].values() for v in t["resources"].values())
    assert config["idle_timeout_minutes"] > 0
    return gpu


def test_gpu_worker_type_autoscales_from_zero(config):
    gpu = gpu_worker(config)
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5."))
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_gcp_gpu_worker_is_a_spot_t4_from_zero(gcp_config):
    gpu = gpu_worker(gcp_config)
    node = gpu["node_config"]
    assert node["guestAccelerators"] == [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]
    assert node["scheduling"]["provisioningModel"] == "SPOT"
    assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # GCP refuses GPU VMs that would live-migrate
    assert {"key": "install-nvidia-driver", "value": "True"} in node["metadata"]["items"]
    # workers write checkpoints to gs:// themselves
    assert node["serviceAccounts"][0]["email"].startswith("cifar-tune-worker@")


def test_nodes_get_the_project_and_its_requirements(each_file):
    _, config = each_file
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


def test_no_credentials_and_no_ports_open_to_the_world(each_file):
    path, _ = each_file
    text = path.read_text()
    secrets = ("aws_access_key_id", "aws_secret_access_key", "AKIA", "ssh_private_key:", "RAY_AUTH_TOKEN=",
               "gcp_credentials", "private_key")  # fmt: skip
    for secret in secrets:
        assert not re.search(rf"^\s*[^#\s].*{re.escape(secret)}", text, re.M | re.I), secret
    config = load(path)
    assert not config["provider"].get("security_group", {}).get("IpPermissions"), "no extra inbound rules"
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "0.0.0.0" not in starts and "--dashboard-host=127.0.0.1" in starts
    assert starts.count("RAY_AUTH_MODE=token") == 2, "token auth on head and workers"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token", "token comes from the user's file"


def test_gcp_file_is_cluster_yaml_but_for_the_cloud():
    """Everything but the provider and the node types is cluster.yaml's: same image, mounts, installs, start."""
    aws, gcp = load(AWS), load(GCP)
    cloud = {"provider", "available_node_types", "head_setup_commands"}
    assert set(aws) == set(gcp)
    assert {k: v for k, v in gcp.items() if k not in cloud} == {k: v for k, v in aws.items() if k not in cloud}
    # the head: cluster.yaml's installs, plus the API client Ray's GCP provider imports (boto3's counterpart)
    assert gcp["head_setup_commands"][: len(aws["head_setup_commands"])] == aws["head_setup_commands"]
    assert any("google-api-python-client" in c for c in gcp["head_setup_commands"])
    assert set(aws["available_node_types"]) == set(gcp["available_node_types"])
    for name, t in aws["available_node_types"].items():
        g = gcp["available_node_types"][name]
        assert {k: v for k, v in g.items() if k not in ("node_config", "initialization_commands")} == {
            k: v for k, v in t.items() if k != "node_config"
        }, name


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


def test_gcp_file_passes_ray_validation(gcp_config):
    assert gcp_config["provider"]["type"] == "gcp"
    assert gcp_config["head_node_type"] in gcp_config["available_node_types"]
    (gpu,) = gpu_types(gcp_config).values()
    assert gpu["min_workers"] == 0 and gpu["node_config"]["scheduling"]["provisioningModel"] == "SPOT"


def test_docs_link_the_gcp_file_and_hold_no_yaml_copy():
    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert "ray up cluster-gcp.yaml" in docs and "(../cluster-gcp.yaml)" in docs
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    assert not [b for b in blocks if "type: gcp" in b], "one GCP config: the file, not a copy in the docs"
