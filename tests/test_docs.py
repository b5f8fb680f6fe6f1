"""The docs say what the code does (issue 23.9). Every flag a command in README.md or docs/*.md gives run_search.py,
report.py or predict.py is one that script's --help lists; and the console output the docs quote (each block after a
`<!-- generated: NAME -->` comment) is what the code prints now, rendered here by the function NAME. When a test
fails, its message holds the text to paste."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from functools import cache
from types import SimpleNamespace

import pytest
from sample_data import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ("run_search.py", "report.py", "predict.py")
HELP_COLUMNS = "100"  # argparse wraps --help to $COLUMNS: the excerpts in the docs are taken at this width


@cache
def help_text(script: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": HELP_COLUMNS}, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def doc_commands(text: str) -> list[tuple[str, str]]:
    """(script, the rest of its command line) for every command in a code block or an inline code span."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for chunk in blocks + spans:
        for line in chunk.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"(?<![\w/.-])(run_search|report|predict)\.py\b([^#|;&]*)", line):
                found.append((f"{m.group(1)}.py", m.group(2)))
    return found


def unknown_flags(text: str) -> list[str]:
    wrong = []
    for script, rest in doc_commands(text):
        known = set(re.findall(r"--[a-z][a-z0-9-]*", help_text(script)))
        wrong += [f"{script} {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest) if flag not in known]
    return wrong


def test_every_flag_in_the_docs_is_one_the_script_has():
    wrong = [f"{doc.name}: {w}" for doc in DOCS for w in unknown_flags(doc.read_text())]
    assert wrong == [], "flags the scripts do not have:\n" + "\n".join(wrong)


def test_the_doc_command_finder_sees_what_a_user_would_paste():
    text = "Run `python run_search.py --resume --name X` or:\n```bash\n.venv/bin/python report.py \\\n  --seeds 3\n```"
    assert [(s, r.strip()) for s, r in doc_commands(text)] == [("report.py", "--seeds 3"),
                                                               ("run_search.py", "--resume --name X")]  # fmt: skip
    assert doc_commands("`serving/predict.py`, `bench/report.py --x`") == []  # modules, not the CLIs
    stale = "```\npython run_search.py --model lenet5 --trials 8   # a flag renamed long ago\n```"
    assert unknown_flags(stale) == ["run_search.py --trials"]


# ---------------------------------------------------------------------------------------------------------------
# generated examples: each `<!-- generated: NAME -->` is followed by a ``` block equal to NAME()'s text


def generated_blocks() -> list[tuple[str, str, str]]:
    """(doc name, generator name, the block's text) of every marked block in the docs."""
    out = []
    for doc in DOCS:
        for name, block in re.findall(r"<!-- generated: (\w+) -->\n```[a-z]*\n(.*?)```", doc.read_text(), re.S):
            out.append((doc.name, name, block))
    return out


class Clock:
    """time.time() for the console: starts at 0 and moves when the example says so."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


def console_example(monkeypatch, tmp_path=None) -> str:
    """docs/live.md: what the console prints for the lenet5 space, with the README's --time-budget 15."""
    import search_driver.console as console_module
    from search_spaces import get_space

    clock = Clock()
    monkeypatch.setattr(console_module, "time", SimpleNamespace(time=clock.time))
    space, _ = get_space("lenet5")
    args = SimpleNamespace(metric="val_loss", max_epochs=40, num_samples=-1, time_budget=15)
    console = console_module.console_callback(args, space)
    lines = []
    console._print = lambda text, indent=8: lines.extend(console_module.textwrap.wrap(
        text, console.width, subsequent_indent=" " * indent, break_on_hyphens=False))  # fmt: skip

    def trial(tid, config, status="RUNNING", last=None):
        return SimpleNamespace(trial_id=tid, config=config, status=status, last_result=last or {})

    a = trial("03614cdb", {"lr": 0.05, "weight_decay": 5e-4, "batch_size": 128, "crop_padding": 4, "cutout": 0,
                           "dropout": 0.0})  # fmt: skip
    b = trial("68457d5c", {"lr": 0.03204, "weight_decay": 8.83e-4, "batch_size": 128, "crop_padding": 2, "cutout": 4,
                           "dropout": 0.0713})  # fmt: skip
    c = trial("f4cdc9fa", {"lr": 0.1871, "weight_decay": 1.62e-3, "batch_size": 64, "crop_padding": 0, "cutout": 8,
                           "dropout": 0.2415})  # fmt: skip
    trials = [a, b, c]
    console.setup()
    console.on_step_begin(0, [])
    for t, at in ((a, 2), (b, 3), (c, 4)):
        clock.now += at
        console.on_trial_start(0, trials, t)
    clock.now += 17
    console.on_trial_result(0, trials, b, {"val_loss": 1.3654, "val_acc": 0.5074, "train_loss": 1.582, "epoch": 1,
                                           "images_per_s": 4122.0})  # fmt: skip
    clock.now += 2
    c.last_result = {"val_loss": 2.303, "val_acc": 0.1, "train_loss": 2.3041, "epoch": 2, "images_per_s": 3980.0}
    console.on_trial_result(0, trials, c, c.last_result)
    console.on_trial_complete(0, trials, c)
    return "\n".join(lines) + "\n"


def interrupt_example(monkeypatch, tmp_path) -> tuple[str, str]:
    """docs/first-run.md: what Ctrl-C prints (our lines; the first is interrupts.py's own, checked below), and what
    `--resume` then says, for an experiment of 16 trials with 3 done and 2 running."""
    import analysis.shell as shell
    from search_driver import resume
    from search_driver.summary import print_interrupted

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shell, "ROOT", tmp_path)  # the script as a user in the repository's root sees it
    monkeypatch.setattr(shell, "python", lambda: ".venv/bin/python")  # the README's install
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    name = "lenet5-20261202-061500"
    exp = tmp_path / "experiments" / name
    exp.mkdir(parents=True)
    started = 1796192100.0  # 2026-12-02 06:15 UTC
    (exp / "experiment.json").write_text(json.dumps({"args": {"num_samples": 16}, "started_at": started}))
    statuses = ["TERMINATED"] * 3 + ["RUNNING"] * 2 + ["PENDING"]
    state = {"trial_data": [[json.dumps({"status": s}), {}] for s in statuses]}
    (exp / "experiment_state-2026-12-02_06-15-00.json").write_text(json.dumps(state))
    args = SimpleNamespace(name=name, storage_path=str(tmp_path / "experiments"), address=None)
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        print_interrupted(args, str(exp), SimpleNamespace(received=2))
    _, line = resume.choose_experiment(str(tmp_path / "experiments"), None)
    monkeypatch.delenv("TZ")
    time.tzset()
    stopping = "SIGINT: stopping the search and saving its state (press Ctrl-C again to stop at once)\n"
    return f"{stopping}{err.getvalue()}", f"{line}\n"


