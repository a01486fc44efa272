// What bench/loadgen.js and bench/sioloadgen.js share: the config, error counting, the server's
// CPU and RSS from /proc, the measured window, latencies, waits, the ~100 B body, the pieces of
// a minimal WebSocket client on `net`, and main (one JSON result line on stdout, a watchdog).
//
//   const lg = require('./lgcommon');
//
// Only plumbing lives here: each load generator keeps its own hot loops (send, reply handlers,
// frame loops), so moving these out changes neither one's messages nor its CPU per message.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const crypto = require('crypto');

// The load generator's name ("loadgen", "sioloadgen"): in its error lines and messages.
const NAME = path.basename(process.argv[1] || 'loadgen', '.js');

const cfg = JSON.parse(process.argv[2] || '{}');
const PID = cfg.pid;
// every process whose CPU counts (the server, or a cluster's nodes and Redis); RSS is PID's
const PIDS = cfg.pids && cfg.pids.length ? cfg.pids : [PID];
const HZ = cfg.clk_tck || 100;
const now = () => performance.now(); // ms, sub-µs resolution

// -- errors -----------------------------------------------------------------------------------

let errors = 0;
const examples = [];
function error(kind, detail) {
  errors += 1;
  if (examples.length < 12) {
    const text = `${kind}: ${detail}`.slice(0, 300);
    examples.push(text);
    process.stderr.write(`${NAME} error ${text}\n`);
  }
}

// -- the server process, from /proc ------------------------------------------------------------

function processCpu(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / HZ; // utime + stime, all threads
  } catch (e) {
    error('proc_stat', String(e));
    return NaN;
  }
}

// CPU seconds of every measured process, and their sum
const serverCpuEach = () => PIDS.map(processCpu);
const serverCpu = () => serverCpuEach().reduce((a, b) => a + b, 0);

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

// -- timing -------------------------------------------------------------------------------------

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

// Called with (window, 'start' | 'stop') at each edge of every window (loadgen.js reads Redis's
// command statistics there).
const edgeHooks = [];
function atWindowEdges(fn) { edgeHooks.push(fn); }

// The window of the run, once one opened (main's `finish` gets it).
let lastWindow = null;

// The measured window: server CPU and our own CPU at both edges, and the count in between.
class Window {
  constructor() { this.open = false; this.count = 0; this.closed = false; }
  start() {
    this.open = true; this.count = 0;
    this.t0 = now(); this.cpu0 = serverCpuEach(); this.own0 = ownCpu();
    for (const hook of edgeHooks) hook(this, 'start');
    lastWindow = this;
    // run.py --profile starts its profilers on this line (stderr is not parsed otherwise)
    if (cfg.announce_window) process.stderr.write('loadgen: window open\n');
  }
  stop() {
    if (!this.open) return;
    this.t1 = now(); this.cpu1 = serverCpuEach(); this.own1 = ownCpu();
    for (const hook of edgeHooks) hook(this, 'stop');
    this.open = false; this.closed = true;
    if (this.onStop) this.onStop();
  }
  result(unit) {
    const wall = (this.t1 - this.t0) / 1000;
    const each = this.cpu1.map((c, k) => c - this.cpu0[k]);
    const cpu = each.reduce((a, b) => a + b, 0);
    const out = {
      unit, count: this.count, wall_s: wall, server_cpu_s: cpu,
      per_s: this.count / wall,
      server_us_per: this.count ? (cpu * 1e6) / this.count : null,
      server_cpu_pct: (100 * cpu) / wall,
      client_cpu_pct: (100 * (this.own1 - this.own0)) / wall,
    };
    if (PIDS.length > 1) out.cpu_by_process = each;
    return out;
  }
}

// A workload of `connections` connections with `window` messages in flight on each: C, W, its
// window and its latencies (the first 4 M kept).
function inFlight() {
  const C = cfg.connections, W = cfg.window;
  return { C, W, win: new Window(), lat: new Latencies(Math.min(cfg.max_count + C * W, 4000000)) };
}

