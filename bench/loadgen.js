#!/usr/bin/env node
// Load generator of the wsservice benchmark: one Node process, the `ws` package (and, for
// connection setup, a minimal WebSocket client of its own on `net`: see connectWorkload).
//
//   node loadgen.js '<JSON config>'
//
// bench/run.py starts one of these per measurement, pinned to another core than the server,
// and reads the one JSON line it prints on stdout (progress and error examples go to stderr).
// The config names the workload, the server's URL, its PID (the server's own CPU time and RSS
// are read from /proc/PID/stat and /proc/PID/status at the edges of the measured window) and
// which server it is ("wsservice" or "baseline": they differ only in what welcome and topic
// messages look like).
//
// For a cluster (several wsservice nodes on one Redis) the config also has `urls` (the nodes:
// sessions are spread over them in turn, i modulo their number; the fan-out's publisher and
// the idle workload use the first), `pids` (every process whose CPU counts: the nodes and
// redis-server; the figures are their sum, and `cpu_by_process` gives each one's share) and
// `redis` ({host, port}: INFO commandstats is read at both edges of the window too, and the
// difference reported as `redis_commands`).
//
// Every reply is checked, byte for byte against the expected text (both servers write orjson
// with members in the same order) or, when that differs, parsed and checked member by member:
// calls by id (known, in flight, answered once) and result (equal to
// the params sent, exactly the members type/id/result); event echoes by data (equal, in order)
// and seq (previous + 1 per connection); topic messages by publication number (previous + 1 per
// subscriber), data, and for wsservice seq (previous + 1); welcomes by their members; closes by
// their code. Anything else counts as an error, with the first few printed.
//
// Workloads:
//   call     C connections, W calls in flight on each, `call echo` with ~100 B params
//   event    C connections, W `event echo` in flight on each, answered by a push with seq
//   fanout   S subscribers of topic "bench" and one publisher (not subscribed) keeping P
//            publications in flight (one completes when every subscriber has it); with
//            `fill`, that many publications complete before the warm-up starts
//   connect  K loops of: TCP connect, WebSocket handshake, hello, welcome, close 1000
//   idle     connect B sessions, read RSS, connect N more, let them settle, read RSS again
//   ndjson-call  `call` over an NDJSON stream (tcp://HOST:PORT or unix:PATH), on `net`
//
// Each run: connect, warm up, then a window bounded by `duration` seconds and `max_count`
// messages; the server's CPU time is read at both edges of the window; then in-flight work is
// drained (and checked) within `drain_timeout` seconds. A watchdog bounds the whole process.
'use strict';

const net = require('net');
const WebSocket = require('ws');
const lg = require('./lgcommon');

// the plumbing shared with sioloadgen.js: lgcommon.js
const { cfg, now, error, body, sleep, until } = lg;
const { Latencies, Window, inFlight, measure, drain, openPool } = lg;
const { requestBytes, frameAt, handshakeEnd } = lg;
const KIND = cfg.server_kind || 'wsservice';
const URL_ = cfg.url;
const URLS = cfg.urls && cfg.urls.length ? cfg.urls : [URL_];
const WS_OPTS = {
  perMessageDeflate: false,   // neither server is asked to compress
  skipUTF8Validation: true,   // every payload is compared or parsed anyway (bad UTF-8 fails)
  handshakeTimeout: 10000,
  maxPayload: 16 * 1024 * 1024,
  // An all-zero masking key: ws then skips the XOR on our side. Frames are still masked
  // frames (RFC 6455 requires it of clients) and each server unmasks them as usual.
  generateMask: () => {},
};
// Sends made while handling one chunk of received data go out in one write (cork until the
// next tick): fewer system calls in the load generator, same messages for the server.
const CORK = cfg.cork !== false;

function cork(c) {
  if (CORK && !c.corked) {
    c.corked = true;
    c.ws._socket.cork();
    process.nextTick(uncork, c);
  }
}

function uncork(c) {
  c.corked = false;
  if (c.ws._socket) c.ws._socket.uncork();
}

