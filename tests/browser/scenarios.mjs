// The browser client's end-to-end scenarios: wsservice.js in a real headless Chromium against
// real servers (tests/test_browser.py starts them), through the tests' own TCP proxy where
// the network has to fail, or against a scripted fake server (Playwright's routeWebSocket)
// where the server has to misbehave. Each checks real values: results, error codes, seqs,
// and the frames on the wire.

import fs from "node:fs";
import path from "node:path";

import { contiguous } from "./lib/harness.mjs";

// --- helpers ------------------------------------------------------------------------------

/** Open client `name` in `page`, listening to `events` and subscribed to `topics`. */
async function open(h, page, name, { options = {}, events = ["n"], topics = [] } = {}) {
  const r = await page.evaluate(([n, o, e]) => T.open(n, o, null, e), [name, options, events]);
  h.check(!r.error, `${name}: client.ready rejected`, r);
  h.eq(r.state, "open", `${name}: client.state once ready`);
  h.check(typeof r.session === "string" && r.session.length >= 16, `${name}: client.session is a session id`, r);
  for (const t of topics) await page.evaluate(([n, t]) => T.subscribe(n, t), [name, t]);
  return r.session;
}

const call = (page, name, method, params, options) =>
  page.evaluate(([n, m, p, o]) => T.call(n, m, p, o), [name, method, params, options]);
const rec = (page, name) => page.evaluate((n) => T.rec(n), name);
const wire = (page, filter) => page.evaluate((f) => T.wire(f), filter);
const state = (page, name) => page.evaluate((n) => T.client(n).state, name);

async function result(h, page, name, method, params, options) {
  const r = await call(page, name, method, params, options);
  h.check(!r.error, `${name}: call ${method}(${JSON.stringify(params)}) failed`, r);
  return r.result;
}

function gotCount(h, page, name, count, what, timeoutMs = 10000) {
  return h.until(page, ([n, c]) => T.clients[n].rec.got.length >= c && T.clients[n].rec.got.length, [name, count],
    `${what} (${count} deliveries to ${name})`, timeoutMs);
}

function untilState(h, page, name, wanted, timeoutMs = 10000) {
  return h.until(page, ([n, s]) => T.client(n).state === s, [name, wanted], `${name}.state to be ${wanted}`, timeoutMs);
}

/** From client `from` in `page`: tell `target` `n` events and publish `m` messages on `topic`,
 * interleaved, one after the other; the deliveries the target should see, in order. */
async function traffic(h, page, from, target, topic, n, m, tag) {
  const told = await page.evaluate(async ([from, target, topic, n, m, tag]) => {
    const client = T.client(from);
    const out = [];
    for (let k = 0; k < Math.max(n, m); k++) {
      if (k < n) out.push(await client.call("tell", { session: target, event: "n", data: { tag, i: k } }));
      if (k < m) out.push(await client.publish(topic, { tag, j: k }));
    }
    return out;
  }, [from, target, topic, n, m, tag]);
  const expected = [];
  const answers = [];
  for (let k = 0; k < Math.max(n, m); k++) {
    if (k < n) { expected.push({ kind: "event:n", data: { tag, i: k } }); answers.push(true); }
    if (k < m) { expected.push({ kind: `message:${topic}`, data: { tag, j: k } }); answers.push(null); }
  }
  h.eq(told, answers, `${from}: tell answers true (the session exists) and publish resolves`);
  return expected;
}

/** Page a through a new proxy (its network can fail), subscribed to topic T, with client
 * `options`; page b straight to the server, to push and publish to a meanwhile. */
async function proxiedPair(h, options = {}) {
  const proxy = await h.proxy();
  const pa = await h.page("a", proxy.base);
  const pb = await h.page("b", `http://${h.servers[0]}`); // direct, not through the proxy
  const session = await open(h, pa, "a", { topics: ["T"], options });
  await open(h, pb, "b", { events: [] });
  return { proxy, pa, pb, session };
}

const kinds = (got) => got.map((g) => ({ kind: g.kind, data: g.data }));

/** The hello frames `page` sent, each with its socket number. */
async function hellos(page) {
  return (await wire(page, { dir: "out", type: "hello" })).map((w) => ({ ws: w.ws, ...w.msg }));
}

// Fake servers (Playwright's routeWebSocket): the page's WebSocket never leaves the browser.
const WS_ROUTE = /\/ws(\?.*)?$/;
function welcome(session, extra = {}) {
  return JSON.stringify({ type: "welcome", session, token: `token-of-${session}`, resumed: false, heartbeat: 0, server: "fake/0", ...extra });
}

/** Page "a" whose WebSocket talks to a fake server: it records each connection's route and
 * every message received, answers ping, answers hello with `hello(msg)`'s welcome, and
 * hands every message to `more(route, msg)`. Returns [page, fake]. */
async function fakeServerPage(h, base, hello, more = () => {}) {
  const fake = { routes: [], received: [] };
  const page = await h.page("a", base, {
    before: (p) => p.routeWebSocket(WS_ROUTE, (route) => {
      fake.routes.push(route);
      route.onMessage((m) => {
        const msg = JSON.parse(m);
        fake.received.push(msg);
        if (msg.type === "hello") route.send(hello(msg));
        if (msg.type === "ping") route.send(JSON.stringify({ type: "pong", data: msg.data }));
        more(route, msg);
      });
    }),
  });
  return [page, fake];
}

// --- scenarios ----------------------------------------------------------------------------

export const scenarios = {};

scenarios.calls = {
  about: "hello, calls (results, application errors, unknown_method, internal), events, pushes",
  async run(h) {
    const base = `http://${h.servers[0]}`;
    const page = await h.page("a", base);
    const session = await open(h, page, "a", { options: { meta: { user: "alice", n: 1 } }, events: [] });
    const r0 = await rec(page, "a");
    h.eq(r0.states.map((s) => s.state), ["open"], "state changes up to ready");
    h.eq([r0.lastSeq, r0.resumes, r0.replayed], [0, 0, 0], "lastSeq, resumes, replayed of a new client");
    const opened = await wire(page, { dir: "open" });
    h.eq(opened.map((w) => w.protocol), ["wsservice.v1"], "the subprotocol the server chose");
    const sent = await hellos(page);
    h.eq(sent.length, 1, "hellos sent");
    h.eq(sent[0].meta, { user: "alice", n: 1 }, "hello.meta");
    h.check(sent[0].resume === undefined, "a first hello asks no resume", sent[0]);
    const welcomes = await wire(page, { dir: "in", type: "welcome" });
    h.eq(welcomes[0].msg.session, session, "client.session is the welcome's session");

    const who = await result(h, page, "a", "whoami", null);
    h.eq([who.session, who.meta], [session, { user: "alice", n: 1 }], "whoami: session and meta as the server has them");
    const params = { a: 1, s: "héllo ✓ \u2028", nested: [1, "x", null, { deep: true }], f: 1.5 };
    h.eq(await result(h, page, "a", "echo", params), params, "echo answers its params");
    h.eq(await result(h, page, "a", "echo", null), null, "echo of null");
    h.eq(await result(h, page, "a", "echo"), null, "a call without params");

    const rejected = await call(page, "a", "reject", { why: "because" });
    h.check(rejected.error, "reject rejects", rejected);
    h.eq(rejected.error, { name: "WsServiceError", code: "demo.rejected", message: "rejected, as asked", data: { why: "because" }, isWsServiceError: true, isError: true },
      "the WsServiceError of an application error");
    const unknown = await call(page, "a", "no.such.method", {});
    h.eq([unknown.error?.code, unknown.error?.isWsServiceError], ["unknown_method", true], "an unknown method's error code");
    const failed = await call(page, "a", "fail", {});
    h.eq(failed.error?.code, "internal", "a failing handler's error code");
    const invalid = await call(page, "a", "sleep", { seconds: "soon" });
    h.eq(invalid.error?.code, "invalid_params", "invalid params' error code");

    // many calls at once: each settles with its own answer; a slow one holds up nothing
    const many = await page.evaluate(async () => {
      const c = T.client("a");
      const order = [];
      const slow = c.call("sleep", { seconds: 0.4 }).then((v) => (order.push("slow"), v));
      const fast = [];
      for (let i = 0; i < 30; i++) fast.push(c.call("echo", { i }).then((v) => (order.push(i), v)));
      return { fast: await Promise.all(fast), slow: await slow, order };
    });
    h.eq(many.fast, Array.from({ length: 30 }, (_, i) => ({ i })), "30 concurrent echo calls, each its own answer");
    h.eq(many.slow, null, "sleep answers null");
    h.eq(many.order[many.order.length - 1], "slow", "the slow call settles last");

    // events: emit -> the demo pushes event "echo" back; on/off
    await page.evaluate(() => T.listen("a", "echo"));
    await page.evaluate(() => { T.client("a").emit("echo", { e: 1 }); T.client("a").emit("echo", "two"); });
    await gotCount(h, page, "a", 2, "the echo events");
    let r = await rec(page, "a");
    h.eq(r.got.map((g) => [g.kind, g.data, g.seq]), [["event:echo", { e: 1 }, 1], ["event:echo", "two", 2]], "echo events with seq");
    const pushed = await result(h, page, "a", "push", { count: 5, event: "n", data: [1, 2] });
    h.eq(pushed, 5, "push answers its count");
    await page.evaluate(() => T.listen("a", "n"));
    await result(h, page, "a", "push", { count: 3, event: "n", data: "x" });
    await gotCount(h, page, "a", 5, "3 n events");
    r = await rec(page, "a");
    // the first 5 pushes came before anyone listened to "n": seq 3..7 were not delivered
    h.eq(r.got.slice(2).map((g) => [g.kind, g.data, g.seq]), [["event:n", "x", 8], ["event:n", "x", 9], ["event:n", "x", 10]],
      "pushed events with their seq (after 5 pushes nobody listened to)");
    h.eq(r.lastSeq, 10, "client.lastSeq: the last seq received");
    // off: no more deliveries to that function
    await page.evaluate(() => {
      const c = T.client("a");
      T.extra = [];
      T.fn = (d, s) => T.extra.push([d, s]);
      c.on("m", T.fn);
    });
    await result(h, page, "a", "push", { count: 1, event: "m", data: "on" });
    await h.until(page, () => T.extra.length === 1, null, "event m delivered to the on() function");
    await page.evaluate(() => T.client("a").off("m", T.fn));
    await result(h, page, "a", "push", { count: 1, event: "m", data: "off" });
    await result(h, page, "a", "push", { count: 1, event: "n", data: "after" });
    await gotCount(h, page, "a", 6, "the n event after off()");
    h.eq(await page.evaluate(() => T.extra), [["on", 11]], "off() stopped the deliveries to that function");
    r = await rec(page, "a");
    h.eq(r.got[r.got.length - 1].seq, 13, "seq counts what was not delivered too");
    h.eq(r.warnings, [], "no warnings");
    h.eq(r.states.map((s) => s.state), ["open"], "no reconnect");
    return { session };
  },
};

