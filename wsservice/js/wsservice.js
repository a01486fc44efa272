// wsservice.js: the browser client of wsservice (protocol "wsservice.v1").
//
// One ES module, no dependencies, no build step. Every wsservice server serves it at
// /wsservice.js; the same folder is an npm package ("wsservice"). It says hello, resumes
// its session after a drop, delivers every numbered server message exactly once and in
// order, acks them, and turns calls into Promises. See docs/clients.md.

export const PROTOCOL = "wsservice.v1";
export const VERSION = "0.1.0";

// Close codes after which the session is over: reconnecting would be refused again, or
// (4409) would steal the session back from the connection that resumed it.
const FINAL_CLOSE = new Set([1000, 4400, 4401, 4409]);
// Our own close code when we give up on a connection (dead, or reconnect()): anything but
// 1000, which would end the session on the server.
const ABANDON = 4000;
const SEQ_TYPES = new Set(["event", "message", "call"]);
// Requests that may be sent again on the next connection when the answer was lost.
const IDEMPOTENT = new Set(["subscribe", "unsubscribe", "presence"]);
const PRESENCE_EVENTS = { "presence.join": "join", "presence.leave": "leave" };
const CANCELLED_KEPT = 256; // ids of given-up calls whose late replies are dropped quietly

/** An error from the server (or from the client: timeout, cancelled, disconnected). */
export class WsServiceError extends Error {
  constructor(code, message, data) {
    super(message || code);
    this.name = "WsServiceError";
    this.code = code;
    this.data = data === undefined ? null : data;
  }
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isSeq(value) {
  return Number.isSafeInteger(value) && value >= 1;
}

function validId(value) {
  return typeof value === "string" || Number.isSafeInteger(value);
}

// A member of a presence list as the server described it, or null when it is malformed:
// `client` a non-empty string, `user` a string or null; `meta` any JSON (null if absent).
// Members a newer server adds are kept.
function presenceMember(value) {
  if (!isObject(value) || typeof value.client !== "string" || !value.client) return null;
  const user = value.user === undefined ? null : value.user;
  if (user !== null && typeof user !== "string") return null;
  return { ...value, user, meta: value.meta === undefined ? null : value.meta };
}

function seconds(value, name, { min = 0 } = {}) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new TypeError(`wsservice: option ${name} must be a number of seconds >= ${min}`);
  }
  return value;
}