const WELCOME_KEYS = 'heartbeat,resumed,server,session,token,type';
function checkWelcome(msg) {
  if (!msg || msg.type !== 'welcome') return `not a welcome: ${JSON.stringify(msg)}`;
  if (KIND === 'wsservice') {
    if (Object.keys(msg).sort().join(',') !== WELCOME_KEYS
        || typeof msg.session !== 'string' || msg.session.length < 16
        || typeof msg.token !== 'string' || msg.token.length < 16 || msg.resumed !== false) {
      return `bad welcome: ${JSON.stringify(msg)}`;
    }
  }
  return null;
}

// Open one WebSocket, say hello, resolve with it once the welcome came (checked), or null.
function openSession(onMessage, url = URL_) {
  return new Promise((resolve) => {
    let ws;
    let settled = false;
    const done = (value) => { if (!settled) { settled = true; resolve(value); } };
    try {
      ws = new WebSocket(url, WS_OPTS);
    } catch (e) {
      error('connect', String(e));
      done(null);
      return;
    }
    ws.on('open', () => ws.send('{"type":"hello"}'));
    ws.on('error', (e) => { error('socket', String(e)); done(null); });
    ws.on('unexpected-response', (req, res) => {
      error('handshake', `HTTP ${res.statusCode}`);
      req.destroy();
      done(null);
    });
    ws.once('message', (data) => {
      let msg;
      try { msg = JSON.parse(data); } catch (e) { msg = null; }
      const bad = checkWelcome(msg);
      if (bad) { error('welcome', bad); ws.terminate(); done(null); return; }
      if (onMessage) ws.on('message', onMessage);
      done(ws);
    });
    ws.on('close', (code) => {
      if (!settled) { error('close_before_welcome', `code ${code}`); done(null); }
      else if (!ws._benchClosing) error('unexpected_close', `code ${code}`);
    });
  });
}

// n sessions (session i on URLS[i % URLS.length]), makeHandler(i) its message handler
const openMany = (n, concurrency, makeHandler) => openPool(n, concurrency,
  (i) => openSession(makeHandler ? makeHandler(i) : null, URLS[i % URLS.length]));

function closeAll(sockets) {
  for (const ws of sockets) {
    if (ws) { ws._benchClosing = true; ws.terminate(); }
  }
}

// -- Redis's INFO commandstats, over a connection of our own (cluster runs) -------------------

class RedisStats {
  constructor(host, port) {
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    this.sock.on('data', (chunk) => { this.buf = Buffer.concat([this.buf, chunk]); this.parse(); });
    this.sock.on('error', (e) => {
      error('redis_stats', String(e));
      for (const w of this.waiting.splice(0)) w(null);
    });
  }
  parse() {
    while (this.waiting.length) {
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return;
      const head = this.buf.toString('latin1', 0, eol);
      if (head[0] !== '$') {
        error('redis_stats', `unexpected reply ${head.slice(0, 100)}`);
        this.buf = Buffer.alloc(0);
        this.waiting.shift()(null);
        continue;
      }
      const len = Number(head.slice(1));
      if (this.buf.length < eol + 2 + len + 2) return;
      const text = this.buf.toString('latin1', eol + 2, eol + 2 + len);
      this.buf = this.buf.subarray(eol + 2 + len + 2);
      this.waiting.shift()(RedisStats.commands(text));
    }
  }
  // {command: {calls, usec}} from INFO commandstats's cmdstat_NAME:calls=..,usec=.. lines
  static commands(text) {
    const out = {};
    for (const line of text.split('\r\n')) {
      const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
      if (m) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
    }
    return out;
  }
  commandstats() {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.sock.write('INFO commandstats\r\n');
    });
  }
  close() { this.sock.destroy(); }
}

const REDIS = cfg.redis ? new RedisStats(cfg.redis.host, cfg.redis.port) : null;
// INFO commandstats at both edges of the window (main reports the difference)
if (REDIS) {
  lg.atWindowEdges((win, edge) => {
    if (edge === 'start') win.redis0 = REDIS.commandstats();
    else win.redis1 = REDIS.commandstats();
  });
}

// Commands Redis ran during the window: {command: {calls, usec}}, busiest first.
async function redisCommands(win) {
  const [a, b] = await Promise.all([win.redis0, win.redis1]);
  if (!a || !b) return null;
  const out = {};
  for (const [name, s] of Object.entries(b)) {
    const before = a[name] || { calls: 0, usec: 0 };
    if (s.calls > before.calls) out[name] = { calls: s.calls - before.calls, usec: s.usec - before.usec };
  }
  return Object.fromEntries(Object.entries(out).sort((x, y) => y[1].usec - x[1].usec));
}

