#!/usr/bin/env python3
"""A Herald webhook receiver in Python, on the `standardwebhooks` package.

    python3 -m pip install -r requirements.txt
    HERALD_WEBHOOK_SECRET=whsec_... python3 receiver.py [PORT]

It listens on 127.0.0.1 (HERALD_RECEIVER_HOST to change) at PORT, else
HERALD_RECEIVER_PORT, else 3000; port 0 takes a free one. Once bound it prints
`listening on http://HOST:PORT/`, then one line per verified delivery: the
event id (the `webhook-id` header). It answers 204 to a verified delivery,
401 to a stale, unsigned or forged one, and 400 to a malformed one. Only the
standard library and `standardwebhooks` are used.
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# Herald's own limit on published bodies is 1 MiB by default.
MAX_BODY = 4 * 1024 * 1024


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        try:
            length = int(self.headers.get("content-length", ""))
        except ValueError:
            self.close_connection = True
            return self.answer(411, "a content-length is required")
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self.answer(413, "the body is too large")
        body = self.rfile.read(length)
        headers = dict(self.headers.items())
        try:
            # Verifies the exact bytes received (signature and a 5-minute
            # timestamp tolerance), then parses the JSON.
            self.server.webhook.verify(body, headers)
        except WebhookVerificationError as e:
            return self.answer(401, str(e))
        except Exception:  # not UTF-8, a malformed signature header, not JSON
            return self.answer(400, "malformed delivery")
        # The webhook-id is the event id, the same on every attempt.
        print(self.headers.get("webhook-id"), flush=True)
        self.answer(204)

    def answer(self, status, message=""):
        payload = message.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format, *args):
        # Requests are logged to stderr; stdout carries only the event ids.
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main():
    secret = os.environ.get("HERALD_WEBHOOK_SECRET")
    if not secret:
        sys.exit("set HERALD_WEBHOOK_SECRET to the webhook's secret (whsec_...)")
    port_text = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HERALD_RECEIVER_PORT", "3000")
    try:
        port = int(port_text)
    except ValueError:
        sys.exit(f"the port must be a number, not {port_text!r}")
    host = os.environ.get("HERALD_RECEIVER_HOST", "127.0.0.1")

    server = ThreadingHTTPServer((host, port), Receiver)
    try:
        server.webhook = Webhook(secret)
    except Exception as e:
        sys.exit(f"HERALD_WEBHOOK_SECRET is not a valid secret: {e}")
    bound_host, bound_port = server.server_address[:2]
    print(f"listening on http://{bound_host}:{bound_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
