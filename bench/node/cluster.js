// Node's own cluster mode, as in the course: the primary forks one worker
// per core (os.availableParallelism(), or CLUSTER_WORKERS), each worker
// runs app.js, and the primary forks a new one whenever a worker exits.
// All workers share the one listening port; the primary hands out the
// connections (round-robin on Linux).
'use strict';

const cluster = require('node:cluster');
const os = require('node:os');
const path = require('node:path');

if (cluster.isPrimary) {
  const n = Number(process.env.CLUSTER_WORKERS) || os.availableParallelism();
  let stopping = false;
  const fork = (id) => {
    const w = cluster.fork({ WORKER_ID: String(id) });
    w.workerId = id;
  };
  console.log(`primary ${process.pid} forking ${n} workers`);
  for (let id = 1; id <= n; id++) {
    fork(id);
  }
  cluster.on('exit', (w, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    console.log(`worker ${w.workerId} (pid ${w.process.pid}) exited (${signal || code}); forking again`);
    fork(w.workerId);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  require(path.join(__dirname, 'app.js'));
}
