"""Dagster orchestration for eventpipe: lake -> enriched hours -> ClickHouse -> dbt marts.

Definitions are assembled in :mod:`orchestration.definitions` from one folder per system
(``lake/``, ``clickhouse/``, ``quality/``, ``sensors/``, ``dbt/``), resources from the settings module.
"""
