"""Workflow formats, validation, the DAG and the caching executor. Pure Python: no torch."""
