{#
  Funnel engine. For one funnel definition (name, steps, conversion_window_seconds, order,
  hold_constant, and optionally project) it returns, per actor and entry day, the earliest most
  complete path. Common to every order: an actor's events are ordered by (event_time, insert_id);
  a path is anchored at an event of step 1 (the entry: an actor with no step-1 event does not
  enter); a step counts only if its event comes after the entry in that order and at most
  conversion_window_seconds after it (inclusive); with hold_constant, a step's event property must
  equal the entry event's (compared as raw JSON). Per entry day, the actor's path is the entry with
  the highest level, the earliest such entry on ties; the bar of step k counts actors whose level >= k.
  * this  — steps in this order, other events allowed between them: level = how many steps were
            matched in order, each at its first occurrence after the previous step;
  * exact — steps in this order with no other event of the actor between them;
  * any   — the other steps in any order: level = 1 + the number of *distinct* other steps
            (2..n) that have an event after the entry within the window; the time of reaching
            step k (k >= 2) is the time at which the k-th distinct step was first reached after the
            entry (so a user doing steps 1 and 3 but not 2 reaches level 2, at step 3's time).
            The same rule as the query service's mode=unordered (README "Funnels").
  Engine: the shared funnel functions of eventpipe_core/funnel_sql.py (linear per actor; the old fold
  per entry over every event was quadratic). With `project` set, the funnel applies to that project's events only (the funnel registry,
  `eventpipe funnels create`); without it, to every project (the defaults in dbt_project.yml).
#}
{% macro funnel_best_paths(funnel, events_relation, lookback_days=0) %}
{#- The paths come from the shared funnel functions (eventpipe_core/funnel_sql.py, created with the
    schema by orchestration/clickhouse/schema.py): the same engine as the query API and FUNNEL(). -#}
{%- set steps = funnel['steps'] -%}
{%- set n = steps | length -%}
{%- set window_ms = (funnel.get('conversion_window_seconds', 86400) | int) * 1000 -%}
{%- set order = funnel.get('order', 'this') -%}
{%- set held = funnel.get('hold_constant') -%}
{%- set only_project = funnel.get('project') -%}
{%- if order not in ['this', 'exact', 'any'] -%}
  {{ exceptions.raise_compiler_error("funnel " ~ funnel['name'] ~ ": order must be this, exact or any, not " ~ order) }}
{%- endif -%}
{%- set fn = {'this': 'eventpipe_funnel_ordered', 'any': 'eventpipe_funnel_unordered', 'exact': 'eventpipe_funnel_sequential'}[order] -%}
select
    {{ funnel_sql_string(funnel["name"]) }} as funnel_name,
    project,
    actor_id,
    toDate(fromUnixTimestamp64Milli(best.2, 'UTC')) as entry_date,
    best.1 as level,
    best.2 as entry_ms,
    best.3 as step_ms
from (
    select
        project,
        actor_id,
        toDate(fromUnixTimestamp64Milli(t0, 'UTC')) as entry_day,
        argMax((level, t0, times), (level, -t0)) as best
    from (
        select project, actor_id, e.1 as t0, times, toUInt8(length(times)) as level
        from (
            select project, actor_id, evs, {{ fn }}(evs.1, evs.3, evs.4, {{ n }}, {{ window_ms }}) as fp
            from (
                select
                    project,
                    actor_id,
                    arraySort(x -> (x.1, x.2), groupArray((
                        toUnixTimestamp64Milli(event_time),
                        insert_id,
                        toUInt64({% for s in steps %}if(event_type = {{ funnel_sql_string(s) }}, {{ 2 ** loop.index0 }}, 0){% if not loop.last %} + {% endif %}{% endfor %}),
                        {{ "JSONExtractRaw(event_properties, " ~ funnel_sql_string(held) ~ ")" if held else "''" }}
                    ))) as evs
                from {{ events_relation }}
                where 1 = 1
                {%- if only_project %}
                    and project = {{ funnel_sql_string(only_project) }}
                {%- endif %}
                {%- if order != 'exact' %}
                    and event_type in ({% for s in steps %}{{ funnel_sql_string(s) }}{% if not loop.last %}, {% endif %}{% endfor %})
                {%- endif %}
                group by project, actor_id
            )
        )
        array join evs as e, fp as times
        where length(times) > 0
    )
    where {{ day_in_window('toDate(fromUnixTimestamp64Milli(t0, \'UTC\'))', lookback_days) }}
    group by project, actor_id, entry_day
)
{% endmacro %}

{# A ClickHouse string literal: funnel names, steps and properties come from users (the registry). #}
{% macro funnel_sql_string(value) -%}
'{{ value | string | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
