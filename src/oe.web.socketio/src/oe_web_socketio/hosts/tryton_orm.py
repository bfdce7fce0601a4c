"""The former home of :mod:`oe_web_socketio.hosts.tryton.orm`: its names,
for the code that imports them from here."""

from __future__ import annotations

from oe_web_socketio.exceptions import GateTimeout
from oe_web_socketio.hosts.tryton.orm import (
    APPLICATION_NAME,
    READ_ONLY_OPTIONS,
    FairGate,
    GateStats,
    SweepingCheck,
    TrytonORM,
    orm_uri,
)

__all__ = [
    "APPLICATION_NAME",
    "READ_ONLY_OPTIONS",
    "FairGate",
    "GateStats",
    "GateTimeout",
    "SweepingCheck",
    "TrytonORM",
    "orm_uri",
]
