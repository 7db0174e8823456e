{#
  Typed, deduplicated events. `FINAL` collapses re-loaded rows of one hour; `LIMIT 1 BY insert_id`
  drops resends that landed in another hour (Amplitude ignores insert_id repeats: the first
  received wins). Bots stay here (flagged); marts exclude them.
#}
select
    event_time,
    toDate(event_time) as event_date,
    insert_id,
    toString(event_type) as event_type,
    toString(project) as project,
    user_id,
    device_id,
    resolved_user_id,
    actor_id,
    session_id,
    event_properties,
    user_properties,
    app_version,
    platform,
    os_name,
    device_model,
    country,
    region,
    city,
    ua_browser,
    ua_os,
    ua_device,
    is_bot,
    revenue,
    received_at,
    ingested_at
from {{ source('analytics', 'events') }} final
order by received_at, event_time
limit 1 by project, insert_id
