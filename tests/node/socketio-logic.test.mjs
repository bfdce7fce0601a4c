// The ordering logic of js/socketio.js without a server: what a SocketIO
// delivers from the messages held during a resume and from the live path.
// tests/test_js_client.py runs it (`node --test`); the same client against
// real servers is tested there, in Chromium.

import assert from "node:assert/strict";
import { test } from "node:test";
import { isNewer, parsePosition, SocketIO } from "../../js/socketio.js";

// A SocketIO that never connects (the port is never opened), recording
// what it delivers.
function recorder() {
  const s = new SocketIO("/", { url: "http://127.0.0.1:9", autoConnect: false });
  const log = [];
  s.on("message", (message, channel, position) => log.push([message, channel, position]));
  s.on("resync", (info) => log.push(["resync", info.position]));
  return { s, log };
}

test("positions compare as numbers within one epoch", () => {
  assert.deepEqual(parsePosition("abc:12"), { epoch: "abc", n: 12 });
  assert.deepEqual(parsePosition("a:b:3"), { epoch: "a:b", n: 3 });
  for (const bad of [null, 3, "", "12", "e:", "e:-1", "e:1.5", "e:x"]) {
    assert.equal(parsePosition(bad), null, String(bad));
  }
  assert.equal(isNewer("e:10", "e:9"), true); // not as strings
  assert.equal(isNewer("e:9", "e:10"), false);
  assert.equal(isNewer("e:9", "e:9"), false);
  assert.equal(isNewer("e:1", null), true);
  assert.equal(isNewer("f:1", "e:9"), true); // a new outbox
  assert.equal(isNewer("junk", "e:9"), false);
});

test("held messages are delivered in position order, none twice", () => {
  const { s, log } = recorder();
  s.lastPosition = "e:5";
  s._pending = [];
  // A broadcast delivered live before the resume took the socket off the
  // live path, then the replay (which has it again), then live ones.
  s._onMessage(["early", null, "e:9"]);
  for (const n of [6, 7, 8, 9]) s._onMessage([`m${n}`, "c", `e:${n}`]);
  s._onMessage(["m10", "c", "e:10"]);
  s._onMessage(["not bridged"]); // a namespace's send(): at once
  assert.deepEqual(log, [["not bridged", undefined, undefined]]);
  s._resumed({ position: "e:9", replayed: 4 });
  assert.deepEqual(log.slice(1).map(([m, , p]) => [m, p]), [
    ["m6", "e:6"],
    ["m7", "e:7"],
    ["m8", "e:8"],
    ["early", "e:9"],
    ["m10", "e:10"],
  ]);
  assert.equal(s.lastPosition, "e:10");
  assert.equal(s.status, "connected");
  // Live: an old or repeated position is dropped.
  s._onMessage(["again", "c", "e:10"]);
  s._onMessage(["older", "c", "e:3"]);
  s._onMessage(["m11", "c", "e:11"]);
  assert.deepEqual(log.at(-1), ["m11", "c", "e:11"]);
  assert.equal(log.length, 7);
});

test("a resync answer fires resync first, then what is newer", () => {
  const { s, log } = recorder();
  s.lastPosition = "old:50";
  s._pending = [];
  s._onMessage(["before", "c", "new:3"]);
  s._onMessage(["after", "c", "new:4"]);
  s._resumed({ resync: true, reason: "a position of another database", position: "new:3" });
  assert.deepEqual(log, [["resync", "new:3"], ["after", "c", "new:4"]]);
  assert.equal(s.lastPosition, "new:4");
});

test("a refused resume without a position only goes live", () => {
  const { s, log } = recorder();
  s._pending = [];
  s._onMessage(["b", null, "e:2"]);
  s._onMessage(["a", null, "e:1"]);
  s._resumed({ error: { code: "forbidden", message: "event 'resume' is not allowed" } });
  assert.deepEqual(log.map(([m]) => m), ["a", "b"]);
  assert.equal(s.status, "connected");
});

test("messages of an unsubscribed channel in flight are dropped", async () => {
  const { s, log } = recorder();
  s._channels.add("c");
  assert.equal(await s.unsubscribe("c"), false); // not connected: nothing to ask
  s._onMessage(["late", "c", "e:1"]);
  s._onMessage(["other", "d", "e:2"]);
  assert.deepEqual(log, [["other", "d", "e:2"]]);
  assert.equal(s.lastPosition, "e:2");
  assert.deepEqual(s.channels, []);
});

test("the auth payload carries the session as sao builds it", () => {
  const s = new SocketIO("/", {
    url: "http://127.0.0.1:9",
    autoConnect: false,
    session: { login: "ana", user_id: 7, session: "k", database: "oe" },
  });
  assert.deepEqual(s._auth(), { session: btoa("ana:7:k"), database: "oe" });
  s.setSession("c2Vzc2lvbg==", "erp");
  assert.deepEqual(s._auth(), { session: "c2Vzc2lvbg==", database: "erp" });
  s.disconnect();
  assert.equal(s.status, "disconnected");
});

test("a server disconnect is final; after the session ended it is a refusal", () => {
  // What socket.io-client reports, replayed on the SocketIO's own socket.
  const s = new SocketIO("/", { url: "http://127.0.0.1:9", autoConnect: false });
  const statuses = [];
  s.on("status", (state, detail, data) => statuses.push([state, detail, data]));
  s.socket.emitReserved("disconnect", "io server disconnect");
  assert.deepEqual(statuses.at(-1), ["disconnected", "the server ended the connection", null]);
  s.socket.emitReserved("connect");
  s.socket.emitReserved("error", {
    error: { code: "authentication_failed", message: "invalid or expired session" },
  });
  s.socket.emitReserved("disconnect", "io server disconnect");
  assert.deepEqual(statuses.at(-1), [
    "refused",
    "invalid or expired session",
    { code: "authentication_failed" },
  ]);
  // A lost transport is no decision of the server: reconnecting.
  s.socket.emitReserved("connect");
  s.socket.emitReserved("disconnect", "transport close");
  assert.deepEqual(statuses.at(-1), ["reconnecting", "transport close", null]);
  s.disconnect();
});
