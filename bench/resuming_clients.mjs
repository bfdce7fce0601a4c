// Reconnect storms: one Node process of N clients of oe_web_socketio's own
// JavaScript client (js/socketio.js, over socket.io-client), each on the
// namespace "/" with one channel, resuming by itself after every
// reconnection (with socket.io-client's jitter). Used by
// tests/test_floods.py (a few hundred clients) and bench/reconnect_storm.py
// (thousands).
//
//   node bench/resuming_clients.mjs --url URL --clients N --channel C
//        --session S [--database DB] [--transport websocket|polling]
//        [--delay MS] [--delay-max MS]
//
// Output on stdout, one JSON object a line: {"type": "ready"} once every
// client is connected and resumed; {"type": "status", "connected": n,
// "reconnecting": n, "received": n, "min": n} for the command "status";
// {"type": "report", "clients": n, "exact": n, "missing": n,
// "duplicates": n, "disordered": n, "reconnections": n, "refusals": n,
// "resyncs": n} for "report" (then it exits). Commands are lines on stdin.
// Messages are the bridge's `message(payload, channel, position)` whose
// payload is an integer 0, 1, 2 ... in publishing order: a client is
// "exact" when it got 0..M-1 once each, in order, M the most any got.

import { createInterface } from "node:readline";
import { SocketIO } from "../js/socketio.js";

const options = { transport: "websocket", delay: 1000, "delay-max": 15000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) options[argv[i].replace(/^--/, "")] = argv[i + 1];
for (const name of ["url", "clients", "channel", "session"]) {
  if (options[name] === undefined) {
    process.stderr.write(`resuming_clients.mjs: --${name} is required\n`);
    process.exit(1);
  }
}
// Never outlive a test or benchmark that died.
setTimeout(() => process.exit(2), 900_000).unref();

const count = Number(options.clients);
const clients = [];
for (let i = 0; i < count; i++) {
  const state = { received: [], reconnections: 0, refusals: 0, resyncs: 0, connected: false };
  const socket = new SocketIO("/", {
    url: options.url,
    session: options.session,
    database: options.database ?? null,
    transports: [options.transport],
    channels: [options.channel],
    reconnectionDelay: Number(options.delay),
    reconnectionDelayMax: Number(options["delay-max"]),
  });
  socket.on("message", (message, channel) => {
    if (channel === options.channel) state.received.push(message);
  });
  socket.on("resync", () => {
    state.resyncs += 1;
  });
  socket.on("status", (status) => {
    if (status === "connected") state.connected = true;
    if (status === "reconnecting" && state.connected) state.reconnections += 1;
    if (status === "reconnecting") state.connected = false;
    if (status === "refused") state.refusals += 1;
  });
  clients.push({ socket, state });
}

const readyTimer = setInterval(() => {
  if (clients.every(({ state }) => state.connected)) {
    clearInterval(readyTimer);
    process.stdout.write(JSON.stringify({ type: "ready" }) + "\n");
  }
}, 50);

function status() {
  const sizes = clients.map(({ state }) => state.received.length);
  return {
    type: "status",
    connected: clients.filter(({ state }) => state.connected).length,
    reconnecting: clients.filter(({ state }) => !state.connected).length,
    received: sizes.reduce((a, b) => a + b, 0),
    min: Math.min(...sizes),
  };
}

function report() {
  const expected = Math.max(...clients.map(({ state }) => state.received.length));
  const result = {
    type: "report",
    clients: count,
    expected,
    exact: 0,
    missing: 0,
    duplicates: 0,
    disordered: 0,
    reconnections: 0,
    refusals: 0,
    resyncs: 0,
  };
  for (const { state } of clients) {
    const got = state.received;
    const unique = new Set(got);
    result.duplicates += got.length - unique.size;
    result.missing += expected - unique.size;
    if (got.some((value, index) => index > 0 && value < got[index - 1])) result.disordered += 1;
    if (got.length === expected && got.every((value, index) => value === index)) result.exact += 1;
    result.reconnections += state.reconnections;
    result.refusals += state.refusals;
    result.resyncs += state.resyncs;
  }
  return result;
}

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = line.trim();
  if (command === "status") process.stdout.write(JSON.stringify(status()) + "\n");
  if (command === "report") {
    process.stdout.write(JSON.stringify(report()) + "\n");
    for (const { socket } of clients) socket.disconnect();
    setTimeout(() => process.exit(0), 200);
  }
});
