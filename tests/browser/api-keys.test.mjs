// Dashboard → API keys in Chromium: create a key and see it exactly once, use it as a script
// would, see its request count rise, rotate it (the old key keeps working through the grace
// period), revoke it (it stops at once).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startServer, signIn as signInAs } from "./server.mjs";

let server, browser;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const signIn = (email, password) => signInAs(browser, server.base, email, password);

/** The key used as a script would: curl, printing only the status code. */
const asScript = async (key) => {
  const { stdout } = await promisify(execFile)("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}",
    "-H", `authorization: Bearer ${key}`, server.base + "/api/licenses"], { timeout: 30_000 });
  return Number(stdout);
};

test("a key is shown once, counts its requests, rotates with grace and revokes at once", async () => {
  const reg = await server.api("POST", "/api/auth/register", { email: "dev@example.com", password: "dev-password-1", name: "Dev" });
  assert.equal(reg.status, 201);
  const p = await signIn("dev@example.com", "dev-password-1");
  await p.getByRole("link", { name: "API keys" }).click();
  await p.waitForURL(server.base + "/dashboard/api-keys");
  await p.getByText("No API keys yet").waitFor();

  await p.getByLabel("Name").fill("ci");
  await p.getByLabel("Scope").selectOption("read-write");
  await p.getByRole("button", { name: "Create key" }).click();
  await p.getByText("copy it now: it is not shown again").waitFor();
  const key = (await p.locator("#new-key").textContent()).trim();
  assert.match(key, /^ecos_live_[0-9A-Za-z]{32}$/);
  // Admin scope is not offered to a customer.
  assert.equal(await p.locator('option[value="admin"]').count(), 0);

  assert.equal(await asScript(key), 200);
  assert.equal(await asScript(key), 200);
  await p.goto(server.base + "/dashboard/api-keys");
  const html = await p.content();
  assert.ok(!html.includes(key), "the secret is never shown again");
  assert.ok(html.includes(key.slice(0, 14)), "its prefix is");
  assert.equal((await p.locator("td[data-requests]").first().textContent()).trim(), "2");
  // Today's bar in the 30-day chart.
  const chart = p.locator("svg[data-chart]").first();
  assert.match(await chart.getAttribute("aria-label"), /^2 requests \(0 errors\) in 30 days; busiest \d{4}-\d\d-\d\d with 2$/);
  assert.equal(await chart.locator("rect").count(), 1);
  await p.screenshot({ path: (process.env.ECOSIRE_SCREENSHOTS || "/tmp") + "/api-keys.png", fullPage: true });

  await p.getByRole("button", { name: "Rotate" }).click();
  await p.getByText("New key (shown once)").waitFor();
  const rotated = (await p.locator("[id^=rotated-]").first().textContent()).trim();
  assert.match(rotated, /^ecos_live_/);
  assert.notEqual(rotated, key);
  assert.ok(await p.getByText("The old key stops working in 24 hours").isVisible());
  assert.equal(await asScript(key), 200, "the old key works through the grace period");
  assert.equal(await asScript(rotated), 200);

  await p.goto(server.base + "/dashboard/api-keys");
  // The rotated key's row is the newest: revoke it.
  await p.getByRole("button", { name: "Revoke" }).first().click();
  await p.waitForLoadState("load");
  await p.getByText("revoked").first().waitFor();
  assert.equal(await asScript(rotated), 401);
  p.check();
});
