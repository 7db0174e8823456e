{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(activity_date)',
    order_by='(project, activity_date)',
) }}
{#
  DAU, WAU and MAU per day: distinct actors active on the day, in the 7 and the 30 days ending on
  it (rolling). Each active (actor, day) is spread over the 30 days it counts towards.
#}
with active as (
    select project, actor_id, activity_date
    from {{ ref('int_actor_days') }}
    where {{ in_window('activity_date', 29, 0) }}
),

last_day as (
    select max(activity_date) as d from {{ ref('int_actor_days') }}
),

spread as (
    select
        project,
        actor_id,
        activity_date + k as day,
        k
    from active
    array join range(30) as k
)

select
    project,
    day as activity_date,
    uniqExactIf(actor_id, k = 0) as dau,
    uniqExactIf(actor_id, k < 7) as wau,
    uniqExact(actor_id) as mau
from spread
where day <= (select d from last_day) and {{ day_in_window('day') }}
group by project, activity_date
