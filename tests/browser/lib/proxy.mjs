// A TCP proxy of the tests' own between the browser and a wsservice server: what a real
// network does to a connection, on command. Everything the page loads goes through it (the
// page's Origin is then the proxy's host:port, which the server sees as its Host too).
//
//   cut()          close every current connection, both sides, at once (the browser sees 1006)
//   stall()        stop forwarding both ways on every current connection without closing it
//                  (not even a FIN passes); connections made later work
//   down() / up()  refuse new connections (the port stops listening) / listen again
//   retarget(port) new connections go to another upstream port

import net from "node:net";

export class Proxy {
  constructor(upstream, { name = "proxy", log = () => {} } = {}) {
    const [host, port] = split(upstream);
    this.host = host;
    this.upstreamPort = port;
    this.name = name;
    this.log = log;
    this.port = 0;
    this.server = null;
    this.conns = new Set();
    this.accepted = 0; // connections accepted so far
    this.history = []; // {n, upstream} of every connection accepted
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  get base() {
    return `http://${this.address}`;
  }

  /** Connections open now (stalled ones included). */
  get open() {
    return this.conns.size;
  }

  async start() {
    await this._listen(0);
    this.log(`${this.name}: listening on ${this.address}, upstream ${this.host}:${this.upstreamPort}`);
    return this;
  }

  _listen(port) {
    const server = net.createServer((client) => this._accept(client));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.removeListener("error", reject);
        this.server = server;
        this.port = server.address().port;
        resolve();
      });
    });
  }

  _accept(client) {
    this.accepted += 1;
    const conn = { n: this.accepted, client, stalled: false, upstreamPort: this.upstreamPort };
    this.history.push({ n: conn.n, upstream: conn.upstreamPort });
    const upstream = net.connect(conn.upstreamPort, this.host);
    conn.upstream = upstream;
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.conns.add(conn);
    const forward = (from, to) => {
      from.on("data", (chunk) => {
        if (conn.stalled) return; // paused below; nothing more passes once stalled
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => conn.stalled || from.resume());
        }
      });
      from.on("end", () => conn.stalled || to.end());
    };
    forward(client, upstream);
    forward(upstream, client);
    const gone = () => {
      if (conn.stalled) return; // a stalled link forwards no FIN, no RST: it just goes quiet
      this._drop(conn);
    };
    client.on("error", gone);
    upstream.on("error", gone);
    client.on("close", gone);
    upstream.on("close", gone);
  }

  _drop(conn) {
    conn.client.destroy();
    conn.upstream.destroy();
    this.conns.delete(conn);
  }

  /** Close every current connection now; returns how many there were. */
  cut() {
    const n = this.conns.size;
    for (const conn of [...this.conns]) {
      conn.stalled = false;
      this._drop(conn);
    }
    this.log(`${this.name}: cut ${n} connection(s)`);
    return n;
  }

  /** Stop forwarding on every current connection, keeping it open; returns how many. */
  stall() {
    let n = 0;
    for (const conn of this.conns) {
      if (conn.stalled) continue;
      conn.stalled = true;
      conn.client.pause();
      conn.upstream.pause();
      n += 1;
    }
    this.log(`${this.name}: stalled ${n} connection(s)`);
    return n;
  }

  /** Refuse new connections (the port no longer listens) until up(). */
  async down() {
    if (!this.server) return;
    const server = this.server;
    this.server = null;
    // close() stops listening at once; its callback would wait for the open connections
    server.close();
    this.log(`${this.name}: down (refusing connections on ${this.address})`);
  }

  /** Listen again, on the same port. */
  async up() {
    if (this.server) return;
    await this._listen(this.port);
    this.log(`${this.name}: up again on ${this.address}`);
  }

  retarget(upstream) {
    const [host, port] = split(String(upstream));
    this.host = host;
    this.upstreamPort = port;
    this.log(`${this.name}: new connections now go to ${host}:${port}`);
  }

  async stop() {
    for (const conn of [...this.conns]) this._drop(conn);
    if (this.server) {
      const server = this.server;
      this.server = null;
      await new Promise((resolve) => server.close(resolve));
    }
  }
}

function split(address) {
  if (/^\d+$/.test(address)) return ["127.0.0.1", Number(address)];
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}
