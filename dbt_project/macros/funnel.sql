{#
  Funnel engine. For one funnel definition (name, steps, conversion_window_seconds, order,
  hold_constant) it returns, per actor and entry day, the earliest most complete path:
  * this  — steps in this order, other events allowed between them;
  * exact — steps in this order with no other event of the actor between them;
  * any   — steps in any order; the path starts at the first step event done;
  every step must happen within the window after the entry event (a step exactly
  conversion_window_seconds later still counts); with hold_constant, every step's event property
  must equal the entry event's. Events are ordered by (time, insert_id).
#}
{% macro funnel_best_paths(funnel, events_relation, lookback_days=0) %}
{%- set steps = funnel['steps'] -%}
{%- set n = steps | length -%}
{%- set window_ms = (funnel.get('conversion_window_seconds', 86400) | int) * 1000 -%}
{%- set order = funnel.get('order', 'this') -%}
{%- set held = funnel.get('hold_constant') -%}
{%- set steps_sql -%}[{% for s in steps %}'{{ s }}'{% if not loop.last %}, {% endif %}{% endfor %}]{%- endset -%}
{%- if order not in ['this', 'exact', 'any'] -%}
  {{ exceptions.raise_compiler_error("funnel " ~ funnel['name'] ~ ": order must be this, exact or any, not " ~ order) }}
{%- endif -%}
select
    '{{ funnel["name"] }}' as funnel_name,
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
                    j >= i0 and e.1 <= evs[i0].1 + {{ window_ms }} and e.4 = evs[i0].4 and has({{ steps_sql }}, e.3)
                        and acc[indexOf({{ steps_sql }}, e.3)] = 0,
                    arrayMap((x, k) -> if(k = indexOf({{ steps_sql }}, e.3), e.1, x), acc, arrayEnumerate(acc)),
                    acc),
                evs, arrayEnumerate(evs), arrayResize([toInt64(0)], {{ n }}, toInt64(0))
            ) as done,
            toUInt8(if(arrayExists(x -> x = 0, done), arrayFirstIndex(x -> x = 0, done) - 1, {{ n }})) as level,
            arrayMap(k -> arrayMax(arraySlice(done, 1, k)), range(1, level + 1)) as times
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
                    {{ "JSONExtractRaw(event_properties, '" ~ held ~ "')" if held else "''" }}
                ))) as evs
            from {{ events_relation }}
            group by project, actor_id
        )
        array join arrayEnumerate(evs) as i0
        where {{ "has(" ~ steps_sql ~ ", evs[i0].3)" if order == 'any' else "evs[i0].3 = '" ~ steps[0] ~ "'" }}
    )
    where level >= 1 and {{ day_in_window('toDate(fromUnixTimestamp64Milli(t0, \'UTC\'))', lookback_days) }}
    group by project, actor_id, entry_day
)
{% endmacro %}
