// The oe.web.socketio demo page: log in to Tryton (JSON-RPC), then one
// SocketIO of the namespace /demo (the bundle /oe_web_socketio/oe_web_socketio.js)
// for who is online, chat rooms and the live list of parties.
//
// The session lives in this tab's sessionStorage: a reload keeps it, a new
// tab asks again; so do the rooms joined and the one shown. A room shows
// its last lines when joined (the "history" event), then what is said
// live; lines carry their position, so none shows twice. What the page tells the user sits in one banner:
// a wrong login, an expired session (back to the login form), the
// real-time server out of reach (cleared by itself once it is back).
//
// window.demo exposes the state for the tests (tests/test_demo.py).
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const NAMESPACE = "/demo";
  const ROOM_PREFIX = "demo.room.";
  const PARTIES = "demo.parties";
  const ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
  const STORAGE_KEY = "oe_web_socketio_demo";
  const ROOMS_KEY = "oe_web_socketio_demo.rooms";
  // Milliseconds a lost connection may last before the banner says so
  // (a transport switch is not worth a message).
  const REACH_GRACE = 1000;
  const MAX_LINES = 200;
  // Milliseconds an emit waits for its answer (the connection included).
  const ACK_TIMEOUT = 15000;

  const MESSAGES = {
    wrongLogin: "Wrong login or password",
    expired: "Your session has expired — please log in again",
    unreachable: "Real-time server unreachable — reconnecting…",
    unavailable: "The real-time server cannot reach the database — retrying…",
    trytonDown: "The Tryton server cannot be reached — try again in a moment",
    tooMany: "Too many login attempts — wait a minute and try again",
    notSent: "Not sent: the real-time server is unreachable",
    noBundle: "The real-time client did not load (/oe_web_socketio/oe_web_socketio.js) — is the appliance built?",
  };

  const state = {
    database: null,
    session: null, // {login, uid, key, database, header}
    socket: null,
    online: [],
    rooms: new Map(), // name -> {lines: [], unread: 0, positions: Set}
    room: "general",
    parties: new Map(), // id -> {id, name, code}
    banner: null,
    reachTimer: null,
  };
  window.demo = state;

  // --- the banner

  function showBanner(kind, text, source) {
    const banner = $("#banner");
    banner.textContent = text;
    banner.dataset.kind = kind;
    banner.dataset.source = source;
    banner.hidden = false;
    state.banner = source;
  }

  function clearBanner(source) {
    if (source !== undefined && state.banner !== source) return;
    const banner = $("#banner");
    banner.hidden = true;
    banner.textContent = "";
    delete banner.dataset.source;
    state.banner = null;
  }

  // --- JSON-RPC to trytond

  class RpcError extends Error {
    constructor(kind, message) {
      super(message);
      this.kind = kind; // "login", "session", "network", "tryton", "limit"
    }
  }

  let rpcId = 0;
  async function rpc(method, params, { session = state.session, database = state.database } = {}) {
    const headers = { "Content-Type": "application/json" };
    if (session) headers.Authorization = `Session ${session.header}`;
    let response;
    try {
      response = await fetch(`/${encodeURIComponent(database)}/rpc/`, {
        method: "POST",
        headers,
        body: JSON.stringify({ id: ++rpcId, method, params }),
      });
    } catch (error) {
      throw new RpcError("network", MESSAGES.trytonDown);
    }
    if (response.status === 401 || response.status === 403) {
      throw new RpcError(session ? "session" : "login", session ? MESSAGES.expired : MESSAGES.wrongLogin);
    }
    if (response.status === 429) throw new RpcError("limit", MESSAGES.tooMany);
    if (!response.ok) throw new RpcError("network", MESSAGES.trytonDown);
    const answer = await response.json();
    if (answer.error) {
      const [name, args] = answer.error;
      if (name === "LoginException") throw new RpcError("login", MESSAGES.wrongLogin);
      const detail = Array.isArray(args) ? args[0] : args;
      throw new RpcError("tryton", typeof detail === "string" ? detail : String(name));
    }
    return answer.result;
  }

  // --- login, logout, expiry

  function saveSession(session) {
    if (session) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(STORAGE_KEY);
  }

  function loadSession() {
    try {
      const session = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
      if (session && session.header && session.database) return session;
    } catch (error) {
      // Ignored: ask for a login.
    }
    return null;
  }

  async function logIn(event) {
    event.preventDefault();
    const login = $("#login").value.trim();
    const password = $("#password").value;
    const database = $("#database").value.trim();
    if (!login || !password || !database) {
      showBanner("error", "Enter a login, a password and a database", "login");
      return;
    }
    const button = $("#login-button");
    button.disabled = true;
    button.textContent = "Logging in…";
    try {
      const [uid, key] = await rpc("common.db.login", [login, { password }, "en"], {
        session: null,
        database,
      });
      const header = btoa(unescape(encodeURIComponent(`${login}:${uid}:${key}`)));
      $("#password").value = "";
      clearBanner();
      start({ login, uid, key, database, header });
    } catch (error) {
      showBanner("error", error instanceof RpcError ? error.message : MESSAGES.trytonDown, "login");
      $("#password").select();
    } finally {
      button.disabled = false;
      button.textContent = "Log in";
    }
  }

  async function logOut() {
    const session = state.session;
    stop();
    showLogin();
    if (session) {
      try {
        await rpc("common.db.logout", [], { session, database: session.database });
      } catch (error) {
        // The session is gone anyway.
      }
    }
  }

  function expire() {
    stop();
    showLogin();
    showBanner("error", MESSAGES.expired, "session");
  }

  function stop() {
    if (state.socket) state.socket.disconnect();
    state.socket = null;
    state.session = null;
    clearTimeout(state.reachTimer);
    saveSession(null);
    sessionStorage.removeItem(ROOMS_KEY);
  }

  // The rooms joined and the one shown, for a reload of this tab.
  function saveRooms() {
    sessionStorage.setItem(ROOMS_KEY, JSON.stringify({ rooms: [...state.rooms.keys()], room: state.room }));
  }

  function loadRooms() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(ROOMS_KEY) ?? "null");
      const rooms = (saved?.rooms ?? []).filter((name) => typeof name === "string" && ROOM_NAME.test(name));
      if (rooms.length) return { rooms, room: rooms.includes(saved.room) ? saved.room : rooms[0] };
    } catch (error) {
      // Ignored: the general room.
    }
    return { rooms: ["general"], room: "general" };
  }

  function showLogin() {
    $("#app-view").hidden = true;
    $("#account").hidden = true;
    $("#login-view").hidden = false;
    $("#database").value = state.database ?? "";
    $("#login").focus();
  }

  // --- the real-time connection

  function start(session) {
    if (typeof window.SocketIO !== "function") {
      showBanner("error", MESSAGES.noBundle, "bundle");
      return;
    }
    state.session = session;
    state.database = session.database;
    saveSession(session);
    state.online = [];
    const saved = loadRooms();
    state.rooms = new Map();
    for (const name of saved.rooms) room(name);
    state.room = saved.room;
    state.parties = new Map();
    $("#login-view").hidden = true;
    $("#app-view").hidden = false;
    $("#account").hidden = false;
    $("#me-name").textContent = session.login;
    renderOnline();
    renderRooms();
    renderMessages();
    renderParties(new Set());

    const socket = new SocketIO(NAMESPACE, {
      session: session.header,
      database: session.database,
      // A chat line or a list waits this long for the connection to come
      // back and the server to answer, then the page says so.
      ackTimeout: ACK_TIMEOUT,
    });
    state.socket = socket;
    socket.on("status", (status, detail, data) => onStatus(socket, status, detail, data));
    socket.on("online", (users) => {
      if (socket === state.socket) setOnline(users);
    });
    socket.on("message", (message, channel, position) => {
      if (socket === state.socket) onMessage(message, channel, position);
    });
    socket.on("resync", () => {
      if (socket !== state.socket) return;
      // What was missed is no longer all kept: show each room's last lines.
      for (const name of state.rooms.keys()) loadHistory(name, true);
      systemLine(state.room, "Back after a long time away: the rooms and the party list were reloaded.");
      loadParties();
    });
    socket.on("error", (error) => console.warn("demo: the server said", error));
    // Subscriptions wait for the connection; the client renews them after
    // every reconnection.
    socket
      .subscribe(PARTIES)
      .then(loadParties)
      .catch((error) => partyError(error.message));
    for (const name of saved.rooms) {
      socket
        .subscribe(ROOM_PREFIX + name)
        .then(() => loadHistory(name))
        .catch((error) => joinError(error.message));
    }
  }

  function onStatus(socket, status, detail, data) {
    if (socket !== state.socket) return;
    const chip = $("#connection");
    chip.dataset.state = status;
    // What the panels show may be stale while the connection is down.
    $("#app-view").dataset.live = String(status === "connected");
    chip.textContent = chipText(status);
    clearTimeout(state.reachTimer);
    if (status === "connected") {
      clearBanner("realtime");
      // A line that could not be sent for want of a connection may be
      // sent again now.
      if ($("#say-error").textContent === MESSAGES.notSent) sayError(null);
      socket.emit("who").then(setOnline, () => {});
    } else if (status === "reconnecting") {
      state.reachTimer = setTimeout(() => {
        if (state.socket === socket && socket.status !== "connected") {
          showBanner("warn", MESSAGES.unreachable, "realtime");
        }
      }, REACH_GRACE);
    } else if (status === "refused") {
      // The refusal's code (the third argument), else its reason.
      const code = (data && data.code) || (/session|authenticat/i.test(detail ?? "") ? "authentication_failed" : null);
      if (code === "authentication_failed") expire();
      else showBanner("warn", code === "unavailable" ? MESSAGES.unavailable : MESSAGES.unreachable, "realtime");
    }
  }

  function chipText(status) {
    if (status === "connected") {
      const transport = state.socket && state.socket.transport;
      return transport === "websocket" ? "live · WebSocket" : "live · polling";
    }
    return { connecting: "connecting…", reconnecting: "reconnecting…", refused: "offline" }[status] ?? status;
  }

  // The transport may upgrade after the connection: keep the chip true.
  setInterval(() => {
    if (state.socket && state.socket.status === "connected") {
      $("#connection").textContent = chipText("connected");
    }
  }, 2000);

  function onMessage(message, channel, position) {
    if (channel === PARTIES) onPartyChange(message);
    else if (typeof channel === "string" && channel.startsWith(ROOM_PREFIX)) {
      addLine(channel.slice(ROOM_PREFIX.length), message, position);
    }
  }

  // --- who is online

  function setOnline(users) {
    if (!Array.isArray(users)) return;
    state.online = users;
    const me = state.session && users.find((user) => user.uid === state.session.uid);
    if (me) $("#me-name").textContent = me.name;
    renderOnline();
  }

  function renderOnline() {
    const list = $("#online");
    list.replaceChildren(
      ...state.online.map((user) => {
        const item = document.createElement("li");
        item.className = "person";
        item.dataset.uid = user.uid;
        item.dataset.login = user.login;
        const text = document.createElement("div");
        const name = document.createElement("div");
        name.className = "name";
        name.textContent = user.name;
        if (state.session && user.uid === state.session.uid) {
          const you = document.createElement("span");
          you.className = "you";
          you.textContent = "you";
          name.append(you);
        }
        const login = document.createElement("div");
        login.className = "person-login";
        login.textContent = user.login;
        text.append(name, login);
        item.append(avatar(user), text);
        return item;
      }),
    );
    $("#online-count").textContent = state.online.length;
  }

  function avatar(user) {
    const element = document.createElement("span");
    element.className = "avatar";
    const words = String(user.name || user.login || "?").trim().split(/\s+/);
    element.textContent = (words[0][0] + (words.length > 1 ? words[words.length - 1][0] : "")).toUpperCase();
    element.style.background = `hsl(${(Number(user.uid) * 67) % 360} 55% 48%)`;
    element.setAttribute("aria-hidden", "true");
    return element;
  }

  // --- chat

  function room(name) {
    if (!state.rooms.has(name)) state.rooms.set(name, { lines: [], unread: 0, positions: new Set() });
    return state.rooms.get(name);
  }

  // The number of a position "<epoch>:<n>", to order lines by.
  function positionNumber(position) {
    const n = Number(String(position ?? "").split(":").pop());
    return Number.isFinite(n) ? n : Infinity;
  }

  function addLine(name, line, position) {
    const target = room(name);
    if (position !== undefined && position !== null) {
      if (target.positions.has(position)) return; // shown already (history)
      target.positions.add(position);
    }
    target.lines.push({ ...line, position });
    if (target.lines.length > MAX_LINES) target.lines.shift();
    if (name === state.room) renderMessages();
    else {
      target.unread += 1;
      renderRooms();
    }
  }

  function systemLine(name, text) {
    addLine(name, { type: "system", text });
  }

  // The room's last lines, before those that came live since it was
  // joined; *replace*: instead of what it shows (after a resync).
  async function loadHistory(name, replace = false) {
    if (!state.socket) return;
    let answer;
    try {
      answer = await state.socket.emit("history", name);
    } catch (error) {
      console.warn("demo: no history of", name, error);
      return;
    }
    if (!state.rooms.has(name)) return; // left meanwhile
    const target = room(name);
    if (replace) {
      target.lines = [];
      target.positions = new Set();
    }
    const older = [];
    for (const { line, position } of answer.lines ?? []) {
      if (target.positions.has(position)) continue;
      target.positions.add(position);
      older.push({ ...line, position });
    }
    // Stable: lines without a position (the page's own) keep their place.
    target.lines = [...older, ...target.lines]
      .map((line, index) => [line, index])
      .sort(([a, i], [b, j]) => positionNumber(a.position) - positionNumber(b.position) || i - j)
      .map(([line]) => line)
      .slice(-MAX_LINES);
    if (name === state.room) renderMessages();
  }

  function renderRooms() {
    const tabs = $("#rooms");
    tabs.replaceChildren(
      ...[...state.rooms.entries()].map(([name, data]) => {
        const tab = document.createElement("span");
        tab.className = "tab";
        tab.dataset.room = name;
        tab.setAttribute("role", "tab");
        tab.setAttribute("aria-selected", String(name === state.room));
        const label = document.createElement("button");
        label.type = "button";
        label.className = "link";
        label.textContent = `# ${name}`;
        label.addEventListener("click", () => selectRoom(name));
        tab.append(label);
        if (data.unread) {
          const unread = document.createElement("span");
          unread.className = "unread";
          unread.textContent = data.unread;
          tab.append(unread);
        }
        if (state.rooms.size > 1) {
          const close = document.createElement("button");
          close.type = "button";
          close.className = "close";
          close.title = `Leave #${name}`;
          close.textContent = "×";
          close.addEventListener("click", () => leaveRoom(name));
          tab.append(close);
        }
        return tab;
      }),
    );
    $("#say").placeholder = `Say something in #${state.room}…`;
  }

  function selectRoom(name) {
    state.room = name;
    saveRooms();
    room(name).unread = 0;
    renderRooms();
    renderMessages();
    $("#say").focus();
  }

  function renderMessages() {
    const list = $("#messages");
    const lines = room(state.room).lines;
    if (!lines.length) {
      const empty = document.createElement("li");
      empty.className = "line system";
      empty.textContent = `#${state.room} is quiet. Say hello!`;
      list.replaceChildren(empty);
      return;
    }
    list.replaceChildren(...lines.map(renderLine));
    list.scrollTop = list.scrollHeight;
  }

  function renderLine(line) {
    const item = document.createElement("li");
    if (line.type === "system") {
      item.className = "line system";
      item.textContent = line.text;
      return item;
    }
    item.className = "line";
    if (state.session && line.uid === state.session.uid) item.classList.add("mine");
    item.dataset.login = line.login;
    const body = document.createElement("div");
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("b");
    who.textContent = line.name || line.login;
    const when = document.createElement("time");
    when.dateTime = line.at;
    when.textContent = formatTime(line.at);
    meta.append(who, when);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = line.text;
    body.append(meta, text);
    item.append(avatar(line), body);
    return item;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  async function joinRoom(event) {
    event.preventDefault();
    const input = $("#room-name");
    const name = input.value.trim().toLowerCase();
    if (!ROOM_NAME.test(name)) {
      joinError("A room name is 1 to 32 characters: a-z, 0-9, _ and -");
      return;
    }
    joinError(null);
    try {
      await state.socket.subscribe(ROOM_PREFIX + name);
      room(name);
      input.value = "";
      selectRoom(name);
      loadHistory(name);
    } catch (error) {
      joinError(error.message);
    }
  }

  async function leaveRoom(name) {
    if (state.rooms.size <= 1) return;
    state.rooms.delete(name);
    if (state.room === name) state.room = state.rooms.keys().next().value;
    saveRooms();
    renderRooms();
    renderMessages();
    try {
      await state.socket.unsubscribe(ROOM_PREFIX + name);
    } catch (error) {
      console.warn("demo: leaving", name, error);
    }
  }

  async function say(event) {
    event.preventDefault();
    const input = $("#say");
    const text = input.value.trim();
    if (!text || !state.socket) return;
    sayError(null);
    try {
      // Sent once the connection is back and the rooms joined again.
      await state.socket.emit("say", state.room, text);
      input.value = "";
    } catch (error) {
      // The server's own reason (forbidden, too long…); no answer at all
      // means the server could not be reached.
      sayError(error.code === "timeout" ? MESSAGES.notSent : error.message);
    }
  }

  function fieldError(selector, text) {
    const element = $(selector);
    element.textContent = text ?? "";
    element.hidden = !text;
  }
  const joinError = (text) => fieldError("#join-error", text);
  const sayError = (text) => fieldError("#say-error", text);
  const partyError = (text) => fieldError("#party-error", text);

  // --- parties

  async function loadParties() {
    if (!state.socket) return;
    try {
      const answer = await state.socket.emit("parties");
      state.parties = new Map(answer.parties.map((party) => [party.id, party]));
      partyError(null);
      renderParties(new Set());
    } catch (error) {
      partyError(error.message);
    }
  }

  function onPartyChange(change) {
    if (!change || typeof change !== "object") return;
    const changed = new Set();
    if (change.action === "reload") {
      loadParties();
      return;
    }
    if (change.action === "delete") {
      for (const id of change.ids ?? []) state.parties.delete(id);
    } else {
      for (const party of change.parties ?? []) {
        if (party.active === false) state.parties.delete(party.id);
        else {
          state.parties.set(party.id, party);
          changed.add(party.id);
        }
      }
    }
    renderParties(changed);
  }

  function renderParties(changed) {
    const rows = [...state.parties.values()].sort(
      (a, b) => String(a.name).localeCompare(String(b.name)) || a.id - b.id,
    );
    $("#parties tbody").replaceChildren(
      ...rows.map((party) => {
        const row = document.createElement("tr");
        row.dataset.id = party.id;
        if (changed.has(party.id)) row.className = "changed";
        const name = document.createElement("td");
        name.className = "name";
        name.textContent = party.name;
        const code = document.createElement("td");
        code.className = "code";
        code.textContent = party.code ?? "";
        row.append(name, code);
        return row;
      }),
    );
    $("#party-count").textContent = rows.length;
    $("#no-parties").hidden = rows.length > 0;
  }

  async function addParty(event) {
    event.preventDefault();
    const input = $("#party-name");
    const name = input.value.trim();
    if (!name) return;
    partyError(null);
    try {
      await rpc("model.party.party.create", [[{ name }], {}]);
      input.value = "";
    } catch (error) {
      if (error.kind === "session") expire();
      else partyError(error.message);
    }
  }

  // --- start

  async function init() {
    $("#login-form").addEventListener("submit", logIn);
    $("#logout").addEventListener("click", logOut);
    $("#join-form").addEventListener("submit", joinRoom);
    $("#say-form").addEventListener("submit", say);
    $("#party-form").addEventListener("submit", addParty);
    const query = new URLSearchParams(location.search);
    state.database = query.get("database");
    if (!state.database) {
      try {
        const response = await fetch("config.json", { cache: "no-store" });
        if (response.ok) state.database = (await response.json()).database;
      } catch (error) {
        // No configuration: the user types the database.
      }
    }
    const session = loadSession();
    if (session && (!query.get("database") || session.database === state.database)) {
      start(session);
    } else {
      showLogin();
    }
  }

  init();
})();
