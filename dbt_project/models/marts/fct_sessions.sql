{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(session_date)',
    order_by='(project, session_date, actor_id, session_id)',
) }}
{#
  One row per session (Amplitude session_id = session start in ms, assigned by the SDK or by
  enrichment after 30 min of inactivity). A session belongs to the day it started; a run for a
  window reads one extra day so sessions running past midnight are complete, and rebuilds the day
  before it so a session started then and continued in the window is complete too.
#}
with events as (
    select *
    from {{ ref('int_events_human') }}
    where session_id > 0 and {{ in_window('event_date', 1, 1) }}
),

sessions as (
    select
        project,
        actor_id,
        session_id,
        min(event_time) as session_start,
        max(event_time) as session_end,
        count() as events,
        argMin(event_type, (event_time, insert_id)) as entry_event,
        argMax(event_type, (event_time, insert_id)) as exit_event,
        argMin(country, (event_time, insert_id)) as country,
        argMin(if(ua_device != '', ua_device, device_model), (event_time, insert_id)) as device,
        argMin(platform, (event_time, insert_id)) as platform
    from events
    group by project, actor_id, session_id
)

select
    project,
    actor_id,
    session_id,
    toDate(session_start) as session_date,
    session_start,
    session_end,
    dateDiff('millisecond', session_start, session_end) / 1000.0 as duration_seconds,
    events,
    entry_event,
    exit_event,
    country,
    device,
    platform,
    toUInt8(events = 1) as is_bounce
from sessions
where {{ day_in_window('session_date', 1) }}
