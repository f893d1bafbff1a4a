// A real OpenID provider for tests/oidc.rs: oidc-provider (pinned in package.json) on
// 127.0.0.1:$PORT, issuer http://127.0.0.1:$PORT, with its development sign-in and consent pages.
//
// - People (any password): alice (in the admin group), bob, and carol (whose address the provider
//   has not verified).
// - Clients: `ecosire` (confidential, authorization code + PKCE, redirect $REDIRECT_URI) and
//   `billing-sync` (client credentials). Access tokens are JWTs for the audience $AUDIENCE.
// - A side door for the tests, under /__test/: `POST rotate` (a new signing key, published with
//   the old one), `POST person` (change a person's claims: {id, …}), `POST mint` (sign arbitrary
//   claims with the current key, or with a key nobody publishes: {claims, stranger}), and
//   `GET stats` (how often the keys were fetched).
//
// Started by the tests with `node provider.mjs` (`npm ci` in this folder first; .ci/run does it).
import http from 'node:http';
import { generateKeyPair, exportJWK, SignJWT, importJWK } from 'jose';
import Provider from 'oidc-provider';

const PORT = Number(process.env.PORT);
const ISSUER = `http://127.0.0.1:${PORT}`;
const REDIRECT_URI = process.env.REDIRECT_URI;
const AUDIENCE = process.env.AUDIENCE || 'https://api.ecosire.test';

const people = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Admin', groups: ['ecosire-admins', 'staff'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Customer', groups: ['staff'] },
  carol: { email: 'carol@example.com', email_verified: false, name: 'Carol Unverified', groups: [] },
};

let generation = 0;
async function newKey() {
  generation += 1;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `key-${generation}-${Date.now()}`, alg: 'RS256', use: 'sig' };
}

const stats = { jwks: 0 };
let keys = [await newKey()];

function makeProvider() {
  const provider = new Provider(ISSUER, {
    clients: [
      {
        client_id: 'ecosire',
        client_secret: 'ecosire-client-secret',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
      {
        client_id: 'billing-sync',
        client_secret: 'billing-sync-secret',
        redirect_uris: [],
        grant_types: ['client_credentials'],
        response_types: [],
      },
    ],
    jwks: { keys },
    cookies: { keys: ['ecosire-test-provider-cookie-key'] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    // Claims in the ID token, as Authentik and Keycloak put them.
    conformIdTokenClaims: false,
    async findAccount(_ctx, id) {
      if (!people[id]) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...people[id] }) };
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: AUDIENCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 3600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    pkce: { required: () => true },
  });
  return provider.callback();
}

let handler = makeProvider();

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function testApi(req, res) {
  const path = req.url.replace('/__test/', '');
  if (req.method === 'GET' && path === 'stats') return json(res, 200, stats);
  if (req.method === 'POST' && path === 'rotate') {
    keys = [await newKey(), ...keys];
    handler = makeProvider();
    return json(res, 200, { kid: keys[0].kid });
  }
  if (req.method === 'POST' && path === 'person') {
    const { id, ...claims } = await body(req);
    people[id] = { ...(people[id] || {}), ...claims };
    return json(res, 200, people[id]);
  }
  if (req.method === 'POST' && path === 'mint') {
    const { claims, stranger } = await body(req);
    const jwk = stranger ? { ...(await newKey()), kid: 'stranger' } : keys[0];
    generation -= stranger ? 1 : 0;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt' })
      .sign(await importJWK(jwk, 'RS256'));
    return json(res, 200, { token });
  }
  return json(res, 404, { error: 'no such test route' });
}

http
  .createServer((req, res) => {
    if (req.url.startsWith('/__test/')) {
      testApi(req, res).catch((e) => json(res, 500, { error: String(e) }));
      return;
    }
    if (req.url.startsWith('/jwks')) stats.jwks += 1;
    handler(req, res);
  })
  .listen(PORT, '127.0.0.1', () => console.log(`provider listening on ${ISSUER}`));
