"""The search driver's pieces called by run_search.py (a thin CLI): data set-up, GPU packing, resume, interrupts,
cluster pre-flight, console and tracking."""
