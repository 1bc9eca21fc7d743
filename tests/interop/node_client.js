// A Node `ws` client for tests/test_interop_node.py: node node_client.js '<options JSON>'
// options: {url, tls: bool, perMessageDeflate, protocols, runs: [{plan, finish}]}
// For each run: connect, send each message of the plan and check its echo, then close
// with finish.client = [code, reason] or send finish.request and wait for the server's
// close. Prints one JSON line with a report per run, then exits.
"use strict";
const WebSocket = require("ws");
const {message, emit, readCert} = require("./node_common");

const options = JSON.parse(process.argv[2]);

function runOnce(run) {
  return new Promise((resolve) => {
    const report = {opened: false, errors: [], messages: []};
    const ws = new WebSocket(options.url, options.protocols || [], {
      perMessageDeflate: options.perMessageDeflate === undefined ? false : options.perMessageDeflate,
      ca: options.tls ? readCert("ca.pem") : undefined,
    });
    const queue = [];
    let waiter = null;
    ws.on("message", (data, isBinary) => {
      const item = {data, isBinary};
      if (waiter) { const w = waiter; waiter = null; w(item); } else queue.push(item);
    });
    ws.on("error", (error) => report.errors.push(String(error)));
    ws.on("close", (code, reason) => {
      report.close = {code, reason: reason.toString()};
      if (waiter) waiter(null);
      resolve(report);
    });
    const next = () => queue.length ? Promise.resolve(queue.shift())
      : new Promise((r) => { waiter = r; });
    ws.on("open", async () => {
      report.opened = true;
      report.extensions = ws.extensions;
      report.protocol = ws.protocol;
      report.pong = await new Promise((r) => {
        ws.once("pong", (data) => r(data.toString()));
        ws.ping("from node");
      });
      for (const item of run.plan) {
        const sent = message(item);
        ws.send(sent);
        const got = await next();
        const binary = typeof sent !== "string";
        report.messages.push({
          binary: got ? got.isBinary : null,
          length: got ? got.data.length : -1,
          equal: got !== null && got.isBinary === binary &&
            (binary ? Buffer.compare(got.data, sent) === 0 : got.data.toString() === sent),
        });
      }
      if (run.finish.client) ws.close(run.finish.client[0], run.finish.client[1]);
      else ws.send(run.finish.request);
    });
  });
}

(async () => {
  const reports = [];
  for (const run of options.runs) reports.push(await runOnce(run));
  emit(reports);
  process.exit(0);
})();
