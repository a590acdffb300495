"""Mint a user token on your own server (a JWT, HS256 with the app's user_sig_secret):
Natter verifies it and creates the user on first sight.

Usage: APP_ID=default USER_SIG_SECRET=... python3 mint_hs256.py USER_ID [LIFETIME_SECONDS]
"""
import base64, hashlib, hmac, json, os, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def mint(user_id: str, lifetime: int = 86400) -> str:
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": os.environ["APP_ID"], "sub": user_id, "iat": now, "exp": now + lifetime}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(os.environ["USER_SIG_SECRET"].encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)

if __name__ == "__main__":
    print(mint(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 86400))
