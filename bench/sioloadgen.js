#!/usr/bin/env node
// Load generator for the benchmark's socket.io peers (bench/peers/): the protocol of
// loadgen.js (a JSON config as argv, one JSON result line on stdout, the same result keys),
// spoken as socket.io v4 (Engine.IO v4, the websocket transport only).
//
//   node sioloadgen.js '<JSON config>'
//
// bench/run.py starts one per run of a peer, pinned to another core than the server. The
// config names the workload, the server's URL (ws://127.0.0.1:PORT/socket.io/) and its PID:
// the server's CPU time and RSS come from /proc/PID/stat and /proc/PID/status at the edges of
// the measured window, as in loadgen.js.
//
// Clients: socket.io-client (transports ["websocket"], no permessage-deflate, no
// reconnection, one Manager per connection) for the calls, the publisher and the idle
// sockets; for the 1000 fan-out subscribers a minimal Engine.IO/Socket.IO v4 client of its
// own on `net` (fixed handshake bytes, its own frame parser), as socket.io-client would cost
// the load generator more CPU per delivery than the server spends. Like loadgen.js, the sends
// made while handling one batch of received data go out in one write (`cork`).
//
// Every reply is checked: an ack by its id (socket.io-client matches it; an ack for no call in
// flight is an error) and its arguments (exactly one, equal to the data sent); a room message
// by publication number (previous + 1 per subscriber) and data, byte for byte against the
// expected frame or, when that differs, parsed; the publisher's acks (no arguments, one per
// publication); the raw client's handshake (101, Sec-WebSocket-Accept), Engine.IO open packet,
// Socket.IO connect packet and subscribe ack. Anything else counts as an error.
//
// Workloads (the names and parameters of loadgen.js):
//   call     C connections, W emit-with-ack `echo` in flight on each, ~100 B of data
//   fanout   S subscribers in room "bench", one publisher (not in the room) keeping P
//            `publish` in flight; one completes when every subscriber has it
//   idle     B sockets, RSS; N more, settle, RSS; then each answers one `echo`
'use strict';

const fs = require('fs');
const net = require('net');
const crypto = require('crypto');
const { io } = require('socket.io-client');

const cfg = JSON.parse(process.argv[2] || '{}');
const PID = cfg.pid;
const HZ = cfg.clk_tck || 100;
const now = () => performance.now();
const CORK = cfg.cork !== false;

// ws://127.0.0.1:PORT/socket.io/ -> what socket.io-client and the raw client need
function endpoint(url) {
  if (!url || !url.startsWith('ws://')) throw new Error(`sioloadgen needs a ws:// URL, not ${url}`);
  const u = new URL(url);
  return { base: `http://${u.host}`, path: u.pathname, host: u.host,
           connect: { host: u.hostname, port: Number(u.port) } };
}
const EP = endpoint(cfg.url);
const SIO_OPTS = {
  path: EP.path,
  transports: ['websocket'],
  forceNew: true,          // one Manager (one Engine.IO connection) per socket
  reconnection: false,     // a lost connection is an error, not retried
  perMessageDeflate: false,
  timeout: 10000,
};

// -- errors -----------------------------------------------------------------------------------

let errors = 0;
const examples = [];
function error(kind, detail) {
  errors += 1;
  if (examples.length < 12) {
    const text = `${kind}: ${detail}`.slice(0, 300);
    examples.push(text);
    process.stderr.write(`sioloadgen error ${text}\n`);
  }
}

// -- the server process, from /proc (as loadgen.js) ---------------------------------------------

function serverCpu() {
  try {
    const stat = fs.readFileSync(`/proc/${PID}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / HZ; // utime + stime, all threads
  } catch (e) {
    error('proc_stat', String(e));
    return NaN;
  }
}

function serverRssKiB() {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${PID}/status`, 'latin1'));
    return m ? Number(m[1]) : NaN;
  } catch (e) {
    error('proc_status', String(e));
    return NaN;
  }
}

function ownCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// -- helpers (as loadgen.js) ---------------------------------------------------------------------

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

