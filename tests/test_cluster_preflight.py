"""`run_search.py --check-cluster cluster.yaml` (issue 16.3): one line per missing piece, no traceback, exit 2;
"ready" and exit 0 when nothing is missing. Runs in subprocesses with a controlled environment: a PYTHONPATH shim
whose boto3 fails to import, and AWS settings pointing nowhere (no network call is made)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cli_run import printed
from sample_data import ROOT

NO_AWS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role lookup (this is not a cloud VM)
}


def preflight(cluster, tmp_path, extra_env=None, shim=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | NO_AWS | (extra_env or {})
    if shim:  # `import boto3` fails as on a fresh install of requirements.txt
        d = tmp_path / "shim"
        d.mkdir(exist_ok=True)
        (d / "boto3.py").write_text("raise ImportError('No module named boto3')\n")
        env["PYTHONPATH"] = f"{d}{os.pathsep}{env.get('PYTHONPATH', '')}"
    t = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "--check-cluster", str(cluster)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)  # fmt: skip
    proc.seconds = time.time() - t
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


RAY = printed(Path(sys.executable).parent / "ray")  # the environment's own, as run from ROOT


def missing(proc) -> list[str]:
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("missing:")]


def test_without_boto3_or_credentials(tmp_path):
    proc = preflight(ROOT / "cluster.yaml", tmp_path, shim=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = missing(proc)
    assert any("boto3" in ln and "requirements-cluster.txt" in ln for ln in lines), proc.stdout
    assert any("credentials" in ln for ln in lines)
    assert "ok: region us-west-2" in proc.stdout  # cluster.yaml sets it
    # `ray` of the environment that checked (the venv need not be on PATH), the file as given, relative to here
    assert proc.stdout.rstrip().splitlines()[-1].endswith(f"then: {RAY} up cluster.yaml")
    assert all(len(ln) <= 120 for ln in proc.stdout.splitlines()), proc.stdout


def test_credentials_missing_then_found(tmp_path):
    proc = preflight(ROOT / "cluster.yaml", tmp_path)
    assert any("AWS credentials: none found" in ln for ln in missing(proc)), proc.stdout
    assert "ok: boto3" in proc.stdout
    found = preflight(
        ROOT / "cluster.yaml", tmp_path, {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}
    )
    assert "ok: AWS credentials from env" in found.stdout, found.stdout
    assert not any("credentials" in ln for ln in missing(found))


def test_region_key_and_tokens_are_checked(tmp_path):
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    del config["provider"]["region"]
    config["auth"]["ssh_private_key"] = str(tmp_path / "absent.pem")
    config["file_mounts"]["~/.ray/auth_token"] = "~/absent_token_for_test"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    lines = missing(preflight(bad, tmp_path))
    assert any("provider.region" in ln for ln in lines), lines
    assert any("absent.pem" in ln for ln in lines)
    assert any("absent_token_for_test" in ln for ln in lines)


def test_ready_when_nothing_is_missing(tmp_path):
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["file_mounts"] = {}  # no token file to depend on
    key = tmp_path / "key.pem"
    key.write_text("k")
    config["auth"]["ssh_private_key"] = str(key)
    tools = tmp_path / "bin"  # ssh and rsync as this test's own stand-ins, whatever the machine has
    tools.mkdir()
    for tool in ("ssh", "rsync"):
        (tools / tool).write_text("#!/bin/sh\n")
        (tools / tool).chmod(0o755)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(config))
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PATH": f"{tools}{os.pathsep}/usr/bin:/bin",
    }
    proc = preflight(ok, tmp_path, env)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(f"ready: {RAY} up {ok}"), proc.stdout
    assert proc.seconds < 30


def test_unusable_cluster_file_is_one_line(tmp_path):
    proc = preflight(tmp_path / "nope.yaml", tmp_path)
    joined = " ".join(line.strip() for line in proc.stdout.splitlines())  # a long temp path goes on its own line
    assert proc.returncode == 2 and joined == f"error: no cluster file {tmp_path / 'nope.yaml'}"


def test_placeholders_are_missing_not_ok(tmp_path):
    """Issue 23.6: cluster-gcp.yaml as shipped said `ok: project_id YOUR_PROJECT_ID`."""
    proc = preflight(ROOT / "cluster-gcp.yaml", tmp_path)
    assert proc.returncode == 2 and "ok: project_id" not in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stdout.replace("\n  ", " ").splitlines() if ln.startswith("missing:")]
    assert any(ln.startswith("missing: project_id: YOUR_PROJECT_ID is a placeholder") for ln in lines), lines
    # the worker's service account names the project too: where it is, and that it must be replaced
    assert any("serviceAccounts[0].email holds the placeholder YOUR_PROJECT_ID; replace it in" in ln for ln in lines)
    assert all(len(ln) <= 120 for ln in proc.stdout.splitlines()), proc.stdout
    # the same file with a project filled in: no placeholder line, project_id ok
    config = yaml.safe_load((ROOT / "cluster-gcp.yaml").read_text())
    text = yaml.safe_dump(config).replace("YOUR_PROJECT_ID", "my-project-123")
    (tmp_path / "mine.yaml").write_text(text)
    mine = preflight(tmp_path / "mine.yaml", tmp_path)
    assert "ok: project_id my-project-123" in mine.stdout and "holds the placeholder" not in mine.stdout, mine.stdout
    # and in the AWS file, a placeholder anywhere is one missing line naming where
    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    aws["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]["Name"] = "<YOUR_PROFILE>"
    (tmp_path / "aws.yaml").write_text(yaml.safe_dump(aws))
    bad = preflight(tmp_path / "aws.yaml", tmp_path)
    assert any("IamInstanceProfile.Name holds the placeholder" in ln for ln in missing(bad)), bad.stdout
