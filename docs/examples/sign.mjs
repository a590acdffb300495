// Signed server-API call (v2, HMAC-SHA256) with Node's standard library (Node 18+).
// Usage: NATTER_URL=... APP_KEY=... APP_SECRET=... node sign.mjs METHOD PATH [JSON_BODY]
import { createHash, createHmac, randomBytes } from "node:crypto";

export async function call(method, path, body = "") {
  const ts = Math.floor(Date.now() / 1000).toString();
  const nonce = randomBytes(16).toString("hex");
  const bodyHash = createHash("sha256").update(body).digest("hex");
  const canonical = [method, path, ts, nonce, bodyHash].join("\n");
  const signature = createHmac("sha256", process.env.APP_SECRET).update(canonical).digest("hex");
  const res = await fetch(process.env.NATTER_URL + path, {
    method,
    body: body || undefined,
    headers: {
      "App-Key": process.env.APP_KEY, Nonce: nonce, Timestamp: ts,
      Signature: signature, "Signature-Method": "hmac-sha256", "Content-Type": "application/json",
    },
  });
  return { status: res.status, reply: await res.json() };
}

const [method, path, body] = process.argv.slice(2);
console.log(JSON.stringify(await call(method, path, body ?? "")));
