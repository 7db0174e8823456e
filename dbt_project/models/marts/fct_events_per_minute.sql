{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(toDate(minute))',
    order_by='(project, minute, event_type)',
) }}
{# The seed's pre-aggregation: events and unique actors per minute and event type. #}
select
    project,
    toStartOfMinute(event_time) as minute,
    event_type,
    count() as events,
    uniqExact(actor_id) as users
from {{ ref('int_events_human') }}
where {{ in_window('event_date') }}
group by project, minute, event_type
