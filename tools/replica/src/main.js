#!/usr/bin/env node
// fleetsnap-replica: a loopback test replica for the real icp CLI.
//   node src/main.js --fleet FLEET.json [--port N] [--state FILE] [--log FILE]
//                    [--seed TEXT] [--stop-delay-ms N]
// Prints one JSON line {url, port, root_key, root, pid} on stdout when it
// listens, and writes the same object to --state if given.
import fs from 'node:fs';
import { makeKeys } from './keys.js';
import { Fleet } from './fleet.js';
import { Replica } from './server.js';

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unexpected argument ${a}`);
    o[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
    if (o[m[1]] === undefined) throw new Error(`--${m[1]} needs a value`);
  }
  return o;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!o.fleet) throw new Error('--fleet FILE is required');
  const desc = JSON.parse(fs.readFileSync(o.fleet, 'utf8'));
  const keys = makeKeys(o.seed || `${process.pid}-${Date.now()}`);
  const replica = new Replica({
    keys,
    fleet: new Fleet(desc),
    logPath: o.log,
    stopDelayMs: o['stop-delay-ms'] !== undefined ? Number(o['stop-delay-ms']) : 0,
  });
  const server = await replica.listen(o.port !== undefined ? Number(o.port) : 0);
  const port = server.address().port;
  const info = { url: `http://127.0.0.1:${port}`, port, root_key: keys.rootKeyHex, root: replica.fleet.rootId, pid: process.pid };
  if (o.state) {
    fs.writeFileSync(`${o.state}.tmp`, JSON.stringify(info));
    fs.renameSync(`${o.state}.tmp`, o.state);
  }
  process.stdout.write(JSON.stringify(info) + '\n');
  const stop = () => { for (const s of replica.hanging) s.destroy(); server.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { process.stderr.write(`fleetsnap-replica: ${e.message}\n`); process.exit(1); });
