"""Signing a Natter server-API request (v2: HMAC-SHA256 over method, path and query, timestamp,
nonce and the body's digest; docs/app-server.md), for the schemathesis hooks and the OpenAPI
scenario. Reads NATTER_URL, NATTER_APP_KEY and NATTER_APP_SECRET."""

import hashlib
import hmac
import json
import os
import secrets
import time

import requests

URL = os.environ["NATTER_URL"].rstrip("/")
KEY = os.environ["NATTER_APP_KEY"]
SECRET = os.environ["NATTER_APP_SECRET"]


def signed_headers(method: str, path: str, body: bytes) -> dict:
    ts, nonce = str(int(time.time())), secrets.token_hex(12)
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method}\n{path}\n{ts}\n{nonce}\n{digest}"
    signature = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {"App-Key": KEY, "Nonce": nonce, "Timestamp": ts, "Signature": signature,
            "Signature-Method": "hmac-sha256"}


def server_call(method: str, path: str, payload=None) -> requests.Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = signed_headers(method, path, body)
    if payload is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, URL + path, data=body, headers=headers, timeout=10)


def token_for(user: str) -> str:
    """A fresh token of `user`, created if missing and unbanned."""
    server_call("DELETE", f"/v1/server/users/{user}/ban")
    res = server_call("POST", "/v1/server/users/token", {"user_id": user})
    res.raise_for_status()
    return res.json()["data"]["token"]


def prepared_request(case):
    """A schemathesis case's request exactly as it will go out (the transport serialises it the
    same way again), so the path, query and body signed are the ones sent."""
    out = case.as_transport_kwargs(base_url=URL)
    fields = {k: out[k] for k in ("method", "url", "headers", "params", "json", "data", "files") if k in out}
    prepared = requests.Request(**fields).prepare()
    body = prepared.body or b""
    return prepared.method, prepared.path_url, body.encode() if isinstance(body, str) else body
