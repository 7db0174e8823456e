"""``/api/2/usersearch`` and ``/api/2/useractivity``: the look-ups need two or three queries in sequence
(resolve the user, then read the actor), so they live here rather than in the route handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from query_service.compile import user_lookup as U
from query_service.params_insights import UserLookup

Run = Callable[[Any], Awaitable[list[dict[str, Any]]]]


async def user_search(q: UserLookup, run: Run) -> dict[str, Any]:
    return U.shape_search(await run(U.compile_search(q)))


async def user_activity(q: UserLookup, run: Run) -> dict[str, Any] | None:
    """``{"userData", "events"}`` of the best match (see :mod:`query_service.compile.user_lookup`); None = no match."""
    found = U.shape_search(await run(U.compile_search(q)))
    if not found["matches"]:
        return None
    actor = found["matches"][0]["amplitude_id"]
    data = await run(U.compile_user_data(q, actor))
    if not data:
        return None
    events = await run(U.compile_activity(q, actor))
    return {"userData": U.shape_user_data(actor, data[0]), "events": [U.shape_event(r) for r in events],
            "offset": q.offset, "limit": q.limit, "matchType": found["type"]}
