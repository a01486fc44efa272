#!/usr/bin/env node
// Run one browser scenario against running wsservice server(s):
//
//   node tests/browser/run.mjs SCENARIO --server 127.0.0.1:PORT [--server2 127.0.0.1:PORT2]
//        [--artifacts DIR] [--timeout SECONDS]
//   node tests/browser/run.mjs --list
//
// Prints progress lines, then one final line `RESULT {json}`; exits 0 when every check
// passed, 1 with the failure, the browser's console and the page screenshots (in DIR)
// otherwise, 2 on bad usage, 3 when it ran out of time (default 60 s).

import { Harness, CheckFailed, show } from "./lib/harness.mjs";
import { scenarios } from "./scenarios.mjs";

function parse(argv) {
  const args = { servers: [], timeout: 60, artifacts: null, scenario: null, list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--server") args.servers[0] = value();
    else if (a === "--server2") args.servers[1] = value();
    else if (a === "--artifacts") args.artifacts = value();
    else if (a === "--timeout") args.timeout = Number(value());
    else if (a === "--list") args.list = true;
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else if (args.scenario === null) args.scenario = a;
    else usage(`one scenario at a time (got ${args.scenario} and ${a})`);
  }
  return args;
}

function usage(problem) {
  console.error(`run.mjs: ${problem}`);
  console.error("usage: node tests/browser/run.mjs SCENARIO --server HOST:PORT [--server2 HOST:PORT] [--artifacts DIR] [--timeout S]");
  console.error(`scenarios: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}

const args = parse(process.argv.slice(2));
if (args.list) {
  for (const [name, s] of Object.entries(scenarios)) console.log(`${name}: ${s.about}`);
  process.exit(0);
}
if (!args.scenario) usage("no scenario named");
const scenario = scenarios[args.scenario];
if (!scenario) usage(`no scenario ${args.scenario}`);
const needs = scenario.servers ?? 1;
if (args.servers.filter(Boolean).length < needs) usage(`${args.scenario} needs ${needs} server(s) (--server${needs > 1 ? ", --server2" : ""})`);

const h = new Harness({ scenario: args.scenario, servers: args.servers, artifacts: args.artifacts });
let finished = false;

async function fail(problem, code) {
  if (finished) return;
  finished = true;
  const summaries = await Promise.race([h.summaries(), h.sleep(5000).then(() => ["(no summaries in time)"])]).catch(() => []);
  const shots = await Promise.race([h.screenshots(), h.sleep(5000).then(() => [])]).catch(() => []);
  console.log(`FAILED ${args.scenario}: ${problem}`);
  console.log("---- the pages' clients (window.T.summary()) ----");
  for (const line of summaries) console.log(line);
  console.log(`---- browser console (${h.console.length} lines) ----`);
  for (const line of h.console) console.log(line);
  console.log("---- end of browser console ----");
  if (shots.length) console.log(`screenshots: ${shots.join(" ")}`);
  console.log(`RESULT ${JSON.stringify({ scenario: args.scenario, ok: false, error: problem, checks: h.checks, seconds: (Date.now() - h.t0) / 1000 })}`);
  await Promise.race([h.close(), h.sleep(5000)]);
  process.exit(code);
}

const timer = setTimeout(() => fail(`ran out of time: over ${args.timeout} s`, 3), args.timeout * 1000);

try {
  h.log(`${scenario.about} (servers: ${args.servers.join(", ")})`);
  await h.launch();
  const result = (await scenario.run(h)) ?? {};
  if (finished) process.exit(3);
  finished = true;
  clearTimeout(timer);
  await h.close();
  h.log(`passed: ${h.checks} checks`);
  console.log(`RESULT ${JSON.stringify({ scenario: args.scenario, ok: true, checks: h.checks, seconds: (Date.now() - h.t0) / 1000, ...result })}`);
  process.exit(0);
} catch (e) {
  clearTimeout(timer);
  const problem = e instanceof CheckFailed ? e.message : `${e && e.stack ? e.stack : show(e)}`;
  await fail(problem, 1);
}
