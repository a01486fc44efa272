// In-page helpers (a classic script the harness adds to every page after it loads):
// window.T opens wsservice.js clients and records everything they do, and a wiretap records
// every WebSocket frame the page sends and receives, so that scenarios check the protocol
// as the server sees it (hello's resume, acks, pings, cancels), not only the API.
(() => {
  "use strict";
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0);

  // --- wiretap: wraps whatever WebSocket is there now (Playwright's routeWebSocket mock too)
  const wire = []; // {t, ws, dir: "out"|"in"|"open"|"close", data | code}
  let sockets = 0;
  const Native = window.WebSocket;
  class TappedWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const ws = ++sockets;
      this.__ws = ws;
      wire.push({ t: now(), ws, dir: "new", url: String(url), protocols });
      this.addEventListener("open", () => wire.push({ t: now(), ws, dir: "open", protocol: this.protocol }));
      this.addEventListener("message", (e) => wire.push({ t: now(), ws, dir: "in", data: String(e.data) }));
      this.addEventListener("close", (e) => wire.push({ t: now(), ws, dir: "close", code: e.code, reason: e.reason }));
    }
    send(data) {
      wire.push({ t: now(), ws: this.__ws, dir: "out", data: String(data) });
      return super.send(data);
    }
    close(code, reason) {
      wire.push({ t: now(), ws: this.__ws, dir: "closing", code });
      return code === undefined ? super.close() : super.close(code, reason);
    }
  }
  window.WebSocket = TappedWebSocket;

  const parse = (text) => {
    try {
      return JSON.parse(text);
    } catch (e) {
      return { unparsable: text };
    }
  };

  const T = {
    mod: null,
    clients: {},
    now,
    /** Every frame so far, the JSON ones parsed: [{t, ws, dir, msg}] (filter by dir/type). */
    wire(filter = {}) {
      return wire
        .filter((w) => (filter.ws === undefined || w.ws === filter.ws) && (filter.dir === undefined || w.dir === filter.dir))
        .map((w) => (w.data === undefined ? { ...w } : { t: w.t, ws: w.ws, dir: w.dir, msg: parse(w.data) }))
        .filter((w) => filter.type === undefined || (w.msg && w.msg.type === filter.type));
    },
    sockets: () => sockets,

    async load() {
      this.mod = await import("/wsservice.js");
      return Object.keys(this.mod).sort();
    },

    wsUrl() {
      return `ws://${location.host}/ws`;
    },

    /** A new Client named `name`, recorded from its first moment (listening to `events`);
     * resolves with its state once ready (or {error} when ready rejects). */
    async open(name, options = {}, url = null, events = []) {
      if (!this.mod) await this.load();
      const rec = {
        name,
        got: [], // every seq-numbered delivery to the application: {kind, data, seq, t}
        states: [], // {state, code, t}
        resumed: [], // {replayed, t}
        lost: [], // {t, session}
        warnings: [], // warning events' messages
        logged: [], // what the client gave its logger, by level
        served: [], // server calls answered by handlers: {method, params, t}
        presence: [], // presence listeners' calls: {kind, member, topic, t}
        sessions: [],
      };
      const log = (level) => (...args) => {
        rec.logged.push({ level, text: args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safe(a))).join(" "), t: now() });
        console[level === "debug" ? "log" : level](`[${name}]`, ...args);
      };
      const logger = { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error"), log: log("log") };
      const client = new this.mod.Client(url || this.wsUrl(), { logger, ...options });
      client.addEventListener("statechange", (e) => {
        rec.states.push({ state: e.detail.state, code: e.detail.code, t: now() });
        if (e.detail.state === "open" && !rec.sessions.includes(client.session)) rec.sessions.push(client.session);
      });
      client.addEventListener("resumed", (e) => rec.resumed.push({ replayed: e.detail && (e.detail.replayed ?? e.detail), t: now() }));
      client.addEventListener("lost", () => rec.lost.push({ t: now(), session: client.session }));
      client.addEventListener("warning", (e) => rec.warnings.push(String(e.detail && e.detail.message)));
      this.clients[name] = { client, rec };
      for (const event of events) this.listen(name, event); // before any push can arrive
      try {
        await client.ready;
      } catch (e) {
        return { error: errorOf(e), state: client.state };
      }
      if (!rec.sessions.includes(client.session)) rec.sessions.push(client.session);
      return { session: client.session, state: client.state };
    },

    client(name) {
      const c = this.clients[name];
      if (!c) throw new Error(`no client named ${name}`);
      return c.client;
    },

    /** Record every `event` push named `event` as a delivery. */
    listen(name, event) {
      const { client, rec } = this.clients[name];
      client.on(event, (data, seq) => rec.got.push({ kind: `event:${event}`, data, seq, t: now() }));
    },

    /** Subscribe, recording the topic's messages (and with `presence`, who joins and leaves). */
    async subscribe(name, topic, presence = false) {
      const { client, rec } = this.clients[name];
      const options = presence ? { presence: this.presenceFn(name) } : undefined;
      return await client.subscribe(topic, (data, seq, t) => rec.got.push({ kind: `message:${t ?? topic}`, data, seq, t: now() }), options);
    },

    /** The presence listener of client `name` (one per client: unsubscribe(topic, it) works). */
    presenceFn(name) {
      const c = this.clients[name];
      c.presenceFn ??= (kind, member, topic) => c.rec.presence.push({ kind, member, topic, t: now() });
      return c.presenceFn;
    },

    /** client.presence(topic), settled as {result} or {error}. */
    async presence(name, topic, options) {
      try {
        return { result: await this.client(name).presence(topic, options) };
      } catch (e) {
        return { error: errorOf(e) };
      }
    },

    /** client.call, settled as {result} or {error: {name, code, message, data, isWsServiceError}}. */
    async call(name, method, params, options) {
      const client = this.client(name);
      const started = now();
      try {
        const result = await client.call(method, params, options);
        return { result, ms: now() - started };
      } catch (e) {
        return { error: errorOf(e), ms: now() - started };
      }
    },

    /** Start a call, keeping its promise on window.T.pending[key]. */
    start(key, name, method, params, options = {}) {
      const signal = options.abort ? (this.aborts[key] = new AbortController()).signal : undefined;
      const opts = { ...options };
      delete opts.abort;
      if (signal) opts.signal = signal;
      this.pending[key] = this.call(name, method, params, opts);
      this.settled[key] = "pending";
      this.pending[key].then((v) => (this.settled[key] = v));
      return true;
    },
    pending: {},
    settled: {},
    aborts: {},

    rec(name) {
      const { client, rec } = this.clients[name];
      return {
        ...rec,
        session: client.session,
        state: client.state,
        lastSeq: client.lastSeq,
        resumes: client.resumes,
        replayed: client.replayed,
      };
    },

    /** Wait until fn() is true (polling), or throw saying `what`. */
    async until(fn, what, timeoutMs = 10000) {
      const end = performance.now() + timeoutMs;
      for (;;) {
        const v = fn();
        if (v) return v;
        if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),

    /** What a failure report shows of this page: each client's state and records, the
     * last frames on the wire; also written into the page for its screenshot. */
    summary() {
      const clients = {};
      for (const name of Object.keys(this.clients)) {
        const r = this.rec(name);
        clients[name] = {
          state: r.state, session: r.session, lastSeq: r.lastSeq, resumes: r.resumes, replayed: r.replayed,
          states: r.states, resumed: r.resumed, lost: r.lost, warnings: r.warnings, presence: r.presence.slice(-5),
          delivered: r.got.length, lastDelivered: r.got.slice(-5),
        };
      }
      const summary = { clients, sockets, lastFrames: wire.slice(-15) };
      const pre = document.createElement("pre");
      pre.style.cssText = "white-space: pre-wrap; font: 11px monospace; border-top: 2px solid red";
      pre.textContent = JSON.stringify(summary, null, 1);
      document.body.appendChild(pre);
      return summary;
    },
  };

  function safe(value) {
    try {
      return JSON.stringify(value);
    } catch (e) {
      return String(value);
    }
  }

  function errorOf(e) {
    if (e === null || typeof e !== "object") return { name: typeof e, message: String(e) };
    return {
      name: e.name,
      code: e.code,
      message: e.message,
      data: e.data,
      isWsServiceError: !!(T.mod && T.mod.WsServiceError && e instanceof T.mod.WsServiceError),
      isError: e instanceof Error,
    };
  }

  window.T = T;
})();
