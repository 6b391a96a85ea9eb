#!/usr/bin/env python3
"""A small OTLP/HTTP JSON receiver for the tests (tests/e2e/test_otel.sh).

Listens on 127.0.0.1 (a free port, printed on the first line of stdout),
stores every POST /v1/traces body, and answers GET /spans with the spans of
all of them, flattened: each span gets "service" (its resource's
service.name) and "attrs" (its attributes as a plain dict). GET /posts gives
the number of POSTs. Anything else is 404.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SPANS = []
POSTS = [0]


def value(v):
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [value(x) for x in v["arrayValue"].get("values", [])]
    return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path != "/v1/traces":
            return self.reply(404, {})
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self.reply(415, {})
        try:
            doc = json.loads(body)
        except ValueError:
            return self.reply(400, {})
        out = []
        for rs in doc.get("resourceSpans", []):
            res = {a["key"]: value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    s = dict(s)
                    s["service"] = res.get("service.name")
                    s["attrs"] = {a["key"]: value(a["value"]) for a in s.get("attributes", [])}
                    out.append(s)
        with LOCK:
            SPANS.extend(out)
            POSTS[0] += 1
        self.reply(200, {})

    def do_GET(self):
        with LOCK:
            if self.path == "/spans":
                return self.reply(200, SPANS)
            if self.path == "/posts":
                return self.reply(200, POSTS[0])
        self.reply(404, {})


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
