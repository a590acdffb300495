"""Loopback stand-ins for a Web Push service, FCM (OAuth token endpoint and messages:send) and
APNs (HTTP/2), checking what Natter sends with independent implementations: http_ece (pywebpush's
RFC 8291 decryption) for Web Push payloads, PyJWT + cryptography for the VAPID, FCM and APNs JWTs,
and hyper-h2 for APNs' HTTP/2.

It makes the keys itself (the subscription's, the service account's, the APNs key) and prints
them, with its addresses, as the first line of stdout (JSON). Then each request it receives is one
JSON line: what arrived, what checked out, what it answered.

Answers follow the providers' documented shapes, chosen by the device token or endpoint path:
  ok...     success (Web Push 201, FCM 200 {"name"}, APNs 200 with apns-id)
  gone...   Web Push 410; FCM 404 UNREGISTERED; APNs 410 {"reason": "Unregistered"}
  flaky...  the first request 503 (FCM UNAVAILABLE, APNs ServiceUnavailable), then success
  slow...   the first request answered after 4 s (reported as it arrives), then at once
For APNs (hex tokens) the kind is the first hex digits: "0c" ok, "90" gone, "fa" flaky.
"""

import base64
import json
import os
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LOCK = threading.Lock()
SEEN = {}


def emit(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def first_time(key):
    with LOCK:
        n = SEEN.get(key, 0)
        SEEN[key] = n + 1
        return n == 0


# Keys the node is configured with.
SUBSCRIBER = ec.generate_private_key(ec.SECP256R1())
AUTH_SECRET = os.urandom(16)
FCM_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APNS_KEY = ec.generate_private_key(ec.SECP256R1())
APNS_KEY_ID = "K" + uuid.uuid4().hex[:9].upper()
APNS_TEAM_ID = "T" + uuid.uuid4().hex[:9].upper()
APNS_TOPIC = "com.example.natter"
FCM_EMAIL = "natter-test@example-project.iam.gserviceaccount.com"
FCM_PROJECT = "example-project"
ISSUED = set()


def kind_of(name):
    for kind in ("ok", "gone", "flaky", "slow"):
        if name.startswith(kind):
            return kind
    return {"0c": "ok", "90": "gone", "fa": "flaky"}.get(name[:2], "ok")


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            if self.path.startswith("/wp/"):
                self.web_push(body)
            elif self.path == "/token":
                self.fcm_token(body)
            elif self.path.startswith("/v1/projects/"):
                self.fcm_send(body)
            elif self.path.startswith("/hooks"):
                emit({"kind": "webhook", "headers": dict(self.headers), "body": json.loads(body)})
                self.answer(204)
            else:
                self.answer(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone (the test killed it); what arrived was reported
        except Exception as e:  # a check that fails is reported, and answered 400
            emit({"kind": "error", "path": self.path, "error": repr(e)})
            self.answer(400, json.dumps({"error": repr(e)}).encode())

    def web_push(self, body):
        name = self.path.rsplit("/", 1)[-1]
        kind = kind_of(name)
        scheme, _, params = self.headers["authorization"].partition(" ")
        assert scheme == "vapid", "Authorization must be the vapid scheme (RFC 8292)"
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        vapid_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        origin = "http://" + self.headers["host"]
        claims = jwt.decode(fields["t"], vapid_key, algorithms=["ES256"], audience=origin)
        assert claims["exp"] <= time.time() + 24 * 3600, "VAPID exp over 24 h away"
        assert self.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(body, private_key=SUBSCRIBER, auth_secret=AUTH_SECRET, version="aes128gcm")
        record = {
            "kind": "webpush",
            "endpoint": name,
            "payload": json.loads(plain),
            "vapid_public_key": fields["k"],
            "vapid_claims": claims,
            "ttl": self.headers.get("ttl"),
            "topic": self.headers.get("topic"),
            "urgency": self.headers.get("urgency"),
        }
        if kind == "gone":
            status = 410
        elif kind == "flaky" and first_time(name):
            status = 503
        else:
            if kind == "slow" and first_time(name):
                # In flight for a while: the test kills the node meanwhile.
                emit({"kind": "webpush_in_flight", "endpoint": name})
                time.sleep(4)
            status = 201
        record["status"] = status
        emit(record)
        self.answer(status, headers=[("location", "/msg/" + uuid.uuid4().hex)] if status == 201 else [])

    def fcm_token(self, body):
        form = parse_qs(body.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = jwt.decode(
            form["assertion"][0], FCM_KEY.public_key(), algorithms=["RS256"], audience=TOKEN_URI
        )
        assert claims["iss"] == FCM_EMAIL, claims
        assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging", claims
        token = "ya29." + uuid.uuid4().hex
        with LOCK:
            ISSUED.add(token)
        emit({"kind": "fcm_token", "claims": claims})
        self.answer(200, json.dumps({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}).encode(),
                    [("content-type", "application/json")])

    def fcm_send(self, body):
        assert self.path == f"/v1/projects/{FCM_PROJECT}/messages:send", self.path
        bearer = self.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in ISSUED:
            error = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                               "status": "UNAUTHENTICATED"}}
            self.answer(401, json.dumps(error).encode(), [("content-type", "application/json")])
            return
        message = json.loads(body)["message"]
        token = message["token"]
        kind = kind_of(token)
        if kind == "gone":
            status, reply = 404, {"error": {"code": 404, "message": "Requested entity was not found.",
                                            "status": "NOT_FOUND", "details": [
                                                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                 "errorCode": "UNREGISTERED"}]}}
        elif kind == "flaky" and first_time(token):
            status, reply = 503, {"error": {"code": 503, "message": "The service is currently unavailable.",
                                            "status": "UNAVAILABLE", "details": [
                                                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                 "errorCode": "UNAVAILABLE"}]}}
        else:
            status, reply = 200, {"name": f"projects/{FCM_PROJECT}/messages/{uuid.uuid4().int % 10**16}"}
        emit({"kind": "fcm", "token": token, "message": message,
              "natter": json.loads(message["data"]["natter"]), "status": status})
        self.answer(status, json.dumps(reply).encode(), [("content-type", "application/json")])


