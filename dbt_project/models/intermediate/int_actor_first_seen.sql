{# First day each actor was seen (over all history, so cohorts stay right when late data arrives). #}
select
    project,
    actor_id,
    min(activity_date) as first_seen_date
from {{ ref('int_actor_days') }}
group by project, actor_id
