"""The baseline: python-socketio on gevent with nothing of ours.

Clients emit ``subscribe`` (a room name) and ``publish`` ({"channel", ...});
a publish is emitted as ``message`` to the room, skipping the sender, which
is what oe_web_socketio's ``broadcast_channel`` does.
"""

import sys

from gevent import monkey

monkey.patch_all()

import socketio  # noqa: E402
from gevent import pywsgi  # noqa: E402

sio = socketio.Server(async_mode="gevent", cors_allowed_origins="*")


@sio.on("subscribe", namespace="/bench")
def subscribe(sid, channel):
    sio.enter_room(sid, channel, namespace="/bench")
    return True


@sio.on("publish", namespace="/bench")
def publish(sid, message):
    sio.emit(
        "message",
        (message, message["channel"]),
        room=message["channel"],
        skip_sid=sid,
        namespace="/bench",
    )
    return True


@sio.on("connect", namespace="/bench")
def connect(sid, environ, auth):
    return True


if __name__ == "__main__":
    server = pywsgi.WSGIServer(
        ("127.0.0.1", int(sys.argv[1])), socketio.WSGIApp(sio), log=None
    )
    server.serve_forever()
