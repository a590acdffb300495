"""Calls Natter through RongCloud's own Python server SDK (rc-server-sdk, unmodified).

Usage: python3 rongcloud_sdk.py HOST APP_KEY APP_SECRET CALL ARGS_JSON
CALL names the SDK's method from its RongCloud object, e.g. "user.register" or
"group.gag.add"; ARGS_JSON is the list of its positional arguments. Prints the SDK's reply as JSON.
"""
import json
import sys

from rongcloud.rongcloud import RongCloud


def main():
    host, key, secret, call, args = sys.argv[1:6]
    rc = RongCloud(key, secret, host)
    first, *rest = call.split(".")
    target = getattr(rc, "get_" + first)()
    for name in rest[:-1]:
        target = getattr(target, "get_" + name)()
    reply = getattr(target, rest[-1])(*json.loads(args))
    # On an HTTP error status the SDK hands back the raw body.
    if isinstance(reply, (bytes, bytearray)):
        reply = json.loads(reply)
    print(json.dumps(reply))


if __name__ == "__main__":
    main()
