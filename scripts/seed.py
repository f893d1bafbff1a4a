#!/usr/bin/env python3
"""Seeds a running ECOSIRE server for load tests, through its public API (standard library only).

Logs in as the admin, creates one product and COUNT licenses of it in parallel, writes the keys
(one per line) to KEYS_OUT, then validates every key once so the snapshot cache and the token
memos are warm and every key is known to answer VALID.

    seed.py --base http://127.0.0.1:PORT --email E --password P --count 10000 --keys-out keys.txt
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

_local = threading.local()


def conn(base):
    """One keep-alive connection per worker thread."""
    c = getattr(_local, "conn", None)
    if c is None:
        u = urllib.parse.urlsplit(base)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        _local.conn = c
    return c


def call(base, method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(3):
        c = conn(base)
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
        except (http.client.HTTPException, OSError):
            # A dropped keep-alive connection: open a new one and retry.
            c.close()
            _local.conn = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def expect(status, body, want, what):
    if status != want:
        sys.exit(f"seed: {what}: HTTP {status}: {body}")
    return body


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--keys-out", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()

    s, b = call(a.base, "POST", "/api/auth/login", {"email": a.email, "password": a.password})
    token = expect(s, b, 200, "login")["token"]
    s, b = call(
        a.base,
        "POST",
        "/api/products",
        {
            "name": "Load Desk",
            "slug": "load-desk",
            "max_activations": 3,
            "duration_days": 365,
            "entitlements": ["pro", "export"],
        },
        token,
    )
    product_id = expect(s, b, 201, "create product")["id"]

    def create(_i):
        s, b = call(a.base, "POST", "/api/licenses", {"product_id": product_id}, token)
        return expect(s, b, 201, "create license")["key"]

    t0 = time.monotonic()
    with ThreadPoolExecutor(a.concurrency) as ex:
        keys = list(ex.map(create, range(a.count)))
    seed_s = time.monotonic() - t0
    with open(a.keys_out, "w") as f:
        f.write("\n".join(keys) + "\n")
    print(f"seed: {len(keys)} licenses in {seed_s:.1f} s ({len(keys) / seed_s:.0f}/s, "
          f"{a.concurrency} client threads)")

    def check(key):
        s, b = call(a.base, "POST", "/api/licenses/validate", {"key": key})
        if s != 200 or not b.get("valid"):
            sys.exit(f"seed: validate {key[:9]}…: HTTP {s}: {b}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(a.concurrency) as ex:
        list(ex.map(check, keys))
    warm_s = time.monotonic() - t0
    print(f"warm: {len(keys)} keys validated once, all VALID, in {warm_s:.1f} s")
    print(f"SEED_SECONDS={seed_s:.2f}")


if __name__ == "__main__":
    main()