scenarios.call_timeout_cancel = {
  about: "call timeout and AbortSignal cancel: rejected at once, the server told to cancel (max_inflight_calls=1)",
  async run(h) {
    const page = await h.page("a", `http://${h.servers[0]}`);
    await open(h, page, "a", { events: [] });
    // timeout: rejected after ~0.3 s although the call takes 5 s
    const timedOut = await call(page, "a", "sleep", { seconds: 5 }, { timeout: 0.3 });
    h.eq([timedOut.error?.code, timedOut.error?.isWsServiceError], ["timeout", true], "a call past its timeout");
    h.check(timedOut.ms >= 250 && timedOut.ms < 1500, "the timeout took about 0.3 s", timedOut.ms);
    let calls = await wire(page, { dir: "out", type: "call" });
    const sleepId = calls[0].msg.id;
    await h.until(page, (id) => T.wire({ dir: "out", type: "cancel" }).some((w) => w.msg.id === id), sleepId,
      "a cancel for the timed-out call", 2000);
    // The server cancelled it (max_inflight_calls is 1: had it not, this would be too_many_calls)
    h.eq(await result(h, page, "a", "echo", "next"), "next", "a call after the timeout (the server's one call slot is free)");
    await h.until(page, (id) => T.wire({ dir: "in", type: "error" }).some((w) => w.msg.id === id), sleepId,
      "the server's error for the cancelled call", 2000);
    const late = (await wire(page, { dir: "in", type: "error" })).find((w) => w.msg.id === sleepId);
    h.eq(late.msg.error.code, "cancelled", "the server answered the cancel with error cancelled");

    // AbortSignal
    await page.evaluate(() => T.start("abort", "a", "sleep", { seconds: 5 }, { abort: true }));
    await h.sleep(200);
    h.eq(await page.evaluate(() => T.settled.abort), "pending", "the call is pending before abort()");
    await page.evaluate(() => T.aborts.abort.abort());
    const aborted = await page.evaluate(() => T.pending.abort);
    h.eq([aborted.error?.code, aborted.error?.isWsServiceError], ["cancelled", true], "an aborted call");
    calls = await wire(page, { dir: "out", type: "call" });
    const abortedId = calls[calls.length - 1].msg.id;
    h.eq(calls[calls.length - 1].msg.method, "sleep", "the aborted call was sent");
    await h.until(page, (id) => T.wire({ dir: "out", type: "cancel" }).some((w) => w.msg.id === id), abortedId,
      "a cancel for the aborted call", 2000);
    h.eq(await result(h, page, "a", "echo", { after: "abort" }), { after: "abort" }, "a call after abort() (the server cancelled the sleep)");

    // an already-aborted signal: rejected at once, nothing sent
    const before = (await wire(page, { dir: "out", type: "call" })).length;
    const pre = await page.evaluate(async () => {
      const c = new AbortController();
      c.abort();
      try {
        await T.client("a").call("echo", 1, { signal: c.signal });
        return "resolved";
      } catch (e) {
        return e.code;
      }
    });
    h.eq(pre, "cancelled", "a call with an aborted signal");
    h.eq((await wire(page, { dir: "out", type: "call" })).length, before, "nothing sent for it");

    // the callTimeout option is every call's default
    await open(h, page, "b", { options: { callTimeout: 0.4 }, events: [] });
    const byDefault = await call(page, "b", "sleep", { seconds: 5 });
    h.eq(byDefault.error?.code, "timeout", "callTimeout: 0.4 applies to a call without timeout");
    h.check(byDefault.ms >= 350 && byDefault.ms < 1500, "it took about 0.4 s", byDefault.ms);
    h.eq(await result(h, page, "b", "echo", 2), 2, "b calls again");
    await h.sleep(300); // the server's late replies to cancelled calls arrive
    for (const name of ["a", "b"]) {
      const r = await rec(page, name);
      h.eq(r.warnings, [], `${name}: late replies to given-up calls are no warning`);
      h.eq(r.states.map((s) => s.state), ["open"], `${name}: no reconnect`);
    }
  },
};

scenarios.server_calls = {
  about: "server calls: handle() answers (values, promises, errors); unknown_method when no handler",
  async run(h) {
    const page = await h.page("a", `http://${h.servers[0]}`);
    await open(h, page, "a", { events: [] });
    await page.evaluate(() => {
      const c = T.client("a");
      T.served = [];
      c.handle("confirm", async (params, seq) => {
        T.served.push({ params, seq });
        await T.sleep(150);
        return { ok: params.q * 2 };
      });
      c.handle("plain", (params) => `plain:${params}`);
      c.handle("refuse", () => { throw new T.mod.WsServiceError("app.refused", "no, thanks", { why: 1 }); });
      c.handle("broken", () => { throw new Error("the handler broke"); });
    });
    h.eq(await result(h, page, "a", "ask", { method: "confirm", params: { q: 21 }, timeout: 5 }), { ok: 42 },
      "ask: the server's call answered by an async handler");
    h.eq(await result(h, page, "a", "ask", { method: "plain", params: "p" }), "plain:p", "a handler returning a value");
    const served = await page.evaluate(() => T.served);
    h.eq(served, [{ params: { q: 21 }, seq: 1 }], "the handler got the params and the call's seq");
    const none = await call(page, "a", "ask", { method: "nobody.handles.this", params: 1, timeout: 5 });
    h.eq(none.error?.code, "unknown_method", "the server's call of a method without handler (passed back by ask)");
    const refused = await call(page, "a", "ask", { method: "refuse", timeout: 5 });
    h.eq([refused.error?.code, refused.error?.message, refused.error?.data], ["app.refused", "no, thanks", { why: 1 }],
      "a handler's WsServiceError reaches the server as that error");
    const broken = await call(page, "a", "ask", { method: "broken", timeout: 5 });
    h.eq(broken.error?.code, "internal", "a handler's plain exception reaches the server as internal");
    // what went over the wire: one reply per server call, with its id
    const serverCalls = (await wire(page, { dir: "in", type: "call" })).map((w) => w.msg);
    h.eq(serverCalls.map((m) => [m.method, m.seq]), [["confirm", 1], ["plain", 2], ["nobody.handles.this", 3], ["refuse", 4], ["broken", 5]],
      "the server's calls, seq-numbered");
    const replies = (await wire(page, { dir: "out" })).map((w) => w.msg).filter((m) => m.type === "result" || m.type === "error");
    h.eq(replies.map((m) => [m.type, m.id, m.type === "error" ? m.error.code : m.result]),
      [["result", serverCalls[0].id, { ok: 42 }], ["result", serverCalls[1].id, "plain:p"], ["error", serverCalls[2].id, "unknown_method"],
        ["error", serverCalls[3].id, "app.refused"], ["error", serverCalls[4].id, "internal"]],
      "the client's replies to the server's calls");
    const r = await rec(page, "a");
    h.eq(r.lastSeq, 5, "server calls count as delivered seqs");
    h.eq(r.warnings, [], "no warnings");
  },
};

