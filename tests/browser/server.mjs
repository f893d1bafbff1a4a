// A real `ecosire serve` for the browser tests: a fresh SQLite database (or, with
// ECOSIRE_TEST_DATABASE_URL, a throwaway PostgreSQL database), its own keys, and mail written as
// .eml files into a folder the tests read.
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ADMIN = { email: "admin@browser.test", password: "browser-admin-pass" };
/** The server's Stripe webhook secret: tests sign checkout events with it, as Stripe does. */
export const STRIPE_WEBHOOK_SECRET = "whsec_browser_" + "s".repeat(24);

const root = new URL("../../", import.meta.url).pathname;

/** The built `ecosire` binary (the server, and the command line the tests run). */
export function binary() {
  const target = process.env.CARGO_TARGET_DIR || join(process.env.HOME, ".cache/ecosire-ci-target");
  return process.env.ECOSIRE_BIN || join(target, "debug/ecosire");
}

function database(dir) {
  const base = process.env.ECOSIRE_TEST_DATABASE_URL;
  if (!base || !base.startsWith("postgres")) return `sqlite://${dir}/db/ecosire.db`;
  const name = `ecosire_test_browser_${Date.now()}_${process.pid}`;
  execFileSync("psql", [base, "-qc", `CREATE DATABASE ${name}`]);
  return base.replace(/\/[^/]*$/, `/${name}`);
}

/** Starts the server; `bind` picks its address (default: any free port), `env` adds settings. */
export async function startServer({ bind = "127.0.0.1:0", env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "ecosire-browser-"));
  const mailDir = join(dir, "mail");
  const child = spawn(binary(), ["serve"], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      ECOSIRE_BIND: bind,
      DATABASE_URL: database(dir),
      ECOSIRE_KEYS_DIR: join(dir, "keys"),
      ECOSIRE_MAIL_DIR: mailDir,
      ECOSIRE_ADMIN_EMAIL: ADMIN.email,
      ECOSIRE_ADMIN_PASSWORD: ADMIN.password,
      ECOSIRE_COOKIE_SECURE: "false",
      // The tests' webhook receivers listen on loopback.
      ECOSIRE_WEBHOOK_ALLOW_PRIVATE: "true",
      STRIPE_WEBHOOK_SECRET,
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const base = await new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${seen}`)), 120_000);
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      const m = seen.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (code) => reject(new Error(`the server exited (${code}): ${seen}`)));
  });
  child.stdout.resume();
  return {
    base,
    mailDir,
    keysDir: join(dir, "keys"),
    stop: () => new Promise((resolve) => { child.once("exit", resolve); child.kill("SIGTERM"); }),
    /** An API call as a script would make it (JSON in and out). */
    async api(method, path, body, token) {
      const res = await fetch(base + path, {
        method,
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    /** The messages to `to` so far, decoded enough to read their links. */
    async mailTo(to, n = 1) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        let files = [];
        try { files = readdirSync(mailDir).filter((f) => f.endsWith(".eml")); } catch { /* not yet */ }
        const mails = files
          .map((f) => join(mailDir, f))
          .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs)
          .map((f) => decodeQuotedPrintable(readFileSync(f, "utf8")))
          .filter((m) => m.includes(`\nTo: ${to}`));
        if (mails.length >= n) return mails;
        if (Date.now() > deadline) throw new Error(`only ${mails.length} of ${n} messages to ${to}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Mail parts with long lines (links) are quoted-printable: soft breaks and =XX escapes. */
function decodeQuotedPrintable(s) {
  return s.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

/** The first link to `path` in a message. */
export function linkIn(mail, path) {
  const m = mail.match(new RegExp(`https?://[^\\s"]+${path}\\?token=[A-Za-z0-9]+`));
  if (!m) throw new Error(`no ${path} link in:\n${mail}`);
  return m[0];
}

/** Watches `p` for requests to another origin and script errors (a CSP violation is one);
 * `p.check()` fails the test if there were any. */
export function watch(p, base) {
  const foreign = [];
  const errors = [];
  p.on("request", (r) => { if (!r.url().startsWith(base)) foreign.push(r.url()); });
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  p.on("pageerror", (e) => errors.push(String(e)));
  p.check = () => {
    assert.deepEqual(foreign, [], "requests to another origin");
    // A refused API call shows in the page (and as a failed resource); nothing else may.
    assert.deepEqual(errors.filter((e) => !e.includes("Failed to load resource")), []);
  };
  return p;
}

/** A new browser context signed in through the sign-in page, watched (see `watch`); confirm
 * dialogs are accepted. */
export async function signIn(browser, base, email, password) {
  const p = watch(await (await browser.newContext()).newPage(), base);
  p.on("dialog", (d) => d.accept());
  await p.goto(base + "/login");
  await p.getByLabel("Email").fill(email);
  await p.getByLabel("Password").fill(password);
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForURL(base + "/dashboard");
  return p;
}
