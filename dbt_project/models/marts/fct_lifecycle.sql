{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(activity_date)',
    order_by='(project, activity_date, status)',
) }}
{#
  Lifecycle per day (Amplitude): new (first seen that day), current (active that day and the day
  before), resurrected (active that day, not the day before, seen earlier), dormant (active the
  day before, not that day).
#}
with days as (
    select project, actor_id, activity_date
    from {{ ref('int_actor_days') }}
    where {{ in_window('activity_date', 1, 0) }}
),

last_day as (
    select max(activity_date) as d from {{ ref('int_actor_days') }}
),

flags as (
    select project, actor_id, day, max(today) as active_today, max(yesterday) as active_yesterday
    from (
        select project, actor_id, activity_date as day, 1 as today, 0 as yesterday from days
        union all
        select project, actor_id, activity_date + 1 as day, 0 as today, 1 as yesterday from days
    )
    group by project, actor_id, day
),

classified as (
    select
        f.project as project,
        f.day as activity_date,
        multiIf(
            f.active_today = 1 and s.first_seen_date = f.day, 'new',
            f.active_today = 1 and f.active_yesterday = 1, 'current',
            f.active_today = 1, 'resurrected',
            'dormant'
        ) as status,
        f.actor_id as actor_id
    from flags as f
    inner join {{ ref('int_actor_first_seen') }} as s on s.project = f.project and s.actor_id = f.actor_id
)

select project, activity_date, status, count() as users
from classified
where activity_date <= (select d from last_day) and {{ day_in_window('activity_date') }}
group by project, activity_date, status
