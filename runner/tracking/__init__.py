"""Everything that talks to MLflow: the logger, the store, run lifecycle, queries, model I/O, run records."""
