"""Sensors and schedules: new landed batches (incl. late hours), automation, daily catch-up."""
