"""The simulated fleet: servers in data centers and the incidents that change their status.

Pure: no I/O, no global randomness. Everything comes from ``random.Random`` seeded by the
fleet's seed, so the same seed gives the same servers and the same event stream.

Each event is one server reporting its status. A server is Green until an incident opens
(Orange, or straight to Red), an Orange incident may escalate to Red, and every incident
closes back to Green after a few simulated minutes. A server changes state only when it
reports, one step at a time, so its reports show every transition it goes through.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pycountry

from lakehouse.contracts import SERVER_TYPES, SEVERITY_BY_STATUS

# Data-center cities of our own choosing, by ISO 3166 alpha-2 code. The first city of
# each of the seed's ten countries is the one the seed uses.
DATA_CENTER_CITIES = {
    "AU": ("Canberra", "Sydney", "Melbourne"),
    "BR": ("Brasília", "São Paulo"),
    "CA": ("Ottawa", "Toronto", "Montreal"),
    "CH": ("Bern", "Zurich", "Geneva"),
    "DE": ("Berlin", "Frankfurt", "Munich"),
    "ES": ("Madrid", "Barcelona"),
    "FI": ("Helsinki",),
    "FR": ("Paris", "Marseille"),
    "GB": ("London", "Manchester"),
    "IE": ("Dublin",),
    "IN": ("New Delhi", "Mumbai", "Chennai"),
    "JP": ("Tokyo", "Osaka"),
    "NL": ("Amsterdam",),
    "SE": ("Stockholm",),
    "SG": ("Singapore",),
    "US": ("Washington, D.C.", "Ashburn", "Dallas", "San Jose"),
    "ZA": ("Johannesburg", "Cape Town"),
}

# The seed names countries the REST Countries way: the short name, except these two,
# which it spells officially ("United States of America").
_OFFICIAL_NAMES = frozenset({"GB", "US"})

# Minutes between incidents on a healthy server (mean of an exponential draw).
MEAN_MINUTES_BETWEEN_INCIDENTS = 30.0
RED_AT_ONSET = 0.25  # share of incidents that open as Red rather than Orange
ESCALATION = 0.2  # share of Orange incidents that escalate to Red instead of closing
# Estimated resolution time (minutes, like the seed's 2..10) drawn per state; incidents
# last about as long as estimated (0.5x to 1.5x).
ESTIMATE_MINUTES = {"Green": (2, 4), "Orange": (3, 7), "Red": (6, 10)}
# Status mix at the start, close to the long-run mix, so short runs look like a live fleet.
INITIAL_WEIGHTS = {"Green": 0.80, "Orange": 0.14, "Red": 0.06}


def country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return country.official_name if code in _OFFICIAL_NAMES else country.name


@dataclass(frozen=True, slots=True)
class Server:
    server_id: str
    server_type: str
    country_code: str
    country_name: str
    city: str


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    server_id: str
    server_type: str
    country_code: str
    country_name: str
    city: str
    status_color: str
    severity_level: str
    estimated_resolution_time: int
    event_time: datetime  # timezone-aware UTC


@dataclass(frozen=True, slots=True)
class _State:
    status: str
    estimate: int  # minutes
    until: float  # model seconds since start when the next transition is due


_COUNTRY_CODES = tuple(sorted(DATA_CENTER_CITIES))
_COUNTRY_NAMES = {code: country_name(code) for code in _COUNTRY_CODES}


def _server(number: int, rng: random.Random) -> Server:
    code = rng.choice(_COUNTRY_CODES)
    return Server(f"srv-{number:05d}", rng.choice(SERVER_TYPES), code, _COUNTRY_NAMES[code],
                  rng.choice(DATA_CENTER_CITIES[code]))


def _enter(status: str, now: float, rng: random.Random) -> _State:
    estimate = rng.randint(*ESTIMATE_MINUTES[status])
    if status == "Green":
        duration = rng.expovariate(1 / (MEAN_MINUTES_BETWEEN_INCIDENTS * 60))
    else:
        duration = estimate * 60 * rng.uniform(0.5, 1.5)
    return _State(status, estimate, now + duration)


def _initial(rng: random.Random) -> _State:
    """A state as if the server had been running for a while: incidents already part-way."""
    status = rng.choices(tuple(INITIAL_WEIGHTS), weights=tuple(INITIAL_WEIGHTS.values()))[0]
    state = _enter(status, 0.0, rng)
    if status == "Green":  # exponential waits are memoryless: no need to shorten
        return state
    return _State(status, state.estimate, state.until * rng.random())


def _next(state: _State, now: float, rng: random.Random) -> _State:
    if state.status == "Green":
        status = "Red" if rng.random() < RED_AT_ONSET else "Orange"
    elif state.status == "Orange" and rng.random() < ESCALATION:
        status = "Red"
    else:
        status = "Green"
    return _enter(status, now, rng)


class Fleet:
    """``servers`` servers of the 13 types spread over data centers, built from ``seed``."""

    def __init__(self, servers: int = 500, seed: int = 1):
        if servers < 1:
            raise ValueError(f"a fleet needs at least one server, got {servers}")
        self.seed = seed
        rng = random.Random(f"fleet:{seed}")
        self.servers = tuple(_server(i, rng) for i in range(1, servers + 1))

    def events(
        self, start: datetime, step_seconds: float, clock: Callable[[], datetime] | None = None
    ) -> Iterator[Event]:
        """Endless status reports, one random server at a time.

        The model clock runs ``start + i * step_seconds``; it alone drives the incidents, so
        the statuses are reproducible. ``clock`` (e.g. the wall clock), when given, only
        stamps ``event_time`` (it must return UTC) and is never allowed to go backwards.
        """
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        start = start.astimezone(UTC)
        rng = random.Random(f"events:{self.seed}")
        states = [_initial(rng) for _ in self.servers]
        stamp = start
        for i in itertools.count():
            now = i * step_seconds
            index = rng.randrange(len(self.servers))
            state = states[index]
            if now >= state.until:
                state = states[index] = _next(state, now, rng)
            stamp = start + timedelta(seconds=now) if clock is None else max(stamp, clock())
            server = self.servers[index]
            yield Event(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                server_id=server.server_id,
                server_type=server.server_type,
                country_code=server.country_code,
                country_name=server.country_name,
                city=server.city,
                status_color=state.status,
                severity_level=SEVERITY_BY_STATUS[state.status],
                estimated_resolution_time=state.estimate,
                event_time=stamp,
            )
