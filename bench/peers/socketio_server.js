#!/usr/bin/env node
// A peer of the wsservice benchmark: a Node socket.io 4.8 server doing the same jobs.
//
//   node bench/peers/socketio_server.js [--unix PATH]
//
// bench/run.py starts one per run, pinned to the server CPU, and drives it with
// bench/sioloadgen.js. Configured as a user wanting speed would configure it: the websocket
// transport only (no HTTP long-polling, no upgrade), no permessage-deflate, no HTTP
// compression, the default JSON parser (no msgpack), socket.io's other defaults (pings every
// 25 s, the in-memory adapter). Handlers:
//
//   echo       emit-with-ack: the ack carries the data back (request/response)
//   subscribe  join room "bench", then ack
//   publish    io.to("bench").emit("message", data) (a room broadcast), then ack the publisher
//
// It listens on 127.0.0.1, port 0 (and on a unix socket with --unix, for bench/run.py, which
// gives every server both), prints "listening on ..." lines with the URLs, and on SIGTERM
// closes every connection and exits 0.
'use strict';

const http = require('http');
const net = require('net');
const fs = require('fs');
const { Server } = require('socket.io');

const args = process.argv.slice(2);
const unixAt = args.indexOf('--unix');
const unixPath = unixAt >= 0 ? args[unixAt + 1] : null;

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});

io.on('connection', (socket) => {
  socket.on('echo', (data, ack) => {
    if (typeof ack === 'function') ack(data);
  });
  socket.on('subscribe', (ack) => {
    socket.join('bench');
    if (typeof ack === 'function') ack();
  });
  socket.on('publish', (data, ack) => {
    io.to('bench').emit('message', data);
    if (typeof ack === 'function') ack();
  });
});

// The unix listener hands its connections to the same HTTP server (one server, one io).
let unixServer = null;
httpServer.listen(0, '127.0.0.1', () => {
  const { port } = httpServer.address();
  process.stdout.write(`socket.io ${require('socket.io/package.json').version} (node `
                       + `${process.version}) pid ${process.pid}\n`);
  process.stdout.write(`listening on tcp 127.0.0.1:${port}: ws://127.0.0.1:${port}/socket.io/\n`);
  if (unixPath) {
    try { fs.unlinkSync(unixPath); } catch (e) { /* not there */ }
    unixServer = net.createServer((sock) => httpServer.emit('connection', sock));
    unixServer.listen(unixPath, () => {
      process.stdout.write(`listening on unix ${unixPath}: ws+unix:${unixPath}:/socket.io/\n`);
    });
  }
});

function stop(signal) {
  process.stdout.write(`${signal}: stopping\n`);
  if (unixServer) unixServer.close();
  // io.close() disconnects every socket and closes the HTTP server
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
