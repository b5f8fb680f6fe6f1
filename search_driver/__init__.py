"""The search driver's pieces called by run_search.py (a thin CLI): data set-up, Ray, cluster, tuner, console."""
