"""Compatibility re-export: the lake-hour reads and writes moved to :mod:`enrichment.lake_io`."""

from enrichment.lake_io import (  # noqa: F401 - re-exported for existing importers
    ENRICHED_FILE,
    RAW_WITH_INGESTED,
    carry_into,
    enriched_key,
    hour_parts,
    hours_between,
    load_commit_records,
    partition_key_to_hour,
    read_enriched,
    read_enriched_table,
    read_raw_hour,
    write_enriched,
)
