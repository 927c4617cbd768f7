"""Tables and plots built from stored results (results.csv/.parquet + manifest.json), never
by recomputing: `python -m reports RUN_DIR...`, and `reports.run_report.write_run_report`
for the runner. Nothing here imports torch or model code."""
