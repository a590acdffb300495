"""Schemathesis auth for a Natter node: signs server-API requests the way an app backend does and
gives client-API requests a user's bearer token (natter_signing.py).

Loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks (this folder on PYTHONPATH); reads NATTER_URL,
NATTER_APP_KEY and NATTER_APP_SECRET. A signature is computed over the request as the transport
will serialise it, so the bytes signed are the bytes sent.
"""

import schemathesis

from natter_signing import prepared_request, signed_headers, token_for


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
    """The client API: a user's access token, fresh per case (the fuzzer learns ids from responses
    and may ban, rename or revoke the very user it calls as); logout ends a token of its own."""

    def get(self, case, ctx):
        return token_for("st-throwaway" if case.operation.path == "/v1/auth/logout" else "st-user")

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
