"""The commands the tools print (issue 23.1): pasted into a shell where the venv is NOT on PATH (the README installs
into .venv without activating it), each runs with the environment that printed it. And what the end of a search
prints fits 120 columns (issue 23.5).

Each printed line is run verbatim with `bash -c` and PATH=/usr/bin:/bin. The resume and report lines run for real
against an experiment whose data is gone, so they get as far as a one-line `error:` (exit 2): that needs the whole
import chain (pyarrow, pandas, Ray), which the system python does not have. The watch lines run with `--help`.
"""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pandas as pd
from sample_data import ROOT

from analysis.shell import command_lines, error_lines
from search_driver.cli import parse_args
from search_driver.summary import fitting_table, print_interrupted, print_summary
from search_driver.tracking import watch_hint

WIDTH = 120
NO_VENV_PATH = "/usr/bin:/bin"


def in_plain_shell(line: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`line` pasted into bash in the repository, with a PATH that holds no virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = NO_VENV_PATH
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def commands_after(label: str, text: str) -> list[str]:
    """Each command printed after `label`, with its continuation lines (` \\` + newline, as a shell reads them)."""
    lines, found = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith(label):
            cmd = [line.removeprefix(label)]
            while cmd[-1].endswith(" \\"):
                i += 1
                cmd.append(lines[i])
            found.append("\n".join(cmd))
    return found


def after(label: str, text: str) -> str:
    return commands_after(label, text)[0]


def fake_experiment(tmp_path, name="gone", num_val=50) -> tuple[SimpleNamespace, str]:
    """An experiment folder as a search leaves it (experiment.json with its arguments, a Tune snapshot with one
    RUNNING trial), whose --data-dir no longer exists."""
    args = parse_args(["--model", "lenet5", "--data-dir", str(tmp_path / "data-gone"), "--num-samples", "4",
                       "--storage-path", str(tmp_path), "--name", name])  # fmt: skip
    args.max_epochs, args.grace_period = 10, 1
    exp = tmp_path / name
    exp.mkdir()
    info = {"name": name, "model": "lenet5", "metric": "val_loss", "mode": "min", "started_at": 1.0,
            "args": vars(args), "data": {"num_val": num_val},
            "search": {"first_trial_config": {"lr": 0.05}}}  # fmt: skip
    (exp / "experiment.json").write_text(json.dumps(info))
    state = {"trial_data": [[json.dumps({"status": "RUNNING"}), {}]]}
    (exp / "experiment_state-2026-12-06_10-00-00.json").write_text(json.dumps(state))
    return args, str(exp)


def test_the_resume_line_runs_when_pasted_without_the_venv(tmp_path, capsys):
    args, exp = fake_experiment(tmp_path)
    print_interrupted(args, exp, SimpleNamespace(received=2))
    err = capsys.readouterr().err
    line = after("resume with: ", err)
    assert not line.startswith("python ")  # the running interpreter, not whatever `python` is on PATH
    proc = in_plain_shell(line)
    # it resumed "gone" with its saved arguments and got as far as loading the data, which is gone
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "resuming gone" in proc.stdout and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'data-gone'} does not exist" in proc.stderr.replace("\n  ", " ")


def test_the_report_line_runs_when_pasted_without_the_venv(tmp_path, capsys):
    args, exp = fake_experiment(tmp_path)
    df = pd.DataFrame({"trial_id": ["a1", "b2"], "val_acc": [0.3, 0.31], "val_loss": [2.0, 1.9], "epoch": [3, 3],
                       "config/lr": [0.05, 0.02]})  # fmt: skip
    print_summary(FakeResults(df), args, exp)
    out = capsys.readouterr().out
    proc = in_plain_shell(after("Report: ", out))
    # report.py found the experiment (pandas, pyarrow and Ray imported) and said in one line what it cannot read
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")], proc.stderr


def test_the_watch_lines_run_when_pasted_without_the_venv(tmp_path):
    args = SimpleNamespace(searcher="optuna", mlflow=None)
    lines = commands_after("watch: ", watch_hint(args, str(tmp_path / "exp")))
    assert [ln.split()[0].rsplit("/", 1)[-1] for ln in lines] == ["optuna-dashboard", "tensorboard"]
    for line in lines:
        proc = in_plain_shell(line + " --help", timeout=180)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-2000:])


def test_the_export_hint_runs_when_pasted_without_the_venv(tmp_path):
    from serving.model_card import CardError, read_card

    (tmp_path / "best_config.json").write_text("{}")  # a report folder without an exported model
    try:
        read_card(tmp_path)
    except CardError as e:
        hint = str(e).split("export it with:\n", 1)[1]
    proc = in_plain_shell(hint)
    assert proc.returncode == 2 and "error: export:" in proc.stderr, proc.stderr


class FakeResults:
    """What print_summary reads of Tune's ResultGrid."""

    def __init__(self, df: pd.DataFrame):
        self.df, self.num_errors = df, 0

    def get_dataframe(self, filter_metric=None, filter_mode=None) -> pd.DataFrame:
        return self.df

    def __iter__(self):
        return iter(SimpleNamespace(error=None, metrics={"epoch": 1}, path=f"/x/trial_{t}") for t in self.df.trial_id)


def test_the_summary_of_a_wide_space_fits_120_columns(tmp_path, capsys):
    """Issue 23.5: the Keras space's table wrapped pandas-style, its blocks ending in a backslash."""
    args, exp = fake_experiment(tmp_path, num_val=5000)
    keys = ["lr", "weight_decay", "batch_size", "optimizer", "schedule", "label_smoothing", "crop_padding", "cutout",
            "dropout", "stem", "width_multiplier", "warmup_epochs"]  # fmt: skip
    df = pd.DataFrame({"trial_id": [f"t{i:07d}" for i in range(6)], "val_acc": [0.5 + i / 100 for i in range(6)],
                       "val_loss": [1.5 - i / 100 for i in range(6)], "epoch": [20] * 6,
                       **{f"config/{k}": [f"value_{k}_{i}" for i in range(6)] for k in keys[1:]},
                       "config/lr": [0.01 * (i + 1) for i in range(6)]})  # fmt: skip
    print_summary(FakeResults(df), args, exp)
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if len(ln) > WIDTH] == []
    assert not any(ln.rstrip().endswith("\\") for ln in out.splitlines() if not ln.startswith(("Report:", "    ")))
    table = out.split("errors:\n", 1)[1]
    assert table.startswith("trial_id") and "not shown: " in table and "warmup_epochs" in table


def test_a_table_that_fits_is_shown_whole():
    df = pd.DataFrame({"trial_id": ["a"], "val_loss": [0.5], "lr": [0.01]})
    assert fitting_table(df) == df.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def test_long_commands_and_errors_are_continued_not_cut():
    cmd = "/a/venv/bin/python run_search.py --resume --name x --storage-path /" + "d" * 150
    text = command_lines("resume with: ", cmd)
    assert text.splitlines()[0].endswith(" \\") and text.replace(" \\\n    ", " ") == "resume with: " + cmd
    err = error_lines("pretrained weights are missing: copy https://example.org/" + "w" * 130 + ".pth to the cache")
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and all(ln.startswith("  ") for ln in lines[1:])
    assert " ".join(ln.strip() for ln in lines).startswith("error: pretrained weights are missing: copy https://")
    assert all(len(ln) <= WIDTH for ln in lines if "https://" not in ln)  # only the URL itself may be longer
