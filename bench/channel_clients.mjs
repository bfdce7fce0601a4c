// Receivers for bench/slow_reader.py and bench/reconnect_storm.py: one
// process of N official socket.io-client clients on the bench namespace,
// each subscribed to one channel, recording when each message arrives.
// Lean where Python clients are not: a 10 KB message costs a Node client a
// few tens of microseconds.
//
//   node bench/channel_clients.mjs --url URL --clients N --messages M
//        [--channel bench] [--deadline S] [--transport websocket|polling]
//
// Messages are `message({seq, ts, ...}, channel)` events; ts is the wall
// time (seconds since the epoch) of the publish. Output on stdout, one JSON
// object a line: {"type": "ready"} once every client is subscribed, then
// {"type": "result", "received": n, "latencies_ms": {p50, p99, max},
// "disconnects": n, "reconnects": n, "duplicates": n, "missing": n} once
// every client has M messages or --deadline seconds after the first one.
// --reconnect 1 lets the clients reconnect (with socket.io-client's
// jitter) and subscribe again, for reconnect storms; they then count
// what was missed and what came twice by `seq`.

import { io } from "socket.io-client";

const options = {
  channel: "bench",
  deadline: 60,
  transport: "websocket",
  reconnect: 0,
  lifetime: 900,
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  const value = argv[i + 1];
  options[key] = /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
}
for (const name of ["url", "clients", "messages"]) {
  if (options[name] === undefined) {
    process.stderr.write(`channel_clients.mjs: --${name} is required\n`);
    process.exit(1);
  }
}
// Never outlive a benchmark that died.
setTimeout(() => process.exit(2), options.lifetime * 1000).unref();

const latencies = [];
const seen = [];
let disconnects = 0;
let reconnects = 0;
let duplicates = 0;
let firstAt = null;

function subscribe(socket) {
  return new Promise((resolve, reject) => {
    socket.timeout(30000).emit("subscribe", options.channel, (err, ok) => {
      if (err || ok !== true) reject(err || new Error(`subscribe: ${ok}`));
      else resolve();
    });
  });
}

function open(index) {
  seen[index] = new Set();
  const socket = io(`${options.url}/bench`, {
    transports: [options.transport],
    reconnection: options.reconnect === 1,
    forceNew: true,
  });
  socket.on("message", (message) => {
    const now = Date.now();
    if (firstAt === null) firstAt = now;
    latencies.push(now - message.ts * 1000);
    if (seen[index].has(message.seq)) duplicates += 1;
    else seen[index].add(message.seq);
  });
  socket.on("disconnect", () => {
    disconnects += 1;
  });
  return new Promise((resolve, reject) => {
    let connected = false;
    socket.on("connect", () => {
      if (connected) {
        reconnects += 1;
        subscribe(socket).catch((err) => process.stderr.write(`${err}\n`));
        return;
      }
      connected = true;
      subscribe(socket).then(() => resolve(socket), reject);
    });
    socket.on("connect_error", (err) => {
      if (!connected && options.reconnect !== 1) reject(err);
    });
  });
}

function report() {
  const sorted = latencies.slice().sort((a, b) => a - b);
  const pick = (f) => sorted[Math.min(sorted.length - 1, Math.round(f * (sorted.length - 1)))];
  let missing = 0;
  for (const set of seen) missing += options.messages - set.size;
  process.stdout.write(
    JSON.stringify({
      type: "result",
      received: latencies.length,
      latencies_ms: { p50: pick(0.5), p99: pick(0.99), max: sorted[sorted.length - 1] },
      disconnects,
      reconnects,
      duplicates,
      missing,
    }) + "\n",
  );
  process.exit(0);
}

const sockets = [];
for (let i = 0; i < options.clients; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(i + 50, options.clients); j++) batch.push(open(j));
  sockets.push(...(await Promise.all(batch)));
}
process.stdout.write(JSON.stringify({ type: "ready" }) + "\n");

const expected = options.clients * options.messages;
const timer = setInterval(() => {
  const complete = seen.every((set) => set.size >= options.messages);
  const late = firstAt !== null && Date.now() - firstAt > options.deadline * 1000;
  if (complete || late || latencies.length >= expected * 2) {
    clearInterval(timer);
    for (const socket of sockets) socket.disconnect();
    report();
  }
}, 100);
