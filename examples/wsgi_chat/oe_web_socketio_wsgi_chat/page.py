"""The chat page the three examples serve (each through its framework).

It loads the browser client (``SocketIO``, served by oe_web_socketio at
``/oe_web_socketio/oe_web_socketio.js``) with the script tag it is given.
"""

from __future__ import annotations

#: The page's script: connect with a token, join rooms, talk, announce.
SCRIPT = """
const $ = (id) => document.getElementById(id);
let socket = null;
function show(line, channel) {
  const item = document.createElement("li");
  const who = line.login ?? "announce";
  item.textContent = `[${channel}] ${who}: ${line.type} ${line.text ?? ""}`;
  $("log").append(item);
}
$("connect").onclick = () => {
  socket?.disconnect();
  socket = new SocketIO("/chat", { session: $("token").value });
  socket.on("status", (state, detail) => {
    $("status").textContent = `${state} ${detail ?? ""}`;
  });
  socket.on("message", show);
};
$("join").onclick = () => socket.subscribe($("room").value);
$("leave").onclick = () => socket.unsubscribe($("room").value);
$("say").onclick = () => socket.emit("message", $("text").value, $("room").value);
$("announce").onclick = () => fetch("announce", {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ room: $("room").value, text: $("text").value }),
});
"""

#: The controls of the page.
BODY = """<p>Token <input id="token" value="alice-token">
<button id="connect">Connect</button> <span id="status">disconnected</span></p>
<p>Room <input id="room" value="room-lobby"> <button id="join">Join</button>
<button id="leave">Leave</button></p>
<p><input id="text" value="hello"> <button id="say">Say</button>
<button id="announce">Announce (POST /announce)</button></p>
<ul id="log"></ul>
"""

#: The page, with ``{title}``, ``{scripts}``, ``{body}`` and ``{script}``.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
{scripts}
</head>
<body>
<h1>{title}</h1>
{body}
<script>{script}</script>
</body>
</html>
"""


def render(title: str, scripts: str) -> str:
    """The page titled *title*, loading the client with *scripts*."""
    return PAGE.format(title=title, scripts=scripts, body=BODY, script=SCRIPT)
