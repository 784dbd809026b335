#!/usr/bin/env python3
"""A small receiver for Understudy's alert webhooks (Python 3 standard library only).

It verifies Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature:
HMAC-SHA256 over "id.timestamp.body", base64, "v1," prefix, any of several secrets so that a
rotation does not break it), refuses stale timestamps, answers 401 to anything unsigned or
badly signed, deduplicates deliveries by webhook-id (also across its own restarts, via --out),
and prints each new alert on one line.

    scripts/webhook-receiver.py --port 9900 --secret whsec_... [--secret whsec_old...]
        [--out deliveries.jsonl] [--fail-for 60]

--fail-for N answers 500 to every delivery for the first N seconds (to watch retries).
--out appends one JSON line per accepted delivery: {"id", "duplicate", "payload"}.
Secrets can also come from UNDERSTUDY_WEBHOOK_SECRET (space-separated).
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_secret(s):
    if s.startswith("whsec_"):
        s = s[len("whsec_"):]
    return base64.b64decode(s)


def verify(headers, body, keys, tolerance, now=None):
    """Returns None when the delivery is authentic, else the reason it is not."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return "missing webhook headers"
    try:
        ts_i = int(ts)
    except ValueError:
        return "bad timestamp"
    now = time.time() if now is None else now
    if abs(now - ts_i) > tolerance:
        return "timestamp outside tolerance"
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    for key in keys:
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for sig in sigs.split():
            version, _, value = sig.partition(",")
            if version == "v1" and hmac.compare_digest(value, want):
                return None
    return "no valid signature"


class Receiver:
    def __init__(self, keys, tolerance, fail_for, out):
        self.keys, self.tolerance, self.out = keys, tolerance, out
        self.fail_until = time.time() + fail_for
        self.seen = set()
        self.lock = threading.Lock()
        if out and os.path.exists(out):
            with open(out) as f:
                for line in f:
                    if line.strip():
                        self.seen.add(json.loads(line)["id"])

    def handle(self, headers, body):
        reason = verify(headers, body, self.keys, self.tolerance)
        if reason:
            print(f"rejected: {reason}", flush=True)
            return 401
        if time.time() < self.fail_until:
            return 500
        msg_id = headers.get("webhook-id")
        with self.lock:
            duplicate = msg_id in self.seen
            self.seen.add(msg_id)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = body.decode(errors="replace")
            if self.out:
                with open(self.out, "a") as f:
                    f.write(json.dumps({"id": msg_id, "duplicate": duplicate, "payload": payload}) + "\n")
        if not duplicate:
            d = payload.get("data", {}) if isinstance(payload, dict) else {}
            print(f"{payload.get('type', '?') if isinstance(payload, dict) else '?'} "
                  f"{d.get('experiment')}/{d.get('shadow')} {d.get('rule', {}).get('name')} "
                  f"value={d.get('value')} noise_floor={d.get('noise_floor')} id={msg_id}", flush=True)
        return 204


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9900)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--tolerance", type=float, default=300, help="seconds of clock skew accepted")
    ap.add_argument("--fail-for", type=float, default=0, help="answer 500 for this many seconds after start")
    ap.add_argument("--out", help="append accepted deliveries to this JSON-lines file")
    args = ap.parse_args()
    secrets = args.secret + os.environ.get("UNDERSTUDY_WEBHOOK_SECRET", "").split()
    if not secrets:
        ap.error("at least one --secret (or UNDERSTUDY_WEBHOOK_SECRET) is required")
    receiver = Receiver([parse_secret(s) for s in secrets], args.tolerance, args.fail_for, args.out)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code = receiver.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