scenarios.pubsub = {
  about: "subscribe / publish / unsubscribe between two pages",
  async run(h) {
    const base = `http://${h.servers[0]}`;
    const pa = await h.page("a", base);
    const pb = await h.page("b", base);
    await open(h, pa, "a", { events: [], topics: ["room.1", "room.2"] });
    await open(h, pb, "b", { events: [], topics: ["room.1"] });
    const data = { text: "héllo ✓", n: [1, 2.5, null], nested: { deep: [true] } };
    h.eq(await pa.evaluate((d) => T.client("a").publish("room.1", d), data), null, "publish resolves with null");
    await gotCount(h, pa, "a", 1, "a's own publication");
    await gotCount(h, pb, "b", 1, "a's publication at b");
    await pb.evaluate(() => T.client("b").publish("room.2", "for a only"));
    await gotCount(h, pa, "a", 2, "b's publication on room.2");
    let a = await rec(pa, "a");
    let b = await rec(pb, "b");
    h.eq(a.got.map((g) => [g.kind, g.data, g.seq]), [["message:room.1", data, 1], ["message:room.2", "for a only", 2]], "a's messages");
    h.eq(b.got.map((g) => [g.kind, g.data, g.seq]), [["message:room.1", data, 1]], "b's messages (its own seq)");
    // a second function on a topic
    await pb.evaluate(() => { T.second = []; return T.client("b").subscribe("room.1", (d, s, t) => T.second.push([d, s, t])); });
    // unsubscribe: a hears no more of room.1
    await pa.evaluate(() => T.client("a").unsubscribe("room.1"));
    for (let i = 0; i < 5; i++) await pb.evaluate((i) => T.client("b").publish("room.1", { i }), i);
    await pb.evaluate(() => T.client("b").publish("room.2", "last"));
    await gotCount(h, pa, "a", 3, "the message on room.2 after unsubscribe");
    await gotCount(h, pb, "b", 6, "b's own 5 publications");
    a = await rec(pa, "a");
    b = await rec(pb, "b");
    h.eq(a.got.map((g) => [g.kind, g.data, g.seq]).slice(2), [["message:room.2", "last", 3]], "nothing of room.1 after unsubscribe");
    h.eq(b.got.map((g) => g.data).slice(1), [0, 1, 2, 3, 4].map((i) => ({ i })), "b's publications in order");
    contiguous(h, b.got, 1, "b");
    h.eq(await pb.evaluate(() => T.second.map(([d, s, t]) => [d.i, s, t])), [0, 1, 2, 3, 4].map((i) => [i, i + 2, "room.1"]),
      "a second function on the topic gets (data, seq, topic)");
    // many publications at once arrive in order
    await pb.evaluate(() => Promise.all(Array.from({ length: 50 }, (_, i) => T.client("b").publish("room.2", { burst: i }))));
    await gotCount(h, pa, "a", 53, "50 publications in a burst");
    a = await rec(pa, "a");
    h.eq(a.got.slice(3).map((g) => g.data.burst), Array.from({ length: 50 }, (_, i) => i), "a burst arrives in order");
    contiguous(h, a.got, 1, "a");
    h.eq([a.warnings, b.warnings], [[], []], "no warnings");
  },
};

scenarios.network_drop = {
  about: "network drop (cut, refused for a while): resume, every message once, in order (default backoff)",
  async run(h) {
    const { proxy, pa, pb, session } = await proxiedPair(h);
    const before = await traffic(h, pb, "b", session, "T", 3, 2, "before");
    await gotCount(h, pa, "a", 5, "the messages before the drop");
    // acked within ackDelay (1 s)
    await h.until(pa, () => T.wire({ dir: "out", type: "ack" }).some((w) => w.msg.seq === 5), null, "a's ack of seq 5", 2500);

    h.check(proxy.cut() >= 1, "the proxy had a's connection");
    await proxy.down();
    await untilState(h, pa, "a", "reconnecting", 5000);
    // while a is away: 20 events told to its session and 10 publications on its topic
    const meanwhile = await traffic(h, pb, "b", session, "T", 20, 10, "meanwhile");
    // a call made while reconnecting waits for the connection
    await pa.evaluate(() => T.start("queued", "a", "echo", { queued: true }));
    await h.sleep(1200); // the browser's retries are refused meanwhile
    h.eq(await pa.evaluate(() => T.settled.queued), "pending", "the queued call waits");
    h.eq(await state(pa, "a"), "reconnecting", "a.state while the network is down");
    const refused = (await wire(pa, { dir: "new" })).length;
    await proxy.up();
    const resumed = await h.until(pa, () => T.clients.a.rec.resumed.length > 0 && T.clients.a.rec.resumed, null, "the resumed event", 15000);
    h.eq(resumed.map((e) => e.replayed), [30], "resumed event: how many were replayed");
    await gotCount(h, pa, "a", 35, "every message");
    const queued = await pa.evaluate(() => T.pending.queued);
    h.eq(queued.result, { queued: true }, "the call queued while reconnecting, answered after");
    let a = await rec(pa, "a");
    h.eq(a.session, session, "the same session after the resume");
    h.eq(kinds(a.got), [...before, ...meanwhile], "every message once, in the order sent");
    contiguous(h, a.got, 1, "a");
    h.eq([a.lastSeq, a.resumes, a.replayed, a.lost.length], [35, 1, 30, 0], "lastSeq, resumes, replayed, lost events");
    h.eq(a.states.map((s) => s.state), ["open", "reconnecting", "open"], "a's state changes");
    h.eq(a.states[1].code, 1006, "statechange to reconnecting says the close code");
    // the resume as sent: the last socket's hello names the session and the last seq
    const sent = await hellos(pa);
    const last = sent[sent.length - 1];
    h.eq([last.resume?.session, last.resume?.last_seq, typeof last.resume?.token], [session, 5, "string"], "hello.resume");
    const welcomes = await wire(pa, { dir: "in", type: "welcome" });
    h.eq(welcomes.map((w) => [w.msg.session, w.msg.resumed]), [[session, false], [session, true]], "the welcomes");
    h.check(refused >= 2, "a retried while the proxy refused connections", refused);
    // the subscription lives on: a publication after the resume arrives, then is acked
    await traffic(h, pb, "b", session, "T", 0, 1, "after");
    await gotCount(h, pa, "a", 36, "the publication after the resume");
    await h.until(pa, () => T.wire({ dir: "out", type: "ack" }).some((w) => w.msg.seq === 36), null, "a's ack of seq 36", 2500);
    a = await rec(pa, "a");
    h.eq(a.warnings, [], "no warnings");
    return { session, lastSeq: a.lastSeq, sockets: await pa.evaluate(() => T.sockets()) };
  },
};

scenarios.resume_lost = {
  about: "a drop longer than resume_ttl: lost event, new session, topics subscribed again, calls work",
  async run(h) {
    const { proxy, pa, pb, session: old } = await proxiedPair(h, { backoffInitial: 0.1, backoffMax: 0.3 });
    await traffic(h, pb, "b", old, "T", 1, 2, "before");
    await gotCount(h, pa, "a", 3, "the messages before the drop");
    proxy.cut();
    await proxy.down();
    await untilState(h, pa, "a", "reconnecting", 5000);
    await h.sleep(2000); // resume_ttl is 1 s
    h.eq(await result(h, pb, "b", "tell", { session: old, event: "n", data: 1 }), false, "the old session expired on the server");
    await proxy.up();
    await h.until(pa, () => T.clients.a.rec.lost.length > 0, null, "the lost event", 10000);
    const a1 = await rec(pa, "a");
    h.check(a1.session !== old && typeof a1.session === "string", "a new session", [old, a1.session]);
    h.eq(a1.state, "open", "a.state after the lost session");
    h.eq([a1.resumes, a1.resumed.length, a1.lost.length], [0, 0, 1], "resumes, resumed events, lost events");
    const sent = await hellos(pa);
    h.eq([sent[sent.length - 1].resume?.session, sent[sent.length - 1].resume?.last_seq], [old, 3], "a asked to resume the old session");
    const welcomes = await wire(pa, { dir: "in", type: "welcome" });
    h.eq(welcomes.map((w) => [w.msg.session === old, w.msg.resumed]), [[true, false], [false, false]], "the welcomes");
    // the topic is subscribed again, on the new session
    const lastWs = welcomes[1].ws;
    await h.until(pa, (ws) => {
      const sub = T.wire({ ws, dir: "out", type: "subscribe" }).find((w) => w.msg.topic === "T");
      return sub && T.wire({ ws, dir: "in", type: "result" }).some((w) => w.msg.id === sub.msg.id);
    }, lastWs, "the server's answer to a's new subscribe of T", 5000);
    const newSession = a1.session;
    await traffic(h, pb, "b", newSession, "T", 1, 1, "after");
    await gotCount(h, pa, "a", 5, "the messages to the new session");
    const a2 = await rec(pa, "a");
    h.eq(a2.got.slice(3).map((g) => [g.kind, g.data, g.seq]),
      [["event:n", { tag: "after", i: 0 }, 1], ["message:T", { tag: "after", j: 0 }, 2]],
      "the new session's messages, seq from 1 again");
    h.eq(a2.lastSeq, 2, "lastSeq of the new session");
    h.eq(await result(h, pa, "a", "echo", "works"), "works", "calls work on the new session");
    h.eq((await result(h, pa, "a", "whoami", null)).session, newSession, "whoami: the new session");
    return { old, session: newSession };
  },
};

