// Webhooks: the endpoints, add one (its secret shown once), an endpoint's delivery log.

import {
  $, announce, api, busily, busy, can, copyFrom, denied, el, forget, refuse, session, showError, table, when,
} from "./core.js";

export async function load() {
  $("webhook-form").hidden = !can("webhooks:write") || session.access.webhooks === false;
  if (denied("webhooks", "webhooks:read")) return $("webhooks-table").replaceChildren();
  const endpoints = await api("GET", "/webhooks");
  $("webhooks-table").replaceChildren(table("Webhook endpoints", ["URL", "Events", "State", "Failing since", "Log"],
    endpoints.map((w) => [w.url, w.events.join(", "), w.enabled ? "enabled" : `disabled ${w.disabledReason || ""}`,
      when(w.failingSince), el("button", { type: "button", class: "secondary", onclick: () => busy(deliveries(w)),
        "aria-label": `Deliveries to ${w.url}`, text: "Deliveries" })]),
    "No endpoints yet.", { stacked: true }));
}

async function deliveries(endpoint) {
  const page = await api("GET", `/webhooks/${endpoint.id}/deliveries`);
  $("deliveries").hidden = false;
  $("deliveries-title").textContent = `Deliveries to ${endpoint.url}`;
  $("deliveries-table").replaceChildren(table("Deliveries", ["Event", "Status", "Attempts", "Last attempt", "Answer"],
    page.items.map((d) => [d.eventId, d.status, String(d.attempts), when(d.lastAttemptAt),
      d.responseStatus ? `${d.responseStatus} in ${Math.round(d.latencyMs)} ms` : d.error || "—"]),
    "Nothing delivered yet.", { stacked: true }));
  $("deliveries-title").focus();
}

async function createWebhook(event) {
  event.preventDefault();
  const form = event.target;
  showError("webhook-error", null);
  const body = { url: form.elements.url.value.trim(), events: form.elements.events.value.split(",").map((e) => e.trim()).filter(Boolean),
    description: form.elements.description.value };
  try {
    const made = await api("POST", "/webhooks", { body });
    form.elements.url.value = "";
    $("new-secret-value").value = made.secret;
    $("new-secret").hidden = false;
    $("new-secret-value").focus();
    announce("Endpoint added: copy its secret now, it is shown once.");
    await load();
  } catch (error) {
    refuse(form, "webhook-error", error);
  }
}

export function wire() {
  $("webhook-form").addEventListener("submit", busily(createWebhook));
  $("new-secret-copy").addEventListener("click", () => copyFrom("new-secret-value"));
  $("new-secret-done").addEventListener("click", () => forget("new-secret", "new-secret-value"));
}
