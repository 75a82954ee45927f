"""Pictures and the report of a run: plots from arrays, a run's figures, report.md."""