scenarios.stall = {
  about: "a stalled connection (heartbeat=1): found dead by the protocol ping, resumed with the replay",
  async run(h) {
    const { proxy, pa, pb, session } = await proxiedPair(h, { backoffInitial: 0.1, backoffMax: 0.5 });
    h.eq(await pa.evaluate(() => T.client("a").heartbeat ?? T.wire({ dir: "in", type: "welcome" })[0].msg.heartbeat), 1, "the welcome's heartbeat");
    const before = await traffic(h, pb, "b", session, "T", 1, 1, "before");
    await gotCount(h, pa, "a", 2, "the messages before the stall");
    // pings every heartbeat, each answered
    await h.sleep(2300);
    const pings = (await wire(pa, { dir: "out", type: "ping" })).filter((w) => typeof w.msg.data !== "string" || !w.msg.data.startsWith("resume"));
    const since = (await pa.evaluate(() => T.now())) - (await wire(pa, { dir: "in", type: "welcome" }))[0].t;
    h.check(Math.abs(pings.length - Math.floor(since / 1000)) <= 1, `a pinged every second (${since} ms since the welcome)`, pings.map((p) => p.t));
    const pongs = await wire(pa, { dir: "in", type: "pong" });
    h.check(pongs.length >= pings.length - 1, "the pongs came back", pongs.length);
    h.eq(await state(pa, "a"), "open", "a.state while the pongs come");

    h.check(proxy.stall() >= 1, "the proxy stalled a's connection");
    const stalledAt = await pa.evaluate(() => T.now());
    await pa.evaluate(() => T.start("inflight", "a", "echo", "into the void"));
    const meanwhile = await traffic(h, pb, "b", session, "T", 5, 5, "meanwhile");
    // (the reconnect may take a few ms only: wait for the record, not the state now)
    await h.until(pa, () => T.clients.a.rec.states.some((s) => s.state === "reconnecting"), null,
      "a's statechange to reconnecting", 5000);
    const detectedAt = await pa.evaluate(() => T.clients.a.rec.states.find((s) => s.state === "reconnecting").t);
    // a ping every heartbeat, the connection dead without a pong within another: 2 s at most
    h.check(detectedAt - stalledAt <= 3000, "the dead connection was found within two heartbeats", detectedAt - stalledAt);
    const inflight = await pa.evaluate(() => T.pending.inflight);
    h.eq(inflight.error?.code, "disconnected", "the call sent into the stalled connection");
    await h.until(pa, () => T.clients.a.rec.resumed.length > 0, null, "the resumed event", 8000);
    await gotCount(h, pa, "a", 12, "every message");
    const a = await rec(pa, "a");
    h.eq(a.session, session, "the same session");
    h.eq(kinds(a.got), [...before, ...meanwhile], "every message once, in the order sent");
    contiguous(h, a.got, 1, "a");
    h.eq(a.resumed.map((e) => e.replayed), [10], "replayed after the stall");
    h.check(a.warnings.some((w) => /pong/.test(w)), "a warning says why the connection was given up", a.warnings);
    const resumedAt = a.resumed[0].t;
    h.log(`dead connection found ${detectedAt - stalledAt} ms after the stall; resumed after ${resumedAt - stalledAt} ms`);
    // the new connection keeps its heartbeat without a false alarm
    await h.sleep(2500);
    h.eq(await state(pa, "a"), "open", "a.state 2.5 s after the resume");
    const after = await rec(pa, "a");
    h.eq(after.states.map((s) => s.state), ["open", "reconnecting", "open"], "state changes");
    h.eq(await result(h, pa, "a", "echo", "alive"), "alive", "a calls after the resume");
    return { session, detectedMs: detectedAt - stalledAt, resumedMs: resumedAt - stalledAt };
  },
};

scenarios.reconnect_calls = {
  about: "in-flight calls at a drop reject 'disconnected'; calls made while reconnecting wait; maxQueuedCalls; reconnect()",
  async run(h) {
    const proxy = await h.proxy();
    const pa = await h.page("a", proxy.base);
    const options = { backoffInitial: 0.1, backoffMax: 0.3 };
    const session = await open(h, pa, "a", { options, events: ["echo"] });
    await open(h, pa, "small", { options: { ...options, maxQueuedCalls: 2 }, events: [] });
    await pa.evaluate(() => T.start("inflight", "a", "sleep", { seconds: 5 }));
    await h.sleep(150);
    proxy.cut();
    await proxy.down();
    const inflight = await pa.evaluate(() => T.pending.inflight);
    h.eq(inflight.error?.code, "disconnected", "a call in flight when the connection dropped");
    h.check(inflight.ms < 1500, "rejected at the drop, not after the call's 5 s", inflight.ms);
    await untilState(h, pa, "a", "reconnecting", 3000);
    await untilState(h, pa, "small", "reconnecting", 3000);
    await pa.evaluate(() => {
      for (let i = 0; i < 3; i++) T.start(`q${i}`, "a", "echo", { q: i });
      T.client("a").emit("echo", "queued event");
      for (let i = 0; i < 3; i++) T.start(`s${i}`, "small", "echo", { s: i });
    });
    const third = await pa.evaluate(() => T.pending.s2);
    h.eq([third.error?.isWsServiceError, typeof third.error?.code], [true, "string"], "past maxQueuedCalls: rejected with a WsServiceError");
    h.check(third.ms < 100, "rejected at once", third.ms);
    await h.sleep(800);
    h.eq(await pa.evaluate(() => [T.settled.q0, T.settled.q1, T.settled.q2, T.settled.s0, T.settled.s1]), Array(5).fill("pending"),
      "calls made while reconnecting wait");
    await proxy.up();
    const answers = await pa.evaluate(() => Promise.all(["q0", "q1", "q2", "s0", "s1"].map((k) => T.pending[k])));
    h.eq(answers.map((r) => r.result ?? r.error), [{ q: 0 }, { q: 1 }, { q: 2 }, { s: 0 }, { s: 1 }], "the waiting calls, answered after the reconnect");
    await gotCount(h, pa, "a", 1, "the echo of the event emitted while reconnecting");
    let a = await rec(pa, "a");
    h.eq(a.got.map((g) => [g.kind, g.data]), [["event:echo", "queued event"]], "the queued event was sent");
    h.eq(a.session, session, "same session");
    h.eq(a.resumes, 1, "resumed once");
    // reconnect(): a new connection now, the same session
    const socketsBefore = await pa.evaluate(() => T.sockets());
    await pa.evaluate(() => T.client("a").reconnect());
    await h.until(pa, () => T.clients.a.rec.resumed.length >= 2, null, "the resume after reconnect()", 5000);
    h.eq(await pa.evaluate(() => T.sockets()) - socketsBefore, 1, "reconnect() opened one new socket");
    a = await rec(pa, "a");
    h.eq([a.session, a.state, a.resumes], [session, "open", 2], "after reconnect(): session, state, resumes");
    h.eq(await result(h, pa, "a", "echo", 7), 7, "calls after reconnect()");
    const closes = (await wire(pa, { dir: "closing" })).map((w) => w.code);
    h.check(!closes.includes(1000), "reconnect() did not close with 1000 (which would end the session)", closes);
  },
};

scenarios.close = {
  about: "close(): bye, state closed, the session ended on the server, no reconnect (also while reconnecting)",
  async run(h) {
    const options = { backoffInitial: 0.05, backoffMax: 0.2 };
    const { proxy, pa, pb, session } = await proxiedPair(h, options);
    const accepted = proxy.accepted;
    await pa.evaluate(() => T.start("pending", "a", "sleep", { seconds: 5 }));
    await h.sleep(100);
    await pa.evaluate(() => T.client("a").close());
    h.eq(await state(pa, "a"), "closed", "state right after close()");
    const pending = await pa.evaluate(() => T.pending.pending);
    h.check(pending.error?.isWsServiceError, "a call pending at close() rejects with a WsServiceError", pending);
    const out = (await wire(pa, { dir: "out" })).map((w) => w.msg.type);
    h.eq(out[out.length - 1], "bye", "bye is the last frame sent");
    const closing = await wire(pa, { dir: "closing" });
    h.eq(closing.map((w) => w.code), [1000], "the socket closed with 1000");
    await h.sleep(1000);
    h.eq(proxy.accepted, accepted, "no connection after close()");
    h.eq(await pa.evaluate(() => T.sockets()), 1, "one WebSocket in all");
    const after = await call(pa, "a", "echo", 1);
    h.check(after.error?.isWsServiceError, "a call after close() rejects with a WsServiceError", after);
    h.eq(await result(h, pb, "b", "tell", { session, event: "n", data: 1 }), false, "the session ended on the server (bye)");
    const a = await rec(pa, "a");
    h.eq(a.states.map((s) => s.state), ["open", "closed"], "state changes");

    // close() while reconnecting: no more attempts
    const c = await open(h, pa, "c", { options, events: [] });
    proxy.cut();
    await proxy.down();
    await untilState(h, pa, "c", "reconnecting", 3000);
    await h.sleep(300);
    await pa.evaluate(() => T.client("c").close());
    h.eq(await state(pa, "c"), "closed", "c.state after close() while reconnecting");
    await proxy.up();
    const upAt = proxy.accepted;
    await h.sleep(1000);
    h.eq(proxy.accepted, upAt, "no attempt after close() while reconnecting");
    return { session, other: c };
  },
};

