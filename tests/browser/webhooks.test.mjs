// The events explorer in Chromium: a generated cURL command is accepted by a receiver that checks
// the signature; the checker tells a good signature from a tampered body, without a request.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

let server, browser, receiver, received = [];
const SECRET = "whsec_" + "k".repeat(32);

/** A receiver as API.md asks one to be: any matching v1 over "{t}.{raw body}", 300 s tolerance. */
function accepts(header, body) {
  const parts = header.split(",").map((p) => p.split("="));
  const t = Number(parts.find(([k]) => k === "t")?.[1]);
  const expected = Buffer.from(createHmac("sha256", SECRET).update(`${t}.${body}`).digest("hex"));
  const fresh = Math.abs(Date.now() / 1000 - t) <= 300;
  return fresh && parts.some(([k, v]) => k === "v1" && v.length === expected.length && timingSafeEqual(Buffer.from(v), expected));
}

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => {
      const ok = accepts(req.headers["x-license-signature"] || "", body);
      received.push({ ok, type: req.headers["x-ecosire-event"], body });
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
