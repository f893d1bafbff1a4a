// ECOSIRE dashboard: small progressive behaviour, no dependencies. Pages are rendered by the
// server; forms marked `data-api` are sent to the API as JSON with the HttpOnly session cookie
// and `X-Requested-With` (the API's CSRF rule for cookie-authenticated writes), so the page and
// the API share one set of rules. Nothing here can read the session: the cookie is HttpOnly.

/** The form's fields as JSON: `data-type="int"` fields become numbers, empty optional ones drop out. */
function body(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.dataset.local !== undefined) continue;
    if ((el.type === "checkbox" || el.type === "radio") && !el.checked) continue;
    let v = el.type === "checkbox" ? true : el.value;
    if (v === "" && !el.required) continue;
    if (el.dataset.type === "int") v = Number(v);
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
  button.disabled = true;
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
