"""Reading experiments, computing metrics and drawing plots (used by run_search.py and report.py)."""
