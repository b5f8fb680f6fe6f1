"""What report.py does after a search: read the trials, retrain the best, compute test-set metrics, draw the
plots, write report.md / report.html."""
