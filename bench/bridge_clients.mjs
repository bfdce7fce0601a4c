// The subscribers of bench/bridge_latency.py: one process of N Socket.IO
// clients (the official socket.io-client, WebSocket only), each subscribed
// to one channel with `resume(null, [channel])`, recording when each
// database message arrives. bridge_latency.py starts a few of these and
// drives them through stdin; they never decide when the run ends.
//
//   node bench/bridge_clients.mjs --url URL --clients N --channel NAME
//                                 --messages M [--timeout MS]
//
// Messages are `message(payload, channel, position)` events whose payload
// is {"seq": i, ...}, i from 0 to M - 1, published in that order.
//
// Commands, one JSON object a line on stdin:
//   {"op": "count"}    answers {"type": "count", "min": n, "total": n}:
//                      the fewest messages a client has, and the sum
//   {"op": "report", "commits": [t0, ...]}   t_i: the wall time (ms since
//                      the epoch) the COMMIT of message i returned; answers
//                      {"type": "report", ...} (see report()) and exits
//
// Output, one JSON object a line on stdout: {"type": "ready"} once every
// client is connected and subscribed, then the answers. Diagnostics go to
// stderr; a client that cannot connect or subscribe ends the process with
// status 1. The process exits by itself after --lifetime seconds, so that
// no client outlives a benchmark that died.

import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

// Clients connecting at once.
const BATCH = 50;

const NUMBERS = new Set(["--clients", "--messages", "--timeout", "--lifetime"]);
const STRINGS = new Set(["--url", "--channel"]);

function parseArgs(argv) {
  const options = { timeout: 30000, lifetime: 600 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined || !(NUMBERS.has(flag) || STRINGS.has(flag))) {
      fail(`bad option ${flag}`);
    }
    options[flag.slice(2)] = NUMBERS.has(flag) ? Number(value) : value;
  }
  for (const name of ["url", "clients", "channel", "messages"]) {
    if (options[name] === undefined || Number.isNaN(options[name])) {
      fail(`--${name} is required`);
    }
  }
  return options;
}

function fail(message) {
  process.stderr.write(`bridge_clients.mjs: ${message}\n`);
  process.exit(1);
}

// Wall-clock milliseconds, sub-millisecond: the same clock as Python's
// time.time() on this machine, read through the monotonic one.
function now() {
  return performance.timeOrigin + performance.now();
}

class Subscriber {
  constructor(options) {
    this.expected = options.messages;
    this.seqs = [];
    this.arrivals = new Float64Array(options.messages);
    this.received = new Uint16Array(options.messages);
    this.lastPosition = -1;
    this.positionsIncrease = true;
    this.foreign = 0;
    this.disconnected = null;
    this.socket = io(options.url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: options.timeout,
    });
    this.socket.on("message", (payload, channel, position) => {
      const at = now();
      const seq = payload && payload.seq;
      if (channel !== options.channel || !Number.isInteger(seq) || seq < 0 || seq >= this.expected) {
        this.foreign += 1;
        return;
      }
      this.seqs.push(seq);
      if (this.received[seq] === 0) {
        this.arrivals[seq] = at;
      }
      this.received[seq] += 1;
      const number = Number(String(position).split(":").pop());
      if (!(number > this.lastPosition)) {
        this.positionsIncrease = false;
      }
      this.lastPosition = number;
    });
    this.socket.on("disconnect", (reason) => {
      this.disconnected = reason;
    });
  }

  async subscribe(options) {
    await new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("connect_error", reject);
    });
    const answer = await this.socket
      .timeout(options.timeout)
      .emitWithAck("resume", null, [options.channel]);
    if (!answer || typeof answer.position !== "string") {
      throw new Error(`resume refused: ${JSON.stringify(answer)}`);
    }
  }

  // Whether the messages 0 to published - 1 came exactly once each, in
  // publication order, and nothing else.
  check(published) {
    let inOrder = this.seqs.length === published;
    for (let i = 0; inOrder && i < this.seqs.length; i += 1) {
      inOrder = this.seqs[i] === i;
    }
    let missing = 0;
    let duplicates = 0;
    for (let seq = 0; seq < this.expected; seq += 1) {
      const count = this.received[seq];
      if (seq < published && count === 0) missing += 1;
      else if (count > 0) duplicates += count - 1;
    }
    return { inOrder: inOrder && this.positionsIncrease, missing, duplicates };
  }
}

function report(subscribers, commits) {
  // latencies[i]: microseconds from the COMMIT of message i to its
  // arrival, at each client that received it.
  const latencies = commits.map(() => []);
  const result = {
    type: "report",
    clients: subscribers.length,
    exact: 0,
    missing: 0,
    duplicates: 0,
    foreign: 0,
    disconnected: 0,
  };
  const usage = process.cpuUsage();
  result.cpu_s = (usage.user + usage.system) / 1e6;
  for (const subscriber of subscribers) {
    const { inOrder, missing, duplicates } = subscriber.check(commits.length);
    if (inOrder && missing === 0 && duplicates === 0) result.exact += 1;
    result.missing += missing;
    result.duplicates += duplicates;
    result.foreign += subscriber.foreign;
    if (subscriber.disconnected !== null) result.disconnected += 1;
    for (let seq = 0; seq < commits.length; seq += 1) {
      if (subscriber.received[seq] > 0) {
        latencies[seq].push(Math.round((subscriber.arrivals[seq] - commits[seq]) * 1000));
      }
    }
  }
  result.latencies_us = latencies;
  return result;
}

function write(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  setTimeout(() => fail(`still running after ${options.lifetime} s`), options.lifetime * 1000).unref();
  const subscribers = [];
  for (let start = 0; start < options.clients; start += BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(options.clients, start + BATCH); i += 1) {
      const subscriber = new Subscriber(options);
      subscribers.push(subscriber);
      batch.push(subscriber.subscribe(options));
    }
    try {
      await Promise.all(batch);
    } catch (error) {
      fail(`a client could not subscribe: ${error.message}`);
    }
  }
  write({ type: "ready" });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    if (command.op === "count") {
      let min = Infinity;
      let total = 0;
      for (const subscriber of subscribers) {
        min = Math.min(min, subscriber.seqs.length);
        total += subscriber.seqs.length;
      }
      write({ type: "count", min, total });
    } else if (command.op === "report") {
      write(report(subscribers, command.commits));
      break;
    } else {
      fail(`unknown command ${line.slice(0, 80)}`);
    }
  }
  for (const subscriber of subscribers) {
    subscriber.socket.disconnect();
  }
  // Let the close frames go out; stdin's end or the report ends the run.
  setTimeout(() => process.exit(0), 500);
}

main();
