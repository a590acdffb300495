"""Verifies captured webhook deliveries with the reference Standard Webhooks library.

Reads JSON lines {"id","timestamp","signature","body"} on stdin; prints "verified N failed M".
"""
import json, sys
from standardwebhooks.webhooks import Webhook

secret = sys.argv[1]
hook = Webhook(secret)
ok = failed = 0
for line in sys.stdin:
    d = json.loads(line)
    headers = {"webhook-id": d["id"], "webhook-timestamp": d["timestamp"], "webhook-signature": d["signature"]}
    try:
        hook.verify(d["body"], headers)
        ok += 1
    except Exception as e:  # noqa: BLE001 - report every failure
        failed += 1
        print("failed:", d["id"], e, file=sys.stderr)
print(f"verified {ok} failed {failed}")