// -- a minimal WebSocket client on `net` ------------------------------------------------------
//
// For connection setup and for the 1000 fan-out subscribers, `ws` would cost the load generator
// about as much CPU as the server spends, so these use fixed handshake bytes and a frame parser
// of their own (lgcommon.js, shared with sioloadgen.js's raw client). Still checked: the 101 status and Sec-WebSocket-Accept, unmasked unfragmented
// server frames, the welcome, every message, close codes.
const HELLO = Buffer.from('{"type":"hello"}');
// client frames are masked (RFC 6455): mask bit set, all-zero key, payload as is
const HELLO_FRAME = Buffer.concat([Buffer.from([0x81, 0x80 | HELLO.length, 0, 0, 0, 0]), HELLO]);
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);

function target(url = URL_) {
  if (url.startsWith('ws+unix:')) {
    const rest = url.slice('ws+unix:'.length);
    const i = rest.lastIndexOf(':');
    return { connect: { path: rest.slice(0, i) }, path: rest.slice(i + 1), host: 'localhost' };
  }
  const u = new URL(url);
  return { connect: { host: u.hostname, port: Number(u.port) }, path: u.pathname, host: u.host };
}

// The welcome, checked (the raw session's set-up after its hello)
function welcomed(payload, sess, ready, fail) {
  let msg;
  try { msg = JSON.parse(payload); } catch (e) { msg = null; }
  const bad = checkWelcome(msg);
  if (bad) return fail('welcome', bad);
  sess.state = 2;
  ready();
}

// Open a session (handshake, hello, checked welcome); resolves with an object whose onText
// (a function of the payload Buffer) gets every later text message, or with null.
const openRaw = (t, request) => lg.openRaw({
  connect: t.connect, request, timeout: 10000, waiting: 'no welcome',
  opened: (sock) => sock.write(HELLO_FRAME), setup: welcomed,
});

// n sessions; with several targets (a cluster's nodes), session i on targets[i % length]
async function openRawMany(targets, n, concurrency) {
  if (!Array.isArray(targets)) targets = [targets];
  const requests = targets.map(requestBytes);
  return openPool(n, concurrency, (i) => {
    const k = i % targets.length;
    return openRaw(targets[k], requests[k]);
  });
}

// -- workloads --------------------------------------------------------------------------------

async function callWorkload() {
  const { C, W, win, lat } = inFlight();
  let sending = true;
  let inflightTotal = 0;
  const conns = [];

  function makeHandler(i) {
    return (data) => {
      const c = conns[i];
      const text = data.toString();
      // Fast path: the reply to the oldest call in flight, byte for byte as both servers
      // write it (orjson, members in this order). Anything else is parsed and checked.
      while (c.oldest <= c.next && !c.inflight.has(c.oldest)) c.oldest += 1;
      let id = c.oldest;
      if (text !== `{"type":"result","id":${id},"result":${body(id)}}`) {
        let msg;
        try { msg = JSON.parse(text); } catch (e) { error('bad_json', text.slice(0, 100)); return; }
        id = msg.id;
        if (msg.type !== 'result' || !c.inflight.has(id)) {
          error('unexpected_reply', text.slice(0, 200));
          return;
        }
        if (Object.keys(msg).length !== 3 || JSON.stringify(msg.result) !== body(id)) {
          error('wrong_result', text.slice(0, 200));
          id = null;
        }
      }
      if (id !== null) {
        const sent = c.inflight.get(id);
        c.inflight.delete(id);
        inflightTotal -= 1;
        if (win.open) {
          lat.add(now() - sent);
          if (++win.count >= cfg.max_count) win.stop();
        }
      } else {
        const bad = JSON.parse(text).id;
        if (c.inflight.delete(bad)) inflightTotal -= 1;
      }
      if (sending) send(c);
    };
  }

  function send(c) {
    cork(c);
    const id = ++c.next;
    c.inflight.set(id, now());
    inflightTotal += 1;
    c.ws.send(`{"type":"call","id":${id},"method":"echo","params":${body(id)}}`);
  }

  const sockets = await openMany(C, 50, makeHandler);
  for (const ws of sockets) conns.push({ ws, next: 0, oldest: 1, inflight: new Map(), corked: false });
  if (sockets.some((ws) => !ws)) return { fatal: 'could not open every connection' };
  for (const c of conns) for (let k = 0; k < W; k++) send(c);
  await measure(win);
  sending = false;
  await drain(() => inflightTotal === 0, 'unanswered', () => `${inflightTotal} calls unanswered`);
  closeAll(sockets);
  return { ...win.result('call'), ...lat.summary() };
}

