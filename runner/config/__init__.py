"""Configuration: the schemas (one home per default), building components from ``_target_``, parameter docs and
override checks."""
