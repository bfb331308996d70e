#!/usr/bin/env node
// Talks to a running replica's admin interface (node builtins only, so specs
// need neither curl nor the replica's packages for it):
//   node client.js <url> GET|POST <path> [json-body]
// Prints the response body; exits 1 on a non-2xx answer.
import http from 'node:http';

const [url, method, path, body] = process.argv.slice(2);
if (!url || !method || !path) {
  process.stderr.write('usage: client.js <url> GET|POST <path> [json-body]\n');
  process.exit(2);
}
const req = http.request(new URL(path, url), { method, headers: { 'content-type': 'application/json' } }, (res) => {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => {
    process.stdout.write(Buffer.concat(chunks));
    process.exit(res.statusCode >= 200 && res.statusCode < 300 ? 0 : 1);
  });
});
req.on('error', (e) => { process.stderr.write(`client.js: ${e.message}\n`); process.exit(1); });
if (body) req.write(body);
req.end();
