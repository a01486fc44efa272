// The browser harness: Debian's Chromium through playwright-core (never a downloaded
// browser), pages whose console is collected, the tests' TCP proxies, and checks that fail
// with what was expected and what was seen.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Proxy } from "./proxy.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.WSSERVICE_CHROMIUM || "/usr/bin/chromium";
// We run as root on a machine whose network is closed: no sandbox, and no background
// networking (Chromium would otherwise keep trying Google's hosts).
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const PAGE_HELPERS = path.join(HERE, "page.js");

export class CheckFailed extends Error {}

export class Harness {
  constructor({ scenario, servers, artifacts = null }) {
    this.scenario = scenario;
    this.servers = servers; // ["127.0.0.1:PORT", ...]
    this.artifacts = artifacts;
    this.t0 = Date.now();
    this.console = []; // every page's console lines and page errors, labelled
    this.pages = new Map(); // label -> page
    this.proxies = [];
    this.browser = null;
    this.checks = 0;
  }

  log(...parts) {
    const s = ((Date.now() - this.t0) / 1000).toFixed(2);
    console.log(`[${this.scenario} +${s}s]`, ...parts);
  }

  async launch() {
    if (!fs.existsSync(CHROMIUM)) {
      throw new CheckFailed(`${CHROMIUM} is missing: install Debian's chromium (sh scripts/system-deps.sh)`);
    }
    this.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 20000 });
    this.log(`chromium ${this.browser.version()} launched`);
    return this.browser;
  }

  /** A TCP proxy to `upstream` (default the first server), stopped at the end. */
  async proxy(upstream = this.servers[0], name = `proxy${this.proxies.length + 1}`) {
    const p = await new Proxy(upstream, { name, log: (m) => this.log(m) }).start();
    this.proxies.push(p);
    return p;
  }

  /** A page in a context of its own, loaded from `base` (http://HOST:PORT) + `path`, its
   * console collected, window.T installed (unless `helpers` is false: a page that does not
   * come from the service). `before(page)` runs before it loads (routes). */
  async page(label, base, { path: where = "/healthz", before = null, helpers = true } = {}) {
    const context = await this.browser.newContext();
    if (process.env.WSSERVICE_JS) {
      // try the scenarios on another copy of the client (a fix, a deliberately broken one)
      // without touching the server's
      const file = path.resolve(process.env.WSSERVICE_JS);
      await context.route(/\/wsservice\.js$/, (route) => route.fulfill({ path: file, contentType: "text/javascript" }));
      this.log(`${label}: /wsservice.js served from ${file} (WSSERVICE_JS)`);
    }
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on("console", (m) => this.console.push(`[${label}] console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => this.console.push(`[${label}] page error: ${e.stack || e}`));
    page.on("requestfailed", (r) => this.console.push(`[${label}] request failed: ${r.url()} ${r.failure()?.errorText}`));
    if (before) await before(page);
    const response = await page.goto(base + where);
    if (!response || response.status() !== 200) {
      throw new CheckFailed(`${label}: GET ${base + where} answered ${response && response.status()}`);
    }
    this.pages.set(label, page);
    if (!helpers) return page;
    await page.addScriptTag({ path: PAGE_HELPERS });
    const exported = await page.evaluate(() => window.T.load());
    this.pages.set(label, page);
    this.log(`${label}: page loaded from ${base}, wsservice.js exports ${exported.join(", ")}`);
    return page;
  }

  // --- checks -------------------------------------------------------------------------

  check(condition, message, seen) {
    this.checks += 1;
    if (!condition) {
      throw new CheckFailed(seen === undefined ? message : `${message}; seen: ${show(seen)}`);
    }
  }

  eq(actual, expected, message) {
    this.checks += 1;
    if (!deepEqual(actual, expected)) {
      throw new CheckFailed(`${message}: expected ${show(expected)}, got ${show(actual)}`);
    }
  }

  /** Poll `fn` (evaluated in `page`, given `arg`) until it returns a truthy value. */
  async until(page, fn, arg, what, timeoutMs = 10000) {
    try {
      const handle = await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 20 });
      const value = await handle.jsonValue();
      await handle.dispose();
      return value;
    } catch (e) {
      if (String(e).includes("Timeout")) throw new CheckFailed(`timed out after ${timeoutMs} ms waiting for ${what}`);
      throw e;
    }
  }

  sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
  }

  /** Each page's summary (T.summary()), as lines for a failure report. */
  async summaries() {
    const lines = [];
    for (const [label, page] of this.pages) {
      try {
        const summary = await Promise.race([page.evaluate(() => window.T.summary()), this.sleep(3000).then(() => "(page busy)")]);
        lines.push(`[${label}] ${JSON.stringify(summary)}`);
      } catch (e) {
        lines.push(`[${label}] no summary: ${String(e).split("\n")[0]}`);
      }
    }
    return lines;
  }

  async screenshots() {
    if (!this.artifacts) return [];
    fs.mkdirSync(this.artifacts, { recursive: true });
    const saved = [];
    for (const [label, page] of this.pages) {
      const file = path.join(this.artifacts, `${this.scenario}-${label}.png`);
      try {
        await page.screenshot({ path: file, timeout: 3000 });
        saved.push(file);
      } catch (e) {
        // a page that is gone has nothing to show
      }
    }
    return saved;
  }

  async close() {
    for (const p of this.proxies) await p.stop().catch(() => {});
    if (this.browser) await this.browser.close().catch(() => {});
  }
}

// --- checks on delivery records -------------------------------------------------------

/** Fail unless `got` (deliveries {kind, data, seq}) has seq exactly first, first+1, ...:
 * strictly increasing with no gap, so each message once, in order. */
export function contiguous(h, got, first, what) {
  const seqs = got.map((g) => g.seq);
  const expected = seqs.map((_, i) => first + i);
  h.eq(seqs, expected, `${what}: seqs delivered (each once, in order, no gap)`);
}

export function show(value) {
  const s = JSON.stringify(value, (k, v) => (v === undefined ? "<undefined>" : v));
  return s && s.length > 3000 ? s.slice(0, 3000) + "…" : s;
}

export function deepEqual(a, b) {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]));
  }
  return v;
}
