"""The settled settings (analysis/settings.py, search_driver/cli.settle): built once, read-only after, saved whole."""

from __future__ import annotations

import pickle
import re
import subprocess

import pytest
from sample_data import ROOT

from analysis.settings import Settings


def test_settings_are_read_only_and_changed_gives_a_new_one():
    s = Settings(lr=0.1, model="lenet5")
    with pytest.raises(AttributeError, match="read-only"):
        s.lr = 0.2
    with pytest.raises(AttributeError):
        del s.lr
    t = s.changed(lr=0.2, image_size=32)
    assert (s.lr, t.lr, t.image_size, t.model) == (0.1, 0.2, 32, "lenet5") and "image_size" not in s
    assert getattr(s, "extend", False) is False  # an absent key reads like an absent attribute
    assert pickle.loads(pickle.dumps(t)) == t and t.as_dict() == {"lr": 0.2, "model": "lenet5", "image_size": 32}


def test_settle_folds_smoke_test_defaults_and_name_without_touching_the_parsed_flags(tmp_path):
    from search_driver.cli import parse_args, settle

    parsed = parse_args(["--model", "lenet5", "--data-dir", "d", "--smoke-test", "--time-budget", "5",
                         "--storage-path", str(tmp_path / "rel" / ".." / "exp")])  # fmt: skip
    before = dict(vars(parsed))
    s = settle(parsed, {"model", "data_dir", "smoke_test", "time_budget", "storage_path"})
    assert vars(parsed) == before  # the namespace is never written
    assert (s.num_samples, s.max_epochs, s.grace_period, s.time_budget) == (2, 2, 1, 5)  # a given flag stays
    bare = settle(parse_args(["--model", "lenet5", "--data-dir", "d", "--smoke-test", "--max-epochs", "1"]),
                  {"model", "data_dir", "smoke_test", "max_epochs"})  # fmt: skip
    assert (bare.num_samples, bare.max_epochs, bare.grace_period, bare.time_budget) == (2, 1, 1, None)
    assert s.name.startswith("lenet5-") and s.storage_path == str(tmp_path / "exp")
    full = settle(parse_args(["--model", "lenet5", "--data-dir", "d", "--time-budget", "5"]), {"time_budget"})
    assert (full.num_samples, full.max_epochs) == (-1, 40)  # until the budget ends; the space's horizon


def test_no_assignment_to_the_settings_outside_the_builder():
    """Issue 27's grep: the parsed flags are written nowhere in the project's code (tests and bench aside); cli.py
    builds a new Settings with changed() instead."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    pattern = re.compile(r"\bargs\.[a-z_]+(\s*,\s*args\.[a-z_]+)*\s*(=|\+=)[^=]|setattr\(args\b")
    hits = [
        f"{f}:{n}: {line.strip()}"
        for f in files
        if not f.startswith(("tests/", "bench/"))
        for n, line in enumerate((ROOT / f).read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert hits == []
