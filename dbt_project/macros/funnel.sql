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
  With `project` set, the funnel applies to that project's events only (the funnel registry,
  `eventpipe funnels create`); without it, to every project (the defaults in dbt_project.yml).
#}
{% macro funnel_best_paths(funnel, events_relation, lookback_days=0) %}
{%- set steps = funnel['steps'] -%}
{%- set n = steps | length -%}
{%- set window_ms = (funnel.get('conversion_window_seconds', 86400) | int) * 1000 -%}
{%- set order = funnel.get('order', 'this') -%}
{%- set held = funnel.get('hold_constant') -%}
{%- set steps_sql -%}[{% for s in steps %}{{ funnel_sql_string(s) }}{% if not loop.last %}, {% endif %}{% endfor %}]{%- endset -%}
{%- set rest_sql -%}CAST([{% for s in steps[1:] %}{{ funnel_sql_string(s) }}{% if not loop.last %}, {% endif %}{% endfor %}], 'Array(String)'){%- endset -%}
{%- set only_project = funnel.get('project') -%}
{%- if order not in ['this', 'exact', 'any'] -%}
  {{ exceptions.raise_compiler_error("funnel " ~ funnel['name'] ~ ": order must be this, exact or any, not " ~ order) }}
{%- endif -%}
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
        select
            project,
            actor_id,
            evs[i0].1 as t0,
            {%- if order == 'any' %}
            arrayFold(
                (acc, e, j) -> if(
                    j > i0 and e.1 <= evs[i0].1 + {{ window_ms }} and e.4 = evs[i0].4 and has({{ rest_sql }}, e.3)
                        and acc[indexOf({{ rest_sql }}, e.3)] = 0,
                    arrayMap((x, k) -> if(k = indexOf({{ rest_sql }}, e.3), e.1, x), acc, arrayEnumerate(acc)),
                    acc),
                evs, arrayEnumerate(evs), arrayResize([toInt64(0)], {{ n - 1 }}, toInt64(0))
            ) as done,
            toUInt8(1 + arrayCount(x -> x > 0, done)) as level,
            arrayConcat([evs[i0].1], arraySort(arrayFilter(x -> x > 0, done))) as times
            {%- else %}
            arrayFold(
                (acc, e, j) -> multiIf(
                    j <= i0 or acc.2 = 1 or length(acc.1) >= {{ n }}, acc,
                    e.1 <= evs[i0].1 + {{ window_ms }} and e.4 = evs[i0].4
                        and e.3 = {{ steps_sql }}[length(acc.1) + 1], (arrayPushBack(acc.1, e.1), acc.2),
                    {{ '(acc.1, toUInt8(1))' if order == 'exact' else 'acc' }}),
                evs, arrayEnumerate(evs), ([evs[i0].1], toUInt8(0))
            ).1 as times,
            toUInt8(length(times)) as level
            {%- endif %}
        from (
            select
                project,
                actor_id,
                arraySort(groupArray((
                    toUnixTimestamp64Milli(event_time),
                    insert_id,
                    event_type,
                    {{ "JSONExtractRaw(event_properties, " ~ funnel_sql_string(held) ~ ")" if held else "''" }}
                ))) as evs
            from {{ events_relation }}
            {%- if only_project %}
            where project = {{ funnel_sql_string(only_project) }}
            {%- endif %}
            group by project, actor_id
        )
        array join arrayEnumerate(evs) as i0
        where evs[i0].3 = {{ funnel_sql_string(steps[0]) }}
    )
    where level >= 1 and {{ day_in_window('toDate(fromUnixTimestamp64Milli(t0, \'UTC\'))', lookback_days) }}
    group by project, actor_id, entry_day
)
{% endmacro %}

{# A ClickHouse string literal: funnel names, steps and properties come from users (the registry). #}
{% macro funnel_sql_string(value) -%}
'{{ value | string | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
