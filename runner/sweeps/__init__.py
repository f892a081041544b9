"""Sweeps: the launching side (parent run, callback), the job side, the winner, the trial statistics, Ray."""