def resuming_example(monkeypatch, tmp_path) -> str:
    """docs/first-run.md: what `run_search.py --resume` says first, for the experiment of interrupt_example."""
    return interrupt_example(monkeypatch, tmp_path)[1]


def help_excerpt(monkeypatch, tmp_path=None) -> str:
    """docs/first-run.md: the part of `run_search.py --help` (at COLUMNS=100) from --time-budget to --metric."""
    text = help_text("run_search.py")
    return text[text.index("  --time-budget") : text.index("  --scheduler")]


def models_excerpt(monkeypatch, tmp_path=None) -> str:
    """docs/first-run.md: the model list at the end of `run_search.py --help`."""
    text = help_text("run_search.py")
    return text[text.index("models (--model):") : text.index("examples:")].rstrip("\n") + "\n"


GENERATORS = {"console_example": console_example, "interrupt_example": lambda **kw: interrupt_example(**kw)[0],
              "resuming_example": resuming_example, "help_excerpt": help_excerpt,
              "models_excerpt": models_excerpt}  # fmt: skip


@pytest.mark.parametrize("doc, name, block", generated_blocks(), ids=lambda v: v if len(v) < 40 else "")
def test_generated_examples_are_what_the_code_prints(doc, name, block, monkeypatch, tmp_path):
    make = GENERATORS[name]
    text = make(monkeypatch=monkeypatch, tmp_path=tmp_path)
    assert block == text, f"{doc}: the block after <!-- generated: {name} --> should now read:\n{text}"
    assert all(len(line) <= 120 for line in block.splitlines())


def test_every_generator_has_its_block():
    assert sorted(name for _, name, _ in generated_blocks()) == sorted(GENERATORS)
    # the first line of the interrupt example is interrupts.py's own
    assert (
        "stopping the search and saving its state (press Ctrl-C again to stop at once)"
        in (ROOT / "search_driver" / "interrupts.py").read_text()
    )
