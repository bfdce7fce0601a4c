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
