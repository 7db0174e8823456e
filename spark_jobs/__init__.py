"""PySpark jobs run through Dagster Pipes.

* :mod:`spark_jobs.backfill` — re-enrichment of a range of lake hours on Spark, calling the same
  :func:`enrichment.rules.enrich_hour` as the in-process Dagster asset;
* :mod:`spark_jobs.main` — the ``spark-submit`` entry point (reports to Dagster through Pipes);
* :mod:`spark_jobs.launch` — the Dagster side: builds inputs, runs ``spark-submit`` with
  ``PipesSubprocessClient``, turns the job's per-hour reports into per-partition materializations.
"""
