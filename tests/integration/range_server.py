#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ferry: a small HTTPS server with Range support and fault injection, for the HTTP tests.

    range_server.py --cert C --key K --file F --path /disk --port-file P [faults]

Serves F at PATH (GET with one "bytes=A-B" range -> 206 + Content-Range, HEAD -> size and
Accept-Ranges), HTTP/1.1 keep-alive, on an ephemeral 127.0.0.1 port written to PORT-FILE
once listening.  Faults, counted over all connections, in this order:

    --reset N         reset the TCP connection instead of answering the first N requests
    --fail-503 N      answer the next N requests with 503 and Retry-After: 0
    --truncate N      for the first N range GETs, send the headers and half the body,
                      then reset the connection
    --short N         for the next N range GETs, a consistent but short 206
                      (Content-Length agrees with the body, too few bytes)
    --stall N         for the next N range GETs, send the headers and half the body,
                      then stop sending (the connection stays open, silent)
    --retry-after S   the Retry-After of the 503 answers (default 0)
    --echo-503        a 503 answer to a POST echoes the request in its first line
    --require-cookie NAME=VALUE   answer 401 unless the request carries this cookie

POST (a stand-in for /sdk) echoes the body with a session cookie, or answers a SOAP
fault when the body says "fault".  Other POST behaviours:

    --post-size N     answer every POST with N bytes (a body larger than a client accepts)
    --soap MODE       a minimal vSphere: RetrieveServiceContent is answered, Login is
                      answered with the request echoed back, as a SOAP fault's
                      faultstring (MODE echo-fault) or as a 200 that is not XML
                      (MODE echo-raw), the way a broken proxy or server might

