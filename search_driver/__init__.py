"""The search driver's Ray, cluster, tuner and console code, used by run_search.py."""
