{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(activity_date)',
    order_by='(project, activity_date, days_active)',
) }}
{#
  Stickiness per day: over the 7 days ending on `activity_date`, how many actors were active on
  exactly N days and on at least N days (N = 1…7).
#}
with days as (
    select project, actor_id, activity_date
    from {{ ref('int_actor_days') }}
    where {{ in_window('activity_date', 6, 0) }}
),

last_day as (
    select max(activity_date) as d from {{ ref('int_actor_days') }}
),

per_actor as (
    select project, actor_id, activity_date + k as day, count() as days_active
    from days
    array join range(7) as k
    group by project, actor_id, day
),

exactly as (
    select project, day as activity_date, days_active, count() as users_exactly
    from per_actor
    where day <= (select d from last_day) and {{ day_in_window('day') }}
    group by project, activity_date, days_active
),

grid as (
    select distinct project, activity_date, toUInt64(n) as days_active
    from exactly
    array join range(1, 8) as n
),

filled as (
    select
        g.project as project,
        g.activity_date as activity_date,
        g.days_active as days_active,
        coalesce(e.users_exactly, 0) as users_exactly
    from grid as g
    left join exactly as e
        on e.project = g.project and e.activity_date = g.activity_date and e.days_active = g.days_active
)

select
    project,
    activity_date,
    days_active,
    users_exactly,
    sum(users_exactly) over (
        partition by project, activity_date order by days_active desc
        rows between unbounded preceding and current row
    ) as users_at_least
from filled
