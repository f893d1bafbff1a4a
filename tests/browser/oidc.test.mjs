// Sign-in through an OpenID provider in Chromium: the sign-in page's "Sign in with …" button runs
// the code flow at a real provider (oidc-provider, tests/oidc/provider.mjs, its own sign-in and
// consent pages) and ends on the dashboard with the provider's groups deciding the role.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

let server, browser, provider;
const providerDir = new URL("../oidc/", import.meta.url).pathname;

/** A port nobody listens on now: the provider and the server must know each other's address
 * before either starts (the issuer and the redirect URI). */
const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

before(async () => {
  const [sp, pp] = [await freePort(), await freePort()];
  provider = spawn(process.execPath, ["provider.mjs"], {
    cwd: providerDir,
    env: { PATH: process.env.PATH, PORT: String(pp), REDIRECT_URI: `http://127.0.0.1:${sp}/api/auth/oidc/callback` },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise((resolve, reject) => {
    provider.stdout.on("data", (c) => { if (String(c).includes("provider listening")) resolve(); });
    provider.on("exit", (code) => reject(new Error(`the provider exited (${code}); run npm ci in tests/oidc`)));
  });
  server = await startServer({
    bind: `127.0.0.1:${sp}`,
    env: {
      ECOSIRE_OIDC_ISSUER: `http://127.0.0.1:${pp}`,
      ECOSIRE_OIDC_CLIENT_ID: "ecosire",
      ECOSIRE_OIDC_CLIENT_SECRET: "ecosire-client-secret",
      ECOSIRE_OIDC_ADMIN_GROUP: "ecosire-admins",
      ECOSIRE_OIDC_LABEL: "Test IdP",
    },
  });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  provider?.kill();
});

/** Signs `login` in through the provider, from the dashboard's sign-in page. */
async function viaProvider(login) {
  const p = await (await browser.newContext()).newPage();
  await p.goto(server.base + "/login");
  await p.getByRole("link", { name: "Sign in with Test IdP" }).click();
  await p.locator('input[name="login"]').fill(login);
  await p.locator('input[name="password"]').fill("any password");
  await p.getByRole("button", { name: "Sign-in" }).click();
  await p.getByRole("button", { name: "Continue" }).click();
  await p.waitForURL(server.base + "/dashboard");
  return p;
}

test("sign in with the provider: its admin group makes an admin, others are customers", async () => {
  const alice = await viaProvider("alice");
  await alice.getByText("alice@example.com · admin").waitFor();
  await alice.getByRole("navigation", { name: "Administration" }).waitFor();
  // The same HttpOnly session as a password sign-in: invisible to scripts, accepted by the API.
  assert.equal(await alice.evaluate(() => document.cookie), "");
  const me = await alice.evaluate(async () => (await fetch("/api/auth/me")).json());
  assert.equal(me.user.email, "alice@example.com");

  const bob = await viaProvider("bob");
  await bob.getByText("bob@example.com · customer").waitFor();
  assert.equal(await bob.getByRole("navigation", { name: "Administration" }).count(), 0);
  const res = await bob.goto(server.base + "/dashboard/admin/users");
  assert.equal(res.status(), 403);
});