Counts of what it did are printed to stdout at exit ("faults: 503=N reset=N ...").
"""

import argparse
import html
import os
import signal
import socket
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.requests = 0
        self.gets = 0
        self.args = args
        self.counts = {"503": 0, "reset": 0, "truncate": 0, "short": 0, "stall": 0,
                       "401": 0}

    def next_request(self):
        with self.lock:
            self.requests += 1
            return self.requests

    def next_get(self):
        with self.lock:
            self.gets += 1
            return self.gets

    def count(self, what):
        with self.lock:
            self.counts[what] += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "range_server"

    def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
        sys.stderr.write("range_server: %s\n" % (fmt % args))

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def send_text(self, status, text, extra=()):
        body = text.encode()
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self):
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        sock.close()

    def do_HEAD(self):
        self.serve()

    def do_GET(self):
        self.serve()

    def do_POST(self):
        """A stand-in for /sdk: echo the body with a session cookie, or a SOAP fault."""
        state = self.server.state
        n = state.next_request()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if n <= state.args.reset:
            state.count("reset")
            self.reset()
            return
        if n <= state.args.reset + state.args.fail_503:
            state.count("503")
            echo = " " + body.decode() if state.args.echo_503 else ""
            self.send_text(503, "Service Unavailable: fault injected%s\n" % echo,
                           [("Retry-After", str(state.args.retry_after))])
            return
        if state.args.post_size:
            self.send_text(200, "x" * state.args.post_size)
            return
        if state.args.soap:
            self.soap(body)
            return
        if b"fault" in body:
            self.send_text(500, "<Fault>InvalidArgument</Fault>\n")
            return
        self.send_text(200, "echo:" + body.decode(),
                       [("Set-Cookie", "vmware_soap_session=abc; Path=/; HttpOnly")])

    def soap(self, body):
        if b"RetrieveServiceContent" in body:
            self.send_text(200, SERVICE_CONTENT)
            return
        if self.server.state.args.soap == "echo-raw":
            self.send_text(200, "echo:" + body.decode())
            return
        echoed = html.escape(body.decode(), quote=False)
        self.send_text(500, SOAP_FAULT % echoed)

    def stall(self):
        """Say nothing more, without closing: wait until the client gives up."""
        try:
            self.connection.settimeout(600)
            while self.connection.recv(4096):
                pass
        except (OSError, ValueError):
            pass
        self.close_connection = True

    def serve(self):
        state = self.server.state
        args = state.args
        n = state.next_request()

        if n <= args.reset:
            state.count("reset")
            self.reset()
            return
        if n <= args.reset + args.fail_503:
            state.count("503")
            self.send_text(503, "Service Unavailable: fault injected\n",
                           [("Retry-After", str(args.retry_after))])
            return
        if args.require_cookie:
            cookies = [c.strip() for c in self.headers.get("Cookie", "").split(";")]
            if args.require_cookie not in cookies:
                state.count("401")
                self.send_text(401, "Unauthorized: session expired\n")
                return
        if self.path.split("?")[0] != args.path:
            self.send_text(404, "Not Found: no such file\n")
            return

        size = os.path.getsize(args.file)
        if self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            return

        rng = self.headers.get("Range")
        if rng is None or not rng.startswith("bytes=") or "," in rng:
            self.send_text(400, "Bad Request: only single byte ranges are served\n")
            return
        first, _, last = rng[len("bytes="):].partition("-")
        start, end = int(first), min(int(last), size - 1)
        if start > end:
            self.send_text(416, "Range Not Satisfiable\n",
                           [("Content-Range", "bytes */%d" % size)])
            return
        with open(args.file, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)

        length = len(data)
        g = state.next_get()
        if g <= args.truncate:
            state.count("truncate")
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(data[: length // 2])
            self.wfile.flush()
            self.reset()
            return
        if g <= args.truncate + args.short:
            state.count("short")
            data = data[: length // 2]
        elif g <= args.truncate + args.short + args.stall:
            state.count("stall")
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(data[: length // 2])
            self.wfile.flush()
            self.stall()
            return
        self.send_response(206)
        self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


SERVICE_CONTENT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
<soapenv:Body><RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>
<rootFolder type="Folder">group-d1</rootFolder>
<propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>
<viewManager type="ViewManager">ViewManager</viewManager>
<about><apiType>VirtualCenter</apiType><apiVersion>7.0.3.0</apiVersion></about>
<sessionManager type="SessionManager">SessionManager</sessionManager>
<searchIndex type="SearchIndex">SearchIndex</searchIndex>
</returnval></RetrieveServiceContentResponse></soapenv:Body></soapenv:Envelope>
"""

SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>
<faultstring>Cannot parse the request: %s</faultstring>
<detail><InvalidRequestFault xmlns="urn:vim25" xsi:type="InvalidRequest"/></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>
"""


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, context, state):
        self.context = context
        self.state = state
        super().__init__(addr, Handler)

    def get_request(self):
        # The handshake happens in the handler's thread, so a client that gives up on
        # the certificate does not stall the accept loop.
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (OSError, ValueError)):
            sys.stderr.write("range_server: %s: %s\n" % (client_address, err))
        else:
            super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--path", default="/disk")
    p.add_argument("--port-file", required=True)
    p.add_argument("--fail-503", type=int, default=0)
    p.add_argument("--reset", type=int, default=0)
    p.add_argument("--truncate", type=int, default=0)
    p.add_argument("--short", type=int, default=0)
    p.add_argument("--stall", type=int, default=0)
    p.add_argument("--retry-after", type=int, default=0)
    p.add_argument("--echo-503", action="store_true")
    p.add_argument("--post-size", type=int, default=0)
    p.add_argument("--soap", choices=["echo-fault", "echo-raw"])
    p.add_argument("--require-cookie")
    args = p.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    state = State(args)
    server = Server(("127.0.0.1", 0), context, state)

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, args.port_file)

    def report(*_):
        print("faults: " + " ".join("%s=%d" % kv for kv in sorted(state.counts.items())),
              flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        report()


if __name__ == "__main__":
    main()
