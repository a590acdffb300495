// Mints a UserSig with Tencent's own npm package, tls-sig-api-v2 (unmodified; installed into
// target/npm-usersig on first use): node usersig_npm.js SDKAPPID KEY USER EXPIRE [userbuf]
// With "userbuf" it mints through genPrivateMapKey, which signs a TLS.userbuf too.
const { execSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const work = path.join(__dirname, '..', '..', 'target', 'npm-usersig');
const entry = path.join(work, 'node_modules', 'tls-sig-api-v2');
if (!fs.existsSync(path.join(entry, 'package.json'))) {
  fs.mkdirSync(work, { recursive: true });
  execSync('npm install --no-audit --no-fund --loglevel=error --prefix . tls-sig-api-v2@1', {
    cwd: work,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}
const TLSSigAPIv2 = require(entry);
const [sdkappid, key, user, expire, kind] = process.argv.slice(2);
const api = new TLSSigAPIv2.Api(Number(sdkappid), key);
const sig = kind === 'userbuf' ? api.genPrivateMapKey(user, Number(expire), 1234, 255) : api.genUserSig(user, Number(expire));
process.stdout.write(sig);
