// A scriptable Socket.IO client for the tests: the official socket.io-client
// (package.json pins it) driven by JSON lines, so that Python tests exercise
// the server with the client browsers run. tests/nodeclient.py wraps it.
//
//   node tests/node/sio-client.mjs --url http://127.0.0.1:8080 [options]
//
// Options:
//   --url URL               the server (required); its path is ignored,
//                           the Engine.IO endpoint is --path
//   --namespace NS          the namespace to connect to (default "/")
//   --path PATH             the Engine.IO path (default "/socket.io")
//   --transports LIST       comma-separated, in order of preference:
//                           websocket, polling, webtransport
//                           (default "websocket")
//   --no-upgrade            never upgrade from polling to a better transport
//   --auth JSON             the namespace's auth payload (an object)
//   --query JSON            query parameters of the handshake (an object)
//   --extra-headers JSON    HTTP headers of every request (an object)
//   --timeout MS            connection timeout (default 20000)
//   --reconnection          reconnect after a lost connection (default: never)
//
// Commands, one JSON object a line on stdin:
//   {"id": 1, "op": "emit", "event": E, "args": [...], "ack": true}
//   {"op": "disconnect"}      disconnect the socket (the process stays)
//   {"op": "connect"}         connect again after a disconnect
//   {"id": 2, "op": "status"} answers {"type": "status", ...}
//   {"op": "close"}           disconnect and exit, as end of input does
//
// Output, one JSON object a line on stdout, for everything that happens:
//   {"type": "open", "transport": T}              Engine.IO connection open
//   {"type": "upgrade", "transport": T}           transport upgraded to T
//   {"type": "upgrade_error", "message": M}
//   {"type": "connect", "id": SID, "transport": T}  namespace connected
//   {"type": "connect_error", "message": M, "data": D, "description": S,
//    "payload": P}    P: the server's refusal as sent, null for a
//                     transport error (then S says what failed)
//   {"type": "event", "event": E, "args": [...]}  every incoming event
//   {"type": "ack", "id": N, "args": [...]}       the answer to emit N
//   {"type": "disconnect", "reason": R, "description": S}
//   {"type": "reconnect_attempt" | "reconnect" | "reconnect_failed", ...}
//   {"type": "error", "id": N, "message": M}      a command was refused
//   {"type": "close"}                             last line before exiting
//
// Binary values travel as {"$binary": "<base64>"} both ways. Diagnostics go
// to stderr (DEBUG=socket.io-client:*,engine.io-client:* shows the
// client's own). The exit status is 0 after end of input, 2 on bad usage.

import { createInterface } from "node:readline";
import { Manager } from "socket.io-client";

const USAGE = "usage: sio-client.mjs --url URL [--namespace NS] [--path PATH] "
  + "[--transports websocket,polling] [--no-upgrade] [--auth JSON] "
  + "[--query JSON] [--extra-headers JSON] [--timeout MS] [--reconnection]";
const FLAGS = new Set(["--no-upgrade", "--reconnection"]);
const OPTIONS = new Set([
  "--url", "--namespace", "--path", "--transports", "--auth", "--query",
  "--extra-headers", "--timeout",
]);
// How long the process waits for the connection to close before it exits
// anyway, once told to (a polling request in flight may hold it up).
const EXIT_GRACE_MS = 3000;

function usageError(message) {
  process.stderr.write(`sio-client.mjs: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function jsonObject(name, text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    usageError(`${name}: not JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    usageError(`${name}: not a JSON object`);
  }
  return value;
}

function parseArguments(argv) {
  const given = {};
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    if (FLAGS.has(name)) {
      given[name] = true;
    } else if (OPTIONS.has(name)) {
      if (i + 1 >= argv.length) usageError(`${name} needs a value`);
      given[name] = argv[++i];
    } else {
      usageError(`unknown argument: ${name}`);
    }
  }
  if (!given["--url"]) usageError("--url is required");
  const transports = (given["--transports"] ?? "websocket").split(",");
  for (const transport of transports) {
    if (!["websocket", "polling", "webtransport"].includes(transport)) {
      usageError(`unknown transport: ${transport}`);
    }
  }
  const timeout = Number(given["--timeout"] ?? 20000);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    usageError("--timeout must be a positive number of milliseconds");
  }
  return {
    url: given["--url"],
    namespace: given["--namespace"] ?? "/",
    path: given["--path"] ?? "/socket.io",
    transports,
    upgrade: !given["--no-upgrade"],
    auth: given["--auth"] ? jsonObject("--auth", given["--auth"]) : undefined,
    query: given["--query"] ? jsonObject("--query", given["--query"]) : undefined,
    extraHeaders: given["--extra-headers"]
      ? jsonObject("--extra-headers", given["--extra-headers"])
      : undefined,
    timeout,
    reconnection: Boolean(given["--reconnection"]),
  };
}