def apns_answer(headers, body):
    path = headers[":path"]
    assert headers[":method"] == "POST" and path.startswith("/3/device/"), path
    token = path.removeprefix("/3/device/")
    scheme, _, provider_token = headers["authorization"].partition(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(provider_token)["kid"] == APNS_KEY_ID
    claims = jwt.decode(provider_token, APNS_KEY.public_key(), algorithms=["ES256"],
                        options={"require": ["iss", "iat"]})
    assert claims["iss"] == APNS_TEAM_ID and abs(claims["iat"] - time.time()) < 3600, claims
    assert headers["apns-topic"] == APNS_TOPIC
    kind = kind_of(token)
    record = {"kind": "apns", "token": token, "claims": claims, "body": json.loads(body),
              "headers": {k: v for k, v in headers.items() if k.startswith("apns-")}}
    if kind == "gone":
        status, reply = 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
    elif kind == "flaky" and first_time(token):
        status, reply = 503, {"reason": "ServiceUnavailable"}
    else:
        status, reply = 200, None
    record["status"] = status
    emit(record)
    return status, reply


def serve_h2(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams = {}
    while True:
        data = sock.recv(65535)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                streams[event.stream_id][1].extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = streams.pop(event.stream_id)
                try:
                    status, reply = apns_answer(headers, bytes(body))
                except Exception as e:
                    emit({"kind": "error", "path": headers.get(":path"), "error": repr(e)})
                    status, reply = 403, {"reason": "InvalidProviderToken"}
                response = [(":status", str(status)), ("apns-id", str(uuid.uuid4()))]
                if reply is None:
                    conn.send_headers(event.stream_id, response, end_stream=True)
                else:
                    payload = json.dumps(reply).encode()
                    conn.send_headers(event.stream_id, response + [("content-type", "application/json")])
                    conn.send_data(event.stream_id, payload, end_stream=True)
        sock.sendall(conn.data_to_send())
    sock.close()


def h2_listener(listener):
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_h2, args=(sock,), daemon=True).start()


http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
HTTP_URL = f"http://127.0.0.1:{http.server_address[1]}"
TOKEN_URI = HTTP_URL + "/token"
apns = socket.socket()
apns.bind(("127.0.0.1", 0))
apns.listen(16)
APNS_URL = f"http://127.0.0.1:{apns.getsockname()[1]}"

threading.Thread(target=http.serve_forever, daemon=True).start()
threading.Thread(target=h2_listener, args=(apns,), daemon=True).start()

p256dh = SUBSCRIBER.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
service_account = {
    "type": "service_account",
    "project_id": FCM_PROJECT,
    "private_key_id": uuid.uuid4().hex,
    "private_key": FCM_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
    "client_email": FCM_EMAIL,
    "client_id": "1234567890",
    "token_uri": TOKEN_URI,
}
emit({
    "kind": "ready",
    "http": HTTP_URL,
    "apns": APNS_URL,
    "webpush_endpoint": HTTP_URL + "/wp/",
    "keys": {"p256dh": b64url(p256dh), "auth": b64url(AUTH_SECRET)},
    "fcm_service_account": json.dumps(service_account),
    "apns_key": APNS_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode(),
    "apns_key_id": APNS_KEY_ID,
    "apns_team_id": APNS_TEAM_ID,
    "apns_topic": APNS_TOPIC,
})

# Until the test closes our stdin (or dies).
sys.stdin.read()
