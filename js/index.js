// The entry of the browser bundle (`make build`: esbuild, IIFE, into the
// egg's static/oe_web_socketio.js, served at /oe_web_socketio/oe_web_socketio.js):
// the globals SocketIO, longpolling_socket and start_longpolling for pages
// that include it with a plain <script> tag, and the same names as exports
// of the global oe_web_socketio.

import { longpolling_socket, SocketIO, SocketIOError } from "./socketio.js";
import { LongPolling, LongPollingError, start_longpolling } from "./longpolling.js";

Object.assign(globalThis, { SocketIO, longpolling_socket, start_longpolling });

export {
  LongPolling,
  LongPollingError,
  longpolling_socket,
  SocketIO,
  SocketIOError,
  start_longpolling,
};