class Latencies {
  constructor(cap) { this.a = new Float64Array(cap); this.n = 0; }
  add(ms) { if (this.n < this.a.length) this.a[this.n++] = ms; }
  summary() {
    const s = this.a.slice(0, this.n).sort();
    return { p50_ms: percentile(s, 0.5), p99_ms: percentile(s, 0.99),
             max_ms: s.length ? s[s.length - 1] : null, samples: this.n };
  }
}

class Window {
  constructor() { this.open = false; this.count = 0; this.closed = false; }
  start() {
    this.open = true; this.count = 0;
    this.t0 = now(); this.cpu0 = serverCpu(); this.own0 = ownCpu();
    if (cfg.announce_window) process.stderr.write('loadgen: window open\n');
  }
  stop() {
    if (!this.open) return;
    this.t1 = now(); this.cpu1 = serverCpu(); this.own1 = ownCpu();
    this.open = false; this.closed = true;
    if (this.onStop) this.onStop();
  }
  result(unit) {
    const wall = (this.t1 - this.t0) / 1000;
    const cpu = this.cpu1 - this.cpu0;
    return {
      unit, count: this.count, wall_s: wall, server_cpu_s: cpu,
      per_s: this.count / wall,
      server_us_per: this.count ? (cpu * 1e6) / this.count : null,
      server_cpu_pct: (100 * cpu) / wall,
      client_cpu_pct: (100 * (this.own1 - this.own0)) / wall,
    };
  }
}

async function measure(win) {
  await sleep(cfg.warmup);
  win.start();
  await new Promise((resolve) => {
    const timer = setTimeout(() => win.stop(), cfg.duration * 1000);
    win.onStop = () => { clearTimeout(timer); resolve(); };
  });
}

async function until(cond, timeout) {
  const end = now() + timeout * 1000;
  while (!cond()) {
    if (now() > end) return false;
    await sleep(0.01);
  }
  return true;
}

// ~100 B of data whose JSON text is a function of n: loadgen.js's params, as an object
const PAD = 'abcdefghijklmnopqrstuvwxyz0123';
const body = (n) => `{"n":${n},"user":"bench","tags":["a","b"],"ok":true,"x":1.5,"pad":"${PAD}"}`;
const data = (n) => ({ n, user: 'bench', tags: ['a', 'b'], ok: true, x: 1.5, pad: PAD });
// Whether r is data(n): exactly its members, in its order, with its values (what
// JSON.stringify(r) === body(n) says, at a fraction of the load generator's CPU per ack)
const KEYS = ['n', 'user', 'tags', 'ok', 'x', 'pad'];
function isData(r, n) {
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return false;
  let k = 0;
  for (const key in r) if (key !== KEYS[k++]) return false;
  const t = r.tags;
  return k === 6 && r.n === n && r.user === 'bench' && r.ok === true && r.x === 1.5
    && r.pad === PAD && Array.isArray(t) && t.length === 2 && t[0] === 'a' && t[1] === 'b';
}

// -- socket.io-client sockets --------------------------------------------------------------------

// Sends made while handling one batch of received data leave in one write: the engine's
// socket is corked until the event loop's check phase (after socket.io-client's nextTick
// deliveries and engine.io-client's nextTick flush).
function cork(c) {
  if (!CORK || c.corked) return;
  const transport = c.socket.io.engine && c.socket.io.engine.transport;
  const raw = transport && transport.ws && transport.ws._socket;
  if (!raw) return;
  c.corked = raw;
  raw.cork();
  setImmediate(uncork, c);
}

function uncork(c) {
  const raw = c.corked;
  c.corked = null;
  if (raw && !raw.destroyed) raw.uncork();
}

// Connect one socket (Socket.IO connected to "/"); resolves with it, or null.
function openSocket() {
  return new Promise((resolve) => {
    const socket = io(EP.base, SIO_OPTS);
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) { settled = true; error('connect_timeout', 'not connected after 15 s'); socket.close(); resolve(null); }
    }, 15000);
    socket.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('connect_error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      error('connect_error', String(e && e.message));
      socket.close();
      resolve(null);
    });
    socket.on('disconnect', (reason) => {
      if (!socket._benchClosing) error('unexpected_disconnect', reason);
    });
    // events the server must not send to this socket, and acks for no emit in flight
    socket.onAny((event, ...args) => {
      if (!socket.onEvent) error('unexpected_event', `${event} ${JSON.stringify(args).slice(0, 200)}`);
      else socket.onEvent(event, args);
    });
    const onack = socket.onack;
    socket.onack = function checkedAck(packet) {
      if (typeof this.acks[packet.id] !== 'function') {
        error('unexpected_ack', `id ${packet.id}: ${JSON.stringify(packet.data).slice(0, 200)}`);
        return;
      }
      onack.call(this, packet);
    };
  });
}

