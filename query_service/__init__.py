"""The query service: an Amplitude Dashboard REST API v2-compatible analytics API over ClickHouse.

Layout (DESIGN §9): ``params`` parses HTTP parameters into typed queries (every error names its
parameter → 400); ``compile/`` turns a typed query into SQL text + bound parameters (pure functions,
one module per query type, no I/O); ``engine`` runs compiled SQL on ClickHouse as the read-only user and
reports the (project, UTC day) partitions it read; ``app`` has the routes, auth and response shapes.

Semantics (shared with the dbt marts, DESIGN §7): exact uniques of ``actor_id``; bots excluded unless
``include_bots=1``; one event per ``insert_id`` (first received wins); every day / week / month is a
calendar interval in the project's time zone (``eventpipe projects set-timezone``); funnel windows are
measured from the entry event in seconds, inclusive at the limit; ties are ordered by (event_time, insert_id).
"""
