"""What a person reads: figures and tables built from a run's outcome, saving nothing."""
