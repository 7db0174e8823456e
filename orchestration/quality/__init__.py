"""Data quality: great-expectations 1.x suites run inside blocking Dagster asset checks."""
