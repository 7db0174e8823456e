"""ClickHouse side: schema (``schema.py``), idempotent hour loads (``load.py``), the asset (``assets.py``)."""
