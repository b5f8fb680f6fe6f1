"""`run_search.py --check-cluster cluster.yaml`: what `ray up` needs on the launching machine, one line each.

`ray up` on a fresh install fails late and long (a 40-line ImportError without boto3, NoCredentialsError without
AWS credentials). This checks, without any network call, what the launcher will need: the provider's Python
packages (requirements-cluster.txt), credentials found by the cloud SDK's own lookup chain, a region, the SSH key
and client tools, the Ray token file cluster.yaml mounts, and the local Ray version against the cluster image's.
Prints `ok:` / `missing:` lines; exit 0 with "ready: ray up FILE", else exit 2.
"""

from __future__ import annotations

import importlib
import re
import shutil
import textwrap
from importlib import metadata
from pathlib import Path

from analysis.shell import WIDTH, command_lines, error_lines, path_arg, tool

# Commands printed with the running environment's own tools (.venv/bin/pip, .venv/bin/ray: analysis/shell.py).
INSTALL = f"{tool('pip')} install -r requirements-cluster.txt"
INSTALL_GCP = f"{tool('pip')} install google-api-python-client==2.202.0"  # the version requirements-cluster.txt names


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def aws_checks(config: dict) -> list[tuple[bool, str]]:
    out = []
    if not _importable("boto3"):
        out.append((False, f"boto3 (ray up's AWS provider imports it): {INSTALL}"))
        # without botocore there is no credential chain to ask
        return out + [(False, "AWS credentials: not checked without boto3")] + _region(config)
    out.append((True, f"boto3 {metadata.version('boto3')}"))
    out.append(_aws_credentials())
    return out + _region(config)


def _aws_credentials() -> tuple[bool, str]:
    import botocore.exceptions
    import botocore.session

    session = botocore.session.get_session()
    # A cloud VM's instance role is a valid source; ask its metadata endpoint once, briefly, not 3 x 1 s.
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    try:
        creds = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as e:
        return False, f"AWS credentials: {e}; fix AWS_PROFILE or run `aws configure --profile NAME`"
    except botocore.exceptions.BotoCoreError as e:
        return False, f"AWS credentials: {e}"
    if creds is None:  # the AWS CLI (`aws configure`) is in no requirements file: name the file and variables
        return (
            False,
            "AWS credentials: none found; put a key in ~/.aws/credentials or AWS_ACCESS_KEY_ID/_SECRET_ACCESS_KEY",
        )
    return True, f"AWS credentials from {creds.method}"


def _region(config: dict) -> list[tuple[bool, str]]:
    provider = config.get("provider") or {}
    region = provider.get("region")
    if not region:
        return [(False, "region: provider.region is not set in the cluster file (e.g. us-west-2)")]
    zones = [z.strip() for z in str(provider.get("availability_zone") or "").split(",") if z.strip()]
    wrong = [z for z in zones if not z.startswith(region)]
    if wrong:
        return [(False, f"region: availability_zone {', '.join(wrong)} is not in provider.region {region}")]
    return [(True, f"region {region}")]


def gcp_checks(config: dict) -> list[tuple[bool, str]]:
    out = []
    ok = _importable("googleapiclient")
    # not in requirements-cluster.txt: AWS is the default cloud, and the GCP client is a large install nobody else needs
    out.append((ok, "google-api-python-client" + ("" if ok else f" (ray up's GCP provider imports it): {INSTALL_GCP}")))
    project = (config.get("provider") or {}).get("project_id")
    if not project:
        out.append((False, "project_id: not set in provider"))
    elif placeholder(project):
        out.append((False, f"project_id: {project} is a placeholder, not a project; set provider.project_id to yours"))
    else:
        out.append((True, f"project_id {project}"))
    return out


# Values a cluster file ships with for the user to replace: YOUR_PROJECT_ID, <BUCKET>, CHANGE_ME, REPLACE_ME.
PLACEHOLDER = re.compile(r"YOUR_[A-Z0-9_]+|<[A-Za-z0-9_ -]+>|\bCHANGE_?ME\b|\bREPLACE_?ME\b")


