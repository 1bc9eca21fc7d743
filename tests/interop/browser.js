// Injected into the page by tests/test_interop_browser.py (chromedriver execute/async).
// Opens a WebSocket, sends each message of the plan and checks the echo, then either
// closes with finish.client = [code, reason] or sends finish.request and waits for the
// server to close; resolves with what the page saw.
async function simplewsRun(url, protocols, plan, finish) {
  const report = {errors: 0, messages: []};
  const pattern = (n) => {
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 7 + 3) & 255;
    return bytes;
  };
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  const queue = [];
  let waiter = null;
  let closed;
  const closing = new Promise((resolve) => { closed = resolve; });
  ws.onmessage = (event) => {
    if (waiter) { const w = waiter; waiter = null; w(event.data); } else queue.push(event.data);
  };
  ws.onclose = (event) => closed({code: event.code, reason: event.reason, wasClean: event.wasClean});
  ws.onerror = () => { report.errors += 1; };
  report.opened = await new Promise((resolve) => {
    ws.onopen = () => resolve(true);
    closing.then(() => resolve(false));
  });
  report.protocol = ws.protocol;
  report.extensions = ws.extensions;
  const next = () => queue.length ? Promise.resolve(queue.shift())
    : Promise.race([new Promise((resolve) => { waiter = resolve; }), closing.then(() => null)]);
  if (report.opened) {
    for (const item of plan) {
      const sent = item.text !== undefined ? item.text.repeat(item.repeat || 1) : pattern(item.binary);
      ws.send(sent);
      const got = await next();
      let equal;
      if (typeof sent === "string") {
        equal = got === sent;
      } else {
        const view = got instanceof ArrayBuffer ? new Uint8Array(got) : null;
        equal = view !== null && view.length === sent.length && view.every((b, i) => b === sent[i]);
      }
      report.messages.push({kind: typeof got === "string" ? "text" : (got === null ? "none" : "binary"),
                            length: typeof got === "string" ? got.length : (got ? got.byteLength : 0),
                            equal});
    }
    if (finish.client) ws.close(finish.client[0], finish.client[1]);
    else ws.send(finish.request);
  }
  report.close = await closing;
  return report;
}
