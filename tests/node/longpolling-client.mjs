// Drives js/longpolling.js for the tests: polls one route and reports what
// happens as JSON lines on stdout, then exits. tests/test_longpolling.py
// runs it.
//
//   node tests/node/longpolling-client.mjs '<JSON config>'
//
// The config: {url, path, params, session, options, stopAfter,
// successDelayMs}. `options` go to start_longpolling (minDelay…);
// `stopAfter` {successes, fetches, errors}: stop once one count is reached;
// `successDelayMs`: success returns a promise resolved that much later.
//
// Output: {"type": "fetch", "n": N} as each poll starts, {"type":
// "success", "n": N, "data": D}, {"type": "success-done", "n": N} when
// success's promise resolves, {"type": "error", "status": S, "message": M,
// "retryAfter": R, "body": B}, and {"type": "stopped"} last. Exit status 0,
// 2 on bad usage.

import { start_longpolling } from "../../js/longpolling.js";

function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

let config;
try {
  config = JSON.parse(process.argv[2]);
} catch (error) {
  process.stderr.write(`longpolling-client.mjs: the config is not JSON: ${error.message}\n`);
  process.exit(2);
}
const stopAfter = config.stopAfter ?? {};
const counts = { fetches: 0, successes: 0, errors: 0 };
let poller;

function maybeStop() {
  for (const [name, limit] of Object.entries(stopAfter)) {
    if (counts[name] >= limit) {
      poller.stop();
      return true;
    }
  }
  return false;
}

// Counts polls; past stopAfter.fetches, stops instead of polling.
async function countingFetch(url, init) {
  if (stopAfter.fetches !== undefined && counts.fetches >= stopAfter.fetches) {
    poller?.stop();
    throw new Error("stopped by the test");
  }
  counts.fetches += 1;
  emit({ type: "fetch", n: counts.fetches });
  return fetch(url, init);
}

function success(data) {
  counts.successes += 1;
  const n = counts.successes;
  emit({ type: "success", n, data });
  if (maybeStop() || !config.successDelayMs) return undefined;
  return new Promise((resolve) => {
    setTimeout(() => {
      emit({ type: "success-done", n });
      resolve();
    }, config.successDelayMs);
  });
}

function error(err) {
  counts.errors += 1;
  emit({
    type: "error",
    status: err.status,
    message: err.message,
    retryAfter: err.retryAfter,
    body: err.body,
  });
  maybeStop();
}

poller = start_longpolling(
  config.session ?? null,
  config.path,
  config.params ?? {},
  success,
  error,
  { ...(config.options ?? {}), url: config.url, fetch: countingFetch },
);
await poller.done;
emit({ type: "stopped" });
