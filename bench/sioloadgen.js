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
// the measured window, as in loadgen.js. What the two load generators share (the config, /proc,
// the window, waits, the raw client's framing, main) is in lgcommon.js.
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

const { io } = require('socket.io-client');
const lg = require('./lgcommon');

const { cfg, now, error, PAD, body, until } = lg;
const { Latencies, Window, inFlight, measure, drain, openPool } = lg;
const { requestBytes, textFrame } = lg;
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

// ~100 B of data whose JSON text is body(n) (lgcommon.js): loadgen.js's params, as an object
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

const openMany = (n, concurrency) => openPool(n, concurrency, () => openSocket());

function closeAll(sockets) {
  for (const s of sockets) {
    if (s) { s._benchClosing = true; s.close(); }
  }
}

// -- a minimal Engine.IO v4 / Socket.IO v4 client on `net` (the fan-out subscribers) -----------

const REQUEST = requestBytes({ path: `${EP.path}?EIO=4&transport=websocket`, host: EP.host });

const PONG_PACKET = textFrame('3');              // Engine.IO pong
const CONNECT_PACKET = textFrame('40');          // Socket.IO CONNECT to "/"
const SUBSCRIBE_PACKET = textFrame('420["subscribe"]'); // EVENT "subscribe", ack id 0
const SUBSCRIBED = '430[]';                      // ACK 0, no arguments

// The raw socket's set-up: Engine.IO open, Socket.IO connect and (with `subscribe`) the
// subscribe and its ack, each checked; Engine.IO pings answered (before and after).
// sess.state: 1 Engine.IO open, 2 Socket.IO connect, 3 subscribe ack, 4 ready
function sioSetup(subscribe) {
  return (p, sess, ready, fail) => {
    const state = sess.state;
    if (p.length === 1 && p[0] === 0x32) { // "2": an Engine.IO ping
      sess.sock.write(PONG_PACKET);
    } else if (state === 1) {
      let open = null;
      try { open = p[0] === 0x30 ? JSON.parse(p.subarray(1)) : null; } catch (e) { open = null; }
      if (!open || typeof open.sid !== 'string' || typeof open.pingInterval !== 'number') {
        return fail('eio_open', p.toString().slice(0, 200));
      }
      sess.state = 2;
      sess.sock.write(CONNECT_PACKET);
    } else if (state === 2) {
      let ok = false;
      try { ok = p.toString('latin1', 0, 2) === '40' && typeof JSON.parse(p.subarray(2)).sid === 'string'; } catch (e) { ok = false; }
      if (!ok) return fail('sio_connect', p.toString().slice(0, 200));
      if (subscribe) {
        sess.state = 3;
        sess.sock.write(SUBSCRIBE_PACKET);
      } else {
        sess.state = 4;
        ready();
      }
    } else if (state === 3) {
      if (p.toString() !== SUBSCRIBED) return fail('subscribe_ack', p.toString().slice(0, 200));
      sess.state = 4;
      ready();
    } else {
      return fail('unexpected_packet', `state ${state}: ${p.toString().slice(0, 200)}`);
    }
  };
}

// Open one raw socket (lgcommon.js's client, the set-up above). Resolves with {onText, send,
// sock, close} (onText gets every later Socket.IO packet, "4...", as a Buffer) or null.
const openRaw = (subscribe) => lg.openRaw({
  connect: EP.connect, request: REQUEST, timeout: 15000, waiting: 'not subscribed',
  prefix: 0x34, // "4": an Engine.IO message (a Socket.IO packet)
  setup: sioSetup(subscribe),
});

const openRawMany = (n, concurrency, subscribe) =>
  openPool(n, concurrency, () => openRaw(subscribe));

// -- workloads ----------------------------------------------------------------------------------

// `client: "raw"` (an experiment: run.py --set client='"raw"'): the call workload on the raw
// client instead of socket.io-client, to see whether the client's own cost moves the server's
// figure. Every ack is checked by id (in flight, once) and byte for byte.
async function rawCallWorkload() {
  const { C, W, win, lat } = inFlight();
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
  await drain(() => inflightTotal === 0, 'unanswered', () => `${inflightTotal} calls unanswered`);
  closeRaw();
  return { ...win.result('call'), ...lat.summary(), client: 'raw' };
}

async function callWorkload() {
  if (cfg.client === 'raw') return rawCallWorkload();
  const { C, W, win, lat } = inFlight();
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
  await drain(() => inflightTotal === 0, 'unanswered', () => `${inflightTotal} calls unanswered`);
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
  await drain(() => completed === published && acked === published, 'undelivered',
              () => `${published - completed} publications incomplete, `
                    + `${published - acked} unacknowledged`);
  closeSubs();
  closeAll([publisher]);
  return { ...win.result('delivery'), publications: published, ...lat.summary() };
}

// each socket must still be there and answer (one echo each, checked)
async function answerEcho(idle, opened) {
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
}

const idleWorkload = () => lg.idleWorkload(openMany, answerEcho, closeAll, 'sockets');

// -- main -------------------------------------------------------------------------------------

lg.run({ call: callWorkload, fanout: fanoutWorkload, idle: idleWorkload });
