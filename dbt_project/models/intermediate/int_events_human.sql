{# Events of humans only: every mart counts people, not bots. #}
{{ config(materialized='view') }}
select * from {{ ref('stg_events') }} where is_bot = 0
