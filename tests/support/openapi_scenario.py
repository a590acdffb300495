"""Every operation of docs/openapi.yaml called the way an app does, successfully, and each answer
validated against the document (status, content type, headers, body schema): the fuzzer mostly
reaches refusals, this reaches the success shapes. Fails unless every documented operation was
answered with a validated 2xx (the WebSocket upgrade excepted: it is not JSON over HTTP).

NATTER_URL, NATTER_APP_KEY, NATTER_APP_SECRET name a node and an app with a fresh database.
"""

import hashlib
import json
import secrets
import sys
import time

import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from natter_signing import KEY, SECRET, URL, prepared_request, signed_headers

CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
schema = schemathesis.openapi.from_url(URL + "/openapi.json")
covered = set()


def call(method, path, *, params=None, query=None, body=None, token=None, signed=False, headers=None, expect=None,
         media_type=None):
    """One call through schemathesis's own case, validated against the document."""
    operation = schema[path][method]
    case = operation.Case(path_parameters=params or {}, query=query, headers=dict(headers or {}),
                          **({} if body is None else {"body": body}), media_type=media_type)
    if token:
        case.headers["Authorization"] = f"Bearer {token}"
    if signed:
        m, p, b = prepared_request(case)
        case.headers.update(signed_headers(m, p, b))
    response = case.call(base_url=URL)
    status = response.status_code
    if expect is not None and status != expect:
        sys.exit(f"{method} {path} {params or ''}: expected {expect}, got {status}: {response.text[:500]}")
    if not 200 <= status < 300:
        sys.exit(f"{method} {path} {params or ''}: {status} {response.text[:500]}")
    case.validate_response(response, checks=CHECKS)
    covered.add((method.upper(), path))
    try:
        return response.json()
    except ValueError:
        return None


def data(*args, **kwargs):
    return call(*args, **kwargs)["data"]


