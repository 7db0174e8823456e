{#
  One row per actor: identity, first/last seen, event count, and the latest user properties with
  Amplitude's operations applied in event-time order: $set (and plain keys of user_properties),
  $setOnce (only when the property has no value), $add (numeric increment, missing = 0), $unset.
  Properties are a JSON object with keys sorted.
#}
with events as (
    select project, actor_id, resolved_user_id, event_time, insert_id, user_properties
    from {{ ref('int_events_human') }}
),

ops as (
    select
        project,
        actor_id,
        (event_time, insert_id, ord) as at,
        op.1 as kind,
        op.2 as key,
        op.3 as value
    from (
        select
            *,
            arrayConcat(
                arrayMap(kv -> ('set', kv.1, kv.2),
                    arrayFilter(kv -> not startsWith(kv.1, '$'), JSONExtractKeysAndValuesRaw(user_properties))),
                arrayMap(kv -> ('set', kv.1, kv.2), JSONExtractKeysAndValuesRaw(user_properties, '$set')),
                arrayMap(kv -> ('setOnce', kv.1, kv.2), JSONExtractKeysAndValuesRaw(user_properties, '$setOnce')),
                arrayMap(kv -> ('add', kv.1, kv.2), JSONExtractKeysAndValuesRaw(user_properties, '$add')),
                arrayMap(kv -> ('unset', kv.1, kv.2), JSONExtractKeysAndValuesRaw(user_properties, '$unset'))
            ) as all_ops
        from events
        where user_properties not in ('', '{}')
    )
    array join all_ops as op, arrayEnumerate(all_ops) as ord
),

property_values as (
    select
        project,
        actor_id,
        key,
        arrayFold(
            (acc, o) -> multiIf(
                o.2 = 'set', (toUInt8(1), o.3),
                o.2 = 'setOnce', if(acc.1 = 1, acc, (toUInt8(1), o.3)),
                o.2 = 'add', (toUInt8(1), toString(toFloat64OrZero(if(acc.1 = 1, acc.2, '0')) + toFloat64OrZero(o.3))),
                (toUInt8(0), '')
            ),
            arraySort(x -> x.1, groupArray((at, kind, value))),
            (toUInt8(0), '')
        ) as state
    from ops
    group by project, actor_id, key
),

properties as (
    select
        project,
        actor_id,
        concat('{', arrayStringConcat(arraySort(groupArray(concat(toJSONString(key), ':', state.2))), ','), '}') as user_properties
    from property_values
    where state.1 = 1
    group by project, actor_id
),

actors as (
    select
        project,
        actor_id,
        argMax(resolved_user_id, (event_time, insert_id)) as user_id,
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at,
        count() as events
    from events
    group by project, actor_id
)

select
    a.project as project,
    a.actor_id as actor_id,
    a.user_id as user_id,
    a.first_seen_at as first_seen_at,
    a.last_seen_at as last_seen_at,
    toDate(a.first_seen_at) as first_seen_date,
    a.events as events,
    if(p.user_properties = '', '{}', p.user_properties) as user_properties
from actors as a
left join properties as p on p.project = a.project and p.actor_id = a.actor_id
