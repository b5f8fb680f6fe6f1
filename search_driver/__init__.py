"""The search driver's pieces called by run_search.py (a thin CLI): its command line (cli), data set-up (data), the
LR range test (lr_find), the cluster wait (cluster), GPU packing, what Tune runs (tuner), resume, interrupts, the
console, tracking, the end-of-search summary (summary) and the cluster pre-flight."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project: what Ray ships to other nodes, whose git sha is recorded
