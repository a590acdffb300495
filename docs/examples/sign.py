"""Signed server-API call (v2, HMAC-SHA256) with the Python standard library.

Usage: NATTER_URL=... APP_KEY=... APP_SECRET=... python3 sign.py METHOD PATH [JSON_BODY]
"""
import hashlib, hmac, json, os, secrets, sys, time, urllib.error, urllib.request

def call(method, path, body=""):
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    body_hash = hashlib.sha256(body.encode()).hexdigest()
    canonical = "\n".join([method, path, ts, nonce, body_hash])
    signature = hmac.new(os.environ["APP_SECRET"].encode(), canonical.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(os.environ["NATTER_URL"] + path, data=body.encode() or None, method=method, headers={
        "App-Key": os.environ["APP_KEY"], "Nonce": nonce, "Timestamp": ts,
        "Signature": signature, "Signature-Method": "hmac-sha256", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)

if __name__ == "__main__":
    status, reply = call(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    print(json.dumps({"status": status, "reply": reply}))
