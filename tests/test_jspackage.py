"""wsservice.js as what users fetch: served at /wsservice.js by every server, and an npm
package that a bundler user installs from a packed tarball and imports (types included)."""

from __future__ import annotations

import json
import os
import re
import shutil

from twisted.trial.unittest import TestCase

from wsservice import __version__
from wsservice.clientfiles import CLIENT_DIR

from . import processes
from .live import serve
from .wsclient import http

HERE = os.path.dirname(os.path.abspath(__file__))
TSC = os.path.join(HERE, "browser", "node_modules", ".bin", "tsc")

# A Node program using the installed package against a real server; Node 20's WebSocket
# is behind --experimental-websocket (a browser's is always there).
USE_IT = """
import { Client, WsServiceError, PROTOCOL, VERSION } from "wsservice";
import DefaultClient from "wsservice";
const client = new Client(process.argv[2], { meta: { from: "npm" } });
await client.ready;
const echoed = await client.call("echo", { a: [1, 2] });
let code = null;
try { await client.call("reject", 7); } catch (e) { code = e instanceof WsServiceError && e.code; }
client.close();
console.log(JSON.stringify({ echoed, code, PROTOCOL, VERSION, same: DefaultClient === Client,
                             state: client.state }));
"""

# Type-checked against the declarations the package's "exports" names.
TYPED = """
import { Client, WsServiceError, type ClientState, type Member, type PresenceKind,
         type PresenceEventData } from "wsservice";
const client = new Client("ws://127.0.0.1:1/ws", { meta: { a: 1 }, callTimeout: 5 });
const state: ClientState = client.state;
async function main(): Promise<void> {
  await client.ready;
  const n: number = await client.call<number>("add", [1, 2], { timeout: 2 });
  client.on("tick", (data, seq: number) => console.log(data, seq + n, state));
  client.handle("confirm", async (params) => params === 1);
  await client.subscribe("room", (data, seq, topic: string) => console.log(topic));
  await client.publish("room", { text: "hi" });
  const members: Member[] = await client.presence("room", { timeout: 2 });
  const users: (string | null)[] = members.map((m) => m.user);
  const onPresence = (kind: PresenceKind, member: Member, topic: string) =>
    console.log(kind === "join", member.client.length, member.meta, topic, users);
  await client.subscribe("room", null, { presence: onPresence });
  await client.subscribe("room", (data) => console.log(data), { presence: (kind, m) => m.user });
  client.on("presence.join", (data) => console.log((data as PresenceEventData).member.client));
  await client.unsubscribe("room", onPresence);
  client.addEventListener("resumed", (e) => console.log(e.detail.replayed + 1));
  client.addEventListener("statechange", (e) => console.log(e.detail.state));
  try { await client.unsubscribe("room"); } catch (e) {
    if (e instanceof WsServiceError) console.log(e.code.length);
  }
  client.close();
}
main();
"""

TSCONFIG = {"compilerOptions": {"strict": True, "noEmit": True, "module": "nodenext",
                                "moduleResolution": "nodenext", "target": "es2022",
                                "lib": ["es2022", "dom"], "skipLibCheck": False},
            "files": ["use.ts"]}


class ServedTests(TestCase):
    """Every listener serves the client and its declarations, never stale."""

    async def test_served(self) -> None:
        server = await serve(self)
        code, headers, body = await http(server.address, "/wsservice.js")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["text/javascript; charset=utf-8"])
        self.assertEqual(headers["cache-control"], ["no-cache"])
        self.assertEqual(headers["access-control-allow-origin"], ["*"])  # import from any page
        with open(os.path.join(CLIENT_DIR, "wsservice.js"), "rb") as f:
            self.assertEqual(body, f.read())
        code, headers, body = await http(server.address, "/wsservice.d.ts")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["application/typescript; charset=utf-8"])
        self.assertIn(b"export declare class Client extends EventTarget", body)
        code, _, _ = await http(server.address, "/wsservice.js/other")
        self.assertEqual(code, 404)

    async def test_served_on_unix(self) -> None:
        server = await serve(self, unix=True)
        code, _, body = await http(server.address, "/wsservice.js")
        self.assertEqual(code, 200)
        self.assertIn(b"export class Client extends EventTarget", body)

    def test_versions_in_step(self) -> None:
        with open(os.path.join(CLIENT_DIR, "package.json"), encoding="utf-8") as f:
            package = json.load(f)
        self.assertEqual(package["version"], __version__)
        with open(os.path.join(CLIENT_DIR, "wsservice.js"), encoding="utf-8") as f:
            found = re.search(r'export const VERSION = "([^"]+)"', f.read())
        assert found is not None
        self.assertEqual(found.group(1), __version__)
        self.assertEqual(package["exports"]["."]["types"], "./wsservice.d.ts")


