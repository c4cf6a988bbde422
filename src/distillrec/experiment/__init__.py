"""Experiments: runs over seeds, run folders, results tables and significance."""