async function openMany(n, concurrency) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await openSocket();
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

function closeAll(sockets) {
  for (const s of sockets) {
    if (s) { s._benchClosing = true; s.close(); }
  }
}

// -- a minimal Engine.IO v4 / Socket.IO v4 client on `net` (the fan-out subscribers) -----------

const WS_KEY = 'd3NzZXJ2aWNlLWJlbmNoLQ==';
const WS_ACCEPT = crypto.createHash('sha1')
  .update(WS_KEY + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
const REQUEST = Buffer.from(
  `GET ${EP.path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${EP.host}\r\n`
  + 'Upgrade: websocket\r\nConnection: Upgrade\r\n'
  + `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`);

// A masked (all-zero key) client text frame.
function textFrame(text) {
  const payload = Buffer.from(text);
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x81, 0x80 | n, 0, 0, 0, 0]);
  else if (n < 65536) head = Buffer.from([0x81, 0x80 | 126, n >> 8, n & 0xff, 0, 0, 0, 0]);
  else throw new Error('frame too large for this client');
  return Buffer.concat([head, payload]);
}
const PONG_PACKET = textFrame('3');              // Engine.IO pong
const CONNECT_PACKET = textFrame('40');          // Socket.IO CONNECT to "/"
const SUBSCRIBE_PACKET = textFrame('420["subscribe"]'); // EVENT "subscribe", ack id 0
const SUBSCRIBED = '430[]';                      // ACK 0, no arguments

// One server frame from buf at offset: {fin, opcode, payload, next} or null when incomplete.
function frameAt(buf, off) {
  if (buf.length - off < 2) return null;
  const b0 = buf[off], b1 = buf[off + 1];
  if (b1 & 0x80) return { error: 'masked server frame' };
  let len = b1 & 0x7f, head = 2;
  if (len === 126) {
    if (buf.length - off < 4) return null;
    len = buf.readUInt16BE(off + 2); head = 4;
  } else if (len === 127) {
    if (buf.length - off < 10) return null;
    len = Number(buf.readBigUInt64BE(off + 2)); head = 10;
  }
  if (buf.length - off < head + len) return null;
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f,
           payload: buf.subarray(off + head, off + head + len), next: off + head + len };
}

function handshakeEnd(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return 0;
  const head = buf.toString('latin1', 0, end);
  if (!head.startsWith('HTTP/1.1 101')) return `handshake refused: ${head.split('\r\n')[0]}`;
  const m = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head);
  if (!m || m[1] !== WS_ACCEPT) return 'wrong Sec-WebSocket-Accept';
  return end + 4;
}

