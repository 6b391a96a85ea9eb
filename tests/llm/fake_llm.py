#!/usr/bin/env python3
"""fake_llm.py - a local LLM server for tests, speaking the OpenAI-compatible
API (/v1/chat/completions, /v1/embeddings) and Anthropic Messages
(/v1/messages), plus plain HTTP endpoints for trellis.http tests.

Listens on 127.0.0.1, port 0 unless --port, and prints the port on its first
line of stdout. Python 3 standard library only.

Behaviour is chosen by the model name (or the X-Fake header, which wins):
  ok                   answers "echo: <last user message>"
  latency-<ms>         answers after <ms> milliseconds
  ratelimit-<n>[-...]  429 with Retry-After: 1 for the first <n> calls, then ok
  ratedate-<n>[-...]   the same with Retry-After as an HTTP date (2 s ahead)
  fail500-<n>[-...]    500 for the first <n> calls, then ok
  malformed[-...]      200 with a body that is not JSON, always
  cut-<n>[-...]        a stream cut in the middle for the first <n> calls, then ok
  drip-<ms>[-...]      a stream of words, one every <ms> milliseconds
  badreq[-...]         400
  format[-...]         answers with the request's response_format, as JSON text
  persec-<n>[-...]     429 when more than <n> calls of the model came in this second
                       (a provider's rate limit: /stats counts them in "rejected")
A suffix after the behaviour makes the counters distinct per test.
Streams follow stream=true in the request, in the format of the API called.

Counters: GET /stats -> {"calls": {model: n}, "paths": {path: n}, "total": n,
"max_in_flight": the most POST requests being answered at once, "connections":
TCP connections accepted}.
Keys: when FAKE_LLM_KEY is set, requests must carry it (Authorization: Bearer
or x-api-key), else 401.

Plain endpoints: /echo (method, headers, body back as JSON), /big?n=BYTES,
/slow?ms=MS, /status?code=N, /redirect?to=PATH.
"""
import email.utils
import hashlib
import json
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TRACEPARENTS = []  # W3C trace contexts of the POSTs (tests/e2e/test_otel.sh)
LOCK = threading.Lock()
IN_FLIGHT = [0, 0]  # API requests being answered now, and the most at once
CONNECTIONS = [0]   # TCP connections accepted: keep-alive reuse shows here
CALLS = {}
PATHS = {}
TOTAL = [0]
PER_SECOND = {}  # model -> {second: calls}: the most in any second is in /stats
REJECTED = {}    # model -> 429s of persec-<n>


def count(model, path):
    with LOCK:
        CALLS[model] = CALLS.get(model, 0) + 1
        sec = PER_SECOND.setdefault(model, {})
        now = int(time.time())
        sec[now] = sec.get(now, 0) + 1
        PATHS[path] = PATHS.get(path, 0) + 1
        TOTAL[0] += 1
        return CALLS[model]


def behaviour(name):
    """('ratelimit', 2) from 'ratelimit-2-test7'; ('ok', 0) for unknown names."""
    parts = name.split("-")
    kind = parts[0]
    arg = 0
    if len(parts) > 1 and parts[1].isdigit():
        arg = int(parts[1])
    return kind, arg


def vector(text, dim=8):
    h = hashlib.sha256(text.encode()).digest()
    vals = [struct.unpack(">h", h[i:i + 2])[0] / 32768.0 for i in range(0, dim * 2, 2)]
    return vals


