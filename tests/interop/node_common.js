// Shared by node_server.js and node_client.js (tests/test_interop_node.py).
"use strict";
const fs = require("fs");
const path = require("path");

const CERTS = path.join(__dirname, "..", "certs");

function pattern(n) {  // the same bytes as tests/test_interop_node.py's pattern()
  const bytes = Buffer.alloc(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 7 + 3) & 255;
  return bytes;
}

function message(item) {  // {text, repeat} or {binary: length}
  return item.text !== undefined ? item.text.repeat(item.repeat || 1) : pattern(item.binary);
}

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

function onStdinEnd(callback) {  // the test closes our stdin to stop us
  process.stdin.on("data", () => {});
  process.stdin.on("end", callback);
  process.stdin.resume();
}

function readCert(name) {
  return fs.readFileSync(path.join(CERTS, name));
}

module.exports = {pattern, message, emit, onStdinEnd, readCert};
