// The operator's Audit log page: the latest changes on the platform, newest first, filtered by tenant and action,
// older ones a page at a time.

import { $, api, busily, el, session, showError, table, when } from "./core.js";

const PAGE = 50;
// The actions the platform records, offered as suggestions (the filter is exact; any other is accepted too).
const ACTIONS = ["tenant.created", "tenant.updated", "tenant.suspended", "tenant.resumed", "tenant.deletion_requested",
  "tenant.deleted", "plan.created", "plan.updated", "key.created", "key.revoked", "deployment.created",
  "deployment.updated", "deployment.rolled_back", "deployment.promoted", "deployment.aborted", "deployment.deleted",
  "webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.test_sent", "webhook.delivery_retried",
  "webhook.deleted", "batch.created", "batch.cancelled"];

let events = [];
let cursor = null;

export async function load() {
  if (!$("audit-actions").children.length) {
    $("audit-actions").append(...ACTIONS.map((action) => el("option", { value: action })));
  }
  session.tenants = await api("GET", "/operator/tenants?limit=200"); // the filter's choices (and the table's names)
  const chosen = $("audit-tenant").value;
  $("audit-tenant").replaceChildren(el("option", { value: "", text: "All tenants" }),
    ...session.tenants.map((t) => el("option", { value: t.id, text: t.name, selected: t.id === chosen })));
  await show(false);
}

function query() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if ($("audit-tenant").value) params.set("tenant", $("audit-tenant").value);
  if ($("audit-action").value.trim()) params.set("action", $("audit-action").value.trim());
  return params;
}

// The first page for the filters, or (more) the next one after those shown.
async function show(more) {
  const params = query();
  if (more && cursor) params.set("cursor", cursor);
  const page = await api("GET", `/audit?${params}`);
  events = more ? [...events, ...page.items] : page.items;
  cursor = page.nextCursor;
  const names = new Map(session.tenants.map((t) => [t.id, t.name]));
  $("audit-table").replaceChildren(table("Audit events",
    ["When", "Action", "Tenant", "Resource", "By", "From", "What changed"],
    events.map((e) => [when(e.createdAt), el("code", { text: e.action }), e.tenant ? names.get(e.tenant) || e.tenant : "—",
      `${e.resourceType} ${names.get(e.resourceId) || e.resourceId}`, e.actorKeyId ? el("code", { text: e.actorKeyId }) : "CLI",
      e.clientIp || "—", changes(e.changes)]),
    "No events match.", { stacked: true }));
  $("audit-more").hidden = !cursor;
}

// {field: {from, to}} as one line per field.
function changes(diff) {
  const lines = Object.entries(diff).map(([field, change]) => {
    const value = (v) => (v === undefined ? "" : JSON.stringify(v));
    const from = change && "from" in change ? `${value(change.from)} → ` : "";
    const to = change && "to" in change ? value(change.to) : value(change);
    return el("li", {}, el("code", { text: field }), `: ${from}${to}`);
  });
  return lines.length ? el("ul", { class: "changes" }, lines) : "—";
}

async function filter(event) {
  event.preventDefault();
  showError("audit-error", null);
  try {
    await show(false);
  } catch (error) {
    showError("audit-error", error);
  }
}

export function wire() {
  $("audit-form").addEventListener("submit", busily(filter));
  $("audit-tenant").addEventListener("change", () => $("audit-form").requestSubmit());
  $("audit-more").addEventListener("click", busily(async () => {
    try {
      await show(true);
    } catch (error) {
      showError("audit-error", error);
    }
  }));
}