// Open one raw socket: WebSocket handshake, Engine.IO open, Socket.IO connect and (with
// `subscribe`) the subscribe and its ack, each checked. Resolves with {onText, send, sock,
// close} (onText gets every later Socket.IO packet as a Buffer; Engine.IO pings are answered
// here) or null.
function openRaw(subscribe) {
  return new Promise((resolve) => {
    const sess = { onText: null, closing: false, close: null, send: null, sock: null };
    // 0 handshake, 1 Engine.IO open, 2 Socket.IO connect, 3 subscribe ack, 4 subscribed
    let state = 0, buf = null, off = 0, settled = false;
    const done = (v) => { if (!settled) { settled = true; clearTimeout(timer); resolve(v); } };
    const sock = net.connect(EP.connect);
    sess.sock = sock;
    sess.send = (text) => sock.write(textFrame(text));
    sess.close = () => { sess.closing = true; sock.destroy(); };
    sock.setNoDelay(true);
    const fail = (kind, detail) => {
      error(kind, detail);
      sess.closing = true;
      sock.destroy();
      done(null);
    };
    const timer = setTimeout(() => fail('open_timeout', `not subscribed after 15 s (state ${state})`), 15000);
    sock.on('connect', () => sock.write(REQUEST));
    sock.on('data', (chunk) => {
      if (buf !== null && off < buf.length) buf = Buffer.concat([buf.subarray(off), chunk]);
      else buf = chunk;
      off = 0;
      if (state === 0) {
        const end = handshakeEnd(buf);
        if (end === 0) return;
        if (typeof end === 'string') return fail('handshake', end);
        off = end;
        state = 1;
      }
      for (;;) {
        const f = frameAt(buf, off);
        if (f === null) return;
        if (f.error) return fail('frame', f.error);
        off = f.next;
        if (f.opcode === 1 && f.fin) {
          const p = f.payload;
          if (state === 4 && p[0] === 0x34) { // "4": an Engine.IO message (a Socket.IO packet)
            sess.onText(p);
          } else if (p.length === 1 && p[0] === 0x32) { // "2": an Engine.IO ping
            sock.write(PONG_PACKET);
          } else if (state === 1) {
            let open = null;
            try { open = p[0] === 0x30 ? JSON.parse(p.subarray(1)) : null; } catch (e) { open = null; }
            if (!open || typeof open.sid !== 'string' || typeof open.pingInterval !== 'number') {
              return fail('eio_open', p.toString().slice(0, 200));
            }
            state = 2;
            sock.write(CONNECT_PACKET);
          } else if (state === 2) {
            let ok = false;
            try { ok = p.toString('latin1', 0, 2) === '40' && typeof JSON.parse(p.subarray(2)).sid === 'string'; } catch (e) { ok = false; }
            if (!ok) return fail('sio_connect', p.toString().slice(0, 200));
            if (subscribe) {
              state = 3;
              sock.write(SUBSCRIBE_PACKET);
            } else {
              state = 4;
              done(sess);
            }
          } else if (state === 3) {
            if (p.toString() !== SUBSCRIBED) return fail('subscribe_ack', p.toString().slice(0, 200));
            state = 4;
            done(sess);
          } else {
            return fail('unexpected_packet', `state ${state}: ${p.toString().slice(0, 200)}`);
          }
        } else if (f.opcode === 9) {
          // a WebSocket ping (uvicorn sends them): a pong with the same payload
          sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | f.payload.length, 0, 0, 0, 0]), f.payload]));
        } else if (f.opcode === 8) {
          const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
          if (!sess.closing) error('unexpected_close', `close frame ${code}`);
          sess.closing = true;
          sock.destroy();
          return done(null);
        } else if (f.opcode !== 10) {
          return fail('unexpected_frame', `opcode ${f.opcode}, fin ${f.fin}`);
        }
      }
    });
    sock.on('error', (e) => { if (!sess.closing) fail('socket', String(e)); });
    sock.on('close', () => {
      if (!sess.closing) error('unexpected_close', `TCP closed (state ${state})`);
      done(null);
    });
  });
}

async function openRawMany(n, concurrency, subscribe) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await openRaw(subscribe);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

// -- workloads ----------------------------------------------------------------------------------

