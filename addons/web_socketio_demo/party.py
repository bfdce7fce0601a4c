# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Parties publish what changes in them, on :data:`CHANNEL`.

The messages (JSON objects) are:

* ``{"action": "create" | "write", "parties": [{"id", "name", "code",
  "active"}, …], "uid": <user>}``: those parties as they are now;
* ``{"action": "delete", "ids": [...], "uid": <user>}``;
* ``{"action": "reload", "uid": <user>}``: more than :data:`MAX_PARTIES`
  changed at once (an import): read the list again.

Invariants: a message is published in the transaction of the change (see
:func:`trytond.modules.web_socketio.publish`), so it is delivered once the
change commits and never if it rolls back; a write that touches none of
:data:`FIELDS` publishes nothing.
"""

from trytond.modules.web_socketio import publish
from trytond.pool import PoolMeta
from trytond.transaction import Transaction

#: The channel the demo page subscribes to.
CHANNEL = "demo.parties"
#: The fields the demo shows: a write of any other publishes nothing.
FIELDS = frozenset({"name", "code", "active"})
#: Most parties one message lists; above, clients are told to reload.
MAX_PARTIES = 200


class Party(metaclass=PoolMeta):
    __name__ = "party.party"

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        super().on_modification(mode, records, field_names=field_names)
        if (
            mode == "write"
            and field_names is not None
            and not (FIELDS & set(field_names))
        ):
            return
        if records:
            publish(CHANNEL, message(mode, records))


def message(mode, records):
    """The message telling that *records* were created, written or are
    about to be deleted (*mode*)."""
    uid = Transaction().user
    if len(records) > MAX_PARTIES:
        return {"action": "reload", "uid": uid}
    if mode == "delete":
        return {"action": "delete", "ids": [r.id for r in records], "uid": uid}
    return {
        "action": mode,
        "parties": [
            {"id": r.id, "name": r.name, "code": r.code, "active": r.active}
            for r in records
        ],
        "uid": uid,
    }
