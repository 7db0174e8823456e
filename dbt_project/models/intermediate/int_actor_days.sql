{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(activity_date)',
    order_by='(project, activity_date, actor_id)',
) }}
{# One row per actor and UTC day with activity: the base of active users, retention, lifecycle, stickiness. #}
select
    project,
    actor_id,
    event_date as activity_date,
    count() as events
from {{ ref('int_events_human') }}
where {{ in_window('event_date') }}
group by project, actor_id, activity_date