def main():
    run = secrets.token_hex(3)
    # The node.
    call("GET", "/healthz")
    call("GET", "/readyz")
    call("GET", "/openapi.json")
    call("GET", "/openapi.yaml")
    call("GET", "/")
    call("GET", "/console/{file}", params={"file": "client/index.js"})

    # Hosted accounts.
    email = f"ada-{run}@example.com"
    auth = data("POST", "/v1/auth/register", body={"email": email, "password": "correct horse battery",
                                                   "first_name": "Ada", "last_name": "L"}, expect=201)
    login = data("POST", "/v1/auth/login", body={"email": email, "password": "correct horse battery",
                                                 "device_id": "laptop"})
    guest = data("POST", "/v1/auth/guest", body={"first_name": "Guest"}, expect=201)
    data("POST", "/v1/auth/upgrade", token=guest["access_token"],
         body={"email": f"guest-{run}@example.com", "password": "battery staple horse",
               "first_name": "Grace", "last_name": "H"})
    fresh = data("POST", "/v1/auth/refresh", body={"refresh_token": login["refresh_token"]})
    data("POST", "/v1/auth/logout", token=fresh["access_token"])

    # The server API provisions users; clients act with their tokens.
    ids = {name: f"{name}-{run}" for name in ("sa", "sb", "sc", "sd", "se", "sf")}
    data("POST", "/v1/server/users", signed=True, expect=201,
         body={"id": ids["sa"], "first_name": "Sam", "last_name": "A", "email": f"sam-{run}@example.com"})
    data("POST", "/v1/server/users", signed=True, expect=200, body={"id": ids["sa"], "nickname": "sammy"})
    tokens = {}
    for name in ("sa", "sb", "sc", "sd", "se", "sf"):
        tokens[name] = data("POST", "/v1/server/users/token", signed=True, body={"user_id": ids[name], "ttl": 3600})["token"]
    data("GET", "/v1/server/users/{id}", params={"id": ids["sa"]}, signed=True)
    data("GET", "/v1/server/users/{id}/presence", params={"id": ids["sa"]}, signed=True)
    data("POST", "/v1/server/presence/query", signed=True, body={"user_ids": [ids["sa"], "nobody-" + run]})

    a, b, c = tokens["sa"], tokens["sb"], tokens["sc"]
    data("GET", "/v1/me", token=a)
    data("PATCH", "/v1/me", token=a, body={"nickname": "Sam the first"})
    data("GET", "/v1/users", token=a, query={"id": ids["sb"]})
    data("POST", "/v1/me/blocks", token=a, body={"user": ids["sc"]})
    data("GET", "/v1/me/blocks", token=a)
    data("DELETE", "/v1/me/blocks/{user}", token=a, params={"user": ids["sc"]})

    # Devices for push.
    vapid = data("GET", "/v1/push/vapid", token=a)["public_key"]
    phone = data("POST", "/v1/me/devices", token=a, expect=201,
                 body={"platform": "fcm", "token": f"fcm-{run}:APA91b", "app_version": "1.0"})
    data("POST", "/v1/me/devices", token=a, expect=201,
         body={"platform": "webpush", "subscription": {
             "endpoint": f"https://push.example.com/wp/{run}", "expirationTime": None,
             "keys": {"p256dh": vapid, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}})
    data("POST", "/v1/me/devices", token=a, expect=201, body={"platform": "apns", "token": "ab" * 32})
    data("GET", "/v1/me/devices", token=a)
    data("DELETE", "/v1/me/devices/{id}", token=a, params={"id": phone["id"]})
    listed = data("GET", "/v1/server/users/{id}/devices", params={"id": ids["sa"]}, signed=True)
    data("DELETE", "/v1/server/users/{id}/devices/{device}", signed=True,
         params={"id": ids["sa"], "device": listed[0]["id"]})

    # A group run by its members.
    group = data("POST", "/v1/groups", token=a, expect=201, body={"name": "Team", "members": [ids["sb"], ids["sc"]]})
    g = group["id"]
    data("GET", "/v1/groups", token=a)
    data("GET", "/v1/groups/{id}", token=a, params={"id": g})
    data("PATCH", "/v1/groups/{id}", token=a, params={"id": g}, body={"announcement": "Be kind", "avatar_url": None})
    data("POST", "/v1/groups/{id}/members", token=a, params={"id": g}, body={"members": [ids["sd"]]})
    data("PATCH", "/v1/groups/{id}/members/{user}", token=a, params={"id": g, "user": ids["sb"]}, body={"role": "admin"})
    data("DELETE", "/v1/groups/{id}/members/{user}", token=a, params={"id": g, "user": ids["sd"]})
    data("POST", "/v1/groups/{id}/leave", token=c, params={"id": g})

    # Messages and their life, as clients.
    sent = data("POST", "/v1/server/messages", signed=True, expect=201,
                body={"from": ids["sa"], "group": g, "content": "hello team", "client_msg_id": "m1",
                      "meta": {"x": [1, {"y": None}]}})
    data("POST", "/v1/server/messages", signed=True, expect=200,
         body={"from": ids["sa"], "group": g, "content": "hello team", "client_msg_id": "m1"})
    data("POST", "/v1/server/messages", signed=True, expect=201,
         body={"from": ids["sb"], "group": g, "content": "@sam hi", "client_msg_id": "m2",
               "reply_to": sent["seq"], "mentions": [ids["sa"]]})
    dm = data("POST", "/v1/server/messages", signed=True, expect=201,
              body={"from": ids["sb"], "recipient": ids["sa"], "content": "psst", "client_msg_id": "d1"})
    data("POST", "/v1/server/messages", signed=True, expect=201, body={"group": g, "content": "system", "client_msg_id": "s1"})
    call("GET", "/v1/conversations", token=a, query={"limit": 1})
    data("PATCH", "/v1/conversations/{id}", token=a, params={"id": dm["conversation"]},
         body={"pinned": True, "muted_until": None})
    data("GET", "/v1/conversations/{id}/messages", token=a, params={"id": g}, query={"limit": 10})
    data("GET", "/v1/conversations/{id}/messages", token=a, params={"id": g}, query={"after_seq": 0, "limit": 10})
    seq = sent["seq"]
    data("PATCH", "/v1/conversations/{id}/messages/{seq}", token=a, params={"id": g, "seq": seq},
         body={"content": "hello, team", "meta": {"edited": True}})
    data("PUT", "/v1/conversations/{id}/messages/{seq}/reactions/{key}", token=b, params={"id": g, "seq": seq, "key": "👍"})
    data("DELETE", "/v1/conversations/{id}/messages/{seq}/reactions/{key}", token=b, params={"id": g, "seq": seq, "key": "👍"})
    data("DELETE", "/v1/conversations/{id}/messages/{seq}", token=b, params={"id": g, "seq": seq}, query={"scope": "me"})
    data("POST", "/v1/conversations/{id}/messages/{seq}/recall", token=a, params={"id": g, "seq": seq})

    # The same, as the app.
    more = [data("POST", "/v1/server/messages", signed=True, expect=201,
                 body={"from": ids["sb"], "group": g, "content": f"note {i}", "client_msg_id": f"n{i}"})["seq"]
            for i in range(3)]
    data("PATCH", "/v1/server/conversations/{id}/messages/{seq}", signed=True, params={"id": g, "seq": more[0]},
         body={"content": "[edited by a moderator]"})
    data("PUT", "/v1/server/conversations/{id}/messages/{seq}/reactions/{key}", signed=True,
         params={"id": g, "seq": more[0], "key": "ok"}, query={"user": ids["sa"]})
    data("DELETE", "/v1/server/conversations/{id}/messages/{seq}/reactions/{key}", signed=True,
         params={"id": g, "seq": more[0], "key": "ok"}, query={"user": ids["sa"]})
    data("POST", "/v1/server/conversations/{id}/messages/{seq}/recall", signed=True, params={"id": g, "seq": more[1]})
    data("DELETE", "/v1/server/conversations/{id}/messages/{seq}", signed=True, params={"id": g, "seq": more[2]})
    call("GET", "/v1/server/users/{id}/conversations", signed=True, params={"id": ids["sa"]}, query={"limit": 20})
    data("DELETE", "/v1/groups/{id}", token=a, params={"id": g})

    # Groups run by the app.
    sg = data("POST", "/v1/server/groups", signed=True, expect=201,
              body={"id": f"team-{run}", "name": "Ops", "owner": ids["sa"], "members": [ids["sb"]]})["id"]
    data("GET", "/v1/server/groups/{id}", signed=True, params={"id": sg})
    data("PATCH", "/v1/server/groups/{id}", signed=True, params={"id": sg}, body={"muted": True, "name": "Ops team"})
    data("POST", "/v1/server/groups/{id}/members", signed=True, params={"id": sg}, body={"members": [ids["sc"], ids["sd"]]})
    data("PATCH", "/v1/server/groups/{id}/members/{user}", signed=True, params={"id": sg, "user": ids["sb"]},
         body={"muted_until": int(time.time() * 1000) + 60_000})
    data("DELETE", "/v1/server/groups/{id}/members/{user}", signed=True, params={"id": sg, "user": ids["sd"]})
    data("DELETE", "/v1/server/groups/{id}", signed=True, params={"id": sg})

    # Moderation and users' lives.
    data("POST", "/v1/server/users/{id}/ban", signed=True, params={"id": ids["se"]}, body={"minutes": 5, "reason": "spam"})
    data("GET", "/v1/server/bans", signed=True)
    data("DELETE", "/v1/server/users/{id}/ban", signed=True, params={"id": ids["se"]})
    call("GET", "/v1/server/audit", signed=True, query={"limit": 50})
    data("PATCH", "/v1/server/users/{id}/change-id/{new_id}", signed=True, params={"id": ids["sf"], "new_id": ids["sf"] + "-2"})
    data("POST", "/v1/server/users/{id}/revoke-tokens", signed=True, params={"id": ids["sf"] + "-2"})

    # The vendors' server APIs: RongCloud signs with sha1(secret + nonce + timestamp) and posts forms.
    nonce, ts = secrets.token_hex(6), str(int(time.time()))
    rong = {"App-Key": KEY, "Nonce": nonce, "Timestamp": ts,
            "Signature": hashlib.sha1((SECRET + nonce + ts).encode()).hexdigest()}
    answer = call("POST", "/compat/rongcloud/{method}", params={"method": "user/getToken.json"}, headers=rong,
                  body={"userId": f"rc-{run}", "name": "Rong"}, media_type="application/x-www-form-urlencoded")
    if answer.get("code") != 200:
        sys.exit(f"RongCloud getToken: {answer}")
    # Tencent answers HTTP 200 with its own code; an app without a SDKAppID gets 70020.
    answer = call("POST", "/compat/tencent/v4/{service}/{command}",
                  params={"service": "im_open_login_svc", "command": "account_check"},
                  query={"sdkappid": "1400000000", "identifier": "administrator", "usersig": "x",
                         "random": "1", "contenttype": "json"},
                  body={"CheckItem": [{"UserID": "a"}]})
    if answer.get("ActionStatus") != "FAIL":
        sys.exit(f"Tencent without a configured app: {answer}")

    documented = {(m.upper(), p) for p, item in schema.raw_schema["paths"].items()
                  for m in item if m in ("get", "post", "put", "patch", "delete")}
    missing = sorted(documented - covered - {("GET", "/ws")})
    if missing:
        sys.exit(f"documented operations never answered with a validated success: {missing}")
    print(f"openapi scenario: {len(covered)} operations answered and validated against the document")


if __name__ == "__main__":
    main()
