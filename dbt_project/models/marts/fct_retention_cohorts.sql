{#
  Retention by first-seen cohort (UTC calendar days). For cohort day C and day N:
  * returned_on            — actors active exactly on day C + N ("Return On", N-day retention);
  * returned_on_or_after   — actors active on any day >= C + N ("Return On or After").
  Only complete intervals are reported: day C + N must be before `retention_as_of` (default
  today), so actors in an incomplete interval never enter a denominator. Day 0 is the cohort.
  Rebuilt whole on each run: late events can move an actor's first day to an earlier cohort.
#}
with first_seen as (
    select project, actor_id, first_seen_date as cohort_date
    from {{ ref('int_actor_first_seen') }}
),

activity as (
    select
        d.project,
        d.actor_id,
        f.cohort_date,
        dateDiff('day', f.cohort_date, d.activity_date) as day_n
    from {{ ref('int_actor_days') }} as d
    inner join first_seen as f on d.project = f.project and d.actor_id = f.actor_id
    where d.activity_date < {{ retention_as_of() }}
),

per_actor as (
    select project, actor_id, cohort_date, groupUniqArray(day_n) as days, max(day_n) as last_day_n
    from activity
    group by project, actor_id, cohort_date
),

cohort_size as (
    select project, cohort_date, count() as cohort_users
    from per_actor
    group by project, cohort_date
),

grid as (
    select project, cohort_date, cohort_users, n as day_n
    from cohort_size
    array join range(toUInt32({{ var('retention_max_day') }} + 1)) as n
    where cohort_date + n < {{ retention_as_of() }}
)

select
    g.project as project,
    g.cohort_date as cohort_date,
    toUInt32(g.day_n) as day_n,
    g.cohort_users as cohort_users,
    countIf(has(p.days, g.day_n)) as returned_on,
    countIf(p.last_day_n >= g.day_n) as returned_on_or_after,
    round(returned_on / g.cohort_users, 6) as return_on_rate,
    round(returned_on_or_after / g.cohort_users, 6) as return_on_or_after_rate
from grid as g
inner join per_actor as p on p.project = g.project and p.cohort_date = g.cohort_date
group by g.project, g.cohort_date, g.day_n, g.cohort_users
