// ECOSIRE dashboard: small progressive behaviour, no dependencies. Pages are rendered by the
// server; forms marked `data-api` are sent to the API as JSON with the HttpOnly session cookie
// and `X-Requested-With` (the API's CSRF rule for cookie-authenticated writes), so the page and
// the API share one set of rules. Nothing here can read the session: the cookie is HttpOnly.

/** The form's fields as JSON: `data-type="int"` fields become numbers, `data-type="bool"` ones
 * booleans, `data-type="list"` ones arrays (comma-separated text, or every checked box of that
 * name); empty optional ones drop out, or are `null` when marked `data-nullable`. */
function body(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.dataset.local !== undefined) continue;
    const list = el.dataset.type === "list";
    if (list && el.type === "checkbox") {
      out[el.name] ??= [];
      if (el.checked) out[el.name].push(el.value);
      continue;
    }
    if ((el.type === "checkbox" || el.type === "radio") && !el.checked) continue;
    let v = el.type === "checkbox" ? true : el.value;
    // Empty and `data-nullable`: cleared (`null`), as a PATCH says "no value any more".
    if (v === "" && el.dataset.nullable !== undefined) { out[el.name] = null; continue; }
    if (v === "" && !el.required && !list) continue;
    if (el.dataset.type === "int") v = Number(v);
    if (el.dataset.type === "bool") v = v === "true";
    if (list) v = v.split(",").map((x) => x.trim()).filter((x) => x !== "");
    out[el.name] = v;
  }
  return out;
}

/** Shows a problem+json answer (or a network failure) in the form's alert, field by field. */
function showError(form, problem) {
  const box = form.querySelector("[data-error]");
  const lines = [problem.message || problem.title || "Something went wrong; try again."];
  for (const d of problem.details || []) lines.push(`${d.field}: ${d.message}`);
  box.textContent = lines.join(" — ");
  box.hidden = false;
  box.focus();
}

async function submit(form, event) {
  event.preventDefault();
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
  const data = body(form);
  if (form.dataset.match) {
    const [a, b] = form.dataset.match.split(",");
    if (form.elements[a].value !== form.elements[b].value) {
      showError(form, { message: "The two passwords differ." });
      return;
    }
  }
  const button = form.querySelector("button[type=submit]");
  const error = form.querySelector("[data-error]");
  const done = form.querySelector("[data-done]");
  error.hidden = true;
  if (done) done.hidden = true;
  // Loading: the button is disabled (styled as busy) until the API answers.
  button.disabled = true;
  form.setAttribute("aria-busy", "true");
  try {
    const res = await fetch(form.dataset.api, {
      method: form.dataset.method || "POST",
      credentials: "same-origin",
      headers: form.dataset.method === "DELETE"
        ? { "x-requested-with": "ecosire-dashboard" }
        : { "content-type": "application/json", "x-requested-with": "ecosire-dashboard" },
      body: form.dataset.method === "DELETE" ? undefined : JSON.stringify(data),
    });
    if (!res.ok) {
      let problem = {};
      try { problem = await res.json(); } catch { /* not JSON: keep the generic message */ }
      if (res.status === 429) problem.message = `Too many attempts; try again in ${res.headers.get("retry-after") || "a few"} seconds.`;
      showError(form, problem);
      return;
    }
    // A secret the answer shows once (a new API key): into the form's result slot, never stored.
    if (form.dataset.result) {
      const answer = await res.json();
      // A dotted path: `license.key` in `{license: {key}}`.
      const value = form.dataset.result.split(".").reduce((o, k) => (o == null ? o : o[k]), answer);
      form.querySelector("[data-result-value]").textContent = value ?? "";
    }
    if (form.dataset.then) { window.location.assign(form.dataset.then); return; }
    if (form.dataset.reload !== undefined) { window.location.reload(); return; }
    if (done) { done.hidden = false; done.focus(); }
    form.querySelectorAll("input[type=password]").forEach((i) => { i.value = ""; });
  } catch {
    showError(form, { message: "The server could not be reached. Check your connection and try again." });
  } finally {
    button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

document.addEventListener("submit", (e) => {
  if (e.target instanceof HTMLFormElement && e.target.dataset.api) submit(e.target, e);
});

// Copy buttons: `data-copy="#id"` copies that element's text.
document.addEventListener("click", async (e) => {
  const b = e.target.closest("[data-copy]");
  if (!b) return;
  const text = document.querySelector(b.dataset.copy)?.textContent?.trim() || "";
  try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; } catch { b.textContent = "Select and copy"; }
});

// Reveal buttons: `data-reveal="#id"` shows a hidden element (a license key) in place of the
// masked hint beside it.
document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-reveal]");
  if (!b) return;
  const el = document.querySelector(b.dataset.reveal);
  if (el) {
    el.hidden = false;
    b.hidden = true;
    b.parentElement.querySelectorAll(".masked").forEach((m) => { m.hidden = true; });
  }
});

