// The rest of the portal and of administration in Chromium: an admin keeps the catalogue
// (Products), a Stripe checkout becomes an order the buyer and the admin both see (Orders), a
// customer asks for help and support answers (Support), the admin's writes are in the audit log,
// notices say when nothing needs doing, and a customer is kept out of every admin page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { chromium } from "playwright-core";
import { startServer, ADMIN, STRIPE_WEBHOOK_SECRET, signIn as signInAs, linkIn } from "./server.mjs";

let server, browser, token;
const signIn = (email, password) => signInAs(browser, server.base, email, password);
const adminNav = (p, name) => p.getByRole("navigation", { name: "Administration" }).getByRole("link", { name, exact: true });

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  token = (await server.api("POST", "/api/auth/login", ADMIN)).body.token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A paid checkout for `productId`, signed as Stripe signs its webhooks. */
async function checkout(email, productId) {
  const now = Math.floor(Date.now() / 1000);
  const id = `evt_browser_${now}_${Math.random().toString(36).slice(2)}`;
  const body = JSON.stringify({
    id, object: "event", type: "checkout.session.completed", created: now, livemode: false,
    data: { object: {
      id: `cs_test_${id}`, object: "checkout.session", mode: "payment", status: "complete",
      payment_status: "paid", amount_total: 4900, currency: "usd", customer: "cus_browser",
      customer_details: { email }, metadata: { productIds: JSON.stringify([productId]) },
      payment_intent: `pi_${id}`, subscription: null,
    } },
  });
  const v1 = createHmac("sha256", STRIPE_WEBHOOK_SECRET).update(`${now}.${body}`).digest("hex");
  const res = await fetch(server.base + "/api/webhooks/stripe", {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": `t=${now},v1=${v1}` },
    body,
  });
  assert.equal(res.status, 200, await res.text());
}

