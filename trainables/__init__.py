"""Data loading, models and training functions shared by the search (run_search.py) and the report (report.py)."""
