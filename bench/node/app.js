// The course's Express app: the two endpoints that the load tests hit,
// one process. Run it alone (`node app.js`) for the "before cluster"
// baseline, under Node's cluster mode (`node cluster.js`), or under the
// Go balancer (`balancer -cmd "node bench/node/app.js"`), which sets PORT
// and WORKER_ID for each worker.
'use strict';

const express = require('express');

const app = express();
const port = Number(process.env.PORT) || 8080;
const worker = Number(process.env.WORKER_ID) || 0;

// sum adds 0..n-1 in a plain loop: the work is the point.
function sum(n) {
  let s = 0;
  for (let i = 0; i < n; i++) {
    s += i;
  }
  return s;
}

app.get('/operacion-simple', (req, res) => {
  res.json({ operation: 'simple', sum: sum(10000), pid: process.pid, worker });
});

app.get('/operacion-compleja', (req, res) => {
  res.json({ operation: 'compleja', sum: sum(5e7), pid: process.pid, worker });
});

app.get('/health', (req, res) => {
  res.json({ status: 'ok', pid: process.pid, worker });
});

// As the Go backend does: with PORT set (under the balancer, or in the
// benchmarks) listen on loopback only; without it, on every address.
// HOST overrides both.
const host = process.env.HOST || (process.env.PORT ? '127.0.0.1' : undefined);
const server = app.listen(port, host, () => {
  console.log(`pid ${process.pid} worker ${worker} listening on ${port}`);
});

function stop() {
  server.close(() => process.exit(0));
  // Keep-alive connections can hold close() open; do not wait for them.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