test("products, orders, support, audit log and notices, each for its role", async () => {
  const shots = process.env.ECOSIRE_SCREENSHOTS || "/tmp";
  const admin = await signIn(ADMIN.email, ADMIN.password);

  // Products: create one, then change it.
  await adminNav(admin, "Products").click();
  await admin.waitForURL(server.base + "/dashboard/admin/products");
  await admin.getByText("No products yet").waitFor();
  await admin.getByLabel("Name", { exact: true }).fill("Browser Suite");
  await admin.getByLabel("Seats per license").fill("3");
  await admin.getByLabel("Duration in days (empty: never expires)").fill("365");
  await admin.getByLabel("Stripe price ids (comma-separated)").fill("price_browser_1, price_browser_2");
  await admin.getByRole("button", { name: "Create product" }).click();
  const summary = admin.locator("details summary", { hasText: "Browser Suite" });
  await summary.waitFor();
  assert.match(await summary.textContent(), /3 seat\(s\) · 365 days/);
  await summary.click();
  const edit = admin.getByRole("form", { name: "Edit Browser Suite" });
  await edit.getByLabel("Seats per license").fill("5");
  await edit.getByLabel("Duration in days (empty: never expires)").fill("");
  await edit.getByRole("button", { name: "Save" }).click();
  await admin.locator("details summary", { hasText: "5 seat(s) · no expiry" }).waitFor();
  const [product] = (await server.api("GET", "/api/products")).body.data;
  assert.deepEqual([product.max_activations, product.duration_days, product.stripe_price_ids], [5, null, ["price_browser_1", "price_browser_2"]]);
  await admin.screenshot({ path: `${shots}/admin-products.png`, fullPage: true });

  // A checkout: the buyer is invited, signs in and sees the order.
  await checkout("bo@example.com", product.id);
  const [mail] = await server.mailTo("bo@example.com");
  const invite = new URL(linkIn(mail, "/account/set-password")).searchParams.get("token");
  assert.equal((await server.api("POST", "/api/auth/password-reset/confirm", { token: invite, password: "bo-password-1" })).status, 204);
  const bo = await signIn("bo@example.com", "bo-password-1");
  await bo.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Orders" }).click();
  await bo.waitForURL(server.base + "/dashboard/orders");
  const order = bo.locator("tbody tr").first();
  await order.getByText("49.00 USD").waitFor();
  assert.equal(await order.locator(".status").textContent(), "paid");
  await bo.getByText("No subscriptions.").waitFor();
  await order.getByRole("link").click();
  await bo.getByText("Browser Suite").first().waitFor();

  // Support: Bo asks, the admin answers and resolves, Bo reads the answer.
  await bo.getByRole("link", { name: "Support" }).click();
  await bo.getByText("No tickets yet.").waitFor();
  await bo.getByLabel("Subject").fill("Cannot activate on my new laptop");
  await bo.getByLabel("What happened?").fill("It says TOO_MANY_ACTIVATIONS.");
  await bo.getByRole("button", { name: "Open ticket" }).click();
  await bo.getByRole("link", { name: "Cannot activate on my new laptop" }).click();
  await bo.getByText("It says TOO_MANY_ACTIVATIONS.").waitFor();

  await admin.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Support" }).click();
  await admin.getByRole("cell", { name: "bo@example.com" }).waitFor();
  await admin.getByRole("link", { name: "Cannot activate on my new laptop" }).click();
  await admin.getByLabel("Reply").fill("Free a seat from My licenses, then activate again.");
  await admin.getByRole("button", { name: "Send reply" }).click();
  await admin.getByText("Free a seat from My licenses").waitFor();
  await admin.getByLabel("Status", { exact: true }).selectOption("resolved");
  await admin.getByRole("button", { name: "Set status" }).click();
  await admin.locator("h1 .status", { hasText: "resolved" }).waitFor();

  await bo.reload();
  await bo.locator(".reply.staff", { hasText: "Free a seat from My licenses" }).waitFor();
  await bo.locator("h1 .status", { hasText: "resolved" }).waitFor();
  assert.equal(await bo.getByRole("button", { name: "Set status" }).count(), 0, "customers do not triage");

  // The admin sees every order, and their own writes in the audit log.
  await adminNav(admin, "Orders").click();
  await admin.getByRole("cell", { name: "bo@example.com" }).waitFor();
  await admin.getByText("49.00 USD").waitFor();
  await adminNav(admin, "Audit log").click();
  await admin.getByLabel("Method").selectOption("PATCH");
  await admin.getByLabel("Path starts with").fill("/api/products");
  await admin.getByRole("button", { name: "Filter" }).click();
  await admin.waitForURL(/method=PATCH/);
  const rows = admin.locator("tbody tr");
  await rows.first().waitFor();
  assert.equal(await rows.count(), 1);
  assert.match(await rows.first().textContent(), new RegExp(`PATCH /api/products/${product.id}`));
  assert.match(await rows.first().textContent(), /admin@browser\.test/);
  await admin.getByLabel("Status", { exact: true }).fill("oops");
  await admin.getByRole("button", { name: "Filter" }).click();
  await admin.getByText("Status must be an HTTP status code").waitFor();
  await admin.goto(server.base + "/dashboard/admin/audit-log");
  await admin.screenshot({ path: `${shots}/admin-audit-log.png`, fullPage: false });
  await adminNav(admin, "Notices").click();
  await admin.getByText("Nothing needs your attention.").waitFor();

  // A customer reaches none of it.
  for (const path of ["products", "orders", "audit-log", "notices", "webhooks", "users", "licenses"]) {
    const res = await bo.goto(`${server.base}/dashboard/admin/${path}`);
    assert.equal(res.status(), 403, path);
    await bo.getByText("This page is for administrators.").waitFor();
  }
  assert.equal(await bo.getByRole("navigation", { name: "Administration" }).count(), 0);

  // At 375 px every page fits the screen: wide tables scroll inside their frame, not the page.
  for (const [who, paths] of [
    [bo, ["/dashboard", "/dashboard/orders", "/dashboard/support", "/dashboard/api-keys", "/dashboard/webhooks"]],
    [admin, ["/dashboard/admin/licenses", "/dashboard/admin/products", "/dashboard/admin/users", "/dashboard/admin/orders",
      "/dashboard/admin/webhooks", "/dashboard/admin/audit-log", "/dashboard/admin/notices"]],
  ]) {
    await who.setViewportSize({ width: 375, height: 800 });
    for (const path of paths) {
      await who.goto(server.base + path);
      const width = await who.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 375, `${path} is ${width} px wide at 375`);
    }
  }
  await bo.goto(server.base + "/dashboard/orders");
  await bo.screenshot({ path: `${shots}/orders-375.png`, fullPage: true });
  admin.check();
  bo.check();
});
