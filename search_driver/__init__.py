<<<<<<< HEAD
"""The search driver's pieces called by run_search.py (a thin CLI): data set-up, Ray, cluster, tuner, console."""
=======
"""The search driver's Ray, cluster, tuner and console code, used by run_search.py."""
>>>>>>> wt-first
