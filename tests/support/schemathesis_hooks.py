"""Schemathesis auth for a Natter node: signs server-API requests the way an app backend does
(v2, HMAC-SHA256 over method, path and query, timestamp, nonce and the body's digest) and gives
client-API requests a user's bearer token.

Loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks (this folder on PYTHONPATH); reads NATTER_URL,
NATTER_APP_KEY and NATTER_APP_SECRET. A signature is computed over the request as
the transport will serialise it, so the bytes signed are the bytes sent.
"""

import hashlib
import hmac
import json
import os
import secrets
import time

import requests
import schemathesis

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
    """A fresh token of `user`, created if missing and unbanned: the fuzzer learns ids from
    responses and may ban, rename or revoke the very user it calls as."""
    server_call("DELETE", f"/v1/server/users/{user}/ban")
    res = server_call("POST", "/v1/server/users/token", {"user_id": user})
    res.raise_for_status()
    return res.json()["data"]["token"]


def prepared_request(case):
    """The request exactly as it will go out (the transport serialises the case the same way
    again), so the path, query and body signed are the ones sent."""
    out = case.as_transport_kwargs(base_url=URL)
    fields = {k: out[k] for k in ("method", "url", "headers", "params", "json", "data", "files") if k in out}
    prepared = requests.Request(**fields).prepare()
    body = prepared.body or b""
    return prepared.method, prepared.path_url, body.encode() if isinstance(body, str) else body


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/v1/server/")
class ServerSignature:
    """The server API: v2 signatures, fresh nonce and timestamp per request."""

    def get(self, case, ctx):
        return "signed"

    def set(self, case, data, ctx):
        headers = dict(case.headers or {})
        for name in ("App-Key", "Nonce", "Timestamp", "Signature", "Signature-Method"):
            headers.pop(name, None)
        case.headers = headers
        method, path, body = prepared_request(case)
        headers.update(signed_headers(method, path, body))
        case.headers = headers


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/v1/(?!server/|auth/(register|login|guest|refresh)$)")
class UserToken:
    """The client API: a user's access token; logout gets a token of its own to end."""

    def get(self, case, ctx):
        return token_for("st-throwaway" if case.operation.path == "/v1/auth/logout" else "st-user")

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