function resolveUrl(url) {
  if (/^wss?:\/\//i.test(url)) return url;
  const loc = globalThis.location;
  if (!loc || !url.startsWith("/")) {
    throw new TypeError(`wsservice: URL must be ws://, wss:// or a path such as /ws, not ${url}`);
  }
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + url;
}

function makeEvent(type, detail) {
  if (typeof CustomEvent === "function") return new CustomEvent(type, { detail });
  const event = new Event(type);
  event.detail = detail;
  return event;
}

/**
 * A wsservice session that survives its connections.
 *
 * Events (it is an EventTarget): "statechange" (detail: {state, code, reason}), "open"
 * (detail: {session, resumed}), "resumed" (detail: {replayed}), "lost" (resume failed: a
 * new session, topics subscribed again), "warning" (bad input from the server, dropped),
 * "error" (an `error` message from the server that answers no request).
 */
export class Client extends EventTarget {
  constructor(url = "/ws", options = {}) {
    super();
    this.url = resolveUrl(url);
    const o = options || {};
    this.meta = o.meta === undefined ? {} : o.meta;
    this._auth = o.auth === undefined ? null : o.auth;
    this.callTimeout = seconds(o.callTimeout ?? 30, "callTimeout");
    this.backoffInitial = seconds(o.backoffInitial ?? 0.5, "backoffInitial");
    this.backoffFactor = seconds(o.backoffFactor ?? 2, "backoffFactor", { min: 1 });
    this.backoffMax = seconds(o.backoffMax ?? 10, "backoffMax");
    this.connectTimeout = seconds(o.connectTimeout ?? 10, "connectTimeout");
    this.maxQueuedCalls = o.maxQueuedCalls ?? 1000;
    this.ackEvery = o.ackEvery ?? 100;
    this.ackDelay = seconds(o.ackDelay ?? 1, "ackDelay");
    this.logger = o.logger === undefined ? console : o.logger;
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("wsservice: no WebSocket here: pass options.WebSocket");
    }

    /** "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "connecting";
    this.session = null;
    this.lastSeq = 0;      // the highest seq delivered to the application
    this.resumes = 0;      // successful resumes so far
    this.replayed = 0;     // messages delivered during resumes so far
    this.heartbeat = 0;    // seconds, from the last welcome
    this._token = null;
    this._ws = null;
    this._nextId = 1;
    this._calls = new Map();     // id -> {resolve, reject, timer, sent, frame, signal, onAbort}
    this._outbox = [];           // frames waiting for the next welcome (calls, events)
    this._cancelled = new Set(); // ids given up on: their late replies are expected
    this._events = new Map();    // event name -> Set(fn)
    this._topics = new Map();    // topic -> {fns: Set(fn), presence: Set(fn), ready: Promise}
    this._handlers = new Map();  // method -> fn (answers the server's calls)
    this._attempt = 0;
    this._retryTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._ackTimer = null;
    this._acked = 0;
    this._pingCount = 0;
    this._catchUp = null;  // {marker, count} while a resume's replay is arriving
    this._lastError = null;
    this._online = () => { if (this._retryTimer !== null) this._retryNow(); };
    globalThis.addEventListener?.("online", this._online);

    /** Settles at the first welcome; rejects if the client closes before it. */
    this.ready = new Promise((resolve, reject) => { this._ready = { resolve, reject }; });
    this.ready.catch(() => {}); // an unawaited ready must not report an unhandled rejection
    this._connect();
  }

  // -- the application's API -----------------------------------------------------------

  /** Call `method` on the server; settles with its result or a WsServiceError. */
  call(method, params = null, { timeout, signal } = {}) {
    if (typeof method !== "string" || !method) {
      return Promise.reject(new TypeError("wsservice: call needs a method name"));
    }
    return this._request({ type: "call", method, params }, timeout, signal);
  }

  /** Send event `event` to the server (fire and forget; waits for a connection if none). */
  emit(event, data = null) {
    if (typeof event !== "string" || !event) throw new TypeError("wsservice: emit needs an event name");
    this._sendOrQueue({ type: "event", event, data });
  }

  /** Deliver the server's pushed events named `event` to fn(data, seq). */
  on(event, fn) {
    if (!this._events.has(event)) this._events.set(event, new Set());
    this._events.get(event).add(fn);
    return this;
  }

  /** Stop delivering `event` to fn (to every function when fn is omitted). */
  off(event, fn) {
    const fns = this._events.get(event);
    if (fns && fn) fns.delete(fn);
    if (fns && (!fn || fns.size === 0)) this._events.delete(event);
    return this;
  }

  /** Answer the server's calls of `method` with fn(params, seq) (a value or a Promise). */
  handle(method, fn) {
    if (fn) this._handlers.set(method, fn);
    else this._handlers.delete(method);
    return this;
  }

  /**
   * Subscribe to `topic`, delivering its messages to fn(data, seq, topic). With
   * `{presence: fn}` the server also tells who joins and leaves the topic: fn(kind, member,
   * topic) with kind "join" or "leave" (kept across reconnects; the list as it is now
   * comes from presence(topic)).
   */
  subscribe(topic, fn, options) {
    const presence = options?.presence ?? null;
    if (typeof topic !== "string" || !topic) {
      return Promise.reject(new TypeError("wsservice: subscribe needs a topic"));
    }
    if (presence !== null && typeof presence !== "function") {
      return Promise.reject(new TypeError("wsservice: the presence option must be a function"));
    }
    let entry = this._topics.get(topic);
    if (!entry) {
      entry = { fns: new Set(), presence: new Set(), ready: null };
      this._topics.set(topic, entry);
      if (fn) entry.fns.add(fn);
      if (presence) entry.presence.add(presence);
      this._takeTopic(topic, entry).catch(() => {
        if (this._topics.get(topic) === entry) this._topics.delete(topic);
      });
      return entry.ready;
    }
    if (fn) entry.fns.add(fn);
    if (presence && !entry.presence.has(presence)) {
      entry.presence.add(presence);
      // the server's latest subscribe decides: the first presence function turns it on
      if (entry.presence.size === 1) this._retakeTopic(topic, entry);
    }
    return entry.ready;
  }

  // Ask the server for `topic` (again, after a lost session, or to turn presence on or off);
  // entry.ready settles on its answer.
  _takeTopic(topic, entry) {
    const frame = { type: "subscribe", topic };
    if (entry.presence.size > 0) frame.presence = true;
    entry.ready = this._request(frame).then(() => null);
    return entry.ready;
  }

  _retakeTopic(topic, entry) {
    const ready = this._takeTopic(topic, entry);
    ready.catch((error) => this._warn(`could not subscribe to ${topic} again: ${error.code}`));
    return ready;
  }

  /** Leave `topic` (or only remove fn, a message or presence function, while others remain). */
  unsubscribe(topic, fn) {
    const entry = this._topics.get(topic);
    if (!entry) return Promise.resolve(null);
    if (fn) {
      entry.fns.delete(fn);
      const hadPresence = entry.presence.delete(fn);
      if (entry.fns.size > 0 || entry.presence.size > 0) {
        // the last presence function gone: tell the server to stop the presence events
        if (hadPresence && entry.presence.size === 0) return this._retakeTopic(topic, entry);
        return Promise.resolve(null);
      }
    }
    this._topics.delete(topic);
    return this._request({ type: "unsubscribe", topic }).then(() => null);
  }

  /**
   * Who is in `topic` now: a list of {client, user, meta} (client: a public per-session id,
   * user: the principal's public name or null, meta: the member's hello meta.public or null).
   * Rejects `forbidden` when the topic may not be subscribed to.
   */
  presence(topic, { timeout, signal } = {}) {
    if (typeof topic !== "string" || !topic) {
      return Promise.reject(new TypeError("wsservice: presence needs a topic"));
    }
    return this._request({ type: "presence", topic }, timeout, signal).then((result) => {
      if (!isObject(result) || !Array.isArray(result.members)) {
        throw new WsServiceError("bad_result", `the server's presence answer for ${topic} has no members list`,
          result);
      }
      const members = [];
      for (const value of result.members) {
        const member = presenceMember(value);
        if (member) members.push(member);
        else this._warn(`dropped a malformed member of ${topic}: ${JSON.stringify(value)?.slice(0, 80)}`);
      }
      return members;
    });
  }

  /** Publish `data` on `topic` (every subscriber, on every node, receives it). */
  publish(topic, data = null) {
    if (typeof topic !== "string" || !topic) {
      return Promise.reject(new TypeError("wsservice: publish needs a topic"));
    }
    return this._request({ type: "publish", topic, data });
  }

  /** The topics subscribed to. */
  get topics() {
    return [...this._topics.keys()];
  }

  /** Drop the connection now and reconnect at once (the session resumes). */
  reconnect() {
    if (this.state === "closed") return;
    this._abandon(ABANDON, "reconnect asked");
    this._retryNow();
  }

  /** End the session: say bye, close with 1000, reconnect no more. */
  close() {
    if (this.state === "closed") return;
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this.session) {
      try { ws.send('{"type":"bye"}'); } catch (e) { /* closing anyway */ }
    }
    this._end(1000, "closed by the application", new WsServiceError("closed", "the client was closed"));
    if (ws) try { ws.close(1000, "bye"); } catch (e) { /* already closed */ }
  }

  // -- requests --------------------------------------------------------------------------

  _request(frame, timeout, signal) {
    if (this.state === "closed") {
      return Promise.reject(new WsServiceError("closed", "the client is closed"));
    }
    if (signal?.aborted) {
      return Promise.reject(new WsServiceError("cancelled", "the call was cancelled"));
    }
    const open = this.state === "open";
    if (!open && this._outbox.length >= this.maxQueuedCalls) {
      return Promise.reject(new WsServiceError(
        "too_many_calls", `${this._outbox.length} requests already wait for a connection`));
    }
    const id = this._nextId++;
    frame.id = id;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, sent: false, frame, signal, onAbort: null };
      this._calls.set(id, entry);
      const limit = timeout ?? this.callTimeout;
      if (limit > 0) {
        entry.timer = setTimeout(() => this._giveUp(id, new WsServiceError(
          "timeout", `no answer to ${frame.method || frame.type} within ${limit} s`)), limit * 1000);
      }
      if (signal) {
        entry.onAbort = () => this._giveUp(id, new WsServiceError("cancelled", "the call was cancelled"));
        signal.addEventListener("abort", entry.onAbort, { once: true });
      }
      if (open) this._sendRequest(entry);
      else this._outbox.push(entry);
    });
  }

  _sendRequest(entry) {
    entry.sent = true;
    this._send(entry.frame);
  }

  _sendOrQueue(frame) {
    if (this.state === "open") {
      this._send(frame);
    } else if (this.state !== "closed") {
      if (this._outbox.length >= this.maxQueuedCalls) {
        this._warn(`dropped event ${frame.event}: ${this._outbox.length} messages already wait for a connection`);
      } else {
        this._outbox.push({ frame, sent: false, event: true });
      }
    }
  }

  // A call we stop waiting for: timed out or aborted. The server is told to cancel it.
  _giveUp(id, error) {
    const entry = this._settle(id);
    if (!entry) return;
    if (entry.sent) {
      this._rememberCancelled(id);
      if (entry.frame.type === "call") this._send({ type: "cancel", id });
    } else {
      const at = this._outbox.indexOf(entry);
      if (at >= 0) this._outbox.splice(at, 1);
    }
    entry.reject(error);
  }

  _rememberCancelled(id) {
    this._cancelled.add(id);
    if (this._cancelled.size > CANCELLED_KEPT) {
      this._cancelled.delete(this._cancelled.values().next().value);
    }
  }

  // Remove the call `id` from the books (timer, abort listener); the entry or undefined.
  _settle(id) {
    const entry = this._calls.get(id);
    if (!entry) return undefined;
    this._calls.delete(id);
    if (entry.timer !== null) clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal.removeEventListener("abort", entry.onAbort);
    return entry;
  }

  // -- the connection --------------------------------------------------------------------

  _setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(makeEvent("statechange", { state, ...detail }));
  }

  async _connect() {
    this._retryTimer = null;
    let auth = this._auth;
    if (typeof auth === "function") {
      try {
        auth = await auth();
      } catch (error) {
        this._warn(`the auth function failed: ${error && error.message}`);
        this._scheduleRetry(null, "auth function failed");
        return;
      }
      if (this.state === "closed") return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this.url, [PROTOCOL]);
    } catch (error) {
      // a malformed URL can never work: end rather than retry forever
      this._end(null, String(error && error.message), new WsServiceError("bad_url", String(error && error.message)));
      return;
    }
    this._ws = ws;
    this._lastError = null;
    this._connectTimer = setTimeout(() => {
      this._abandon(ABANDON, "no welcome in time");
      this._scheduleRetry(null, "no welcome in time");
    }, this.connectTimeout * 1000);
    ws.onopen = () => {
      const hello = { type: "hello", meta: this.meta };
      if (auth !== null && auth !== undefined) hello.auth = auth;
      if (this.session && this._token) {
        hello.resume = { session: this.session, token: this._token, last_seq: this.lastSeq };
      }
      this._send(hello);
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._closed(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows and says more
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    if (FINAL_CLOSE.has(code)) {
      const error = this._lastError || new WsServiceError(
        code === 4401 ? "unauthorized" : "closed", reason || `closed by the server (${code})`);
      this._end(code, reason, error);
      return;
    }
    this._detach(ws);
    this._scheduleRetry(code, reason);
  }

  // Stop listening to `ws` and forget the timers that belong to one connection.
  _detach(ws) {
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws === this._ws) this._ws = null;
    for (const name of ["_connectTimer", "_pongTimer", "_ackTimer"]) {
      if (this[name] !== null) { clearTimeout(this[name]); this[name] = null; }
    }
    if (this._pingTimer !== null) { clearInterval(this._pingTimer); this._pingTimer = null; }
    this._catchUp = null;
    // Replies are not replayed: a call or publish sent on this connection has lost its
    // answer (the application decides whether to repeat it). Subscribing and leaving can
    // be repeated safely: they wait for the next connection instead.
    const again = [];
    for (const [id, entry] of [...this._calls]) {
      if (!entry.sent) continue;
      if (IDEMPOTENT.has(entry.frame.type)) {
        entry.sent = false;
        again.push(entry);
      } else {
        this._settle(id);
        entry.reject(new WsServiceError("disconnected", "the connection dropped before the answer"));
      }
    }
    if (again.length) this._outbox.unshift(...again);
  }

  // Give up on the current connection without waiting for its close handshake (which a
  // stalled network would never finish).
  _abandon(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    this._detach(ws);
    try { ws.close(code, reason); } catch (e) { /* already closing */ }
  }

  _scheduleRetry(code, reason) {
    if (this.state === "closed") return;
    this._setState(this.session ? "reconnecting" : "connecting", { code, reason });
    const ceiling = Math.min(this.backoffMax, this.backoffInitial * this.backoffFactor ** this._attempt);
    this._attempt += 1;
    const delay = Math.random() * ceiling; // full jitter: a server restart is not stampeded
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._connect(), delay * 1000);
  }

  _retryNow() {
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._setState(this.session ? "reconnecting" : "connecting", { code: null, reason: "reconnect" });
    this._connect();
  }

  _end(code, reason, error) {
    if (this._retryTimer !== null) { clearTimeout(this._retryTimer); this._retryTimer = null; }
    globalThis.removeEventListener?.("online", this._online);
    const calls = [...this._calls.keys()];
    for (const id of calls) this._settle(id)?.reject(error);
    this._outbox = [];
    if (this._ws) this._detach(this._ws);
    this._setState("closed", { code, reason });
    this._ready.reject(error);
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // -- what the server sends -------------------------------------------------------------

  _receive(text) {
    if (typeof text !== "string") {
      this._warn("dropped a binary message (the protocol is text only)");
      return;
    }
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (error) {
      this._warn(`dropped a message that is not JSON: ${text.slice(0, 80)}`);
      return;
    }
    if (!isObject(msg) || typeof msg.type !== "string") {
      this._warn(`dropped a message that is not an object with a type: ${text.slice(0, 80)}`);
      return;
    }
    if (SEQ_TYPES.has(msg.type)) {
      this._numbered(msg, text);
      return;
    }
    switch (msg.type) {
      case "welcome": return this._welcome(msg);
      case "result": return this._reply(msg, null);
      case "error": return this._error(msg);
      case "pong": return this._pong(msg);
      default:
        // a newer server may send types this client does not know: ignore, but say so
        this._warn(`ignored a message of unknown type ${JSON.stringify(msg.type).slice(0, 40)}`);
    }
  }

  _welcome(msg) {
    if (typeof msg.session !== "string" || typeof msg.token !== "string") {
      this._warn("dropped a welcome without session and token");
      return;
    }
    if (this._connectTimer !== null) { clearTimeout(this._connectTimer); this._connectTimer = null; }
    const hadSession = this.session;
    const resumed = msg.resumed === true && msg.session === hadSession;
    this.session = msg.session;
    this._token = msg.token;
    this._attempt = 0;
    this.heartbeat = typeof msg.heartbeat === "number" && msg.heartbeat > 0 ? msg.heartbeat : 0;
    if (!resumed) {
      this.lastSeq = 0;
      this._acked = 0;
    }
    this._setState("open");
    this._startHeartbeat();
    if (resumed) {
      // The replay follows the welcome; the server answers in order, so a ping's pong
      // marks its end and tells how many messages it held.
      this._catchUp = { marker: `resume:${++this._pingCount}`, count: 0 };
      this._send({ type: "ping", data: this._catchUp.marker });
    } else if (hadSession) {
      // The old session is gone and with it the subscriptions: take them again.
      for (const [topic, entry] of this._topics) {
        this._takeTopic(topic, entry).catch(
          (error) => this._warn(`could not subscribe to ${topic} again: ${error.code}`));
      }
    }
    const queued = this._outbox;
    this._outbox = [];
    for (const entry of queued) {
      if (entry.event) this._send(entry.frame);
      else this._sendRequest(entry);
    }
    this.dispatchEvent(makeEvent("open", { session: this.session, resumed }));
    if (hadSession && !resumed) this.dispatchEvent(makeEvent("lost", { session: this.session }));
    this._ready.resolve(this);
  }

  _numbered(msg, text) {
    const seq = msg.seq;
    if (!isSeq(seq)) {
      this._warn(`dropped a ${msg.type} without a valid seq: ${text.slice(0, 80)}`);
      return;
    }
    if (seq <= this.lastSeq) {
      this._warn(`dropped a duplicate ${msg.type} (seq ${seq}, already delivered up to ${this.lastSeq})`);
      return;
    }
    const type = msg.type;
    const wellFormed = type === "event" ? typeof msg.event === "string"
      : type === "message" ? typeof msg.topic === "string"
        : validId(msg.id) && typeof msg.method === "string";
    if (!wellFormed) {
      this._warn(`dropped a malformed ${type}: ${text.slice(0, 80)}`);
      return;
    }
    if (seq !== this.lastSeq + 1) {
      this._warn(`seq jumped from ${this.lastSeq} to ${seq}: messages in between are missing`);
    }
    this.lastSeq = seq;
    if (this._catchUp) {
      this._catchUp.count += 1;
      this.replayed += 1;
    }
    if (type === "event") this._deliverEvent(msg.event, msg.data, seq);
    else if (type === "message") this._deliverMessage(msg.topic, msg.data, seq);
    else this._serverCall(msg.id, msg.method, msg.params, seq);
    this._scheduleAck();
  }

  _deliverEvent(name, data, seq) {
    const fns = this._events.get(name);
    if (fns) for (const fn of [...fns]) this._run(fn, name, data, seq, name);
    if (Object.hasOwn(PRESENCE_EVENTS, name)) this._deliverPresence(PRESENCE_EVENTS[name], name, data);
  }

  // presence.join / presence.leave: plain events, and to the topic's presence functions.
  _deliverPresence(kind, name, data) {
    const member = isObject(data) && typeof data.topic === "string" ? presenceMember(data.member) : null;
    if (!member) {
      this._warn(`dropped a malformed ${name} event: ${JSON.stringify(data)?.slice(0, 80)}`);
      return;
    }
    const entry = this._topics.get(data.topic);
    if (!entry) return;
    for (const fn of [...entry.presence]) this._run(fn, `presence of ${data.topic}`, kind, member, data.topic);
  }

  _deliverMessage(topic, data, seq) {
    const entry = this._topics.get(topic);
    if (!entry) return;
    for (const fn of [...entry.fns]) this._run(fn, topic, data, seq, topic);
  }

  // An application function failing must not stop the messages after it.
  _run(fn, name, ...args) {
    try {
      fn(...args);
    } catch (error) {
      this.logger?.error?.(`wsservice: a handler for ${name} failed`, error);
    }
  }

  async _serverCall(id, method, params, seq) {
    const ws = this._ws;
    const fn = this._handlers.get(method);
    let reply;
    if (!fn) {
      reply = { type: "error", id, error: { code: "unknown_method", message: `no handler for ${method}` } };
    } else {
      try {
        reply = { type: "result", id, result: (await fn(params, seq)) ?? null };
      } catch (error) {
        reply = error instanceof WsServiceError
          ? { type: "error", id, error: { code: error.code, message: error.message, data: error.data } }
          : { type: "error", id, error: { code: "internal", message: String(error && error.message || error) } };
        if (!(error instanceof WsServiceError)) this.logger?.error?.(`wsservice: handler ${method} failed`, error);
      }
    }
    // The server forgets its call when the connection that carried it drops.
    if (this._ws === ws) this._send(reply);
  }

  _reply(msg, error) {
    if (!validId(msg.id)) {
      this._warn("dropped a result without a valid id");
      return;
    }
    const entry = this._settle(msg.id);
    if (!entry) {
      if (!this._cancelled.delete(msg.id)) this._warn(`dropped a ${msg.type} for unknown id ${JSON.stringify(msg.id)}`);
      return;
    }
    if (error) entry.reject(error);
    else entry.resolve(msg.result === undefined ? null : msg.result);
  }

  _error(msg) {
    const e = msg.error;
    if (!isObject(e) || typeof e.code !== "string") {
      this._warn("dropped an error without error.code");
      return;
    }
    const error = new WsServiceError(e.code, typeof e.message === "string" ? e.message : e.code, e.data);
    if (msg.id !== undefined && msg.id !== null) {
      this._reply(msg, error);
      return;
    }
    this._lastError = error;  // an error before a close (unauthorized) says why
    this.logger?.warn?.(`wsservice: server error ${e.code}: ${error.message}`);
    this.dispatchEvent(makeEvent("error", error));
  }

  _pong(msg) {
    if (this._catchUp && msg.data === this._catchUp.marker) {
      const replayed = this._catchUp.count;
      this._catchUp = null;
      this.resumes += 1;
      this.dispatchEvent(makeEvent("resumed", { replayed }));
    }
    // any pong proves the connection alive
    if (this._pongTimer !== null) { clearTimeout(this._pongTimer); this._pongTimer = null; }
  }

  // Browsers cannot send WebSocket pings: the protocol's ping, every heartbeat, and a
  // connection with no pong within another heartbeat is dead.
  _startHeartbeat() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (!this.heartbeat) return;
    this._pingTimer = setInterval(() => {
      if (this._pongTimer !== null) return;  // the last ping's timer is still running
      this._send({ type: "ping", data: ++this._pingCount });
      this._pongTimer = setTimeout(() => {
        this._pongTimer = null;
        this._warn(`no pong within ${this.heartbeat} s: the connection is dead`);
        this._abandon(ABANDON, "no pong");
        this._scheduleRetry(null, "no pong");
      }, this.heartbeat * 1000);
    }, this.heartbeat * 1000);
  }

  _scheduleAck() {
    if (this.lastSeq - this._acked >= this.ackEvery) {
      this._ack();
    } else if (this._ackTimer === null) {
      this._ackTimer = setTimeout(() => this._ack(), this.ackDelay * 1000);
    }
  }

  _ack() {
    if (this._ackTimer !== null) { clearTimeout(this._ackTimer); this._ackTimer = null; }
    if (this.lastSeq > this._acked && this._send({ type: "ack", seq: this.lastSeq })) {
      this._acked = this.lastSeq;
    }
  }

  _warn(message) {
    this.logger?.warn?.(`wsservice: ${message}`);
    this.dispatchEvent(makeEvent("warning", { message }));
  }
}

export default Client;