scenarios.acks = {
  about: "acks: at least every 100 messages, the highest delivered seq, within 1 s of the last one",
  async run(h) {
    const page = await h.page("a", `http://${h.servers[0]}`);
    await open(h, page, "a");
    h.eq(await result(h, page, "a", "push", { count: 250, event: "n", data: "x" }), 250, "push 250");
    await gotCount(h, page, "a", 250, "250 pushes");
    await h.until(page, () => T.wire({ dir: "out", type: "ack" }).some((w) => w.msg.seq === 250), null, "the ack of 250", 2500);
    const frames = await wire(page, {});
    let delivered = 0;
    const acks = [];
    let lastAt = 0;
    for (const f of frames) {
      if (f.dir === "in" && f.msg?.type === "event") { delivered = f.msg.seq; lastAt = f.t; }
      if (f.dir === "out" && f.msg?.type === "ack") {
        h.check(f.msg.seq <= delivered, "an ack never runs ahead of what was received", [f.msg.seq, delivered]);
        acks.push({ seq: f.msg.seq, t: f.t, after: f.t - lastAt });
      }
    }
    const seqs = acks.map((a) => a.seq);
    h.check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), "acks increase", seqs);
    h.check(seqs.every((s, i) => s - (i ? seqs[i - 1] : 0) <= 100), "an ack at least every 100 messages", seqs);
    h.eq(seqs[seqs.length - 1], 250, "the last ack is the last seq");
    h.check(acks[acks.length - 1].after <= 1500, "the last ack within 1 s of the last message", acks[acks.length - 1]);
    // a few messages: one ack within a second, not one per message
    await result(h, page, "a", "push", { count: 3, event: "n", data: "y" });
    await gotCount(h, page, "a", 253, "3 more");
    await h.until(page, () => T.wire({ dir: "out", type: "ack" }).some((w) => w.msg.seq === 253), null, "the ack of 253", 2500);
    const more = (await wire(page, { dir: "out", type: "ack" })).map((w) => w.msg.seq).slice(acks.length);
    h.eq(more, [253], "one ack for 3 messages");
    await h.sleep(1200);
    h.eq((await wire(page, { dir: "out", type: "ack" })).length, acks.length + 1, "no ack when nothing new came");
    contiguous(h, (await rec(page, "a")).got, 1, "a");
    return { acks: seqs.concat(more) };
  },
};

scenarios.cluster = {
  about: "cluster: a page on node 1 loses its connection, resumes on node 2 with every message once, in order",
  servers: 2,
  async run(h) {
    const [node1, node2] = h.servers;
    const proxy = await h.proxy(node1);
    const pa = await h.page("a", proxy.base);
    const pb = await h.page("b", `http://${node2}`);
    const session = await open(h, pa, "a", { topics: ["T"], options: { backoffInitial: 0.1, backoffMax: 0.5 } });
    await open(h, pb, "b", { events: [] });
    const before = await traffic(h, pb, "b", session, "T", 2, 2, "before");
    await gotCount(h, pa, "a", 4, "node 2's messages at a on node 1");
    proxy.cut();
    await proxy.down();
    proxy.retarget(node2);
    await untilState(h, pa, "a", "reconnecting", 5000);
    const meanwhile = await traffic(h, pb, "b", session, "T", 10, 10, "meanwhile");
    await h.sleep(500);
    await proxy.up();
    await h.until(pa, () => T.clients.a.rec.resumed.length > 0, null, "the resume on node 2", 15000);
    await gotCount(h, pa, "a", 24, "every message");
    const last = proxy.history[proxy.history.length - 1];
    h.eq(last.upstream, Number(node2.split(":")[1]), "the proxy's last connection went to node 2");
    let a = await rec(pa, "a");
    h.eq(a.session, session, "the same session on node 2");
    const welcomes = await wire(pa, { dir: "in", type: "welcome" });
    h.eq(welcomes.map((w) => [w.msg.session, w.msg.resumed]), [[session, false], [session, true]], "the welcomes");
    h.eq(kinds(a.got), [...before, ...meanwhile], "every message once, in the order sent");
    contiguous(h, a.got, 1, "a");
    h.eq(a.resumed.map((e) => e.replayed), [20], "replayed on node 2");
    // subscriptions moved with the session
    await traffic(h, pb, "b", session, "T", 0, 1, "after");
    await gotCount(h, pa, "a", 25, "a publication after the resume");
    h.eq(await result(h, pa, "a", "echo", "node2"), "node2", "calls on node 2");
    a = await rec(pa, "a");
    h.eq(a.warnings, [], "no warnings");
    return { session, lastSeq: a.lastSeq };
  },
};

scenarios.bad_input = {
  about: "bad input from a (fake) server: each dropped with a warning, the client carries on, each seq once",
  async run(h) {
    const base = `http://${h.servers[0]}`;
    const [page, fake] = await fakeServerPage(h, base, () => welcome("fake-session-0123456789"));
    await open(h, page, "a", { events: ["n"] });
    const route = fake.routes[0];
    const event = (seq, data, extra = {}) => JSON.stringify({ type: "event", event: "n", data, seq, ...extra });
    route.send(event(1, "one"));
    await gotCount(h, page, "a", 1, "the first good message");
    const bad = [
      ["malformed JSON", "{\"type\": \"event\", oops"],
      ["an array", "[1, 2, 3]"],
      ["a string", "\"just a string\""],
      ["an object without type", JSON.stringify({ event: "n", seq: 9 })],
      ["an unknown type", JSON.stringify({ type: "surprise", seq: 9 })],
      ["a duplicate seq", event(1, "dup")],
      ["a result for an unknown id", JSON.stringify({ type: "result", id: 4242, result: 1 })],
      ["an error for an unknown id", JSON.stringify({ type: "error", id: "nobody", error: { code: "x", message: "y" } })],
      ["an event with a seq that is not a number", event("3", "stringy")],
    ];
    let seq = 1;
    for (let i = 0; i < bad.length; i++) {
      const [what, text] = bad[i];
      route.send(text);
      seq += 1;
      route.send(event(seq, `good after ${what}`));
      await gotCount(h, page, "a", seq, `the good message after ${what}`);
      const r = await rec(page, "a");
      h.eq(r.warnings.length, i + 1, `one warning for ${what} (warnings so far: ${JSON.stringify(r.warnings)})`);
    }
    // a lower seq than the last delivered (out of order) after a higher one
    route.send(event(seq + 1, "higher"));
    route.send(event(seq, "lower again"));
    route.send(event(seq - 3, "much lower"));
    route.send(event(seq + 2, "last", { unknown_member: true }));
    seq += 2;
    await gotCount(h, page, "a", seq, "the message after the out-of-order ones");
    await h.sleep(100);
    const r = await rec(page, "a");
    h.eq(r.got.map((g) => [g.seq, g.data]),
      [[1, "one"], ...bad.map(([what], i) => [i + 2, `good after ${what}`]), [seq - 1, "higher"], [seq, "last"]],
      "the good messages, each seq once, in order (an unknown member is no problem)");
    h.eq(r.warnings.length, bad.length + 2, `a warning for each out-of-order seq (warnings: ${JSON.stringify(r.warnings)})`);
    const warned = r.logged.filter((l) => l.level === "warn").length;
    h.check(warned >= bad.length + 2, "each warning also went to logger.warn", r.logged);
    h.eq([r.state, r.states.map((s) => s.state), fake.routes.length], ["open", ["open"], 1], "still open on its one connection");
    h.eq(r.lastSeq, seq, "lastSeq");
    // and the client still works: a call answered by the fake server
    const callDone = page.evaluate(() => T.call("a", "echo", { still: "works" }));
    await h.until(page, () => T.wire({ dir: "out", type: "call" }).length > 0, null, "the call sent", 3000);
    const sent = (await wire(page, { dir: "out", type: "call" }))[0].msg;
    route.send(JSON.stringify({ type: "result", id: sent.id, result: { answered: sent.params } }));
    h.eq((await callDone).result, { answered: { still: "works" } }, "a call answered after all that");
    await h.until(page, (s) => T.wire({ dir: "out", type: "ack" }).some((w) => w.msg.seq === s), seq, `the ack of ${seq}`, 2500);
    const acks = fake.received.filter((m) => m.type === "ack").map((m) => m.seq);
    h.check(acks.every((s) => s <= seq), "acks only of delivered seqs", acks);
  },
};