class PackageTests(TestCase):
    """``npm pack`` of wsservice/js, installed into a scratch project, works there."""

    timeout = 180

    async def _installed(self) -> str:
        npm = shutil.which("npm")
        self.assertIsNotNone(npm, "npm is needed (scripts/system-deps.sh installs it)")
        assert npm is not None
        work = processes.scratch(self, "wsjs")
        out, err, code = await processes.run(
            [npm, "pack", CLIENT_DIR, "--pack-destination", work, "--json"], work)
        self.assertEqual(code, 0, err)
        packed = json.loads(out)[0]
        self.assertEqual(sorted(f["path"] for f in packed["files"]),
                         ["README.md", "package.json", "wsservice.d.ts", "wsservice.js"])
        project = os.path.join(work, "app")
        os.mkdir(project)
        with open(os.path.join(project, "package.json"), "w") as f:
            json.dump({"name": "app", "version": "1.0.0", "private": True, "type": "module"}, f)
        out, err, code = await processes.run(
            [npm, "install", "--no-audit", "--no-fund", "--offline",
             os.path.join(work, packed["filename"])], project)
        self.assertEqual(code, 0, out + err)
        return project

    async def test_pack_install_import(self) -> None:
        server = await serve(self)
        project = await self._installed()
        with open(os.path.join(project, "use.mjs"), "w") as f:
            f.write(USE_IT)
        node = shutil.which("node")
        assert node is not None
        out, err, code = await processes.run(
            [node, "--experimental-websocket", "use.mjs", f"ws://{server.address}/ws"], project)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(json.loads(out.strip().splitlines()[-1]), {
            "echoed": {"a": [1, 2]}, "code": "demo.rejected", "PROTOCOL": "wsservice.v1",
            "VERSION": __version__, "same": True, "state": "closed"})

    async def test_types_check(self) -> None:
        self.assertTrue(os.path.exists(TSC), "tests/browser/node_modules lacks typescript: "
                        "run make test (it runs npm ci there)")
        project = await self._installed()
        with open(os.path.join(project, "use.ts"), "w") as f:
            f.write(TYPED)
        with open(os.path.join(project, "tsconfig.json"), "w") as f:
            json.dump(TSCONFIG, f)
        out, err, code = await processes.run([TSC, "-p", "."], project)
        self.assertEqual(code, 0, out + err)
        # and each wrong use is caught: the declarations are not 'any' everywhere
        wrong = ["const wrong: number = client.state;", "client.call(5);",
                 'client.presence("x").then((m) => { const name: string = m[0].user; });',
                 'client.subscribe("x", null, { presence: (kind: "joined") => kind });',
                 'client.presence(["x"]);']
        with open(os.path.join(project, "use.ts"), encoding="utf-8") as f:
            first = len(f.read().splitlines()) + 1
        with open(os.path.join(project, "use.ts"), "a") as f:
            f.write("".join(line + "\n" for line in wrong))
        out, err, code = await processes.run([TSC, "-p", "."], project)
        self.assertNotEqual(code, 0)
        self.assertIn("TS2322", out)
        self.assertIn("TS2345", out)
        for n, line in enumerate(wrong, first):
            self.assertIn(f"use.ts({n},", out, f"tsc did not object to {line!r}")