// Files read into a form: `data-file-into="#id"` on a file input puts the chosen file's text
// into that field (an offline activation request or proof), so the form sends it as JSON.
document.addEventListener("change", async (e) => {
  const input = e.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.fileInto || !input.files?.length) return;
  const target = document.querySelector(input.dataset.fileInto);
  if (target) target.value = (await input.files[0].text()).trim();
});

// Downloads: `data-download="#id"` saves that element's text as `data-filename` (a license file).
document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-download]");
  if (!b) return;
  const text = document.querySelector(b.dataset.download)?.textContent?.trim() || "";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([`${text}\n`], { type: "application/jwt" }));
  link.download = b.dataset.filename || "download.txt";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});

// Webhook signatures, computed here with WebCrypto: `v1` is the lowercase hex HMAC-SHA256 of
// "{t}.{raw body}", keyed with the whole `whsec_…` secret as UTF-8 (the Stripe scheme).
async function hmacHex(secret, message) {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(message)));
  return Array.from(sig, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A string as one single-quoted shell word. */
const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;

document.addEventListener("submit", async (e) => {
  const form = e.target;
  if (!(form instanceof HTMLFormElement)) return;
  if (form.dataset.curl !== undefined) {
    e.preventDefault();
    const option = form.elements.type.selectedOptions[0];
    const event = JSON.parse(option.dataset.example);
    const t = Math.floor(Date.now() / 1000);
    event.created = t;
    const body = JSON.stringify(event);
    const v1 = await hmacHex(form.elements.secret.value, `${t}.${body}`);
    form.querySelector("#curl-out").textContent = [
      `curl -sS -X POST ${shellQuote(form.elements.url.value)}`,
      `  -H 'content-type: application/json'`,
      `  -H ${shellQuote(`x-license-signature: t=${t},v1=${v1}`)}`,
      `  -H ${shellQuote(`x-ecosire-event: ${event.type}`)}`,
      `  --data-raw ${shellQuote(body)}`,
    ].join(" \\\n");
    form.querySelector("[data-done]").hidden = false;
  } else if (form.dataset.verify !== undefined) {
    e.preventDefault();
    const verdict = form.querySelector("[data-verdict]");
    const pairs = form.elements.header.value.split(",").map((p) => p.trim().split("="));
    const t = Number(pairs.find(([k]) => k === "t")?.[1]);
    const sigs = pairs.filter(([k]) => k === "v1").map(([, v]) => v);
    let ok = false, why;
    if (!Number.isInteger(t) || sigs.length === 0) {
      why = "The header must look like t=<unix seconds>,v1=<hex>.";
    } else {
      const expected = await hmacHex(form.elements.secret.value, `${t}.${form.elements.body.value}`);
      const age = Math.floor(Date.now() / 1000) - t;
      if (!sigs.includes(expected)) why = "No v1 signature matches: check the secret, and that the body is byte for byte what was received.";
      else if (Math.abs(age) > 300) why = `The signature is right, but it was made ${age} s ago: receivers should reject it as stale (tolerance 300 s).`;
      else ok = true;
    }
    verdict.className = ok ? "alert ok" : "alert error";
    verdict.textContent = ok ? "Valid signature: a receiver should accept this event." : `Invalid. ${why}`;
    verdict.hidden = false;
    verdict.focus();
  }
});