// `client: "raw"` (an experiment: run.py --set client='"raw"'): the call workload on the raw
// client instead of socket.io-client, to see whether the client's own cost moves the server's
// figure. Every ack is checked by id (in flight, once) and byte for byte.
async function rawCallWorkload() {
  const C = cfg.connections, W = cfg.window;
  const win = new Window();
  const lat = new Latencies(Math.min(cfg.max_count + C * W, 4000000));
  let sending = true;
  let inflightTotal = 0;

  function send(c) {
    if (CORK && !c.corked) {
      c.corked = true;
      c.sess.sock.cork();
      process.nextTick(() => { c.corked = false; c.sess.sock.uncork(); });
    }
    const id = c.next++;
    c.inflight.set(id, now());
    inflightTotal += 1;
    c.sess.send(`42${id}["echo",${body(id)}]`);
  }

  function makeHandler(c) {
    return (payload) => {
      const text = payload.toString();
      const m = /^43(\d+)\[/.exec(text);
      const id = m ? Number(m[1]) : -1;
      if (!c.inflight.has(id)) {
        error('unexpected_packet', text.slice(0, 200));
        return;
      }
      const sent = c.inflight.get(id);
      c.inflight.delete(id);
      inflightTotal -= 1;
      if (text !== `43${id}[${body(id)}]`) {
        error('wrong_result', text.slice(0, 200));
      } else if (win.open) {
        lat.add(now() - sent);
        if (++win.count >= cfg.max_count) win.stop();
      }
      if (sending) send(c);
    };
  }

  const sessions = await openRawMany(C, 50, false);
  const closeRaw = () => { for (const sess of sessions) if (sess) sess.close(); };
  if (sessions.some((x) => !x)) { closeRaw(); return { fatal: 'could not open every connection' }; }
  const conns = sessions.map((sess) => ({ sess, next: 0, inflight: new Map(), corked: false }));
  for (const c of conns) c.sess.onText = makeHandler(c);
  for (const c of conns) for (let k = 0; k < W; k++) send(c);
  await measure(win);
  sending = false;
  if (!(await until(() => inflightTotal === 0, cfg.drain_timeout))) {
    error('unanswered', `${inflightTotal} calls unanswered ${cfg.drain_timeout} s after the window`);
  }
  closeRaw();
  return { ...win.result('call'), ...lat.summary(), client: 'raw' };
}

async function callWorkload() {
  if (cfg.client === 'raw') return rawCallWorkload();
  const C = cfg.connections, W = cfg.window;
  const win = new Window();
  const lat = new Latencies(Math.min(cfg.max_count + C * W, 4000000));
  let sending = true;
  let inflightTotal = 0;

  function send(c) {
    cork(c);
    const n = ++c.next;
    const sent = now();
    inflightTotal += 1;
    c.socket.emit('echo', data(n), function ack(r) {
      inflightTotal -= 1;
      if (arguments.length !== 1 || !isData(r, n)) {
        error('wrong_result', `call ${n}: ${JSON.stringify([...arguments]).slice(0, 200)}`);
      } else if (win.open) {
        lat.add(now() - sent);
        if (++win.count >= cfg.max_count) win.stop();
      }
      if (sending) send(c);
    });
  }

  const sockets = await openMany(C, 50);
  if (sockets.some((s) => !s)) { closeAll(sockets); return { fatal: 'could not open every connection' }; }
  const conns = sockets.map((socket) => ({ socket, next: 0, corked: null }));
  for (const c of conns) for (let k = 0; k < W; k++) send(c);
  await measure(win);
  sending = false;
  if (!(await until(() => inflightTotal === 0, cfg.drain_timeout))) {
    error('unanswered', `${inflightTotal} calls unanswered ${cfg.drain_timeout} s after the window`);
  }
  closeAll(sockets);
  return { ...win.result('call'), ...lat.summary() };
}

async function fanoutWorkload() {
  const S = cfg.subscribers, P = cfg.publications_in_flight;
  const win = new Window();
  const lat = new Latencies(100000); // publish to last delivery
  const RING = 1024;
  const got = new Int32Array(RING);     // deliveries of publication k, at k % RING
  const sentAt = new Float64Array(RING);
  const expected = new Array(RING);     // publication k's frame, as every subscriber must get it
  let published = 0, completed = 0, acked = 0, sending = true;

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
      // fast path: byte for byte the next publication
      if (k <= published && payload.equals(expected[k % RING])) {
        s.last = k;
        delivered(k);
        return;
      }
      const text = payload.toString();
      let msg = null;
      try { msg = text.startsWith('42') ? JSON.parse(text.slice(2)) : null; } catch (e) { msg = null; }
      if (!Array.isArray(msg) || msg.length !== 2 || msg[0] !== 'message' || !msg[1]) {
        error('unexpected_message', `subscriber ${i}: ${text.slice(0, 200)}`);
        return;
      }
      const n = msg[1].n;
      if (n !== s.last + 1 || n > published) error('order', `subscriber ${i}: expected ${s.last + 1}, got ${n}`);
      if (typeof n === 'number') s.last = n;
      if (JSON.stringify(msg[1]) !== body(n)) {
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
    expected[slot] = Buffer.from(`42["message",${body(k)}]`);
    publisher.emit('publish', data(k), (...args) => {
      if (args.length !== 0) error('publish_ack', `${k}: ${JSON.stringify(args).slice(0, 200)}`);
      acked += 1;
    });
  }

  const subs = await openRawMany(S, 100, true);
  const closeSubs = () => { for (const s of subs) if (s) s.close(); };
  if (subs.some((x) => !x)) { closeSubs(); return { fatal: 'could not open every subscriber' }; }
  subs.forEach((sess, i) => {
    const s = { last: 0 };
    sess.onText = makeHandler(s, i);
  });
  publisher = await openSocket(); // not in the room: no event may come to it
  if (!publisher) { closeSubs(); return { fatal: 'could not open the publisher' }; }
  for (let k = 0; k < P; k++) publish();
  await measure(win);
  sending = false;
  if (!(await until(() => completed === published && acked === published, cfg.drain_timeout))) {
    error('undelivered', `${published - completed} publications incomplete, ${published - acked} `
          + `unacknowledged ${cfg.drain_timeout} s after the window`);
  }
  closeSubs();
  closeAll([publisher]);
  return { ...win.result('delivery'), publications: published, ...lat.summary() };
}

async function idleWorkload() {
  const B = cfg.warm_sessions, N = cfg.sessions;
  const t0 = now();
  const warm = await openMany(B, 50);
  await sleep(cfg.settle);
  const rss0 = serverRssKiB();
  const cpu0 = serverCpu();
  const tOpen = now();
  const idle = await openMany(N, cfg.concurrency);
  const opened = idle.filter(Boolean).length;
  const openWall = (now() - tOpen) / 1000;
  await sleep(cfg.settle);
  const rss1 = serverRssKiB();
  const cpu1 = serverCpu();
  // each socket must still be there and answer (one echo each, checked)
  let answered = 0;
  idle.forEach((socket, i) => {
    if (!socket) return;
    socket.emit('echo', data(i), (...args) => {
      if (args.length === 1 && JSON.stringify(args[0]) === body(i)) answered += 1;
      else error('wrong_result', `idle ${i}: ${JSON.stringify(args).slice(0, 200)}`);
    });
  });
  if (!(await until(() => answered === opened, cfg.drain_timeout))) {
    error('idle_unanswered', `${opened - answered} of ${opened} idle sockets did not answer an echo`);
  }
  closeAll(warm);
  closeAll(idle);
  if (opened !== N) error('idle_open', `${opened} of ${N} sockets opened`);
  return {
    unit: 'session', count: opened, wall_s: (now() - t0) / 1000,
    rss0_kib: rss0, rss1_kib: rss1,
    kib_per_session: opened ? (rss1 - rss0) / opened : null,
    open_per_s: opened / openWall,
    server_us_per_open: opened ? ((cpu1 - cpu0) * 1e6) / opened : null,
  };
}

// -- main -------------------------------------------------------------------------------------

const WORKLOADS = { call: callWorkload, fanout: fanoutWorkload, idle: idleWorkload };

process.on('uncaughtException', (e) => {
  error('exception', e && e.stack ? e.stack : String(e));
  process.stdout.write(JSON.stringify({ fatal: `exception: ${e}`, errors, examples }) + '\n',
                       () => process.exit(2));
});

async function main() {
  const fn = WORKLOADS[cfg.workload];
  if (!fn) throw new Error(`sioloadgen: no workload ${cfg.workload} (call, fanout, idle)`);
  const watchdog = setTimeout(() => {
    error('watchdog', `sioloadgen exceeded ${cfg.timeout} s`);
    process.stdout.write(JSON.stringify({ fatal: 'watchdog', errors, examples }) + '\n');
    process.exit(2);
  }, (cfg.timeout || 300) * 1000);
  let result;
  try {
    result = await fn();
  } catch (e) {
    error('exception', e && e.stack ? e.stack : String(e));
    result = { fatal: String(e) };
  }
  clearTimeout(watchdog);
  result.errors = errors;
  result.examples = examples;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

main();