scenarios.close_codes = {
  about: "close codes from a (fake) server: 4401, 4400, 1000 end the client; 1013, 4408, 1001 and a drop are retried with resume",
  async run(h) {
    const base = `http://${h.servers[0]}`;
    const conns = {}; // key -> [{route, hello}]
    const plan = {}; // key -> function(route, msg, n) answering hello on the n-th connection
    const page = await h.page("a", base, {
      before: (p) => p.routeWebSocket(WS_ROUTE, (route) => {
        const key = new URL(route.url()).searchParams.get("k");
        conns[key] = conns[key] || [];
        const n = conns[key].length;
        const entry = { route, hellos: [] };
        conns[key].push(entry);
        route.onMessage((m) => {
          const msg = JSON.parse(m);
          if (msg.type === "hello") {
            entry.hellos.push(msg);
            plan[key](route, msg, n);
          }
          if (msg.type === "ping") route.send(JSON.stringify({ type: "pong", data: msg.data }));
        });
      }),
    });
    const options = { backoffInitial: 0.05, backoffMax: 0.2, backoffFactor: 2 };
    const url = (key) => `ws://${new URL(base).host}/ws?k=${key}`;
    const start = (key) => page.evaluate(([k, o, u]) => T.open(k, o, u, ["n"]), [key, options, url(key)]);

    // final codes after a welcome: no reconnect
    for (const code of [4401, 4400, 1000]) {
      const key = `final${code}`;
      plan[key] = (route) => {
        route.send(welcome(`s-${key}-0123456789`));
        setTimeout(() => route.close({ code, reason: `fake ${code}` }), 100);
      };
      await start(key);
      await untilState(h, page, key, "closed", 3000);
      await h.sleep(700); // several backoff periods
      const r = await rec(page, key);
      h.eq(conns[key].length, 1, `close ${code}: no reconnect attempt`);
      h.eq(r.states.map((s) => [s.state, s.code ?? null]), [["open", null], ["closed", code]], `close ${code}: state changes, with the code`);
    }
    // 4401 at hello (unauthorized): ready rejects, no reconnect
    plan.unauth = (route) => {
      route.send(JSON.stringify({ type: "error", error: { code: "unauthorized", message: "who are you" } }));
      route.close({ code: 4401, reason: "unauthorized" });
    };
    const unauth = await page.evaluate(([o, u]) => T.open("unauth", o, u), [options, url("unauth")]);
    h.check(unauth.error, "ready rejects when the hello is refused 4401", unauth);
    h.eq([unauth.error.code, unauth.state], ["unauthorized", "closed"], "the rejection's code and the state");
    await h.sleep(500);
    h.eq(conns.unauth.length, 1, "4401 at hello: no reconnect attempt");

    // codes after which the client resumes
    for (const code of [1013, 4408, 1001, 1006]) {
      const key = `retry${code}`;
      plan[key] = (route, hello, n) => {
        if (n === 0) {
          route.send(welcome(`s-${key}-0123456789`));
          route.send(JSON.stringify({ type: "event", event: "n", data: "first", seq: 1 }));
          setTimeout(() => route.close({ code, reason: `fake ${code}` }), 150);
        } else {
          route.send(welcome(`s-${key}-0123456789`, { resumed: true }));
          // a replay that overlaps what was delivered: seq 1 is dropped, 2 delivered
          route.send(JSON.stringify({ type: "event", event: "n", data: "first again", seq: 1 }));
          route.send(JSON.stringify({ type: "event", event: "n", data: "second", seq: 2 }));
        }
      };
      await start(key);
      await h.until(page, (k) => T.clients[k].rec.resumed.length > 0, key, `close ${code}: the resume`, 5000);
      await gotCount(h, page, key, 1, "");
      await h.until(page, (k) => T.clients[k].rec.got.some((g) => g.seq === 2), key, `close ${code}: seq 2 after the resume`, 3000);
      const r = await rec(page, key);
      h.eq(conns[key].length, 2, `close ${code}: one reconnect`);
      const resume = conns[key][1].hellos[0].resume;
      h.eq(resume && [resume.session, resume.token, resume.last_seq], [`s-${key}-0123456789`, `token-of-s-${key}-0123456789`, 1], `close ${code}: the hello's resume`);
      h.eq(r.states.map((s) => s.state), ["open", "reconnecting", "open"], `close ${code}: state changes`);
      h.eq(r.states[1].code, code, `close ${code}: the statechange's code`);
      h.eq(r.got.map((g) => [g.seq, g.data]), [[1, "first"], [2, "second"]], `close ${code}: each seq once`);
      h.eq(r.resumed.map((e) => e.replayed), [1], `close ${code}: replayed (the duplicate not counted)`);
      h.check(r.warnings.length >= 1, `close ${code}: the duplicate replayed message gave a warning`, r.warnings);
    }
    // 1013 at hello (server full): retried until a welcome
    plan.full = (route, hello, n) => {
      if (n < 2) route.close({ code: 1013, reason: "server full" });
      else route.send(welcome("s-full-0123456789"));
    };
    const full = await page.evaluate(([o, u]) => T.open("full", o, u), [options, url("full")]);
    h.eq([full.session, full.state, conns.full.length], ["s-full-0123456789", "open", 3], "1013 at hello: retried, open at the third connection");
    h.check(conns.full.every((c) => c.hellos[0].resume === undefined), "no resume before a first welcome",
      conns.full.map((c) => c.hellos[0]));
  },
};

const presenceOf = (page, name) => page.evaluate((n) => T.clients[n].rec.presence, name);
const members = async (h, page, name, topic) => {
  const r = await page.evaluate(([n, t]) => T.presence(n, t), [name, topic]);
  h.check(!r.error, `${name}: presence(${topic}) failed`, r);
  return r.result;
};
const byName = (list) => [...list].sort((x, y) => String(x.meta?.name).localeCompare(String(y.meta?.name)));
const who = (calls) => calls.map((c) => [c.kind, c.topic, c.member.meta?.name ?? c.member.meta]);

scenarios.presence = {
  about: "presence: a page hears another join and leave (unsubscribe, a lost session), presence() lists both, the option survives a lost session (resume_ttl=1)",
  async run(h) {
    const proxy = await h.proxy();
    const pa = await h.page("a", proxy.base);
    const pb = await h.page("b", `http://${h.servers[0]}`);
    const options = { backoffInitial: 0.1, backoffMax: 0.3 };
    const oldA = await open(h, pa, "a", { options: { ...options, meta: { public: { name: "Ada" }, secret: "x" } }, events: [] });
    await open(h, pb, "b", { options: { meta: { public: { name: "Bob" } } }, events: ["presence.join", "presence.leave"] });
    await pb.evaluate(() => T.subscribe("b", "room", true));
    const sub = (await wire(pb, { dir: "out", type: "subscribe" })).map((w) => w.msg);
    h.eq(sub.map((m) => [m.topic, m.presence]), [["room", true]], "b's subscribe asks for presence");
    const [bob] = await members(h, pb, "b", "room");
    h.eq([bob.user, bob.meta], [null, { name: "Bob" }], "b alone in the room: user, meta.public");
    h.check(typeof bob.client === "string" && bob.client.length > 0 && bob.client !== (await rec(pb, "b")).session,
      "a member's client is a public id, not the session id", bob);
    h.eq(await members(h, pb, "b", "nobody.here"), [], "presence of an empty topic");

    // a joins (no presence option): b hears it, through the option and as a plain event
    await pa.evaluate(() => T.subscribe("a", "room"));
    await h.until(pb, () => T.clients.b.rec.presence.length === 1, null, "b to hear a join");
    let heard = await presenceOf(pb, "b");
    const ada = heard[0].member;
    h.eq([heard[0].kind, heard[0].topic, ada.user, ada.meta], ["join", "room", null, { name: "Ada" }], "the join b heard");
    let b = await rec(pb, "b");
    h.eq(b.got.map((g) => [g.kind, g.data, g.seq]), [["event:presence.join", { topic: "room", member: ada }, 1]],
      "the join is an ordinary event too, with its seq");
    for (const [page, name] of [[pa, "a"], [pb, "b"]]) {
      h.eq(byName(await members(h, page, name, "room")), [ada, bob], `${name}: presence() lists both`);
    }
    // a leaves, joins again with the option: b hears both; a never hears itself
    await pa.evaluate(() => T.client("a").unsubscribe("room"));
    await pa.evaluate(() => T.subscribe("a", "room", true));
    await h.until(pb, () => T.clients.b.rec.presence.length === 3, null, "b to hear a leave and join again");
    heard = await presenceOf(pb, "b");
    h.eq(heard.slice(1).map((c) => [c.kind, c.member]), [["leave", ada], ["join", ada]], "leave, then join (same public id)");
    h.eq(await presenceOf(pa, "a"), [], "a heard nothing of its own join");

    // a's network is gone longer than resume_ttl: its session ends (b hears the leave); back,
    // a's new session subscribes again with presence, and hears b leave
    proxy.cut();
    await proxy.down();
    await h.until(pb, () => T.clients.b.rec.presence.length === 4, null, "b to hear a's session end", 10000);
    h.eq((await presenceOf(pb, "b"))[3].kind, "leave", "a's ended session left");
    h.eq(await members(h, pb, "b", "room"), [bob], "only b is left in the room");
    await proxy.up();
    await h.until(pa, () => T.clients.a.rec.lost.length === 1, null, "a's lost event", 10000);
    const lastWs = (await wire(pa, { dir: "in", type: "welcome" })).pop().ws;
    await h.until(pa, (ws) => {
      const s = T.wire({ ws, dir: "out", type: "subscribe" }).find((w) => w.msg.topic === "room");
      return s && s.msg.presence === true && T.wire({ ws, dir: "in", type: "result" }).some((w) => w.msg.id === s.msg.id);
    }, lastWs, "a's new session subscribed to room again, with presence", 5000);
    await h.until(pb, () => T.clients.b.rec.presence.length === 5, null, "b to hear a's new session join");
    const ada2 = (await presenceOf(pb, "b"))[4];
    h.eq([ada2.kind, ada2.member.meta], ["join", { name: "Ada" }], "the new session joined, meta.public as before");
    h.check(ada2.member.client !== ada.client, "a new session has a new public id", [ada, ada2.member]);
    h.check((await rec(pa, "a")).session !== oldA, "a has a new session");
    await pb.evaluate(() => T.client("b").close());
    await h.until(pa, () => T.clients.a.rec.presence.length === 1, null, "a to hear b leave (bye)");
    h.eq(who(await presenceOf(pa, "a")), [["leave", "room", "Bob"]], "a heard b leave");
    h.eq(await members(h, pa, "a", "room"), [ada2.member], "presence() after the lost session");
    b = await rec(pb, "b");
    h.eq(b.got.map((g) => g.kind), ["event:presence.join", "event:presence.leave", "event:presence.join",
      "event:presence.leave", "event:presence.join"], "b's plain events");
    contiguous(h, b.got, 1, "b");
    h.eq([(await rec(pa, "a")).warnings, b.warnings], [[], []], "no warnings");
    // a bad topic is refused before anything is sent
    const bad = await pa.evaluate(async () => {
      try { await T.client("a").presence(""); return "resolved"; } catch (e) { return e.name; }
    });
    h.eq(bad, "TypeError", "presence('')");
  },
};

