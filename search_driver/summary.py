"""What a search prints when it ends: each failed trial's cause once, the best trials by the search metric (each at
its best epoch) and whether the search beat its first (DEFAULTS) trial; for an extended experiment, the trials and
minutes of each part; after an interrupt, what was kept and the command that resumes it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import textwrap

from analysis.shell import WIDTH, command, command_lines, error_lines, path_arg


def error_causes(results) -> dict[str, int]:
    """The errored trials' causes, each once: the exception's last line (e.g. "GPUUnavailableError: this trial holds
    0.25 GPU but ...") -> how many trials ended with it. Tune logs each failure's traceback as it happens; this
    is the summary a reader needs."""
    causes: dict[str, int] = {}
    for result in results:
        if result.error is None:
            continue
        lines = [ln.strip() for ln in str(result.error).splitlines() if ln.strip()]
        cause = lines[-1] if lines else type(result.error).__name__
        cause = re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", cause)  # trainables.gpu_share.GPUUnavailableError: -> its name
        causes[cause] = causes.get(cause, 0) + 1
    return causes


def unreported_line(results) -> str | None:
    """One line for trials that ended without an error and without an epoch: a --time-budget ran out while they
    started, or before they could (Ray's own warning about them is dropped: ray_compat.drop_unreported_warning)."""
    names = [os.path.basename(r.path) for r in results if r.error is None and not (r.metrics or {}).get("epoch")]
    if not names:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    n = len(names)
    line = f"{n} trial{'s' if n > 1 else ''} ended with the search before {'their' if n > 1 else 'its'} first epoch: {shown}"
    return textwrap.shorten(line, 120, placeholder=" ...")


def nothing_line(results, args, path: str) -> str:
    """One line for a search in which no trial reported an epoch: why, and what to change."""
    n, errors = len(results), results.num_errors
    if n and errors == n:
        why = f"all {n} trial{'s' if n > 1 else ''} failed (the causes above)"
        fix = "fix that and run again, or retry them with --resume NAME --max-failures N"
    elif n:
        budget = f"the {args.time_budget:g}-min budget" if args.time_budget else "the search"
        why = f"{n - errors} trial{'s' if n - errors > 1 else ''} ended with {budget} before finishing an epoch"
        fix = (
            "give a longer --time-budget, fewer pixels or images (--image-size, --subset) or a GPU; experiment.json's "
            "plan says what an epoch costs here"
        )
    else:
        why, fix = "no trial started", "check the resources a trial asks for (--cpus-per-trial, --gpus-per-trial)"
    return f"no trial reported a result: {why}; {fix} (experiment: {path})"


def print_summary(results, args, path: str) -> bool:
    """The summary; False (and one line on stderr saying why and what to change) when no trial reported."""
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from analysis.trials import versus_first_trial
    from trainables import metric_names as M

    for cause, n in error_causes(results).items():
        print(f"{n} trial{'s' if n > 1 else ''} failed: {cause}"[:300], file=sys.stderr)
    mode = M.SEARCH_METRICS[args.metric]
    # Each trial's best epoch (the one rule for "best": analysis/trials.py), not its last.
    df = results.get_dataframe(filter_metric=args.metric, filter_mode=mode)
    line = unreported_line(results)
    if line:
        print(line)
    if df.empty or args.metric not in df:
        print(error_lines(nothing_line(results, args, path)), file=sys.stderr)
        return False
    df = df.sort_values(args.metric, ascending=mode == "min")
    cfg_cols = [c for c in df.columns if c.startswith("config/") and df[c].nunique(dropna=False) > 1]
    cols = ["trial_id", M.VAL_ACC, M.VAL_LOSS, M.EPOCH, *cfg_cols]
    table = df[cols].head(5).rename(columns=lambda c: c.removeprefix("config/"))
    print(f"\nBest trials by {args.metric} (best epoch of each), {len(df)} trials, {results.num_errors} errors:")
    print(fitting_table(table))
    info = read_json(join(path, EXPERIMENT_FILE))
    first = (info.get("search") or {}).get("first_trial_config")
    configs = {
        r.trial_id: {k.removeprefix("config/"): r[k] for k in df.columns if k.startswith("config/")}
        for _, r in df.iterrows()
    }
    best = dict(zip(df.trial_id, df[args.metric], strict=True))
    n_val, label = (info.get("data") or {}).get("num_val"), (info.get("search") or {}).get("first_trial")
    line = versus_first_trial(configs, best, first, args.metric, mode, n_val, label)
    if line:
        print(textwrap.fill(line[0].upper() + line[1:], WIDTH))
    from analysis.parts import console_lines, parts, results_curves

    if info.get("extensions"):  # how many trials and minutes each part brought
        print("\n".join(console_lines("Extended search: ", parts(info, *results_curves(results)))))
    print(f"\nExperiment: {path}\n{command_lines('Report: ', command('report.py', '--experiment', path_arg(path)))}")
    return True


def fitting_table(table, width: int = WIDTH) -> str:
    """The table as text of at most `width` columns: the columns that fit, left to right (trial, metrics, then the
    searched keys), and a line naming those left out, instead of pandas' wrapped blocks ending in a backslash."""

    def text(t) -> str:
        return t.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    shown = list(table.columns)
    while len(shown) > 1 and max(map(len, text(table[shown]).splitlines())) > width:
        shown.pop()
    left_out = [c for c in table.columns if c not in shown]
    if not left_out:
        return text(table[shown])
    note = f"not shown: {', '.join(left_out)} (every trial's config: trial_*/params.json)"
    return text(table[shown]) + "\n" + textwrap.fill(note, width, subsequent_indent="  ")


def resume_command(args) -> str:
    """The command that continues this experiment, with the interpreter that is running (analysis/shell.py)."""
    from analysis.experiment import normalize_storage_path

    words = ["--resume", shlex.quote(args.name)]
    if args.storage_path != normalize_storage_path("experiments"):
        words += ["--storage-path", path_arg(args.storage_path)]
    if args.address:
        words += ["--address", shlex.quote(args.address)]
    return command("run_search.py", *words)


def print_interrupted(args, path: str | None, stop) -> None:
    """What an interrupt kept (counted as the console's status line counts: resume.Progress.counts), and the command
    that continues it."""
    import signal

    from search_driver.resume import progress

    how = signal.Signals(stop.received).name if stop.received else "SIGINT"
    p = progress(path) if path else None
    if p is None:
        print(f"\ninterrupted ({how}) before the search started; nothing to resume", file=sys.stderr)
        return
    line = f"interrupted ({how}): trials {p.counts()}; everything so far is kept in {path_arg(path)}"
    print("\n" + textwrap.fill(line, WIDTH, subsequent_indent="  ", break_long_words=False), file=sys.stderr)
    print(command_lines("resume with: ", resume_command(args)), file=sys.stderr, flush=True)
