// A Node `ws` server for tests/test_interop_node.py: node node_server.js '<options JSON>'
// options: {tls: bool, perMessageDeflate: false | {...}, protocols: [..]}
// Echoes every message (text as text, binary as binary); on the text "close me" it
// closes with 4002. Prints JSON lines: {port}, then {event: "open"|"close", ...} per
// connection. Stops when stdin closes.
"use strict";
const http = require("http");
const https = require("https");
const {WebSocketServer} = require("ws");
const {emit, onStdinEnd, readCert} = require("./node_common");

const options = JSON.parse(process.argv[2] || "{}");
const server = options.tls
  ? https.createServer({cert: readCert("server.pem"), key: readCert("server.key")})
  : http.createServer();
const wss = new WebSocketServer({
  server,
  perMessageDeflate: options.perMessageDeflate === undefined ? false : options.perMessageDeflate,
  handleProtocols: (offered) => {
    for (const name of options.protocols || []) if (offered.has(name)) return name;
    return false;
  },
});

wss.on("connection", (ws, request) => {
  emit({event: "open", offer: request.headers["sec-websocket-extensions"] || null,
        extensions: ws.extensions, protocol: ws.protocol});
  let count = 0;
  ws.on("message", (data, isBinary) => {
    if (!isBinary && data.toString() === "close me") {
      ws.close(4002, "node server done");
      return;
    }
    count += 1;
    ws.send(data, {binary: isBinary});
  });
  ws.on("ping", (data) => emit({event: "ping", data: data.toString()}));
  ws.on("close", (code, reason) => emit({event: "close", code, reason: reason.toString(),
                                         messages: count}));
  ws.on("error", (error) => emit({event: "error", message: String(error)}));
});

server.listen(0, "127.0.0.1", () => emit({port: server.address().port}));

onStdinEnd(() => {
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
