// The browser client of oe_web_socketio (ES module; the bundle built by
// `make build` exposes it as the global SocketIO): one Socket.IO namespace
// over the official socket.io-client 4.x, with the Tryton session, the
// channels of the page, and the database bridge's messages delivered
// exactly once, in order, across reconnections.
//
//   const s = new SocketIO("/chat", { session, database });
//   s.on("status", (state, detail) => show(state, detail));
//   s.on("message", (message, channel, position) => show(message));
//   s.on("resync", (info) => reloadEverything());
//   await s.subscribe("room-sales");
//   s.emit("shout", "hi", (answer) => {});   // acknowledgement by callback
//   const answer = await s.emit("shout", "hi"); // or by promise
//   await s.unsubscribe("room-sales");
//   s.disconnect();
//
// What it does:
//
// * `session` is null (anonymous), base64("login:uid:key") as sao builds it,
//   or sao's session object {login, user_id, session, database}; it goes in
//   the Socket.IO `auth` payload with `database`. `setSession(session,
//   database)` replaces it and connects again (after a refusal too).
// * Transports: HTTP long-polling first, then an upgrade to WebSocket when
//   it works; with WebSocket blocked the client stays on polling.
// * Reconnection is socket.io-client's: a delay from `reconnectionDelay`
//   doubling up to `reconnectionDelayMax`, each randomised by
//   ±`randomizationFactor` (jitter), forever.
// * After every connection it emits `resume` (last position, channels):
//   the server replays what the page missed on its channels (and the
//   broadcasts) since the last `position` it saw, then goes live. Bridge
//   messages ("message" with a position) that arrive while the resume is
//   pending are held, then delivered in position order with duplicates
//   dropped; afterwards a message whose position is not newer than the last
//   one is dropped too. Positions are "<epoch>:<n>", compared as numbers
//   within one epoch. An answer {resync: true} (the page was away too long,
//   or the database changed) emits "resync" with that answer: reload.
// * Status ("status" event, `s.status`): "connecting", "connected" (resumed,
//   live), "reconnecting" (the connection was lost or the server cannot be
//   reached; it keeps trying), "refused" (the server said no at connection,
//   or ended the socket because its session ended (logged out, expired):
//   detail is its reason, e.g. an invalid or expired session; no retry until
//   setSession() or connect(), except a refusal because the server is
//   unavailable, retried slowly), "disconnected" (disconnect() was called,
//   or the server ended this socket).
// * emit() sends once connected and resumed, so an event emitted while
//   the connection was down reaches the server after the page's channels
//   are subscribed again; without a callback it returns a promise of the
//   acknowledgement (several arguments: an array); an answer of the
//   server's refusal shape {error: {code, message}} rejects it with a
//   SocketIOError, and so does no answer within ackTimeout ("timeout").

import { Manager } from "socket.io-client";
import { sessionHeader } from "./longpolling.js";

/** Default options of new SocketIO. */
export const DEFAULTS = Object.freeze({
  // Where the server is: "" for the page's own origin.
  url: "",
  // The Engine.IO path (nginx routes /socket.io/ to oe_web_socketio).
  path: "/socket.io",
  // Polling first, then the upgrade to WebSocket.
  transports: ["polling", "websocket"],
  upgrade: true,
  // Backoff of reconnections, in ms, and its jitter (0 to 1).
  reconnectionDelay: 1000,
  reconnectionDelayMax: 15000,
  randomizationFactor: 0.5,
  // Milliseconds a connection attempt may take.
  timeout: 20000,
  // Milliseconds the resume's answer may take before the client connects
  // again.
  resumeTimeout: 30000,
  // Attempts at a resume the server could not serve (its database out of
  // reach) before the page is told to resync.
  resumeAttempts: 5,
  // First delay (ms) before connecting again after the server refused the
  // connection because it was unavailable; doubles up to
  // reconnectionDelayMax * 4.
  refusedRetryDelay: 5000,
  // Milliseconds a promise of emit() waits for its acknowledgement; 0:
  // forever.
  ackTimeout: 0,
  // Channels subscribed by the first resume.
  channels: [],
  // Connect at once.
  autoConnect: true,
});

/** Codes of refusals worth retrying later (see oe_web_socketio.protocol). */
const RETRIED_REFUSALS = new Set(["unavailable", "internal_error"]);

/** Events of the SocketIO itself, not forwarded to the Socket.IO socket. */
const OWN_EVENTS = new Set(["message", "resync", "status"]);