def last_user(messages):
    for m in reversed(messages or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c)
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            CONNECTIONS[0] += 1

    def send_json(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_raw(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # -- plain endpoints ---------------------------------------------------

    def plain(self, method):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        body = self.read_body()
        count("plain", u.path)
        if u.path == "/stats":
            with LOCK:
                most = {m: max(s.values()) for m, s in PER_SECOND.items()}
                self.send_json(200, {"calls": CALLS, "paths": PATHS, "total": TOTAL[0],
                                     "max_per_second": most, "rejected": REJECTED,
                                     "max_in_flight": IN_FLIGHT[1],
                                     "connections": CONNECTIONS[0],
                                     "traceparents": TRACEPARENTS[-100:]})
            return True
        if u.path == "/echo":
            self.send_json(200, {"method": method, "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "body": body.decode("utf-8", "replace")},
                           {"X-Echo": "yes", "Set-Cookie": "a=1"})
            return True
        if u.path == "/big":
            n = int(q.get("n", ["1000"])[0])
            self.send_raw(200, b"x" * n)
            return True
        if u.path == "/slow":
            time.sleep(int(q.get("ms", ["1000"])[0]) / 1000.0)
            self.send_raw(200, b"slow")
            return True
        if u.path == "/status":
            self.send_raw(int(q.get("code", ["200"])[0]), b"status")
            return True
        if u.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", q.get("to", ["/echo"])[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def answer_plain(self, method):
        try:
            if not self.plain(method):
                self.send_raw(404, b"not found")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, a cancel)

    def do_GET(self):
        self.answer_plain("GET")

    def do_PUT(self):
        self.answer_plain("PUT")

    def do_DELETE(self):
        self.answer_plain("DELETE")

    # -- the APIs ----------------------------------------------------------

    def do_POST(self):
        with LOCK:
            if self.headers.get("traceparent"):
                TRACEPARENTS.append(self.headers.get("traceparent"))
            IN_FLIGHT[0] += 1
            IN_FLIGHT[1] = max(IN_FLIGHT[1], IN_FLIGHT[0])
        try:
            self.api_post()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a deadline, a cancel): nothing to answer
        finally:
            with LOCK:
                IN_FLIGHT[0] -= 1

    def api_post(self):
        u = urlparse(self.path)
        if u.path not in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages"):
            if not self.plain("POST"):
                self.send_raw(404, b"not found")
            return
        raw = self.read_body()
        try:
            req = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": {"message": "request is not JSON"}})
            return
        key = os.environ.get("FAKE_LLM_KEY")
        if key:
            auth = self.headers.get("Authorization", "")
            if auth != "Bearer " + key and self.headers.get("x-api-key") != key:
                self.send_json(401, {"error": {"message": "bad key"}})
                return
        anthropic = u.path == "/v1/messages"
        if anthropic and self.headers.get("anthropic-version") is None:
            self.send_json(400, {"error": {"message": "anthropic-version missing"}})
            return
        model = str(req.get("model", ""))
        n = count(model, u.path)
        kind, arg = behaviour(self.headers.get("X-Fake") or model)

        if u.path == "/v1/embeddings":
            inputs = req.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            data = [{"object": "embedding", "index": i, "embedding": vector(t)}
                    for i, t in enumerate(inputs)]
            data.reverse()  # clients must order by index
            self.send_json(200, {"object": "list", "data": data, "model": model,
                                 "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs),
                                           "total_tokens": 0}})
            return

        if kind == "latency":
            time.sleep(arg / 1000.0)
        if kind == "ratelimit" and n <= arg:
            self.send_json(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
            return
        if kind == "ratedate" and n <= arg:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            self.send_json(429, {"error": {"message": "slow down"}}, {"Retry-After": when})
            return
        if kind == "persec":
            with LOCK:
                this = PER_SECOND[model].get(int(time.time()), 0)
                if this > arg:
                    REJECTED[model] = REJECTED.get(model, 0) + 1
            if this > arg:
                self.send_json(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
                return
        if kind == "fail500" and n <= arg:
            self.send_json(500, {"error": {"message": "internal"}})
            return
        if kind == "badreq":
            self.send_json(400, {"error": {"message": "bad model"}})
            return
        if kind == "malformed":
            self.send_raw(200, b'{"choices": [{"message": {"content": "trunc', "application/json")
            return

        text = "echo: " + last_user(req.get("messages"))
        if kind == "format":
            # JSON mode: say which response_format (OpenAI) arrived, as JSON.
            text = json.dumps({"response_format": req.get("response_format")}, sort_keys=True)
        prompt_tokens = sum(len(str(m.get("content", "")).split())
                            for m in req.get("messages", []))
        completion_tokens = len(text.split())
        if req.get("stream"):
            self.stream(anthropic, model, text, prompt_tokens, completion_tokens,
                        cut=(kind == "cut" and n <= arg),
                        drip=(arg / 1000.0 if kind == "drip" else 0))
            return
        if anthropic:
            self.send_json(200, {"id": "msg_1", "type": "message", "role": "assistant",
                                 "model": model, "content": [{"type": "text", "text": text}],
                                 "stop_reason": "end_turn",
                                 "usage": {"input_tokens": prompt_tokens,
                                           "output_tokens": completion_tokens}})
        else:
            self.send_json(200, {"id": "c1", "object": "chat.completion", "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": prompt_tokens,
                                           "completion_tokens": completion_tokens}})

    def stream(self, anthropic, model, text, pt, ct, cut, drip):
        """Writes SSE by hand with no Content-Length: the end of the stream is
        the connection's close, so a cut stream looks like a clean end."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        words = text.split(" ")
        events = []
        if anthropic:
            events.append(("message_start", {"type": "message_start",
                                             "message": {"model": model,
                                                         "usage": {"input_tokens": pt}}}))
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                events.append(("content_block_delta", {"type": "content_block_delta",
                                                       "delta": {"type": "text_delta",
                                                                 "text": piece}}))
            events.append(("message_delta", {"type": "message_delta",
                                             "usage": {"output_tokens": ct}}))
            events.append(("message_stop", {"type": "message_stop"}))
        else:
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                events.append((None, {"choices": [{"index": 0, "delta": {"content": piece}}]}))
            events.append((None, {"choices": [], "usage": {"prompt_tokens": pt,
                                                           "completion_tokens": ct}}))
            events.append((None, "[DONE]"))
        out = []
        for name, data in events:
            payload = data if isinstance(data, str) else json.dumps(data)
            e = ""
            if name:
                e += "event: " + name + "\n"
            e += "data: " + payload + "\n\n"
            out.append(e.encode())
        if cut:
            # Half the events, and the last one cut inside its JSON.
            half = out[:max(1, len(out) // 2)]
            half[-1] = half[-1][:len(half[-1]) // 2]
            out = half
        try:
            for chunk in out:
                # Split each event in two writes: clients must join pieces.
                mid = len(chunk) // 2
                self.wfile.write(chunk[:mid])
                self.wfile.flush()
                self.wfile.write(chunk[mid:])
                self.wfile.flush()
                if drip:
                    time.sleep(drip)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def main():
    port = 0
    if len(sys.argv) > 2 and sys.argv[1] == "--port":
        port = int(sys.argv[2])
    # The listen backlog is read at bind time: a thousand clients connect at once.
    ThreadingHTTPServer.request_queue_size = 4096
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
