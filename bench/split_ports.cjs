// Preloaded into the shared harness's rawgen.js (`node -r`) by
// bench/workers_load.py: the harness's generator, unchanged, with its
// WebSockets spread over several servers (real-time workers) and the CPU
// of every process that serves them added to its record.
//
//   OE_SPLIT_PORTS=p0,p1        the i-th WebSocket goes to port p[i % n]
//                               (client 0, the publisher, to p0)
//   OE_SPLIT_PIDS={"w0": pid}   processes whose CPU time is recorded
//   OE_SPLIT_POSTMASTER=pid     PostgreSQL: its children's CPU summed
//
// The publish phase starts with the first `publish` sent and ends when
// rawgen.js prints its record; the record gains `split`: the clients per
// port, the phase's wall time and the CPU seconds of each process, of
// PostgreSQL's backends, of the generator and of the whole host.
'use strict';
const fs = require('fs');
const { performance } = require('perf_hooks');

const wsPath = require.resolve('ws', { paths: [process.cwd()] });
const WebSocket = require(wsPath);
const ports = (process.env.OE_SPLIT_PORTS || '').split(',').filter(Boolean);
const pids = JSON.parse(process.env.OE_SPLIT_PIDS || '{}');
const postmaster = Number(process.env.OE_SPLIT_POSTMASTER || 0);
const perPort = {};
let made = 0;
let start = null;

// [ppid, CPU seconds] of a process, from /proc (USER_HZ 100).
function stat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [Number(f[1]), (Number(f[11]) + Number(f[12])) / 100];
  } catch {
    return null;
  }
}

function postgres() {
  const cpu = {};
  if (!postmaster) return cpu;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const s = stat(entry);
    if (s && (s[0] === postmaster || Number(entry) === postmaster)) cpu[entry] = s[1];
  }
  return cpu;
}

function hostBusy() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100;
}

function snapshot() {
  const u = process.cpuUsage();
  const cpu = {};
  for (const [name, pid] of Object.entries(pids)) cpu[name] = (stat(pid) || [0, null])[1];
  return { t: performance.now(), cpu, pg: postgres(), host: hostBusy(), gen: (u.user + u.system) / 1e6 };
}

class Split extends WebSocket {
  constructor(address, ...rest) {
    let url = address;
    if (ports.length) {
      const port = ports[made++ % ports.length];
      const u = new URL(address);
      u.port = port;
      url = u.toString();
      perPort[port] = (perPort[port] || 0) + 1;
    }
    super(url, ...rest);
  }

  send(data, ...rest) {
    if (start === null && typeof data === 'string' && data.includes('["publish"')) start = snapshot();
    return super.send(data, ...rest);
  }
}
require.cache[wsPath].exports = Split;

const write = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, ...rest) => {
  if (start && typeof chunk === 'string' && chunk.startsWith('{"kind":"socketio-bench"')) {
    const end = snapshot();
    const record = JSON.parse(chunk);
    const cpu = {};
    for (const name of Object.keys(pids)) {
      cpu[name] = end.cpu[name] == null || start.cpu[name] == null ? null : end.cpu[name] - start.cpu[name];
    }
    let pg = 0;
    for (const [pid, seconds] of Object.entries(end.pg)) pg += seconds - (start.pg[pid] || 0);
    record.split = {
      clients_per_port: perPort,
      wall_s: (end.t - start.t) / 1000,
      cpu_s: cpu,
      postgresql_s: pg,
      generator_s: end.gen - start.gen,
      host_busy_s: end.host - start.host,
    };
    chunk = JSON.stringify(record) + '\n';
  }
  return write(chunk, ...rest);
};