def placeholder(value) -> str | None:
    m = PLACEHOLDER.search(str(value)) if isinstance(value, str) else None
    return m.group(0) if m else None


def placeholder_checks(config: dict, path: str) -> list[tuple[bool, str]]:
    """Every other value still holding a placeholder (a service account's email in YOUR_PROJECT_ID, ...): one
    missing line each, naming where it is (provider.project_id has its own line, in the provider's checks)."""
    out = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif where != "provider.project_id" and placeholder(node):
            out.append((False, f"{where} holds the placeholder {placeholder(node)}; replace it in {path}"))

    walk(config, "")
    return out


def ssh_checks(config: dict) -> list[tuple[bool, str]]:
    out = []
    key = (config.get("auth") or {}).get("ssh_private_key")
    if key:
        path = Path(key).expanduser()
        out.append(
            (path.is_file(), f"SSH key {path}" + ("" if path.is_file() else ": no such file (auth.ssh_private_key)"))
        )
    else:
        out.append((True, "SSH key: ray up creates a key pair for the cluster (auth.ssh_private_key not set)"))
    for client in ("ssh", "rsync"):  # ray up runs commands over ssh and syncs file_mounts with rsync
        found = shutil.which(client)
        out.append(
            (bool(found), f"{client} client" + ("" if found else f": not on PATH (e.g. apt-get install {client})"))
        )
    return out


def mount_checks(config: dict) -> list[tuple[bool, str]]:
    """Local sources of file_mounts that are files under ~ (the Ray token): ray up fails if they are absent."""
    out = []
    for local in (config.get("file_mounts") or {}).values():
        if str(local).startswith("~"):
            path = Path(local).expanduser()
            hint = " (`ray get-auth-token --generate`)" if "auth_token" in str(local) else ""
            out.append((path.exists(), f"file_mounts source {local}" + ("" if path.exists() else f": missing{hint}")))
    return out


def ray_version_check(config: dict) -> list[tuple[bool, str]]:
    image = (config.get("docker") or {}).get("image", "")
    m = re.search(r":(\d+\.\d+\.\d+)", image)
    if not m:
        return []
    local = metadata.version("ray")
    same = local == m.group(1)
    return [(same, f"Ray {local} here" + (f", image {image}" if same else f", but the cluster image has {m.group(1)}"))]


PROVIDERS = {"aws": aws_checks, "gcp": gcp_checks}


def preflight(path: str) -> tuple[list[tuple[bool, str]], str | None]:
    """(checks as (ok, text), error). error: the file itself is unusable."""
    import yaml

    p = Path(path)
    if not p.is_file():
        return [], f"no cluster file {path}"
    try:
        config = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        return [], f"{path} is not valid YAML: {str(e).splitlines()[0]}"
    provider = (config.get("provider") or {}).get("type")
    if provider not in PROVIDERS:
        known = ", ".join(PROVIDERS)
        return [(True, f"provider {provider!r}: no launcher checks here (only {known})")], None
    checks = [(True, f"provider {provider}")] + PROVIDERS[provider](config) + placeholder_checks(config, path)
    return checks + ssh_checks(config) + mount_checks(config) + ray_version_check(config), None


def main(path: str) -> int:
    checks, error = preflight(path)
    if error:
        print(error_lines(error), flush=True)
        return 2
    for ok, text in checks:  # one check each, continued on indented lines past 120 columns
        print(
            textwrap.fill(
                f"{'ok' if ok else 'missing'}: {text}",
                WIDTH,
                subsequent_indent="  ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    missing = sum(not ok for ok, _ in checks)
    if missing:
        print(command_lines(f"{missing} missing; fix them, then: ", f"{tool('ray')} up {path_arg(path)}"))
        return 2
    print(command_lines("ready: ", f"{tool('ray')} up {path_arg(path)}"))
    return 0
