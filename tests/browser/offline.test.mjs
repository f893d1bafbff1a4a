// Air-gapped activation through the portal in Chromium: the offline machine's request file (made
// by `ecosire offline request`) is uploaded on the license page, the license file is downloaded
// and taken back, and the device's deactivation proof (`ecosire offline proof`) frees the seat.
// The churn budget shows on the same page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startServer, ADMIN, binary, signIn, linkIn } from "./server.mjs";

let server, browser, token;
/** The `ecosire` command line, as the offline machine and the admin's shell run it. */
const run = (...args) => promisify(execFile)(binary(), args, {
  timeout: 60_000,
  env: { PATH: process.env.PATH, ECOSIRE_KEYS_DIR: server.keysDir },
});

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  token = (await server.api("POST", "/api/auth/login", ADMIN)).body.token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("an offline machine is activated and released through the license page", async () => {
  const product = (await server.api("POST", "/api/products", {
    name: "Vault", max_activations: 2, offline_activation: true, offline_activation_lease_days: 30,
    max_deactivations_per_30d: 3,
  }, token)).body;
  const lic = (await server.api("POST", "/api/licenses", { product_id: product.id, email: "olga@example.com" }, token)).body;
  const [mail] = await server.mailTo("olga@example.com");
  const invite = new URL(linkIn(mail, "/account/set-password")).searchParams.get("token");
  assert.equal((await server.api("POST", "/api/auth/password-reset/confirm", { token: invite, password: "olga-password-1" })).status, 204);

  // On the offline machine.
  const dir = mkdtempSync(join(tmpdir(), "ecosire-airgap-"));
  await run("offline", "request", "--key", lic.key, "--fingerprint", "vault-pc-7", "--name", "Vault PC",
    "--device-key", join(dir, "device.key"), "--out", join(dir, "request.txt"));

  // On a connected one, in the portal.
  const p = await signIn(browser, server.base, "olga@example.com", "olga-password-1");
  await p.getByRole("link", { name: "Vault" }).click();
  await p.getByText("Deactivations:").waitFor();
  await p.getByLabel("Request file").setInputFiles(join(dir, "request.txt"));
  // The page reads the chosen file into the form (asynchronously).
  await p.waitForFunction(() => document.querySelector("#offline-request").value !== "");
  assert.equal(await p.getByLabel("or paste the request").inputValue(), readFileSync(join(dir, "request.txt"), "utf8").trim());
  await p.getByRole("button", { name: "Activate" }).click();
  await p.getByText("Activated. Take this license file to the offline computer").waitFor();
  const [download] = await Promise.all([p.waitForEvent("download"), p.getByRole("button", { name: "Download license file" }).click()]);
  assert.equal(download.suggestedFilename(), "license.jws");
  const licenseFile = join(dir, "license.jws");
  await download.saveAs(licenseFile);
  const file = readFileSync(licenseFile, "utf8").trim();
  assert.equal(file, (await p.locator("#license-file").textContent()).trim());
  // The file is a license token the server's keys verify, bound to this machine.
  const { stdout } = await run("license", "verify-token", file);
  assert.match(stdout, /vault-pc-7/);
  await p.reload();
  const device = p.getByRole("row", { name: /Vault PC/ });
  await device.waitFor();
  assert.match(await device.textContent(), /vault-pc-7/);

  // Back on the offline machine: give the file up; the proof frees the seat.
  await run("offline", "proof", "--license-file", licenseFile, "--device-key", join(dir, "device.key"), "--out", join(dir, "proof.txt"));
  await p.getByLabel("Proof file").setInputFiles(join(dir, "proof.txt"));
  await p.waitForFunction(() => document.querySelector("#offline-proof").value !== "");
  await p.getByRole("button", { name: "Release the seat" }).click();
  await p.getByText("No device has activated this license").waitFor();
  assert.match(await p.locator("#churn").textContent(), /1 of 3/);
  await p.screenshot({ path: (process.env.ECOSIRE_SCREENSHOTS || "/tmp") + "/offline-activation.png", fullPage: true });
  p.check();
});
