"""A ClickHouse-compatible HTTP server on chDB (``eventpipe chserver``).

chDB allows one engine per process, so every other process (Dagster steps, dbt, BI tools, the API)
talks to this server over ClickHouse's HTTP interface, exactly as to a real ClickHouse; switching to
a real server is a change of CLICKHOUSE_URL.
"""