async function eventWorkload() {
  const { C, W, win, lat } = inFlight();
  let sending = true;
  let inflightTotal = 0;
  const conns = [];

  function makeHandler(i) {
    return (data) => {
      const c = conns[i];
      const text = data.toString();
      if (c.head === c.tail) {
        error('unexpected_message', text.slice(0, 200));
        return;
      }
      const slot = c.head++ % c.ring.length;
      const n = c.ring[slot], sent = c.sent[slot];
      inflightTotal -= 1;
      // Fast path: exactly the expected push (data of the oldest event sent, the next seq)
      let ok = text === `{"type":"event","event":"echo","data":${body(n)},"seq":${c.seq + 1}}`;
      if (ok) {
        c.seq += 1;
      } else {
        let msg;
        try { msg = JSON.parse(text); } catch (e) { error('bad_json', text.slice(0, 100)); return; }
        if (msg.type !== 'event' || msg.event !== 'echo') {
          error('unexpected_message', text.slice(0, 200));
          return;
        }
        if (msg.seq !== c.seq + 1) error('seq', `expected ${c.seq + 1}, got ${msg.seq}`);
        if (typeof msg.seq === 'number') c.seq = msg.seq;
        ok = Object.keys(msg).length === 4 && JSON.stringify(msg.data) === body(n);
        if (!ok) error('wrong_data', text.slice(0, 200));
      }
      if (ok && win.open) {
        lat.add(now() - sent);
        if (++win.count >= cfg.max_count) win.stop();
      }
      if (sending) send(c);
    };
  }

  function send(c) {
    cork(c);
    const n = ++c.next;
    const slot = c.tail++ % c.ring.length;
    c.ring[slot] = n;
    c.sent[slot] = now();
    inflightTotal += 1;
    c.ws.send(`{"type":"event","event":"echo","data":${body(n)}}`);
  }

  const sockets = await openMany(C, 50, makeHandler);
  for (const ws of sockets) {
    conns.push({ ws, next: 0, seq: 0, head: 0, tail: 0, corked: false,
                 ring: new Float64Array(W + 1), sent: new Float64Array(W + 1) });
  }
  if (sockets.some((ws) => !ws)) return { fatal: 'could not open every connection' };
  for (const c of conns) for (let k = 0; k < W; k++) send(c);
  await measure(win);
  sending = false;
  await drain(() => inflightTotal === 0, 'unanswered', () => `${inflightTotal} events not echoed`);
  closeAll(sockets);
  return { ...win.result('event'), ...lat.summary() };
}