scenarios.presence_fake = {
  about: "presence against a (fake) server: malformed answers and events, routing, the option turned on and off, a presence request repeated after a drop",
  async run(h) {
    const base = `http://${h.servers[0]}`;
    const answers = [];
    const [page, fake] = await fakeServerPage(
      h, base, (msg) => welcome("fake-session-0123456789", { resumed: !!msg.resume }),
      (route, msg) => {
        if (msg.type === "subscribe" || msg.type === "unsubscribe") route.send(JSON.stringify({ type: "result", id: msg.id, result: null }));
        if (msg.type === "presence") {
          const answer = answers.shift();
          if (answer !== "no answer") route.send(JSON.stringify({ type: "result", id: msg.id, result: answer }));
        }
      });
    fake.answers = answers;
    await open(h, page, "a", { options: { backoffInitial: 0.05, backoffMax: 0.1 }, events: ["presence.join"] });
    const route = () => fake.routes[fake.routes.length - 1];
    const ask = () => page.evaluate(() => T.presence("a", "room"));
    for (const answer of [null, [], "x", {}, { members: null }, { members: { a: 1 } }]) {
      fake.answers.push(answer);
      const r = await ask();
      h.eq([r.error?.code, r.error?.isWsServiceError, r.error?.data], ["bad_result", true, answer], `a presence answer ${JSON.stringify(answer)}`);
    }
    const good = { client: "c1", user: "ann", meta: { name: "Ann" } };
    fake.answers.push({ members: [good, null, 5, "c2", { user: "u" }, { client: "" }, { client: 7 }, { client: "c3", user: 5 },
      { client: "c4" }, { client: "c5", user: null, meta: [1], since: 12 }] });
    const listed = await ask();
    h.eq(listed.result, [good, { client: "c4", user: null, meta: null }, { client: "c5", user: null, meta: [1], since: 12 }],
      "malformed members left out, user and meta default to null, new members kept");
    let r = await rec(page, "a");
    h.eq(r.warnings.filter((w) => /malformed member of room/.test(w)).length, 7, `a warning per malformed member (${JSON.stringify(r.warnings)})`);

    // the option: added to an existing subscription it subscribes again with presence
    await page.evaluate(() => T.subscribe("a", "room"));
    await page.evaluate(() => T.subscribe("a", "room", true));
    await page.evaluate(() => T.subscribe("a", "room", true)); // the same function again: nothing sent
    await page.evaluate(() => T.subscribe("a", "other"));
    const subs = () => fake.received.filter((m) => m.type === "subscribe").map((m) => [m.topic, m.presence ?? null]);
    h.eq(subs(), [["room", null], ["room", true], ["other", null]], "the subscribes sent");
    const ev = (seq, data, name = "presence.join") => JSON.stringify({ type: "event", event: name, data, seq });
    const ann = { client: "c1", user: null, meta: { name: "Ann" } };
    const warningsBefore = r.warnings.length;
    for (const frame of [ev(1, { topic: "room", member: ann }), ev(2, { topic: "room", member: { client: "c2" } }),
      ev(3, { topic: "room", member: { client: 2 } }), ev(4, { member: ann }), ev(5, "not an object"),
      ev(6, { topic: "room" }, "presence.leave"), ev(7, { topic: "other", member: ann }), ev(8, { topic: "nowhere", member: ann }),
      ev(9, { topic: "room", member: ann }, "presence.leave"), ev(10, { topic: "room", member: ann }, "presence.moved")]) {
      route().send(frame);
    }
    await h.until(page, () => T.client("a").lastSeq === 10, null, "the ten events");
    r = await rec(page, "a");
    h.eq(r.presence.map((c) => [c.kind, c.member, c.topic]),
      [["join", ann, "room"], ["join", { client: "c2", user: null, meta: null }, "room"], ["leave", ann, "room"]],
      "the presence function got the topic's well-formed joins and leaves");
    h.eq(r.got.map((g) => g.seq), [1, 2, 3, 4, 5, 7, 8], "on('presence.join') got every join event, malformed too");
    h.eq(r.warnings.slice(warningsBefore).map((w) => w.replace(/:.*/, "")),
      ["dropped a malformed presence.join event", "dropped a malformed presence.join event",
        "dropped a malformed presence.join event", "dropped a malformed presence.leave event"], "a warning per malformed event");
    // the presence function removed, the message function stays: presence turned off
    await page.evaluate(() => T.client("a").unsubscribe("room", T.presenceFn("a")));
    h.eq(subs().slice(3), [["room", null]], "unsubscribe(topic, presenceFn) subscribes again without presence");
    route().send(ev(11, { topic: "room", member: ann }));
    await h.until(page, () => T.client("a").lastSeq === 11, null, "event 11");
    h.eq((await rec(page, "a")).presence.length, 3, "no presence call once it is off");
    h.eq(fake.received.filter((m) => m.type === "unsubscribe").length, 0, "the topic is still subscribed");

    // a presence request whose answer is lost with the connection is asked again on the next
    fake.answers.push("no answer", { members: [good] });
    const pending = page.evaluate(() => T.presence("a", "room"));
    await h.until(page, () => T.wire({ dir: "out", type: "presence" }).length === 8, null, "the presence request sent");
    route().close({ code: 1001, reason: "going away" });
    const again = await pending;
    h.eq(again.result, [good], "the presence answer from the next connection");
    h.eq(fake.routes.length, 2, "one reconnect");
    const presences = await wire(page, { dir: "out", type: "presence" });
    h.eq(presences.slice(-2).map((w) => w.ws), [1, 2], "the request was sent again on the new connection");
  },
};

// --- the demo page and the README's page, as a person uses them ----------------------------

const text = (page, sel) => page.locator(sel).innerText();
const inRoom = (page) => page.$$eval("#people li", (els) => els.map((e) => e.textContent));
const notes = (page) => page.$$eval("#chat .note", (els) => els.map((e) => e.textContent));
/** Wait until the page's "in this room" list is `names` (in order: you first). */
function untilPeople(h, page, names, what) {
  return h.until(page, (want) => {
    const got = [...document.querySelectorAll("#people li")].map((e) => e.textContent);
    return JSON.stringify(got) === JSON.stringify(want) && document.getElementById("peopleCount").textContent === String(want.length);
  }, names, `${what}: in this room ${JSON.stringify(names)}`);
}
/** A demo page whose remembered name is `nick` (as after an earlier visit). */
const remembered = (nick) => (page) => page.addInitScript((n) => localStorage.setItem("wsservice-demo-nick", n), nick);
const chatLines = (page) => page.$$eval("#chat .msg", (els) => els.map((e) => ({
  mine: e.classList.contains("mine"), who: e.querySelector(".who").firstChild.textContent,
  text: e.lastChild.textContent })));

