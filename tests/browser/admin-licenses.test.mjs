// Admin → licenses in Chromium: find a license by its key, reissue it (the old key is gone at
// once), revoke it and see validate answer REVOKED; a customer gets a 403 page, not a stack trace.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer, ADMIN, signIn as signInAs } from "./server.mjs";

let server, browser, token;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  token = (await server.api("POST", "/api/auth/login", ADMIN)).body.token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const signIn = (email, password) => signInAs(browser, server.base, email, password);

const validate = async (key) => (await server.api("POST", "/api/licenses/validate", { key })).body.code;

test("find, reissue and revoke a license; validate follows at once", async () => {
  const product = (await server.api("POST", "/api/products", { name: "Server Edition", slug: "server-edition", max_activations: 3 }, token)).body;
  const lic = (await server.api("POST", "/api/licenses", { product_id: product.id, email: "owner@example.com" }, token)).body;
  await server.api("POST", "/api/licenses/activate", { key: lic.key, fingerprint: "build-agent-1", name: "Build agent" });
  assert.equal(await validate(lic.key), "VALID");

  const p = await signIn(ADMIN.email, ADMIN.password);
  await p.getByRole("navigation", { name: "Administration" }).getByRole("link", { name: "Licenses" }).click();
  await p.getByLabel("Find by key, customer email or product (id or slug)").fill(lic.key.toLowerCase());
  await p.getByRole("button", { name: "Search" }).click();
  await p.getByRole("link", { name: "…" + lic.key_last4 }).click();
  await p.getByRole("cell", { name: "Build agent" }).waitFor();
  await p.screenshot({ path: (process.env.ECOSIRE_SCREENSHOTS || "/tmp") + "/admin-license.png" });

  await p.getByRole("button", { name: "Reissue key" }).click();
  await p.locator("#reissued").filter({ hasText: /ECOS-/ }).waitFor();
  const reissued = (await p.locator("#reissued").textContent()).trim();
  assert.notEqual(reissued, lic.key);
  assert.equal(await validate(lic.key), "NOT_FOUND", "the old key is gone at once");
  assert.equal(await validate(reissued), "VALID");

  await p.getByRole("button", { name: "Revoke" }).click();
  await p.getByText("Revoked licenses are final").waitFor();
  assert.equal(await validate(reissued), "REVOKED");

  // By email and by product too.
  await p.goto(server.base + "/dashboard/admin/licenses?q=owner@example.com");
  await p.getByRole("cell", { name: "Server Edition" }).waitFor();
  await p.goto(server.base + "/dashboard/admin/licenses?q=no-such-product");
  await p.getByText("No product has the id or slug no-such-product").waitFor();
});

test("a customer is shown a 403 page on admin pages", async () => {
  await server.api("POST", "/api/auth/register", { email: "cust@example.com", password: "cust-password-1", name: "C" });
  const p = await signIn("cust@example.com", "cust-password-1");
  assert.equal(await p.getByRole("navigation", { name: "Administration" }).count(), 0);
  const res = await p.goto(server.base + "/dashboard/admin/licenses");
  assert.equal(res.status(), 403);
  await p.getByText("This page is for administrators").waitFor();
  assert.ok(!(await p.content()).includes("panicked"));
});