async function fanoutWorkload() {
  const S = cfg.subscribers, P = cfg.publications_in_flight;
  const withSeq = KIND === 'wsservice';
  const win = new Window();
  const lat = new Latencies(100000); // publish to last delivery
  const RING = 1024;
  const got = new Int32Array(RING);     // deliveries of publication k, at k % RING
  const sentAt = new Float64Array(RING);
  const expected = new Array(RING);     // publication k as every subscriber must get it
  let published = 0, completed = 0, sending = true;
  let subscribed = 0;
  const subs = [];
  const expectedKeys = withSeq ? 4 : 3;
  const SUBSCRIBED = '{"type":"result","id":1,"result":null}';

  function delivered(k) {
    if (win.open && ++win.count >= cfg.max_count) win.stop();
    const slot = k % RING;
    if (++got[slot] === S) {
      completed += 1;
      if (win.open) lat.add(now() - sentAt[slot]);
      if (sending) publish();
    }
  }

  function makeHandler(s, i) {
    return (payload) => {
      const k = s.last + 1;
      // Fast path: byte for byte the next publication; for wsservice also with the next seq
      // (every subscriber subscribed before the first publication, so its seq is k)
      if (k >= 1 && k <= published && (!withSeq || s.seq === s.last)
          && payload.equals(expected[k % RING])) {
        s.last = k;
        if (withSeq) s.seq = k;
        delivered(k);
        return;
      }
      const text = payload.toString();
      let msg;
      try { msg = JSON.parse(text); } catch (e) { error('bad_json', text.slice(0, 100)); return; }
      if (text === SUBSCRIBED && !s.subscribed) {
        s.subscribed = true;
        subscribed += 1;
        return;
      }
      if (msg.type !== 'message' || msg.topic !== 'bench' || !msg.data) {
        error('unexpected_message', text.slice(0, 200));
        return;
      }
      const n = msg.data.n;
      if (n !== s.last + 1 || n > published) error('order', `subscriber ${i}: expected ${s.last + 1}, got ${n}`);
      if (typeof n === 'number') s.last = n;
      if (withSeq) {
        if (msg.seq !== s.seq + 1) error('seq', `subscriber ${i}: expected ${s.seq + 1}, got ${msg.seq}`);
        if (typeof msg.seq === 'number') s.seq = msg.seq;
      }
      if (Object.keys(msg).length !== expectedKeys || JSON.stringify(msg.data) !== body(n)) {
        error('wrong_message', text.slice(0, 200));
        return;
      }
      if (typeof n === 'number' && n >= 1 && n <= published) delivered(n);
    };
  }

  let publisher = null;
  function publish() {
    const k = ++published;
    const slot = k % RING;
    got[slot] = 0;
    sentAt[slot] = now();
    expected[slot] = Buffer.from(withSeq
      ? `{"type":"message","topic":"bench","data":${body(k)},"seq":${k}}`
      : `{"type":"message","topic":"bench","data":${body(k)}}`);
    publisher.send(`{"type":"publish","topic":"bench","data":${body(k)}}`);
  }

  const sessions = await openRawMany(URLS.map(target), S, 100);
  const closeSubs = () => { for (const sess of sessions) if (sess) sess.close(); };
  if (sessions.some((x) => !x)) { closeSubs(); return { fatal: 'could not open every subscriber' }; }
  for (let i = 0; i < S; i++) {
    const s = { sess: sessions[i], subscribed: false, last: 0, seq: 0 };
    subs.push(s);
    sessions[i].onText = makeHandler(s, i);
  }
  for (const s of subs) s.sess.send('{"type":"subscribe","topic":"bench","id":1}');
  if (!(await until(() => subscribed === S, 20))) {
    error('subscribe', `${S - subscribed} subscriptions unconfirmed after 20 s`);
    closeSubs();
    return { fatal: 'subscriptions not confirmed' };
  }
  publisher = await openSession((data) => {
    error('publisher_got', String(data).slice(0, 200)); // it is not subscribed: nothing comes
  }, URLS[0]);
  if (!publisher) { closeSubs(); return { fatal: 'could not open the publisher' }; }
  for (let k = 0; k < P; k++) publish();
  // fill: publications every subscriber must have had before the warm-up (so that their
  // replay buffers are full and each delivery also drops the oldest one, as in a long run)
  if (cfg.fill && !(await until(() => completed >= cfg.fill, cfg.fill_timeout || 60))) {
    error('fill', `only ${completed} of ${cfg.fill} publications completed while filling`);
  }
  const filled = completed;
  await measure(win);
  sending = false;
  await drain(() => completed === published, 'undelivered',
              () => `${published - completed} publications incomplete`);
  closeSubs();
  closeAll([publisher]);
  return { ...win.result('delivery'), publications: published, filled, ...lat.summary() };
}