// JSON has no bytes: binary values become {"$binary": base64} and back.
function toJSONable(value) {
  if (Buffer.isBuffer(value)) return { $binary: value.toString("base64") };
  if (value instanceof ArrayBuffer) {
    return { $binary: Buffer.from(value).toString("base64") };
  }
  if (ArrayBuffer.isView(value)) {
    const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return { $binary: bytes.toString("base64") };
  }
  if (Array.isArray(value)) return value.map(toJSONable);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, toJSONable(item)]),
    );
  }
  return value;
}

function fromJSON(value) {
  if (Array.isArray(value)) return value.map(fromJSON);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$binary"
        && typeof value.$binary === "string") {
      return Buffer.from(value.$binary, "base64");
    }
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, fromJSON(item)]),
    );
  }
  return value;
}

// Writes to a pipe are synchronous on Linux: a line is out before the next
// statement, and nothing is lost when the process exits.
function report(message) {
  process.stdout.write(`${JSON.stringify(toJSONable(message))}\n`);
}

// A readable text for the details the client gives with an error: an
// Error, a WebSocket error event, an HTTP status, nested descriptions.
function describe(details) {
  if (details === undefined || details === null) return null;
  if (details instanceof Error) return details.message;
  if (typeof details === "object") {
    if (details.error instanceof Error) return details.error.message;
    if (typeof details.message === "string") return details.message;
    if ("description" in details) return describe(details.description);
  }
  return String(details);
}

const options = parseArguments(process.argv.slice(2));
const manager = new Manager(options.url, {
  path: options.path,
  transports: options.transports,
  upgrade: options.upgrade,
  query: options.query,
  extraHeaders: options.extraHeaders,
  timeout: options.timeout,
  reconnection: options.reconnection,
});
// The raw payload of the server's CONNECT_ERROR packet (type 4). The client
// expects {message, data}; a server that sends something else (a bare string)
// shows here what the error's empty message hides. Registered before the
// socket so that it runs before the socket's own "connect_error".
let connectErrorPayload = null;
manager.on("packet", (packet) => {
  if (packet.type === 4) connectErrorPayload = packet.data ?? null;
});
const socket = manager.socket(options.namespace, { auth: options.auth });
const transportName = () => manager.engine?.transport?.name ?? null;

// The manager emits "open" before the engine probes for an upgrade, and on
// every reconnection with a new engine: listen to each engine from there.
manager.on("open", () => {
  const engine = manager.engine;
  report({ type: "open", transport: transportName() });
  engine.on("upgrade", (transport) => {
    report({ type: "upgrade", transport: transport.name });
  });
  engine.on("upgradeError", (error) => {
    report({ type: "upgrade_error", message: describe(error) });
  });
});
manager.on("reconnect_attempt", (attempt) => {
  report({ type: "reconnect_attempt", attempt });
});
manager.on("reconnect", (attempt) => report({ type: "reconnect", attempt }));
manager.on("reconnect_failed", () => report({ type: "reconnect_failed" }));

socket.on("connect", () => {
  report({ type: "connect", id: socket.id, transport: transportName() });
});
socket.on("connect_error", (error) => {
  report({
    type: "connect_error",
    message: error.message,
    data: error.data ?? null,
    description: describe(error.description),
    payload: connectErrorPayload,
  });
  connectErrorPayload = null;
});
socket.on("disconnect", (reason, details) => {
  report({ type: "disconnect", reason, description: describe(details) });
});
socket.onAny((event, ...args) => report({ type: "event", event, args }));

let closing = false;

function close() {
  if (closing) return;
  closing = true;
  // The socket's "disconnect" line comes first, then "close".
  socket.disconnect();
  report({ type: "close" });
  // Normally nothing is left to wait for and the process ends by itself.
  setTimeout(() => process.exit(0), EXIT_GRACE_MS).unref();
}

const COMMANDS = {
  emit(command) {
    if (typeof command.event !== "string") {
      throw new Error("emit needs an event name");
    }
    const args = fromJSON(command.args ?? []);
    if (!Array.isArray(args)) throw new Error("args must be an array");
    if (command.ack) {
      socket.emit(command.event, ...args, (...answer) => {
        report({ type: "ack", id: command.id ?? null, args: answer });
      });
    } else {
      socket.emit(command.event, ...args);
    }
  },
  disconnect() {
    socket.disconnect();
  },
  connect() {
    socket.connect();
  },
  status(command) {
    report({
      type: "status",
      id: command.id ?? null,
      connected: socket.connected,
      sid: socket.id ?? null,
      transport: transportName(),
    });
  },
  close,
};

function execute(line) {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    report({ type: "error", id: null, message: `not JSON: ${error.message}` });
    return;
  }
  const id = command?.id ?? null;
  const run = Object.hasOwn(COMMANDS, command?.op) ? COMMANDS[command.op] : null;
  if (!run) {
    report({ type: "error", id, message: `unknown op: ${command?.op}` });
    return;
  }
  if (closing) {
    report({ type: "error", id, message: "the client is closing" });
    return;
  }
  try {
    run(command);
  } catch (error) {
    report({ type: "error", id, message: error.message });
  }
}

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", execute);
input.on("close", close);
