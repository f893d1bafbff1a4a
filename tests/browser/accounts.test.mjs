// The account pages in Chromium: an invitation link from the license message sets a password,
// the buyer signs in and sees their license; "forgot password" works end to end; a bad link says
// what to do; nothing loads from another origin; the pages fit a 375 px screen.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, linkIn, ADMIN, watch } from "./server.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Screenshots for docs/img (ECOSIRE_SCREENSHOTS=docs/img); elsewhere a temporary folder, so a test
// run leaves the checkout as it was.
const shots = (process.env.ECOSIRE_SCREENSHOTS || mkdtempSync(join(tmpdir(), "ecosire-shots-"))) + "/";
let server, browser, adminToken;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  adminToken = (await server.api("POST", "/api/auth/login", ADMIN)).body.token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page that fails the test (at `p.check()`) on any request to another origin or script error. */
async function page(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  return watch(await context.newPage(), server.base);
}

async function grant(email, productName) {
  const product = await server.api("POST", "/api/products", { name: productName, max_activations: 2 }, adminToken);
  assert.equal(product.status, 201);
  const lic = await server.api("POST", "/api/licenses", { product_id: product.body.id, email }, adminToken);
  assert.equal(lic.status, 201);
  return lic.body;
}

test("an invitation link sets the password and the buyer sees the license", async () => {
  const lic = await grant("buyer@example.com", "Desktop Pro");
  const [mail] = await server.mailTo("buyer@example.com");
  assert.ok(mail.includes(lic.key), "the message carries the key");
  const link = linkIn(mail, "/account/set-password").replace(/^https?:\/\/[^/]+/, server.base);

  const p = await page();
  await p.goto(link);
  await p.getByLabel("New password").fill("buyer-chose-this");
  await p.getByLabel("The same again").fill("buyer-chose-this");
  await p.screenshot({ path: shots + "set-password.png" });
  await p.getByRole("button", { name: "Set password" }).click();
  await p.getByText("Your password is set").waitFor();
  // The link works once: a second try says so.
  await p.getByLabel("New password").fill("another-password");
  await p.getByLabel("The same again").fill("another-password");
  await p.getByRole("button", { name: "Set password" }).click();
  await p.getByText("The link is invalid, was already used, or has expired").waitFor();

  await p.goto(server.base + "/");
  await p.waitForURL(/\/login\?next=\/dashboard$/);
  await p.getByLabel("Email").fill("buyer@example.com");
  await p.getByLabel("Password").fill("buyer-chose-this");
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForURL(server.base + "/dashboard");
  await p.getByRole("cell", { name: "Desktop Pro" }).waitFor();
  assert.equal(await p.getByText(lic.key).isVisible(), false, "the key is hidden until asked for");
  await p.getByRole("button", { name: "Show key" }).click();
  assert.equal(await p.getByText(lic.key).isVisible(), true);
  await p.screenshot({ path: shots + "dashboard-licenses.png" });
  // The session cookie is HttpOnly: the page's scripts cannot read it.
  assert.equal(await p.evaluate(() => document.cookie), "");
  p.check();

  await p.getByRole("button", { name: "Sign out" }).click();
  await p.waitForURL(/\/login$/);
  await p.goto(server.base + "/dashboard");
  await p.waitForURL(/\/login\?next=\/dashboard$/);
});

test("forgot password: ask, follow the link, sign in with the new one", async () => {
  await grant("ren@example.com", "Studio");
  const p = await page({ width: 375, height: 740 });
  await p.goto(server.base + "/login");
  await p.getByRole("link", { name: "Forgot your password?" }).click();
  await p.getByLabel("Email").fill("ren@example.com");
  await p.getByRole("button", { name: "Send me a link" }).click();
  await p.getByText("If an account uses this address, a link is on its way").waitFor();
  await p.screenshot({ path: shots + "forgot-password-375.png" });
  // The invitation came first; the reset link is the second message.
  const mails = await server.mailTo("ren@example.com", 2);
  const link = linkIn(mails[1], "/account/reset-password").replace(/^https?:\/\/[^/]+/, server.base);
  await p.goto(link);
  await p.getByLabel("New password").fill("ren-new-password");
  await p.getByLabel("The same again").fill("ren-typo-password");
  await p.getByRole("button", { name: "Set password" }).click();
  await p.getByText("The two passwords differ").waitFor();
  await p.getByLabel("The same again").fill("ren-new-password");
  await p.getByRole("button", { name: "Set password" }).click();
  await p.getByText("Your password is set").waitFor();
  await p.getByRole("link", { name: "Sign in" }).click();
  await p.getByLabel("Email").fill("ren@example.com");
  await p.getByLabel("Password").fill("wrong-password-1");
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.getByText("Invalid email or password").waitFor();
  await p.getByLabel("Password").fill("ren-new-password");
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForURL(server.base + "/dashboard");
  await p.getByRole("cell", { name: "Studio" }).waitFor();
  // No horizontal scrolling at 375 px.
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px too wide`);
  p.check();
});

test("a link without a token, or with a bad one, says what to do", async () => {
  const p = await page();
  await p.goto(server.base + "/account/reset-password");
  await p.getByRole("link", { name: "Ask for a new link" }).waitFor();
  await p.goto(server.base + "/account/verify-email?token=" + "A".repeat(32));
  await p.getByRole("button", { name: "Confirm my address" }).click();
  await p.getByText("The link is invalid, was already used, or has expired").waitFor();
  p.check();
});