/** The server refused an event: `code` and `message` are its reasons. */
export class SocketIOError extends Error {
  constructor(code, message, data = null) {
    super(message);
    this.name = "SocketIOError";
    this.code = code;
    this.data = data;
  }
}

/** A position "<epoch>:<n>" as {epoch, n}, or null. */
export function parsePosition(token) {
  if (typeof token !== "string") return null;
  const colon = token.lastIndexOf(":");
  if (colon < 0) return null;
  const digits = token.slice(colon + 1);
  if (!/^[0-9]{1,15}$/.test(digits)) return null;
  const n = Number(digits);
  return { epoch: token.slice(0, colon), n };
}

/** Whether position *a* comes after *b* (null: before everything); a
 * position of another epoch counts as newer (the server's outbox is new). */
export function isNewer(a, b) {
  const pa = parsePosition(a);
  const pb = parsePosition(b);
  if (pa === null) return false;
  if (pb === null || pa.epoch !== pb.epoch) return true;
  return pa.n > pb.n;
}

/** The refusal in an acknowledgement, or null. */
function refusal(answer) {
  if (answer && typeof answer === "object" && !Array.isArray(answer)) {
    const error = answer.error;
    if (error && typeof error === "object" && typeof error.code === "string") {
      return new SocketIOError(error.code, String(error.message ?? error.code));
    }
  }
  return null;
}

export class SocketIO {
  /**
   * @param {string} namespace the Socket.IO namespace, e.g. "/chat".
   * @param {object} options {session, database} and the keys of DEFAULTS.
   */
  constructor(namespace = "/", options = {}) {
    const { session = null, database = null, ...rest } = options ?? {};
    this.namespace = namespace;
    this.options = { ...DEFAULTS, ...rest };
    this.session = session;
    this.database = database;
    /** The last bridge position delivered, or null. */
    this.lastPosition = null;
    this.status = "disconnected";
    this.statusDetail = null;
    this._channels = new Set(this.options.channels ?? []);
    this._left = new Set(); // unsubscribed: their messages in flight are dropped
    this._listeners = new Map();
    this._pending = null; // messages held while a resume is pending
    this._resumeAttempt = 0;
    this._resumeTimer = null;
    this._retryTimer = null;
    this._refusedDelay = this.options.refusedRetryDelay;
    this._sessionEnded = null; // {code, message} the server ended the session with
    this._ready = null;
    this._resetReady();
    this.manager = new Manager(this.options.url || undefined, {
      path: this.options.path,
      transports: this.options.transports,
      upgrade: this.options.upgrade,
      reconnection: true,
      reconnectionDelay: this.options.reconnectionDelay,
      reconnectionDelayMax: this.options.reconnectionDelayMax,
      randomizationFactor: this.options.randomizationFactor,
      timeout: this.options.timeout,
      autoConnect: false,
    });
    this.socket = this.manager.socket(namespace, {
      auth: (give) => give(this._auth()),
    });
    this._wire();
    // After the caller's on("status", …) calls, which see "connecting".
    if (this.options.autoConnect) queueMicrotask(() => this.connect());
  }

  // --- public API

  /** Listen to *event*: "message", "resync", "status", or any event the
   * server emits. */
  on(event, listener) {
    if (OWN_EVENTS.has(event)) {
      if (!this._listeners.has(event)) this._listeners.set(event, new Set());
      this._listeners.get(event).add(listener);
    } else {
      this.socket.on(event, listener);
    }
    return this;
  }

  /** Stop listening (every listener of *event* without one). */
  off(event, listener) {
    if (OWN_EVENTS.has(event)) {
      if (listener === undefined) this._listeners.delete(event);
      else this._listeners.get(event)?.delete(listener);
    } else {
      this.socket.off(event, listener);
    }
    return this;
  }

  /** Emit *event* once connected and resumed (so after the page's
   * channels are subscribed again); a last argument that is a function
   * gets the acknowledgement, else the promise returned does. */
  emit(event, ...args) {
    if (args.length && typeof args[args.length - 1] === "function") {
      this._ready.then(() => this.socket.emit(event, ...args));
      return this;
    }
    return this._call(event, args);
  }

  /** Subscribe to *channel* once connected (and resumed): resolves to the
   * server's answer (false if it already was subscribed), rejects with a
   * SocketIOError if refused. The channel is subscribed again by the
   * resume after each reconnection. */
  async subscribe(channel) {
    await this._ready;
    const answer = await this._call("subscribe", [channel]);
    this._channels.add(channel);
    this._left.delete(channel);
    return answer;
  }

