"""Cohort membership: ``cohort_members`` (daily partitions) materialized into ClickHouse from the metadata store's
cohort definitions, plus a sensor that refreshes today's snapshot when a cohort is created or edited."""
