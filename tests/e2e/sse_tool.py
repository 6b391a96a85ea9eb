#!/usr/bin/env python3
"""Helpers of test_events.sh: an SSE client that can stop, stall or pile up,
and a webhook receiver. Loopback only; every wait is bounded.

  read URL [--last-id ID] [--max N] [--timeout S]
      prints one JSON line per event {"id", "event", "data"} and a last line
      {"end": "eof" | "max" | "timeout", "status": HTTP status, "body": ...}
  stall URL --until FILE [--timeout S]
      connects with a tiny receive buffer and reads nothing until FILE exists,
      then reads to the end; prints {"events": n, "error": data, "last_id": id}
  hold URL N
      opens N streams, then one more; prints {"statuses": [...], "extra":
      status, "extra_body": ..., "after": status once the N are closed}
  webhook PORTFILE LOGFILE SECRET [--fail-first] [--hang]
      receives webhooks; logs one JSON line per request {"delivery", "valid",
      "run", "state", "n"} (n: requests seen for that delivery); --fail-first
      answers 500 to the first try of each delivery; --hang never answers
"""
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


def connect(url, last_id=None, rcvbuf=None, timeout=30):
    u = urlparse(url)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((u.hostname, u.port))
    path = u.path + ("?" + u.query if u.query else "")
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
           "Connection: close\r\n" % (path, u.netloc))
    if last_id is not None:
        req += "Last-Event-ID: %s\r\n" % last_id
    s.sendall((req + "\r\n").encode())
    return s


class Reader:
    """Reads the head, then events, from a socket."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.status = 0
        self.body = b""
        self.eof = False

    def fill(self):
        data = self.s.recv(65536)
        if not data:
            self.eof = True
        self.buf += data

    def head(self):
        while b"\r\n\r\n" not in self.buf and not self.eof:
            self.fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest
        line = head.split(b"\r\n")[0].split()
        self.status = int(line[1]) if len(line) > 1 else 0
        if self.status != 200:
            while not self.eof:
                self.fill()
            self.body = self.buf
        return self.status

    def events(self):
        ev = {"id": None, "event": "message", "data": []}
        while True:
            while b"\n" not in self.buf:
                if self.eof:
                    return
                self.fill()
            line, _, self.buf = self.buf.partition(b"\n")
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if line == "":
                if ev["data"]:
                    data = "\n".join(ev["data"])
                    try:
                        data = json.loads(data)
                    except ValueError:
                        pass
                    yield {"id": ev["id"], "event": ev["event"], "data": data}
                ev = {"id": ev["id"], "event": "message", "data": []}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                ev["id"] = value
            elif field == "event":
                ev["event"] = value
            elif field == "data":
                ev["data"].append(value)


def cmd_read(args):
    url = args[0]
    last_id = None
    limit = None
    timeout = 60.0
    i = 1
    while i < len(args):
        if args[i] == "--last-id":
            last_id = args[i + 1]
        elif args[i] == "--max":
            limit = int(args[i + 1])
        elif args[i] == "--timeout":
            timeout = float(args[i + 1])
        i += 2
    s = connect(url, last_id, timeout=timeout)
    r = Reader(s)
    end = "eof"
    try:
        if r.head() == 200:
            n = 0
            for e in r.events():
                e["t"] = time.time()
                print(json.dumps(e), flush=True)
                n += 1
                if limit is not None and n >= limit:
                    end = "max"
                    break
    except socket.timeout:
        end = "timeout"
    s.close()
    print(json.dumps({"end": end, "status": r.status,
                      "body": r.body.decode("utf-8", "replace")}))


def cmd_stall(args):
    url, until = args[0], args[2]
    s = connect(url, rcvbuf=4096, timeout=120)
    deadline = time.time() + 120
    while not os.path.exists(until) and time.time() < deadline:
        time.sleep(0.1)
    r = Reader(s)
    r.head()
    n, err, last = 0, None, None
    for e in r.events():
        n += 1
        if e["event"] == "error":
            err = e["data"]
        else:
            last = e["id"]
    print(json.dumps({"status": r.status, "events": n, "error": err, "last_id": last}))


def cmd_hold(args):
    url, n = args[0], int(args[1])
    socks, statuses = [], []
    for _ in range(n):
        s = connect(url)
        r = Reader(s)
        statuses.append(r.head())
        socks.append(s)
    s = connect(url)
    r = Reader(s)
    extra = r.head()
    body = r.body.decode("utf-8", "replace")
    s.close()
    for s in socks:
        s.close()
    after = 0
    for _ in range(50):  # the scheduler notices the closes at once; allow a moment
        time.sleep(0.1)
        s = connect(url)
        r = Reader(s)
        after = r.head()
        s.close()
        if after == 200:
            break
    print(json.dumps({"statuses": statuses, "extra": extra, "extra_body": body,
                      "after": after}))


def cmd_webhook(args):
    portfile, logfile, secret = args[0], args[1], args[2].encode()
    fail_first = "--fail-first" in args
    hang = "--hang" in args
    seen = {}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if hang:
                time.sleep(3600)
                return
            sig = self.headers.get("X-Trellis-Signature-256", "")
            want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            j = json.loads(body)
            d = j.get("delivery")
            with lock:
                seen[d] = seen.get(d, 0) + 1
                n = seen[d]
                with open(logfile, "a") as f:
                    f.write(json.dumps({"delivery": d, "valid": hmac.compare_digest(sig, want),
                                        "run": j["run"]["id"], "state": j["run"]["state"],
                                        "event": self.headers.get("X-Trellis-Event"),
                                        "n": n}) + "\n")
            code = 500 if fail_first and n == 1 else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(portfile + ".tmp", portfile)
    srv.serve_forever()


if __name__ == "__main__":
    cmd = sys.argv[1]
    {"read": cmd_read, "stall": cmd_stall, "hold": cmd_hold,
     "webhook": cmd_webhook}[cmd](sys.argv[2:])
