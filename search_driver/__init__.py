"""The search driver's pieces called by run_search.py (a thin CLI): data set-up, GPU packing, resume, interrupts,
cluster pre-flight, console and tracking."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project: what Ray ships to other nodes, whose git sha is recorded
