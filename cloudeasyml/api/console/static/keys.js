// API keys: create (shown once), list, revoke.

import {
  $, announce, api, busily, busy, can, copyFrom, denied, describe, el, forget, refuse, session, showError, storedKey, table, when,
} from "./core.js";

const SCOPES = ["predict", "deployments:read", "deployments:write", "keys:read", "keys:write", "usage:read",
  "webhooks:read", "webhooks:write", "feedback:write", "admin"];
function fillScopeChoices() {
  const fieldset = $("key-scopes");
  if (fieldset.querySelector("input")) return;
  const grid = el("div", { class: "checks" });
  for (const scope of SCOPES) {
    const id = `scope-${scope.replace(":", "-")}`;
    grid.append(el("div", { class: "field check" },
      el("input", { type: "checkbox", id, name: "scopes", value: scope, checked: scope === "predict" }),
      el("label", { for: id, text: scope })));
  }
  fieldset.append(grid);
}

export async function load() {
  fillScopeChoices();
  $("key-form").hidden = !can("keys:write") || session.access.keys === false;
  if (denied("keys", "keys:read")) return $("keys-table").replaceChildren();
  const keys = await api("GET", "/api-keys");
  const own = storedKey().split(".")[0];
  $("keys-table").replaceChildren(table("API keys",
    ["Key id", "Name", "Scopes", "Rate limit", "Created", "Expires", "Last used", "State", "Actions"],
    keys.map((k) => [
      el("code", { text: k.keyId }), k.name, k.scopes.join(", "), k.rateLimitPerMinute ? `${k.rateLimitPerMinute}/min` : "—",
      when(k.createdAt), when(k.expiresAt), when(k.lastUsedAt), keyState(k, own),
      !k.revokedAt && k.keyId !== own && can("keys:write")
        ? el("button", { type: "button", class: "danger", onclick: () => busy(revoke(k)), "aria-label": `Revoke ${k.name}`,
          text: "Revoke" })
        : "",
    ]), "No keys.", { stacked: true }));
}

function keyState(key, own) {
  if (key.revokedAt) return "revoked";
  if (key.expiresAt && new Date(key.expiresAt) <= new Date()) return "expired";
  return key.keyId === own ? "active (this session)" : "active";
}

async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  showError("key-error", null);
  const scopes = [...form.querySelectorAll("input[name=scopes]:checked")].map((c) => c.value);
  const body = { name: form.elements.name.value.trim(), scopes };
  if (form.elements.rateLimitPerMinute.value) body.rateLimitPerMinute = Number(form.elements.rateLimitPerMinute.value);
  if (form.elements.expiresAt.value) body.expiresAt = new Date(form.elements.expiresAt.value).toISOString();
  try {
    const made = await api("POST", "/api-keys", { body });
    form.reset();
    $("new-key-value").value = made.key;
    $("new-key").hidden = false;
    $("new-key-value").focus();
    $("new-key-value").select();
    announce(`Key ${made.name} created: copy it now, it is shown once.`);
    await load();
  } catch (error) {
    refuse(form, "key-error", error);
  }
}

async function revoke(key) {
  if (!confirm(`Revoke the key ${key.name} (${key.keyId}) and every key it created?`)) return;
  try {
    await api("DELETE", `/api-keys/${key.keyId}`);
    announce(`Key ${key.name} revoked.`);
  } catch (error) {
    announce(describe(error));
  }
  await load();
}

export function wire() {
  $("key-form").addEventListener("submit", busily(createKey));
  $("new-key-copy").addEventListener("click", () => copyFrom("new-key-value"));
  $("new-key-done").addEventListener("click", () => forget("new-key", "new-key-value"));
}
