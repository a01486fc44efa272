#!/usr/bin/env python
"""Redis alone: the cluster batch script's fan-out ('X') in steady state, against variants.

    cd bench && ../.venv/bin/python cluster_lua.py            # ~1 min

Starts its own redis-server (loopback, a free port, no persistence) pinned to the first CPU,
itself on the others; makes 1000 sessions of node n2 subscribed to ``bench``, publishes until
every replay list is full (1000 frames), then times 600 more publications (two per EVALSHA,
as the nodes' batches hold in make bench) by redis-server's utime + stime. The product's
script (``wsservice.redislua.BATCH`` as installed) against rewrites of it made here by text
substitution, to size what a change to the script saves or would save (not a test of their
correctness): the fan-out loop as it was before issue 13 (each seq a Lua number, which Redis
7.0 formats with snprintf %.17g as a command argument and Lua with %.14g in a
concatenation; the product now formats it once with %d); keep()'s numbers as strings too;
the frame kept once per publication and each session's list holding a short reference (an
upper bound for that layout: the replay side is not written).
"""
import os, shutil, socket, subprocess, sys, tempfile, time
from wsservice.redislua import BATCH

KEEP_OLD = BATCH[BATCH.index('local function keep('):BATCH.index('-- forget every kept frame')]
KEEP_NEW = r"""local function keep(h, frame, limit, maxb)
  if limit <= 0 then return end
  local r = h .. ':r'
  local n = redis.call('RPUSH', r, frame)
  local size = #frame
  if n > limit then  -- the steady state: one in, one out
    size = size - #redis.call('LPOP', r)
    n = n - 1
  end
  local b = redis.call('HINCRBY', h, 'b', string.format('%d', size))
  if b > maxb then
    while n > 0 and b > maxb do
      local f = redis.call('LPOP', r)
      b = b - #f
      n = n - 1
    end
    redis.call('HSET', h, 'b', string.format('%d', b))
  end
end
"""
# The fan-out loop's member step as the product writes it since issue 13 (its number
# formatted once with %d), and as it was before (Lua numbers, formatted with %.14g per use).
X_NOW = """          local seq = string.format('%d', redis.call('HINCRBY', h, 'seq', '1'))
          if seq == '1' and redis.call('HEXISTS', h, 'node') == 0 then"""
X_BEFORE = """          local seq = redis.call('HINCRBY', h, 'seq', 1)
          if seq == 1 and redis.call('HEXISTS', h, 'node') == 0 then"""


def variant_before(src):
    # what issue 13's change to the loop bought: the numbers as Lua numbers again
    assert src.count(X_NOW) == 1
    return src.replace(X_NOW, X_BEFORE)


def variant_b(src):
    # keep() with its own numbers as strings too
    assert src.count(KEEP_OLD) == 1
    return src.replace(KEEP_OLD, KEEP_NEW)


def variant_ref(src):
    b = variant_b(src)
    old = "keep(h, prefix .. seq .. '}', limit, maxb)\n            parts[#parts + 1] = m"
    assert b.count(old) == 1
    # the frame kept once per publication (a key of its own), each session's list holding
    # only a short reference to it: an upper bound on what that layout saves
    b = b.replace("local tn = P .. 'tn:' .. topic", "local tn = P .. 'tn:' .. topic\n    local ref = 'm:' .. redis.call('INCR', P .. 'pub')\n    redis.call('SET', P .. ref, prefix)")
    return b.replace(old, "keep(h, ref, limit, maxb)\n            parts[#parts + 1] = m")


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port)); self.buf = b""
    def cmd(self, *args):
        self.s.sendall(enc(*args)); return self.read()
    def readline(self):
        while b"\r\n" not in self.buf: self.buf += self.s.recv(1 << 20)
        line, self.buf = self.buf.split(b"\r\n", 1); return line
    def read(self):
        line = self.readline(); t = line[:1]
        if t in b"+:": return line[1:]
        if t == b"-": raise RuntimeError(line)
        if t == b"$":
            n = int(line[1:])
            if n < 0: return None
            while len(self.buf) < n + 2: self.buf += self.s.recv(1 << 20)
            v, self.buf = self.buf[:n], self.buf[n + 2:]; return v
        if t == b"*": return [self.read() for _ in range(int(line[1:]))]
        raise RuntimeError(line)

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def run(name, src, port, pid, subs=1000, fill=1050, pubs=600):
    c = Conn(port)
    c.cmd("FLUSHALL")
    sha = c.cmd("SCRIPT", "LOAD", src).decode()
    for i in range(subs):
        c.cmd("HSET", f"wss:s:sid{i:06d}", "node", "n2", "seq", 0, "b", 0)
    c.cmd("SADD", "wss:t:n2:bench", *[f"sid{i:06d}" for i in range(subs)])
    c.cmd("SADD", "wss:tn:bench", "n2")
    prefix = b'{"type":"message","topic":"bench","data":{"n":1,"user":"bench","tags":["a","b"],"ok":true,"x":1.5,"pad":"abcdefghijklmnopqrstuvwxyz0123"},"seq":'
    # 2 publications per batch, as the nodes' batches held here
    args = ("EVALSHA", sha, 0, "wss:", "n1", 1000, 1 << 20, "X", "bench", prefix, "X", "bench", prefix)
    for _ in range(fill // 2): c.cmd(*args)
    c0 = cpu(pid); t0 = time.perf_counter()
    for _ in range(pubs // 2): c.cmd(*args)
    c1 = cpu(pid); t1 = time.perf_counter()
    n = pubs * subs
    llen = c.cmd("LLEN", "wss:s:sid000000:r")
    print(f"{name:28} Redis CPU {1e6 * (c1 - c0) / n:.2f} µs / delivery (wall {1e6 * (t1 - t0) / n:.2f}), list {llen.decode()}", flush=True)

def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import RedisServer, pinning
    import argparse
    args = argparse.Namespace(no_pin=False)
    pins = pinning(args)
    workdir = tempfile.mkdtemp(prefix="wsbench-lua-")
    redis = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server", workdir,
                        pins[0], 0)
    redis.start()
    if pins[1]:
        os.sched_setaffinity(0, {int(c) for c in pins[1][2].split(",")})
    try:
        bench(redis.port, redis.pid)
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def bench(port, pid):
    for rnd in range(2):
        run("product BATCH", BATCH, port, pid)
        run("before: seq as a Lua number", variant_before(BATCH), port, pid)
        run("+ keep()'s numbers as strings", variant_b(BATCH), port, pid)
        run("+ kept by reference", variant_ref(BATCH), port, pid)


if __name__ == "__main__":
    main()
