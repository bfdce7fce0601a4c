"""The namespace the benchmarks load into oe_web_socketio (``/bench``).

Anonymous sockets may subscribe and publish: the benchmarks measure the
message path, not authentication. ``publish`` is ``broadcast_channel``, the
same fan-out the plain python-socketio baseline does (room emit, skipping
the sender).
"""

from oe_web_socketio import Namespace


class Bench(Namespace):
    path = "/bench"

    def get_initial_acl(self):
        return {"subscribe", "publish"}

    def on_publish(self, message):
        self.broadcast_channel(message, message["channel"])
        return True


class Harness(Namespace):
    """The protocol of the shared load harness (``../shared/bench``):
    ``join {room}`` subscribes, ``publish {room, payload}`` sends
    ``payload`` to every socket of the room, the sender included, both
    acknowledged with ``true``. Served at ``/bench`` by
    ``bench/harness_server.py``."""

    path = "/bench"

    def get_initial_acl(self):
        return {"join", "publish"}

    def on_join(self, data):
        self.subscribe(data["room"])
        return True

    def on_publish(self, data):
        self.send_and_broadcast_channel(data["payload"], data["room"])
        return True