  /** Unsubscribe from *channel*; resolves to the server's answer. */
  async unsubscribe(channel) {
    this._channels.delete(channel);
    this._left.add(channel);
    if (!this.socket.connected) return false;
    return this._call("unsubscribe", [channel]);
  }

  /** The channels subscribed to. */
  get channels() {
    return [...this._channels];
  }

  get connected() {
    return this.status === "connected";
  }

  /** The id of the socket while connected. */
  get id() {
    return this.socket.id;
  }

  /** The transport in use: "polling", "websocket" or null. */
  get transport() {
    return this.manager.engine?.transport?.name ?? null;
  }

  /** Connect (again): after disconnect() or a refusal. */
  connect() {
    clearTimeout(this._retryTimer);
    if (this.socket.connected || this.socket.active) return this;
    this._setStatus("connecting", null);
    this.socket.connect();
    return this;
  }

  /** Replace the session (and database) and connect again with it. */
  setSession(session, database = this.database) {
    this.session = session;
    this.database = database;
    this._refusedDelay = this.options.refusedRetryDelay;
    if (this.socket.connected || this.socket.active) this.socket.disconnect();
    return this.connect();
  }

  /** Disconnect for good (connect() connects again). */
  disconnect() {
    clearTimeout(this._retryTimer);
    clearTimeout(this._resumeTimer);
    this._pending = null;
    this.socket.disconnect();
    this._setStatus("disconnected", null);
    return this;
  }

  // --- internals

  _auth() {
    const auth = {};
    const header = sessionHeader(this.session);
    if (header !== null) auth.session = header;
    const database =
      this.database ??
      (this.session && typeof this.session === "object" ? this.session.database : null);
    if (database) auth.database = database;
    return auth;
  }

  // A new promise of the next resume, unless the last one is still
  // pending: its waiters (subscribe, emit) go out after the next resume.
  _resetReady() {
    if (this._ready !== null && !this._isReady) return;
    this._isReady = false;
    this._ready = new Promise((resolve) => {
      this._resolveReady = () => {
        this._isReady = true;
        resolve();
      };
    });
  }