async function connectWorkload() {
  const K = cfg.concurrency;
  const win = new Window();
  const lat = new Latencies(Math.min(cfg.max_count + K, 1000000));
  const t = target();
  const REQUEST = requestBytes(t);
  let running = true, active = 0;

  function once() {
    return new Promise((resolve) => {
      const t0 = now();
      let state = 0; // 0 handshake, 1 awaiting welcome, 2 awaiting close frame, 3 closed ok
      let buf = Buffer.alloc(0), off = 0, failed = false, finished = false;
      const sock = net.connect(t.connect);
      sock.setNoDelay(true);
      const fail = (kind, detail) => {
        if (!failed) { failed = true; error(kind, detail); }
        sock.destroy();
      };
      const timer = setTimeout(() => fail('connect_timeout', `stuck in state ${state}`), 10000);
      sock.on('connect', () => sock.write(REQUEST));
      sock.on('data', (chunk) => {
        buf = off < buf.length ? Buffer.concat([buf.subarray(off), chunk]) : chunk;
        off = 0;
        if (state === 0) {
          const end = handshakeEnd(buf);
          if (end === 0) return;
          if (typeof end === 'string') return fail('handshake', end);
          off = end;
          state = 1;
          sock.write(HELLO_FRAME);
        }
        for (;;) {
          const f = frameAt(buf, off);
          if (f === null) return;
          if (f.error) return fail('frame', f.error);
          off = f.next;
          if (state === 1 && f.opcode === 1 && f.fin) {
            let msg;
            try { msg = JSON.parse(f.payload); } catch (e) { msg = null; }
            const bad = checkWelcome(msg);
            if (bad) return fail('welcome', bad);
            state = 2;
            sock.write(CLOSE_FRAME);
          } else if (state === 2 && f.opcode === 8) {
            const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
            if (code !== 1000) return fail('close_code', `expected 1000, got ${code}`);
            state = 3;
          } else if (f.opcode === 9 || f.opcode === 10) {
            // a ping or pong: ignore
          } else {
            return fail('unexpected_frame', `opcode ${f.opcode} in state ${state}: `
                        + f.payload.toString().slice(0, 200));
          }
        }
      });
      sock.on('end', () => sock.end()); // the server closes TCP first after the close handshake
      sock.on('error', (e) => fail('socket', String(e)));
      sock.on('close', () => {
        clearTimeout(timer);
        if (!failed && state !== 3) error('closed_early', `TCP closed in state ${state}`);
        else if (!failed && win.open) {
          lat.add(now() - t0);
          if (++win.count >= cfg.max_count) win.stop();
        }
        if (!finished) { finished = true; resolve(); }
      });
    });
  }

  async function loop() {
    active += 1;
    while (running) await once();
    active -= 1;
  }
  const loops = Array.from({ length: K }, loop);
  await measure(win);
  running = false;
  const all = Promise.all(loops);
  const drained = await Promise.race([all.then(() => true), sleep(cfg.drain_timeout).then(() => false)]);
  if (!drained) error('unfinished', `${active} connection loops unfinished ${cfg.drain_timeout} s after the window`);
  return { ...win.result('connection'), ...lat.summary() };
}

// each session must still be there and answer (one ping each, checked)
async function answerPing(idle, opened) {
  let pongs = 0;
  for (const ws of idle) {
    if (!ws) continue;
    ws.on('message', (data) => {
      let msg;
      try { msg = JSON.parse(data); } catch (e) { msg = null; }
      if (msg && msg.type === 'pong' && msg.data === 1 && Object.keys(msg).length === 2) pongs += 1;
      else error('unexpected_message', String(data).slice(0, 200));
    });
    ws.send('{"type":"ping","data":1}');
  }
  if (!(await until(() => pongs === opened, cfg.drain_timeout))) {
    error('idle_unanswered', `${opened - pongs} of ${opened} idle sessions did not answer a ping`);
  }
}

const idleWorkload = () => lg.idleWorkload(openMany, answerPing, closeAll, 'sessions');

// -- NDJSON: the session protocol as JSON lines (wsservice's --listen-ndjson) ---------------
//
// `ndjson-call`: the `call` workload over a plain stream, one JSON object per line: C
// connections (`url` is tcp://HOST:PORT or unix:PATH), each says hello and waits for its
// welcome (checked as on WebSocket), then keeps W `call echo` in flight with the same ~100 B
// params; each result is checked by id and value like `call`'s. `net` and a line splitter of
// its own keep the client cheap; the calls sent while handling one received chunk go out in
// one write.