// Run the window: warm up, open it, close it after `duration` s (or when `max_count` is hit).
async function measure(win) {
  await sleep(cfg.warmup);
  win.start();
  await new Promise((resolve) => {
    const timer = setTimeout(() => win.stop(), cfg.duration * 1000);
    win.onStop = () => { clearTimeout(timer); resolve(); };
  });
}

// Wait until `cond()` holds or `timeout` s pass; false on timeout.
async function until(cond, timeout) {
  const end = now() + timeout * 1000;
  while (!cond()) {
    if (now() > end) return false;
    await sleep(0.01);
  }
  return true;
}

// After the window: wait up to `drain_timeout` s for `cond()`; an error `kind` if it never
// holds, whose text is `what()` (read then) and how long was waited.
async function drain(cond, kind, what) {
  if (!(await until(cond, cfg.drain_timeout))) {
    error(kind, `${what()} ${cfg.drain_timeout} s after the window`);
  }
}

// n results of `open(i)`, at most `concurrency` pending at a time (connection setup).
async function openPool(n, concurrency, open) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await open(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

// The idle workload: `warm_sessions` sessions, settle, RSS and CPU; `sessions` more, settle,
// RSS and CPU again; then `check(idle, opened)` (each must still answer; resolves when done);
// the figures per session. `openMany(n, concurrency)` resolves with sessions (null: failed).
async function idleWorkload(openMany, check, closeAll, noun) {
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
  await check(idle, opened);
  closeAll(warm);
  closeAll(idle);
  if (opened !== N) error('idle_open', `${opened} of ${N} ${noun} opened`);
  return {
    unit: 'session', count: opened, wall_s: (now() - t0) / 1000,
    rss0_kib: rss0, rss1_kib: rss1,
    kib_per_session: opened ? (rss1 - rss0) / opened : null,
    open_per_s: opened / openWall,
    server_us_per_open: opened ? ((cpu1 - cpu0) * 1e6) / opened : null,
  };
}

// ~100 B of params/data whose JSON text is a function of n (so a reply can be checked exactly)
const PAD = 'abcdefghijklmnopqrstuvwxyz0123';
const body = (n) => `{"n":${n},"user":"bench","tags":["a","b"],"ok":true,"x":1.5,"pad":"${PAD}"}`;

// -- a minimal WebSocket client on `net` -------------------------------------------------------
//
// Where `ws` or socket.io-client would cost the load generator about as much CPU as the server
// spends (connection setup, the 1000 fan-out subscribers): fixed handshake bytes, masked frames
// with an all-zero key, a frame parser of its own.

const WS_KEY = 'd3NzZXJ2aWNlLWJlbmNoLQ==';
const WS_ACCEPT = crypto.createHash('sha1')
  .update(WS_KEY + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');

// The handshake request for `path` (with its query) on `host`.
function requestBytes({ path: target, host }) {
  return Buffer.from(
    `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
    + `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
}

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

// The pong (masked, all-zero key) answering a ping frame's payload.
const pongFrame = (payload) => Buffer.concat([
  Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload]);

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

// Check the server's handshake response at the start of buf: the offset after it, 0 while
// incomplete, or an error string.
function handshakeEnd(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return 0;
  const head = buf.toString('latin1', 0, end);
  if (!head.startsWith('HTTP/1.1 101')) return `handshake refused: ${head.split('\r\n')[0]}`;
  const m = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head);
  if (!m || m[1] !== WS_ACCEPT) return 'wrong Sec-WebSocket-Accept';
  return end + 4;
}

// Open one session of the minimal client on `net`: the handshake (checked), then the protocol's
// own set-up, then text frames for the caller. Resolves with sess {sock, send(text), close(),
// onText, closing, state} once the set-up calls ready(), or with null (an error counted). Once
// ready, onText gets every text frame's payload (a Buffer) whose first byte is `prefix` (every
// one without a prefix); every other text frame goes to `setup`. Pings are answered, a close
// frame or an unknown frame ends the session. `proto`:
//   connect, request   where to connect (net.connect's options) and the handshake's bytes
//   timeout, waiting   ms until an open_timeout error, and what it says ("no welcome")
//   opened(sock)       after the 101, if given (loadgen.js sends its hello there)
//   setup(payload, sess, ready, fail)  one text frame before (or not for onText after) ready;
//                      sess.state (1 after the handshake) is the set-up's to move on
function openRaw(proto) {
  return new Promise((resolve) => {
    const sess = { sock: null, onText: null, closing: false, send: null, close: null, state: 0 };
    const prefix = proto.prefix === undefined ? -1 : proto.prefix;
    const setup = proto.setup;
    let buf = null, off = 0, settled = false, isReady = false;
    const done = (v) => { if (!settled) { settled = true; clearTimeout(timer); resolve(v); } };
    const ready = () => { isReady = true; done(sess); };
    const sock = net.connect(proto.connect);
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
    const timer = setTimeout(() => fail('open_timeout', `${proto.waiting} after `
                                        + `${proto.timeout / 1000} s (state ${sess.state})`),
                             proto.timeout);
    sock.on('connect', () => sock.write(proto.request));
    sock.on('data', (chunk) => {
      if (buf !== null && off < buf.length) buf = Buffer.concat([buf.subarray(off), chunk]);
      else buf = chunk;
      off = 0;
      if (sess.state === 0) {
        const end = handshakeEnd(buf);
        if (end === 0) return;
        if (typeof end === 'string') return fail('handshake', end);
        off = end;
        sess.state = 1;
        if (proto.opened) proto.opened(sock);
      }
      for (;;) {
        const f = frameAt(buf, off);
        if (f === null) return;
        if (f.error) return fail('frame', f.error);
        off = f.next;
        if (f.opcode === 1 && f.fin) {
          const p = f.payload;
          if (isReady && (prefix < 0 || p[0] === prefix)) {
            sess.onText(p);
          } else {
            setup(p, sess, ready, fail);
            if (sess.closing) return; // the set-up failed
          }
        } else if (f.opcode === 9) {
          // a WebSocket ping (uvicorn sends them): a pong with the same payload
          sock.write(pongFrame(f.payload));
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
      if (!sess.closing) error('unexpected_close', `TCP closed (state ${sess.state})`);
      done(null);
    });
  });
}

// -- main -------------------------------------------------------------------------------------

// Run cfg.workload (one of `workloads`, name -> async function resolving with its result)
// under a watchdog; print its result with `errors` and `examples` as one JSON line and exit.
// `finish(result, window)`, if given, adds to the result (the run's window, or null).
function run(workloads, finish) {
  process.on('uncaughtException', (e) => {
    error('exception', e && e.stack ? e.stack : String(e));
    process.stdout.write(JSON.stringify({ fatal: `exception: ${e}`, errors, examples }) + '\n',
                         () => process.exit(2));
  });
  (async () => {
    const fn = workloads[cfg.workload];
    if (!fn) {
      const known = Object.keys(workloads).join(', ');
      throw new Error(`${NAME}: no workload ${cfg.workload} (${known})`);
    }
    const watchdog = setTimeout(() => {
      error('watchdog', `${NAME} exceeded ${cfg.timeout} s`);
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
    if (finish) await finish(result, lastWindow);
    clearTimeout(watchdog);
    result.errors = errors;
    result.examples = examples;
    process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
  })();
}

module.exports = {
  NAME, cfg, PID, PIDS, now, error, serverCpu, serverRssKiB, ownCpu,
  sleep, percentile, Latencies, Window, atWindowEdges, inFlight, measure, until, drain, openPool,
  idleWorkload, PAD, body,
  WS_KEY, WS_ACCEPT, requestBytes, textFrame, frameAt, handshakeEnd, openRaw,
  run,
};
