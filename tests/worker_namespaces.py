"""The namespace the tests of several workers serve (on the server's
PYTHONPATH): what crosses workers, driven by the client."""

from oe_web_socketio import Namespace


class WorkersNamespace(Namespace):
    """Anonymous clients may do everything: say on a channel, tell a
    socket by id, shout to the namespace, ask who is present."""

    track_presence = True

    def get_initial_acl(self):
        return None

    def on_whoami(self):
        return self.sid

    def on_say(self, channel, text):
        self.broadcast_channel(text, channel)

    def on_tell(self, sid, text):
        self.send_to(sid, text)

    def on_shout(self, text):
        self.send_and_broadcast(text)
