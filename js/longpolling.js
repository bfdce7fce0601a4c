// The long-polling client of oe_web_socketio (ES module): polls a route of
// oe_web_socketio.longpolling again and again, for a browser page or for
// Node.js (18 and later: it needs the global fetch).
//
//   import { start_longpolling } from "./longpolling.js";
//
//   const poller = start_longpolling(
//     session,                      // null, or a Tryton session (below)
//     "/example/tick",              // the route, under /longpolling
//     {},                           // its parameters (a JSON object)
//     (data) => show(data.tick),    // each answer; may return a promise
//     (error) => console.warn(error.status, error.message),
//   );
//   ...
//   poller.stop();
//
// What it does, one poll after the other (never two at once):
//
// * each poll is a POST of the parameters as JSON, with the session in an
//   `Authorization: Session base64(login:uid:key)` header, as Tryton's web
//   client sends it, and the database in `X-Tryton-Database`;
// * 200: `success(data, response)` gets the answer (parsed when it is JSON,
//   else its text); when it returns a promise, the next poll waits for it;
// * 204 (the server waited for news in vain): polls again at once;
// * 503, another 5xx, 429, a network error or no answer within `timeout`:
//   `error(err)` is called, then it polls again after `Retry-After` seconds
//   if the server said so, else after a delay that doubles from `minDelay`
//   to `maxDelay` (reset by the next answer);
// * any other status (400, 401, 403, 404, 405, 413, 415…): asking again
//   cannot help: `error(err)` is called and polling stops.
//
// `error` (and `success`, when it throws) get a LongPollingError with
// `status` (0 for no answer), `body` (the server's JSON, when it sent some)
// and `retryAfter` (seconds, or null). A promise returned by `error` is
// waited for too.
//
// The session is null (anonymous), the string after "Session " of the
// Authorization header, or an object such as Tryton's web client (sao)
// keeps: {login, user_id, session, database} (`uid` and `key` are accepted
// for `user_id` and `session`).

/** The prefix of the routes: the server's `longpolling_path`. */
export const DEFAULT_PREFIX = "/longpolling";

/** Default options of start_longpolling. */
export const DEFAULTS = Object.freeze({
  // Where the server is: "" for the page's own origin (a browser), an
  // origin such as "http://127.0.0.1:8080" otherwise.
  url: "",
  prefix: DEFAULT_PREFIX,
  // Milliseconds a poll may take before it is given up; above the server's
  // longpolling_timeout (60 s by default) and below the proxy's.
  timeout: 90000,
  // First and longest delay before polling again after an error, in ms.
  minDelay: 1000,
  maxDelay: 30000,
  // The fetch function (tests wrap it); the global one by default.
  fetch: null,
});

/** An answer that was not news, or no answer at all. */
export class LongPollingError extends Error {
  constructor(message, { status = 0, body = null, retryAfter = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "LongPollingError";
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** The value after "Session " of the Authorization header, or null. */
export function sessionHeader(session) {
  if (session === null || session === undefined) return null;
  if (typeof session === "string") return session;
  const uid = session.user_id ?? session.uid;
  const key = session.session ?? session.key;
  if (session.login === undefined || uid === undefined || key === undefined) {
    throw new TypeError("a session needs login, user_id (or uid) and session (or key)");
  }
  const bytes = new TextEncoder().encode(`${session.login}:${uid}:${key}`);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Start polling; returns the LongPolling, whose stop() ends it. */
export function start_longpolling(session, path, params, success, error, options = {}) {
  const poller = new LongPolling({ ...options, session, path, params, success, error });
  poller.start();
  return poller;
}

export class LongPolling {
  constructor({ session = null, path, params = {}, success, error, ...options }) {
    this.options = { ...DEFAULTS, ...options };
    this.session = session;
    this.params = params ?? {};
    this.success = success ?? (() => {});
    this.error = error ?? ((err) => console.error("long polling:", err));
    const route = path.startsWith("/") ? path : `/${path}`;
    this.url = this.options.url + this.options.prefix + route;
    this.running = false;
    // Resolved when polling has stopped.
    this.done = new Promise((resolve) => {
      this._resolveDone = resolve;
    });
    this._abort = null;
    this._wake = null;
  }

  start() {
    if (this.running) return this;
    this.running = true;
    this._loop().finally(() => {
      this.running = false;
      this._resolveDone();
    });
    return this;
  }

  /** Stop polling: the poll in flight is aborted, no callback follows. */
  stop() {
    this.running = false;
    if (this._abort) this._abort.abort();
    if (this._wake) this._wake();
    return this.done;
  }

  async _loop() {
    let delay = this.options.minDelay;
    while (this.running) {
      let outcome;
      try {
        outcome = await this._poll();
      } catch (err) {
        if (!this.running) return;
        outcome = { error: err };
      }
      if (!this.running) return;
      if (outcome.news) {
        delay = this.options.minDelay;
        try {
          await this.success(outcome.data, outcome.response);
        } catch (err) {
          await this._report(new LongPollingError(`success failed: ${err}`, { cause: err }));
        }
        continue;
      }
      if (outcome.nothing) {
        delay = this.options.minDelay;
        continue;
      }
      const err = outcome.error;
      await this._report(err);
      if (!this.running) return;
      if (err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
        return; // the request itself is wrong: asking again cannot help
      }
      const wait = err.retryAfter !== null ? err.retryAfter * 1000 : delay;
      delay = Math.min(delay * 2, this.options.maxDelay);
      await this._sleep(wait);
    }
  }

  async _report(err) {
    try {
      await this.error(err);
    } catch (failure) {
      console.error("long polling: the error callback failed:", failure);
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this._wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this._wake = null;
    });
  }

  _headers() {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const value = sessionHeader(this.session);
    if (value !== null) headers.Authorization = `Session ${value}`;
    if (this.session && typeof this.session === "object" && this.session.database) {
      headers["X-Tryton-Database"] = this.session.database;
    }
    return headers;
  }

  // One poll: {news, data, response}, {nothing}, or {error}.
  async _poll() {
    const fetchFunction = this.options.fetch ?? globalThis.fetch;
    const abort = new AbortController();
    this._abort = abort;
    const timer = setTimeout(() => abort.abort(), this.options.timeout);
    let response;
    let text;
    try {
      response = await fetchFunction(this.url, {
        method: "POST",
        headers: this._headers(),
        body: JSON.stringify(this.params),
        cache: "no-store",
        credentials: "same-origin",
        signal: abort.signal,
      });
      text = await response.text();
    } catch (err) {
      return {
        error: new LongPollingError(`no answer: ${err.message ?? err}`, { cause: err }),
      };
    } finally {
      clearTimeout(timer);
      this._abort = null;
    }
    const isJSON = (response.headers.get("Content-Type") ?? "").includes("json");
    let body = text;
    if (isJSON && text) {
      try {
        body = JSON.parse(text);
      } catch (err) {
        return {
          error: new LongPollingError(`malformed JSON answer: ${err.message}`, {
            status: response.status,
          }),
        };
      }
    }
    if (response.status === 204) return { nothing: true };
    if (response.status >= 200 && response.status < 300) {
      return { news: true, data: body, response };
    }
    const seconds = Number.parseFloat(response.headers.get("Retry-After") ?? "");
    const message = body && typeof body === "object" && body.error ? body.error : `HTTP ${response.status}`;
    return {
      error: new LongPollingError(message, {
        status: response.status,
        body,
        retryAfter: Number.isFinite(seconds) && seconds >= 0 ? seconds : null,
      }),
    };
  }
}
