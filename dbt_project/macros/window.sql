{# The partition window passed by Dagster (--vars '{"start_date": …, "end_date": …}'), end exclusive. #}
{% macro window_start() %}toDate('{{ var("start_date") }}'){% endmacro %}
{% macro window_end() %}toDate('{{ var("end_date") }}'){% endmacro %}

{# A predicate limiting `column` (a Date/DateTime) to the window, widened by look-back/ahead days.
   Only applied on incremental runs: a first build or full refresh covers everything. #}
{% macro in_window(column, lookback_days=0, lookahead_days=0) -%}
  {%- if is_incremental() -%}
    ({{ column }} >= {{ window_start() }} - {{ lookback_days }} and {{ column }} < {{ window_end() }} + {{ lookahead_days }})
  {%- else -%}
    1 = 1
  {%- endif -%}
{%- endmacro %}

{# Rows whose own day is inside the window, widened by `lookback_days` (what an insert_overwrite
   run replaces: a run for day D also rebuilds the earlier days its events can still change). #}
{% macro day_in_window(column, lookback_days=0) -%}
  {%- if is_incremental() -%}
    ({{ column }} >= {{ window_start() }} - {{ lookback_days }} and {{ column }} < {{ window_end() }})
  {%- else -%}
    1 = 1
  {%- endif -%}
{%- endmacro %}

{% macro retention_as_of() -%}
  {%- if var("retention_as_of") -%}toDate('{{ var("retention_as_of") }}'){%- else -%}toDate(now('UTC')){%- endif -%}
{%- endmacro %}
