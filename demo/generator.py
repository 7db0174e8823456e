"""A seeded, deterministic synthetic product: what `eventpipe demo` sends through the pipeline.

The product is a small shop. Every user signs up once (day 0), may activate and buy the same day,
and comes back with a decaying probability; users have one or two devices, and the first session
on each device starts anonymous (device only) and is identified a few events later *in the same
hour* (``sign_up`` / ``login`` carry both ids). Anonymous visitors never identify. Crawlers hit
every hour (so every hour of every day has data), one device behaves like a script (more than
``BOT_MAX_EVENTS_PER_MINUTE`` events in one minute); some events are sent twice, a few late events
for an earlier day are sent last, and a few requests and Kafka records are malformed.

Constraints that keep every figure of the marts exact whatever order Dagster runs partitions in
(see README "What exact means"):

* anonymous events of a device that identifies share the hour of its first identified event, and
  a device never goes anonymous again — stitching never depends on which hour is processed first;
* every event carries the SDK's ``session_id`` (session start ms); sessions never cross midnight;
* a funnel path never spans two days: ``activate`` happens on the sign-up day only, a user who
  activated without buying that day buys nothing within the 7-day window, and a user views any
  one product on one day only (the browse funnel holds ``product`` constant);
* late events are ``search`` events (no funnel step) of identified users.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SIGNUP_WINDOW_MS = 7 * DAY_MS  # signup_to_purchase conversion window (dbt_project.yml)
LIBRARY = "eventpipe-demo/1.0"
LATE_HOUR = 21  # late events: 21:45-21:55 UTC, between sessions (these start on even hours and last < 1 h)

WEB_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
IOS_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
ANDROID_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Mobile Safari/537.36")
CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
COUNTRIES = ("United States", "Germany", "United Kingdom", "France", "Brazil", "India", "Japan", "Canada")
PATHS = ("/", "/deals", "/new", "/category/shoes", "/category/books", "/category/garden", "/help")
QUERIES = ("running shoes", "gift", "lamp", "sci-fi", "backpack", "coffee", "plant pot", "headphones")
CATEGORIES = ("shoes", "books", "garden", "electronics", "kitchen")


@dataclass(frozen=True)
class DemoConfig:
    """Size and shape of the synthetic product; ``last_day`` is the last generated (complete) UTC day."""

    users: int = 300
    days: int = 7
    seed: int = 42
    last_day: date = field(default_factory=lambda: datetime.now(UTC).date() - timedelta(days=1))
    project: str = "demo"
    bot_max_events_per_minute: int = 100

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)

    @property
    def day_list(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.days)]

    @property
    def late_day(self) -> date:
        """The day late events belong to: three days before the last one (or the first day)."""
        return max(self.first_day, self.last_day - timedelta(days=2))

    @property
    def late_hour_ms(self) -> int:
        """Start of the hour late events belong to (21:00 UTC of ``late_day``)."""
        return _ms(self.late_day) + LATE_HOUR * HOUR_MS


@dataclass(frozen=True)
class MalformedRequest:
    """A request the collector must answer 400; ``events`` is how many events it carried (0 = unparseable)."""

    description: str
    body: bytes
    events: int
    bad_key: bool = False


@dataclass
class Dataset:
    """Everything the demo sends, in send order, plus what the ground truth needs to know."""

    config: DemoConfig
    events: list[dict[str, Any]]  # the main upload (each event once)
    resends: list[dict[str, Any]]  # exact copies of already-sent events (same insert_id)
    late: list[dict[str, Any]]  # events of an earlier day, sent after everything else
    malformed: list[MalformedRequest]
    poison: list[bytes]  # records produced straight to the events topic (a broken producer)
    bot_devices: frozenset[str]  # devices whose user agent is a crawler's

    @property
    def sent(self) -> list[dict[str, Any]]:
        return self.events + self.resends + self.late

    @property
    def unique_events(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for e in self.sent:
            seen.setdefault(e["insert_id"], e)
        return list(seen.values())


@dataclass
class _Device:
    device_id: str
    platform: str
    os_name: str
    model: str
    user_agent: str
    identified: bool = False  # a first identified event was generated on it


@dataclass
class _User:
    user_id: str
    country: str
    language: str
    signup_day: int
    devices: list[_Device]
    second_device_day: int | None
    activated: bool = False
    bought_day0: bool = False
    signup_ms: int = 0
    seen_products: set[str] = field(default_factory=set)


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


class _Builder:
    """Builds the event lists with one ``random.Random``: same config -> same events, byte for byte."""

    def __init__(self, config: DemoConfig) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.events: list[dict[str, Any]] = []
        self.products = [f"sku-{i:04d}" for i in range(1, 401)]

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def device(self, kind: str) -> _Device:
        if kind == "ios":
            return _Device(self.uid(), "iOS", "iOS", "iPhone 15", IOS_UA)
        if kind == "android":
            return _Device(self.uid(), "Android", "Android", "Pixel 8", ANDROID_UA)
        return _Device(self.uid(), "Web", "Web", "", self.rng.choice(WEB_UAS))

    def event(self, event_type: str, t: int, dev: _Device, user: _User | None, *, session: int | None,
              props: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        e: dict[str, Any] = {
            "event_type": event_type, "time": t, "device_id": dev.device_id, "insert_id": self.uid(),
            "platform": dev.platform, "os_name": dev.os_name, "user_agent": dev.user_agent, "library": LIBRARY,
            "app_version": "3.2.0",
        }
        if dev.model:
            e["device_model"] = dev.model
        if user is not None:
            e["user_id"] = user.user_id
            e["country"] = user.country
            e["language"] = user.language
        if session is not None:
            e["session_id"] = session
        if props:
            e["event_properties"] = props
        e.update(extra)
        self.events.append(e)
        return e

    # --- users -----------------------------------------------------------------------------------
    def make_users(self) -> list[_User]:
        users = []
        for i in range(self.c.users):
            kind = self.rng.choices(("web", "ios", "android"), weights=(5, 3, 2))[0]
            devices = [self.device(kind)]
            second_day = None
            signup_day = self.rng.randrange(self.c.days)
            if self.rng.random() < 0.4:
                devices.append(self.device(self.rng.choice([k for k in ("web", "ios", "android") if k != kind])))
                second_day = signup_day + self.rng.randrange(0, 3)
            country = self.rng.choice(COUNTRIES)
            users.append(_User(f"user-{i + 1:05d}", country, "en", signup_day, devices, second_day))
        return users

    def active_days(self, user: _User) -> list[int]:
        """Day 0 = sign-up; afterwards a decaying chance to come back (retention curve)."""
        days = [user.signup_day]
        for k in range(1, self.c.days - user.signup_day):
            p = 0.12 + 0.40 * (0.72 ** (k - 1))
            if self.rng.random() < p:
                days.append(user.signup_day + k)
        return days

    def session_starts(self, day: int, n: int) -> list[int]:
        """Session starts on even hours, minute < 40: sessions (< 60 min) never overlap or cross midnight."""
        base = _ms(self.c.first_day) + day * DAY_MS
        hours = sorted(self.rng.sample(range(0, 23, 2), n))
        return [base + h * HOUR_MS + self.rng.randrange(0, 40 * 60_000) + self.rng.randrange(1000) for h in hours]

    def new_product(self, user: _User | None, seen_today: set[str]) -> str:
        """A product this user has not viewed on another day (funnel paths never span two days)."""
        while True:
            p = self.rng.choice(self.products)
            if user is None or p in seen_today or p not in user.seen_products:
                seen_today.add(p)
                return p

    def user_sessions(self, user: _User) -> None:
        for day in self.active_days(user):
            n = 1 + (self.rng.random() < 0.35) + (self.rng.random() < 0.12)
            seen_today: set[str] = set()
            for k, start in enumerate(self.session_starts(day, n)):
                signup = day == user.signup_day and k == 0
                dev = user.devices[0]
                if len(user.devices) > 1 and day >= (user.second_device_day or 0) and not signup:
                    if not user.devices[1].identified or self.rng.random() < 0.5:
                        dev = user.devices[1]
                self.session(user, dev, day, start, signup=signup, seen_today=seen_today)
            user.seen_products |= seen_today

    def session(self, user: _User, dev: _Device, day: int, start: int, *, signup: bool, seen_today: set[str]) -> None:
        t = start
        sid = start

        def step(lo: int = 15, hi: int = 200) -> int:
            nonlocal t
            t += self.rng.randint(lo, hi) * 1000 + self.rng.randrange(1000)
            return t

        anon: _User | None = user
        if not dev.identified:  # first session on this device: anonymous prelude, identified in the same hour
            anon = None
            for _ in range(self.rng.randint(1, 3)):
                kind = self.rng.random()
                if kind < 0.5:
                    self.event("page_view", t, dev, None, session=sid, props={"path": self.rng.choice(PATHS)})
                else:
                    p = self.new_product(user, seen_today)
                    self.event("view_item", t, dev, None, session=sid, props=self.item(p))
                step(10, 50)
            dev.identified = True
        if signup:
            user.signup_ms = t
            self.event("sign_up", t, dev, user, session=sid, props={"method": self.rng.choice(["email", "google"])},
                       user_properties={"$set": {"plan": "free", "signup_platform": dev.platform},
                                        "$setOnce": {"first_country": user.country}})
            if self.rng.random() < 0.62:
                step()
                user.activated = True
                self.event("activate", t, dev, user, session=sid, props={"step": "profile_completed"})
        elif anon is None:
            self.event("login", t, dev, user, session=sid)
        else:
            self.event("page_view", t, dev, user, session=sid, props={"path": self.rng.choice(PATHS)})
        if not signup and self.rng.random() < 0.15:
            return  # a bounce (or a login and nothing else)
        for _ in range(self.rng.randint(0, 2)):
            step()
            self.event("search", t, dev, user, session=sid, props={"query": self.rng.choice(QUERIES)})
        cart: list[str] = []
        for _ in range(self.rng.randint(1, 3)):
            step()
            p = self.new_product(user, seen_today)
            self.event("view_item", t, dev, user, session=sid, props=self.item(p))
            if self.rng.random() < 0.4:
                step()
                self.event("add_to_cart", t, dev, user, session=sid, props=self.item(p))
                cart.append(p)
        if cart and self.may_buy(user, t, signup):
            if self.rng.random() < (0.6 if signup else 0.45):
                p = cart[-1]
                step()
                price = self.price(p)
                self.event("purchase", t, dev, user, session=sid, props=self.item(p), price=price, quantity=1,
                           revenue=price, productId=p, revenueType="purchase")
                if signup:
                    user.bought_day0 = True

    def may_buy(self, user: _User, t: int, signup: bool) -> bool:
        """No purchase may complete a sign-up funnel on a later day (see the module docstring)."""
        if signup:
            return user.activated
        if not user.activated or user.bought_day0:
            return True
        return t > user.signup_ms + SIGNUP_WINDOW_MS

    def price(self, product: str) -> float:
        return round(5 + (int(product[4:]) * 37 % 190) + 0.99, 2)

    def item(self, product: str) -> dict[str, Any]:
        return {"product": product, "category": CATEGORIES[int(product[4:]) % len(CATEGORIES)], "price": self.price(product)}

    # --- visitors and bots -----------------------------------------------------------------------
    def visitors(self, n: int) -> None:
        """Anonymous visitors: a session or two, never identified (their actor is the device)."""
        for _ in range(n):
            dev = self.device(self.rng.choice(["web", "web", "ios", "android"]))
            days = sorted(self.rng.sample(range(self.c.days), min(self.c.days, self.rng.randint(1, 2))))
            for day in days:
                t = self.session_starts(day, 1)[0]
                sid = t
                for _ in range(self.rng.randint(1, 4)):
                    if self.rng.random() < 0.5:
                        self.event("page_view", t, dev, None, session=sid, props={"path": self.rng.choice(PATHS)})
                    else:
                        self.event("view_item", t, dev, None, session=sid, props=self.item(self.rng.choice(self.products)))
                    t += self.rng.randint(20, 120) * 1000

    def crawlers(self) -> set[str]:
        """Crawlers (bot user agents) in every hour of every day; no session_id, as crawlers send none."""
        devices = set()
        for ua in CRAWLER_UAS:
            dev = _Device(self.uid(), "Web", "Web", "", ua)
            devices.add(dev.device_id)
            for hour in range(self.c.days * 24):
                base = _ms(self.c.first_day) + hour * HOUR_MS
                for _ in range(self.rng.randint(1, 2)):
                    t = base + self.rng.randrange(HOUR_MS)
                    self.event("page_view", t, dev, None, session=None, props={"path": self.rng.choice(PATHS)})
        return devices

    def scripted_device(self) -> None:
        """A browser-looking device firing more than the per-minute bot threshold within one minute."""
        dev = self.device("web")
        day = self.rng.randrange(self.c.days)
        t = _ms(self.c.first_day) + day * DAY_MS + 13 * HOUR_MS + 5 * 60_000
        for i in range(self.c.bot_max_events_per_minute + 20):
            self.event("page_view", t + i * 400, dev, None, session=t, props={"path": "/deals"})

    # --- late events, malformed input --------------------------------------------------------------
    def late_events(self, users: list[_User], by_user_days: dict[str, set[int]]) -> list[dict[str, Any]]:
        """``search`` events of identified users in one hour of ``late_day`` (preferably users not active
        that day): one late hour, so the landing sensor asks for one run."""
        late_idx = (self.c.late_day - self.c.first_day).days
        base = self.c.late_hour_ms + 45 * 60_000
        start = len(self.events)
        candidates = [u for u in users if u.signup_day < late_idx or (u.signup_day == late_idx and u.signup_ms < base)]
        candidates.sort(key=lambda u: (late_idx in by_user_days[u.user_id], u.user_id))
        for user in candidates[: max(3, min(12, len(candidates) // 10))]:
            t = base + self.rng.randrange(10 * 60_000)
            self.event("search", t, user.devices[0], user, session=t, props={"query": self.rng.choice(QUERIES), "late": True})
        late = self.events[start:]
        del self.events[start:]
        return late

    def malformed(self, sample: dict[str, Any]) -> list[MalformedRequest]:
        import json

        def body(events: list[dict[str, Any]], key: str = "$KEY") -> bytes:
            return json.dumps({"api_key": key, "events": events}).encode()

        ok = {k: v for k, v in sample.items() if k in ("event_type", "time", "device_id", "platform")}
        return [
            MalformedRequest("truncated JSON", b'{"api_key": "$KEY", "events": [{"event_type": "page_view"', 0),
            MalformedRequest("invalid user id, no device", body([{**ok, "device_id": None, "user_id": "null"}] * 2), 2),
            MalformedRequest("missing event_type", body([{k: v for k, v in ok.items() if k != "event_type"}] * 3), 3),
            MalformedRequest("time is not a number", body([{**ok, "time": "yesterday"}]), 1),
            MalformedRequest("device_id too short", body([{**ok, "device_id": "abc"}]), 1),
            MalformedRequest("unknown API key", body([ok, ok], key="0" * 32), 2, bad_key=True),
        ]


def poison_records() -> list[bytes]:
    """Records a broken producer could write to the events topic; the consumer dead-letters each."""
    return [
        b"\xff\xfe this is not JSON",
        b"[]",
        b'{"v": 99, "event": {"event_type": "page_view", "insert_id": "x"}, "project": "demo"}',
        b'{"v": 1, "event": {"event_type": "page_view", "device_id": "poisoned-device"}, "project": "demo"}',
    ]


def generate(config: DemoConfig) -> Dataset:
    """The whole synthetic product for ``config`` (deterministic)."""
    b = _Builder(config)
    users = b.make_users()
    for user in users:
        b.user_sessions(user)
    b.visitors(max(1, config.users // 3))
    bots = b.crawlers()
    b.scripted_device()
    first = _ms(config.first_day)
    by_user_days: dict[str, set[int]] = {}
    for e in b.events:
        if "user_id" in e:
            by_user_days.setdefault(e["user_id"], set()).add((e["time"] - first) // DAY_MS)
    late = b.late_events(users, by_user_days)
    main = sorted(b.events, key=lambda e: (e["time"], e["insert_id"]))
    humans = [e for e in main if e["device_id"] not in bots]
    resends = [dict(e) for e in b.rng.sample(humans, max(1, len(humans) // 40))]
    in_late_hour = [e for e in main if e["time"] // HOUR_MS == config.late_hour_ms // HOUR_MS]
    old = next((e for e in in_late_hour if e["device_id"] not in bots), in_late_hour[0])
    resends.append(dict(old))  # a late resend of an old event of the late hour: still counted once
    malformed = b.malformed(main[0])
    return Dataset(config, main, resends[:-1], late + resends[-1:], malformed, poison_records(), frozenset(bots))
