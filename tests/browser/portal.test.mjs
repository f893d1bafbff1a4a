// The customer portal's license page (free a device) and Admin → Users (plan, disable, the
// last-admin rule) in Chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer, ADMIN, signIn as signInAs, linkIn } from "./server.mjs";

let server, browser, token;
const signIn = (email, password) => signInAs(browser, server.base, email, password);

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  token = (await server.api("POST", "/api/auth/login", ADMIN)).body.token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a customer frees a device from the license page; an admin disables the customer", async () => {
  const product = (await server.api("POST", "/api/products", { name: "Studio", max_activations: 2 }, token)).body;
  const lic = (await server.api("POST", "/api/licenses", { product_id: product.id, email: "kay@example.com" }, token)).body;
  const [mail] = await server.mailTo("kay@example.com");
  const invite = new URL(linkIn(mail, "/account/set-password")).searchParams.get("token");
  assert.equal((await server.api("POST", "/api/auth/password-reset/confirm", { token: invite, password: "kay-password-1" })).status, 204);
  await server.api("POST", "/api/licenses/activate", { key: lic.key, fingerprint: "kays-laptop", name: "Kay's laptop" });

  const p = await signIn("kay@example.com", "kay-password-1");
  await p.getByRole("link", { name: "Studio" }).click();
  await p.getByRole("cell", { name: "Kay's laptop" }).waitFor();
  assert.equal(await p.getByRole("button", { name: "Revoke" }).count(), 0, "no lifecycle actions for a customer");
  await p.getByRole("button", { name: "Deactivate" }).click();
  await p.getByText("No device has activated this license").waitFor();
  const devices = await server.api("POST", "/api/licenses/activations", { key: lic.key });
  assert.deepEqual(devices.body.data, []);
  // Another account's license does not exist for Kay.
  const other = (await server.api("POST", "/api/licenses", { product_id: product.id }, token)).body;
  const res = await p.goto(`${server.base}/dashboard/licenses/${other.id}`);
  assert.equal(res.status(), 404);
  await p.getByText("No such license").waitFor();

  const a = await signIn(ADMIN.email, ADMIN.password);
  await a.getByRole("link", { name: "Users" }).click();
  const row = a.getByRole("form", { name: "Change kay@example.com" });
  await row.getByLabel("Plan").fill("pro");
  await row.getByLabel("Access").selectOption("true");
  await row.getByRole("button", { name: "Save" }).click();
  await a.waitForLoadState("load");
  await a.getByRole("form", { name: "Change kay@example.com" }).getByLabel("Access").locator("option[selected]", { hasText: "disabled" }).waitFor({ state: "attached" });
  const login = await server.api("POST", "/api/auth/login", { email: "kay@example.com", password: "kay-password-1" });
  assert.equal(login.body.code, "ACCOUNT_DISABLED");
  // The portal's own session is refused at once: the next page sends Kay to sign in.
  await p.goto(server.base + "/dashboard");
  await p.waitForURL(/\/login/);

  // The last active admin cannot step down.
  const me = a.getByRole("form", { name: `Change ${ADMIN.email}` });
  await me.getByLabel("Role").selectOption("customer");
  await me.getByRole("button", { name: "Save" }).click();
  await me.getByText("This is the last active admin").waitFor();
  a.check();
  p.check();
});