scenarios.demo = {
  about: "the demo page clicked through: chat between two tabs (own lines marked), who is in the room (live), echo/call/whoami, a drop with replay, Drop & resume; screenshots; then leaving a room, a new name, closing the tab",
  async run(h) {
    const proxy = await h.proxy();
    const pa = await h.page("ada", proxy.base, { path: "/", before: remembered("Ada") });
    await pa.setViewportSize({ width: 1100, height: 720 });
    await untilPeople(h, pa, ["Ada (you)"], "Ada alone");
    const pb = await h.page("grace", `http://${h.servers[0]}`, { path: "/", before: remembered("Grace") });
    await pb.setViewportSize({ width: 390, height: 800 });  // a phone
    for (const [page, nick] of [[pa, "Ada"], [pb, "Grace"]]) {
      await page.fill("#nick", nick);  // as remembered: Join changes nothing
      await page.fill("#room", "lobby");
      await page.click("#join");
      await h.until(page, () => document.getElementById("state").textContent === "open", null, `${nick}: state open`);
      await h.until(page, () => document.getElementById("roomText").textContent === "lobby", null, `${nick}: in #lobby`);
      h.eq(await text(page, "#nickText"), nick, `${nick}: the name shown`);
    }
    await h.until(pa, () => /you joined #lobby as Ada/.test(document.getElementById("chat").textContent), null, "the join note");
    // who is in the room, live on both pages: Grace joined after Ada
    await untilPeople(h, pa, ["Ada (you)", "Grace"], "Ada's page");
    await untilPeople(h, pb, ["Grace (you)", "Ada"], "Grace's page");
    h.eq(await notes(pa), ["you joined #lobby as Ada", "Grace joined"], "Ada's notes");
    await pa.fill("#say", "Hello from tab A");
    await pa.press("#say", "Enter");
    await h.until(pb, () => document.querySelectorAll("#chat .msg").length === 1, null, "Grace sees Ada's line");
    await pb.fill("#say", "Hi Ada, this is Grace on her phone");
    await pb.click("#send");
    await h.until(pa, () => document.querySelectorAll("#chat .msg").length === 2, null, "Ada sees both lines");
    await h.until(pb, () => document.querySelectorAll("#chat .msg").length === 2, null, "Grace sees both lines");
    h.eq(await chatLines(pa), [{ mine: true, who: "Ada (you)", text: "Hello from tab A" },
                               { mine: false, who: "Grace", text: "Hi Ada, this is Grace on her phone" }], "Ada's chat");
    h.eq(await chatLines(pb), [{ mine: false, who: "Ada", text: "Hello from tab A" },
                               { mine: true, who: "Grace (you)", text: "Hi Ada, this is Grace on her phone" }], "Grace's chat");
    h.check(await pb.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
            "the page fits a phone-sized window (no sideways scrolling)");

    // the API buttons, their answers in the activity log
    await pa.fill("#text", "ping?");
    await pa.click("#callEcho");
    await h.until(pa, () => /echo result: "ping\?"/.test(document.getElementById("log").textContent), null, "the echo result in the log");
    await pa.click("#whoami");
    const tab = await pa.evaluate(() => window.demo.tab);
    await h.until(pa, (t) => document.getElementById("log").textContent.includes(
      `whoami: principal "anonymous", meta {"client":"demo-page","public":{"name":"Ada","tab":"${t}"}}`), tab, "whoami in the log");
    await pa.click("#sendEvent");
    await h.until(pa, () => /echo event #\d+: "ping\?"/.test(document.getElementById("log").textContent), null, "the echo event in the log");

    // the network drops under Ada: Grace talks meanwhile; Ada's tab resumes and replays
    const seqBefore = Number(await text(pa, "#lastSeq"));
    proxy.cut();
    await proxy.down();
    await h.until(pa, () => document.getElementById("state").textContent === "reconnecting", null, "Ada: reconnecting shown");
    h.eq(await inRoom(pb), ["Grace (you)", "Ada"], "Ada's session is still in the room while she reconnects");
    for (const line of ["Are you there?", "I'll wait"]) {
      await pb.fill("#say", line);
      await pb.click("#send");
    }
    await h.until(pb, () => document.querySelectorAll("#chat .msg").length === 4, null, "Grace's lines sent");
    await proxy.up();
    await h.until(pa, () => document.getElementById("resumes").textContent === "1", null, "Ada: 1 resume shown", 15000);
    await h.until(pa, () => document.querySelectorAll("#chat .msg").length === 4, null, "Ada: the missed lines");
    h.eq((await chatLines(pa)).slice(2).map((l) => l.text), ["Are you there?", "I'll wait"], "the replayed lines, once, in order");
    h.eq(await text(pa, "#replayed"), "2", "the replay count shown");
    h.eq(Number(await text(pa, "#lastSeq")), seqBefore + 2, "last seq shown");
    h.check(/2 missed message\(s\) replayed/.test(await text(pa, "#chat")), "the chat says what was replayed");
    h.check(/resumed: 2 message\(s\) replayed/.test(await text(pa, "#log")), "the log says so too");

    // Drop & resume, as a person clicks it
    await pa.click("#reconnect");
    await h.until(pa, () => document.getElementById("resumes").textContent === "2", null, "Ada: 2 resumes after the button");
    await pa.fill("#say", "Back again");
    await pa.click("#send");
    await h.until(pb, () => document.querySelectorAll("#chat .msg").length === 5, null, "Grace sees Ada's line after the resumes");
    h.eq(await text(pa, "#lost"), "0", "no session lost");
    h.eq(await text(pa, "#session"), (await pa.evaluate(() => window.demo.client.session.slice(0, 6))) + "\u2026",
         "the session label (a prefix, not the id)");
    h.eq([await inRoom(pa), await inRoom(pb)], [["Ada (you)", "Grace"], ["Grace (you)", "Ada"]], "both in the room after the resumes");
    h.eq(await notes(pb), ["you joined #lobby as Grace"], "Grace never saw Ada leave (a resumed session has not left)");
    h.check(await pb.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
            "the phone-sized page still fits, with its room list");
    await h.sleep(300);  // the last line's scroll
    const shots = [];
    if (h.artifacts) {
      fs.mkdirSync(h.artifacts, { recursive: true });
      for (const [page, name] of [[pa, "demo.png"], [pb, "demo-phone.png"]]) {
        const file = path.join(h.artifacts, name);
        await page.screenshot({ path: file });
        shots.push(file);
      }
    }

    // Grace goes to another room: Ada sees her leave; Grace is alone there
    await pb.fill("#room", "garden");
    await pb.click("#join");
    await untilPeople(h, pa, ["Ada (you)"], "Ada's page after Grace left");
    await untilPeople(h, pb, ["Grace (you)"], "Grace's page in #garden");
    h.eq((await notes(pa)).slice(-1), ["Grace left"], "Ada's note of it");
    // a new name is a new session: back in the lobby as "Grace H."
    await pb.fill("#nick", "Grace H.");
    await pb.fill("#room", "lobby");
    await pb.click("#join");
    await untilPeople(h, pa, ["Ada (you)", "Grace H."], "Ada's page after Grace came back renamed");
    await untilPeople(h, pb, ["Grace H. (you)", "Ada"], "Grace's page back in the lobby");
    h.eq(await text(pb, "#nickText"), "Grace H.", "the new name shown");
    h.eq((await notes(pa)).slice(-1), ["Grace H. joined"], "Ada's note of the new name");
    // closing the tab says bye: Ada sees Grace leave at once, not when the session expires
    await pb.close({ runBeforeUnload: true });
    h.pages.delete("grace");
    await untilPeople(h, pa, ["Ada (you)"], "Ada's page after Grace's tab closed");
    h.eq((await notes(pa)).slice(-1), ["Grace H. left"], "Ada's note of it");
    h.eq(await pa.evaluate(() => window.demo.client.state), "open", "Ada's client open at the end");
    return { screenshots: shots };
  },
};

scenarios.demo_lost = {
  about: "the demo page after a lost session (resume_ttl=1): a new session, the room's list fetched again",
  async run(h) {
    const proxy = await h.proxy();
    const pa = await h.page("ada", proxy.base, { path: "/", before: remembered("Ada") });
    await untilPeople(h, pa, ["Ada (you)"], "Ada alone");
    const pb = await h.page("grace", `http://${h.servers[0]}`, { path: "/", before: remembered("Grace") });
    await untilPeople(h, pa, ["Ada (you)", "Grace"], "Ada's page");
    await untilPeople(h, pb, ["Grace (you)", "Ada"], "Grace's page");
    proxy.cut();
    await proxy.down();
    await h.until(pa, () => document.getElementById("state").textContent === "reconnecting", null, "Ada: reconnecting shown");
    await untilPeople(h, pb, ["Grace (you)"], "Grace's page once Ada's session ended");
    // Grace takes a new name (a new session) while Ada is away: the events of it went to
    // Ada's ended session; her page learns it from the list it fetches after the loss
    await pb.fill("#nick", "Grace H.");
    await pb.click("#join");
    await untilPeople(h, pb, ["Grace H. (you)"], "Grace's page with her new name");
    await proxy.up();
    await h.until(pa, () => document.getElementById("lost").textContent === "1", null, "Ada: 1 session lost shown", 15000);
    await untilPeople(h, pa, ["Ada (you)", "Grace H."], "Ada's page after the lost session");
    await untilPeople(h, pb, ["Grace H. (you)", "Ada"], "Grace's page: Ada's new session joined");
    h.eq((await notes(pb)).filter((n) => /Ada/.test(n)), ["Ada left", "Ada joined"], "Grace's notes of Ada");
    await pb.fill("#say", "welcome back");
    await pb.click("#send");
    await h.until(pa, () => [...document.querySelectorAll("#chat .msg")].some((e) => /welcome back/.test(e.textContent)), null,
      "Ada's new session gets the room's messages");
  },
};

scenarios.readme_page = {
  about: "README's board.html, served by a static server of its own, against the service",
  async run(h) {
    // servers[0]: the static server serving board.html (its imports name the service)
    const page = await h.page("board", `http://${h.servers[0]}`, { path: "/board.html", helpers: false });
    await h.until(page, () => /#1 hi from the browser/.test(document.getElementById("out").textContent), null, "the page's output");
    const out = await text(page, "#out");
    h.eq(out.trim().split("\n"), ["state: open", 'echo: {"hello":"world"}', "#1 hi from the browser"], "what board.html prints");
    return { out };
  },
};
