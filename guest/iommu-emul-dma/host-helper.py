#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Host side of guest/iommu-emul-dma/run-demo.sh.

  host-helper.py serve BLOB PORTFILE [ADDRESS]
      HTTP server on ADDRESS (default 127.0.0.1; run-demo.sh runs it in a
      network namespace of its own, on 0.0.0.0, where the guest reaches it
      through tap devices): GET /blob returns BLOB, POST /sum returns the
      SHA-256 (hex) of the request body after base64 decoding (busybox
      wget sends a --post-file only up to its first NUL byte). Writes its port to PORTFILE.
      Stops by itself after an hour.

  host-helper.py qmp SOCKET qom-get PATH PROP...
      Prints "PROP VALUE" for each QOM property.
  host-helper.py qmp SOCKET exec COMMAND JSON-ARGUMENTS
      Runs one QMP command, prints its return value.
  host-helper.py qmp SOCKET quit
"""

import base64
import hashlib
import http.server
import json
import socket
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    blob = b""

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path != "/blob":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob)))
        self.end_headers()
        self.wfile.write(self.blob)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n) if n > 0 else b""
        try:
            raw = base64.b64decode(data)
        except ValueError:
            raw = b"not base64"
        body = (hashlib.sha256(raw).hexdigest() + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(blob, portfile, addr):
    with open(blob, "rb") as f:
        Handler.blob = f.read()
    srv = http.server.ThreadingHTTPServer((addr, 0), Handler)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    # rename: the reader never sees a half-written file
    import os
    os.rename(portfile + ".tmp", portfile)
    threading.Timer(3600, srv.shutdown).start()
    srv.serve_forever()


def qmp(sockpath, args):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sockpath)
    f = s.makefile("rw")

    def cmd(name, arguments=None):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        f.write(json.dumps(msg) + "\n")
        f.flush()
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("qmp: connection closed")
            r = json.loads(line)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise SystemExit("qmp: %s: %s" % (name, r["error"]))

    json.loads(f.readline())  # greeting
    cmd("qmp_capabilities")
    if args[0] == "qom-get":
        path = args[1]
        for prop in args[2:]:
            print(prop, cmd("qom-get", {"path": path, "property": prop}))
    elif args[0] == "exec":
        print(json.dumps(cmd(args[1], json.loads(args[2]))))
    elif args[0] == "quit":
        try:
            cmd("quit")
        except (SystemExit, OSError):
            pass
    else:
        raise SystemExit("qmp: unknown command " + args[0])


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3],
              sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1")
    elif len(sys.argv) >= 4 and sys.argv[1] == "qmp":
        qmp(sys.argv[2], sys.argv[3:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