  _fire(event, ...args) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`SocketIO ${this.namespace}: a "${event}" listener failed:`, error);
      }
    }
  }

  _setStatus(state, detail, data = null) {
    if (state === this.status && detail === this.statusDetail) return;
    this.status = state;
    this.statusDetail = detail;
    this._fire("status", state, detail, data);
  }

  // Emit once resumed; the promise of the answer. The ack timeout counts
  // from the call: an event still waiting for the connection then is
  // never sent.
  _call(event, args) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer = null;
      const settle = (fn, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn(value);
      };
      if (this.options.ackTimeout > 0) {
        timer = setTimeout(
          () => settle(reject, new SocketIOError("timeout", `no answer to ${event}`)),
          this.options.ackTimeout,
        );
      }
      this._ready.then(() => {
        if (settled) return;
        this.socket.emit(event, ...args, (...answer) => {
          const value = answer.length <= 1 ? answer[0] : answer;
          const error = refusal(value);
          if (error) settle(reject, error);
          else settle(resolve, value);
        });
      });
    });
  }

  _wire() {
    const socket = this.socket;
    socket.on("connect", () => {
      this._sessionEnded = null;
      this._refusedDelay = this.options.refusedRetryDelay;
      this._resumeAttempt = 0;
      this._resume();
    });
    socket.on("disconnect", (reason) => {
      clearTimeout(this._resumeTimer);
      this._pending = null;
      this._resetReady();
      if (reason === "io client disconnect") {
        this._setStatus("disconnected", null);
      } else if (reason === "io server disconnect" && this._sessionEnded) {
        // The session ended while connected (logged out, expired): as a
        // refusal at connection, nothing is tried until setSession().
        const ended = this._sessionEnded;
        this._setStatus("refused", ended.message, {code: ended.code});
      } else if (reason === "io server disconnect") {
        this._setStatus("disconnected", "the server ended the connection");
      } else {
        this._setStatus("reconnecting", reason);
      }
    });
    socket.on("connect_error", (error) => {
      if (socket.active) {
        // The server cannot be reached: socket.io-client tries again.
        this._setStatus("reconnecting", error.message);
        return;
      }
      // The server refused this namespace: do not ask again as is.
      const data = error.data ?? null;
      this._setStatus("refused", error.message, data);
      if (data && RETRIED_REFUSALS.has(data.code)) {
        const delay = this._refusedDelay * (1 + this.options.randomizationFactor * (Math.random() * 2 - 1));
        this._refusedDelay = Math.min(this._refusedDelay * 2, this.options.reconnectionDelayMax * 4);
        clearTimeout(this._retryTimer);
        this._retryTimer = setTimeout(() => this.connect(), delay);
      }
    });
    this.manager.on("reconnect_attempt", (attempt) => {
      if (this.status !== "reconnecting") this._setStatus("reconnecting", `attempt ${attempt}`);
    });
    socket.on("message", (...args) => this._onMessage(args));
    // The server tells a socket whose session ended, then disconnects it.
    socket.on("error", (payload) => {
      const error = payload && payload.error;
      if (error && error.code === "authentication_failed") this._sessionEnded = error;
    });
  }

  _resume() {
    if (this._pending === null) this._pending = [];
    const channels = [...this._channels];
    clearTimeout(this._resumeTimer);
    this._resumeTimer = setTimeout(() => {
      // No answer: start over on a new connection.
      this.manager.engine?.close();
    }, this.options.resumeTimeout);
    const sent = this.socket;
    sent.emit("resume", this.lastPosition, channels, (answer) => {
      clearTimeout(this._resumeTimer);
      if (!sent.connected || this._pending === null) return; // disconnected since
      this._resumed(answer);
    });
  }

  _resumed(answer) {
    const error = refusal(answer);
    if (error !== null) {
      this._resumeAttempt += 1;
      if (this.lastPosition !== null && error.code === "unavailable"
          && this._resumeAttempt < this.options.resumeAttempts) {
        // Keep holding the messages; ask again a little later.
        const delay = this.options.reconnectionDelay * 2 ** this._resumeAttempt;
        this._resumeTimer = setTimeout(() => {
          if (this.socket.connected) this._resume();
        }, delay);
        return;
      }
      const held = this._pending;
      this._pending = null;
      if (this.lastPosition !== null) {
        this._fire("resync", { resync: true, reason: error.message, position: null });
      }
      this._flush(held);
    } else if (answer && answer.resync) {
      const held = this._pending;
      this._pending = null;
      this.lastPosition = answer.position ?? null;
      this._fire("resync", answer);
      this._flush(held);
    } else {
      const held = this._pending;
      this._pending = null;
      this._flush(held);
      if (answer && isNewer(answer.position, this.lastPosition)) {
        this.lastPosition = answer.position;
      }
    }
    this._setStatus("connected", this.transport);
    this._resolveReady();
  }

  // Deliver held messages: by position (one epoch), none twice.
  _flush(held) {
    const epochs = new Set(held.map(([, , position]) => parsePosition(position)?.epoch));
    if (epochs.size === 1) {
      held.sort((a, b) => parsePosition(a[2]).n - parsePosition(b[2]).n);
    }
    for (const args of held) this._deliver(args);
  }

  _onMessage(args) {
    const position = args.length >= 3 ? args[2] : undefined;
    if (parsePosition(position) === null) {
      // Not from the bridge: the namespace's own send(), live only.
      this._fire("message", ...args);
      return;
    }
    if (this._pending !== null) {
      this._pending.push(args);
      return;
    }
    this._deliver(args);
  }

  _deliver(args) {
    const [message, channel, position] = args;
    if (!isNewer(position, this.lastPosition)) return; // seen already
    this.lastPosition = position;
    if (channel !== null && channel !== undefined && this._left.has(channel)) return;
    this._fire("message", message, channel, position);
  }
}

/** The key of the page's shared socket on globalThis (one per page even
 * when the bundle is loaded twice). */
const SHARED = Symbol.for("oe_web_socketio.longpolling_socket");

/**
 * The page's one shared SocketIO of the long-polling namespace
 * (longpolling_socket.namespace, "/": the server's base namespace, with
 * channels and the bridge's messages). The first call creates it with
 * *options*; a later call with another session sets it.
 */
export function longpolling_socket(options = {}) {
  let shared = globalThis[SHARED];
  if (shared === undefined) {
    shared = new SocketIO(longpolling_socket.namespace, options);
    globalThis[SHARED] = shared;
  } else if (options.session !== undefined && options.session !== shared.session) {
    shared.setSession(options.session, options.database ?? shared.database);
  }
  return shared;
}

/** The namespace of longpolling_socket(). */
longpolling_socket.namespace = "/";
