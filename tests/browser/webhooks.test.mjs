// Webhooks in Chromium. The events explorer: a generated cURL command is accepted by a receiver
// that checks the signature; the checker tells a good signature from a tampered body, without a
// request. Admin → endpoints: register the receiver (secret shown once), send a test, see the
// delivery with its attempt, retry it, disable the endpoint.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startServer, signIn, ADMIN } from "./server.mjs";

let server, browser, receiver, received = [];
const SECRET = "whsec_" + "k".repeat(32);
/** The secrets the receiver accepts: the generator's, and each endpoint's once it is shown. */
const secrets = [SECRET];

/** A receiver as API.md asks one to be: any matching v1 over "{t}.{raw body}", 300 s tolerance. */
function accepts(header, body) {
  const parts = header.split(",").map((p) => p.split("="));
  const t = Number(parts.find(([k]) => k === "t")?.[1]);
  const fresh = Math.abs(Date.now() / 1000 - t) <= 300;
  return fresh && secrets.some((secret) => {
    const expected = Buffer.from(createHmac("sha256", secret).update(`${t}.${body}`).digest("hex"));
    return parts.some(([k, v]) => k === "v1" && v.length === expected.length && timingSafeEqual(Buffer.from(v), expected));
  });
}

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => {
      const ok = accepts(req.headers["x-license-signature"] || "", body);
      received.push({ ok, type: req.headers["x-ecosire-event"], path: req.url, body });
      res.writeHead(ok ? 200 : 401).end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
});

after(async () => {
  receiver?.close();
  await browser?.close();
  await server?.stop();
});

test("a generated cURL command is accepted; the checker runs in the browser", async () => {
  await server.api("POST", "/api/auth/register", { email: "hooks@example.com", password: "hooks-password", name: "H" });
  const p = await (await browser.newContext()).newPage();
  await p.goto(server.base + "/login?next=/dashboard/webhooks");
  await p.getByLabel("Email").fill("hooks@example.com");
  await p.getByLabel("Password").fill("hooks-password");
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForURL(server.base + "/dashboard/webhooks");
  await p.locator("summary", { hasText: "license.activated" }).waitFor();

  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  await p.getByLabel("Event").selectOption("license.revoked");
  await p.getByLabel("Your endpoint URL").fill(url);
  await p.getByLabel("Its signing secret").fill(SECRET);
  await p.getByRole("button", { name: "Generate cURL command" }).click();
  const command = await p.locator("#curl-out").textContent();
  assert.match(command, /^curl -sS -X POST /);
  // Asynchronously: the receiver answers from this same process.
  await promisify(execFile)("bash", ["-c", command], { timeout: 30_000 });
  assert.equal(received.length, 1);
  assert.deepEqual([received[0].ok, received[0].type], [true, "license.revoked"]);

  // The checker: nothing leaves the page while it works.
  const requests = [];
  p.on("request", (r) => requests.push(r.url()));
  const t = Math.floor(Date.now() / 1000);
  const body = received[0].body;
  const v1 = createHmac("sha256", SECRET).update(`${t}.${body}`).digest("hex");
  await p.getByLabel("Raw body, exactly as received").fill(body);
  await p.getByLabel("X-License-Signature header").fill(`t=${t},v1=${v1}`);
  await p.getByLabel("Signing secret", { exact: true }).fill(SECRET);
  await p.getByRole("button", { name: "Check" }).click();
  await p.getByText("Valid signature: a receiver should accept this event.").waitFor();
  await p.getByLabel("Raw body, exactly as received").fill(body.replace("revoked", "reinstated"));
  await p.getByRole("button", { name: "Check" }).click();
  await p.getByText("Invalid. No v1 signature matches").waitFor();
  const old = t - 3600;
  const oldSig = createHmac("sha256", SECRET).update(`${old}.${body}`).digest("hex");
  await p.getByLabel("Raw body, exactly as received").fill(body);
  await p.getByLabel("X-License-Signature header").fill(`t=${old},v1=${oldSig}`);
  await p.getByRole("button", { name: "Check" }).click();
  await p.getByText(/made 36\d\d s ago/).waitFor();
  assert.deepEqual(requests, [], "the checker sent nothing");
  await p.screenshot({ path: (process.env.ECOSIRE_SCREENSHOTS || "/tmp") + "/webhook-events.png", fullPage: false });
});

test("an admin registers an endpoint, sends a test, sees the delivery and retries it", async () => {
  const p = await signIn(browser, server.base, ADMIN.email, ADMIN.password);
  await p.getByRole("link", { name: "Webhook endpoints" }).click();
  await p.waitForURL(server.base + "/dashboard/admin/webhooks");
  await p.getByText("No endpoints yet").waitFor();

  const url = `http://127.0.0.1:${receiver.address().port}/endpoint`;
  await p.getByLabel("URL").fill(url);
  await p.getByLabel("Description (optional)").fill("browser receiver");
  await p.getByRole("button", { name: "Add endpoint" }).click();
  await p.getByText("copy it now: it is not shown again").waitFor();
  const secret = (await p.locator("#new-secret").textContent()).trim();
  assert.match(secret, /^whsec_[0-9A-Za-z]{32}$/);
  secrets.push(secret);
  await p.getByRole("link", { name: "Done" }).click();
  await p.waitForURL(server.base + "/dashboard/admin/webhooks");
  assert.ok(!(await p.content()).includes(secret), "the secret is shown once");

  await p.getByRole("link", { name: url }).click();
  await p.getByText("Nothing delivered yet").waitFor();
  const before = received.length;
  await p.getByRole("button", { name: "Send test event" }).click();
  const row = p.locator("tr[data-delivery]").first();
  // The delivery is made by the dispatcher: look again until the page shows its outcome.
  const deadline = Date.now() + 30_000;
  while (!(await row.count()) || (await row.locator(".status").textContent()) !== "succeeded") {
    assert.ok(Date.now() < deadline, "the test delivery did not succeed");
    await p.reload();
  }
  assert.equal(await row.locator("ol.attempts li").count(), 1);
  assert.match(await row.locator("ol.attempts li").first().textContent(), /HTTP 200/);
  const test = received.slice(before).find((r) => r.path === "/endpoint");
  assert.deepEqual([test.ok, test.type], [true, "webhook.test"], "signed with the endpoint's secret");

  await row.getByRole("button", { name: "Retry now" }).click();
  await p.waitForLoadState("load");
  await p.locator("tr[data-delivery] ol.attempts li").nth(1).waitFor();
  assert.equal(received.filter((r) => r.path === "/endpoint" && r.ok).length, 2, "the retry reached the receiver");

  await p.getByRole("button", { name: "Disable" }).click();
  await p.waitForLoadState("load");
  await p.getByRole("button", { name: "Enable" }).waitFor();
  await p.goto(server.base + "/dashboard/admin/webhooks");
  await p.locator("td", { hasText: "disabled" }).first().waitFor();
  await p.screenshot({ path: (process.env.ECOSIRE_SCREENSHOTS || "/tmp") + "/webhook-endpoints.png", fullPage: true });
  p.check();
});
