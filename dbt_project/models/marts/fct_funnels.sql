{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMMDD(entry_date)',
    order_by='(funnel_name, project, entry_date, step_index)',
) }}
{#
  Funnels declared in dbt_project.yml (var `funnels`, for every project) plus the projects' own
  funnels from the metadata store's registry (var `project_funnels`, each with a `project`; passed
  by the Dagster asset, see orchestration/dbt/assets.py). Per funnel, project and entry day: actors
  reaching each step on their earliest most complete path, conversion from the entry step and from
  the previous step, and the median seconds from entry to the step. A run for a window also
  rebuilds the entry days up to the longest conversion window before it (their paths can complete
  with the window's events) and reads events up to that window past its end.
#}
{%- set funnels = var('funnels') + (var('project_funnels', []) or []) -%}
{%- set ns = namespace(max_days=1) -%}
{%- for f in funnels -%}
  {%- set days = ((f.get('conversion_window_seconds', 86400) | int) / 86400) | round(0, 'ceil') | int + 1 -%}
  {%- if days > ns.max_days %}{% set ns.max_days = days %}{% endif -%}
{%- endfor %}
with events as (
    select project, actor_id, event_time, insert_id, event_type, event_properties
    from {{ ref('int_events_human') }}
    where {{ in_window('event_date', ns.max_days, ns.max_days) }}
),

paths as (
    {%- for f in funnels %}
    select * from ({{ funnel_best_paths(f, 'events', ns.max_days) }})
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

steps as (
    {%- for f in funnels %}
    select {{ funnel_sql_string(f["name"]) }} as funnel_name, {{ funnel_sql_string(f.get("project") or "") }} as funnel_project,
           toUInt8(k) as step_index,
           [{% for s in f['steps'] %}{{ funnel_sql_string(s) }}{% if not loop.last %}, {% endif %}{% endfor %}][k] as step_event
    from (select arrayJoin(range(1, {{ (f['steps'] | length) + 1 }})) as k)
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

per_step as (
    select
        p.funnel_name as funnel_name,
        p.project as project,
        p.entry_date as entry_date,
        s.step_index as step_index,
        s.step_event as step_event,
        countIf(p.level >= s.step_index) as users,
        quantileExactInclusiveIf(0.5)((p.step_ms[s.step_index] - p.entry_ms) / 1000.0, p.level >= s.step_index) as median_seconds_from_entry
    from paths as p
    inner join steps as s on s.funnel_name = p.funnel_name and (s.funnel_project = '' or s.funnel_project = p.project)
    group by funnel_name, project, entry_date, step_index, step_event
)

select
    funnel_name,
    project,
    entry_date,
    step_index,
    step_event,
    users,
    round(users / max(users) over (partition by funnel_name, project, entry_date), 6) as conversion_from_entry,
    round(users / greatest(lagInFrame(users, 1, users) over (
        partition by funnel_name, project, entry_date order by step_index
        rows between unbounded preceding and current row), 1), 6) as conversion_from_previous,
    if(users = 0, null, median_seconds_from_entry) as median_seconds_from_entry
from per_step