function ndjsonTarget(url) {
  if (url.startsWith('unix:')) return { path: url.slice('unix:'.length) };
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

// One stream, hello sent and welcome checked: resolves with {sock, onLine, out, ...} (onLine
// gets every later line, as a string without its '\n'; `out` is written after each chunk), or
// with null.
function openNdjson(t) {
  return new Promise((resolve) => {
    const c = { sock: null, onLine: null, out: '', rest: '', closing: false,
                next: 0, oldest: 1, inflight: new Map() };
    let welcomed = false, settled = false;
    const done = (v) => { if (!settled) { settled = true; clearTimeout(timer); resolve(v); } };
    const sock = net.connect(t);
    c.sock = sock;
    sock.setNoDelay(true);
    sock.setEncoding('utf8'); // a character split between chunks is kept whole
    const fail = (kind, detail) => {
      error(kind, detail);
      c.closing = true;
      sock.destroy();
      done(null);
    };
    const timer = setTimeout(() => fail('open_timeout', 'no welcome after 10 s'), 10000);
    sock.on('connect', () => sock.write('{"type":"hello"}\n'));
    sock.on('data', (chunk) => {
      const text = c.rest ? c.rest + chunk : chunk;
      let start = 0, end;
      while ((end = text.indexOf('\n', start)) >= 0) {
        const line = text.slice(start, end);
        start = end + 1;
        if (welcomed) {
          if (c.onLine) c.onLine(line);
          else error('unexpected_line', line.slice(0, 200));
        } else {
          let msg;
          try { msg = JSON.parse(line); } catch (e) { msg = null; }
          const bad = checkWelcome(msg);
          if (bad) return fail('welcome', bad);
          welcomed = true;
          done(c);
        }
      }
      c.rest = start < text.length ? text.slice(start) : '';
      if (c.out) { sock.write(c.out); c.out = ''; }
    });
    sock.on('error', (e) => { if (!c.closing) fail('socket', String(e)); });
    sock.on('close', () => {
      if (!c.closing) error('unexpected_close', `stream closed (${welcomed ? 'after' : 'before'} the welcome)`);
      c.closing = true;
      done(null);
    });
  });
}

async function ndjsonCallWorkload() {
  const { C, W, win, lat } = inFlight();
  const t = ndjsonTarget(URL_);
  let sending = true;
  let inflightTotal = 0;

  function send(c) {
    const id = ++c.next;
    c.inflight.set(id, now());
    inflightTotal += 1;
    c.out += `{"type":"call","id":${id},"method":"echo","params":${body(id)}}\n`;
  }

  function makeHandler(c) {
    return (text) => {
      // Fast path: the reply to the oldest call in flight, byte for byte (both servers write
      // orjson with members in this order). Anything else is parsed and checked.
      while (c.oldest <= c.next && !c.inflight.has(c.oldest)) c.oldest += 1;
      let id = c.oldest, ok = true;
      if (text !== `{"type":"result","id":${id},"result":${body(id)}}`) {
        let msg;
        try { msg = JSON.parse(text); } catch (e) { error('bad_json', text.slice(0, 100)); return; }
        if (!msg || msg.type !== 'result' || !c.inflight.has(msg.id)) {
          error('unexpected_reply', text.slice(0, 200));
          return;
        }
        id = msg.id;
        if (Object.keys(msg).length !== 3 || JSON.stringify(msg.result) !== body(id)) {
          error('wrong_result', text.slice(0, 200));
          ok = false; // answered (not in flight any more), but not counted
        }
      }
      const sent = c.inflight.get(id);
      c.inflight.delete(id);
      inflightTotal -= 1;
      if (ok && win.open) {
        lat.add(now() - sent);
        if (++win.count >= cfg.max_count) win.stop();
      }
      if (sending) send(c);
    };
  }

  const conns = await openPool(C, 50, () => openNdjson(t));
  const closeConns = () => {
    for (const c of conns) if (c) { c.closing = true; c.sock.destroy(); }
  };
  if (conns.some((c) => !c)) { closeConns(); return { fatal: 'could not open every connection' }; }
  for (const c of conns) {
    c.onLine = makeHandler(c);
    for (let k = 0; k < W; k++) send(c);
    c.sock.write(c.out);
    c.out = '';
  }
  await measure(win);
  sending = false;
  await drain(() => inflightTotal === 0, 'unanswered', () => `${inflightTotal} calls unanswered`);
  closeConns();
  return { ...win.result('call'), ...lat.summary() };
}

// -- main -------------------------------------------------------------------------------------

const WORKLOADS = {
  'ndjson-call': ndjsonCallWorkload,
  call: callWorkload, event: eventWorkload, fanout: fanoutWorkload,
  connect: connectWorkload, idle: idleWorkload,
};

// Redis's commands over the window, once they came (cluster runs)
async function finish(result, win) {
  if (!REDIS) return;
  if (win && win.closed) result.redis_commands = await redisCommands(win);
  REDIS.close();
}

lg.run(WORKLOADS, finish);
