// The operator's Tenants page: every tenant with its plan, caps and state; create one (its owner key shown once),
// suspend with a reason, resume, change the plan and caps, delete (a confirmation token, then a second call).

import {
  $, announce, api, busily, busy, copyFrom, describe, el, forget, session, showError, table, when,
} from "./core.js";

const PAGE = 200; // the API's largest page
let chosen = null; // the tenant the suspend or change form is open for
let opener = null; // the button that opened it: focus goes back there on Cancel

export async function load() {
  const [rows, plans] = await Promise.all([allTenants(), api("GET", "/plans")]);
  session.tenants = rows;
  fillPlans("tenant-plan", plans, $("tenant-plan").value || "default");
  $("tenants-table").replaceChildren(table("Tenants",
    ["Name", "Plan", "Spend cap / month", "Requests cap / month", "State", "Created", "Actions"],
    rows.map((t) => [t.name, t.plan, t.spendCap ?? "none", t.requestCap === null ? "none" : String(t.requestCap),
      state(t), when(t.createdAt), actions(t, plans)]),
    "No tenants yet.", { stacked: true }));
}

// Every tenant, page by page (by name).
async function allTenants() {
  const rows = [];
  for (;;) {
    const after = rows.length ? `&after=${encodeURIComponent(rows[rows.length - 1].name)}` : "";
    const page = await api("GET", `/operator/tenants?limit=${PAGE}${after}`);
    rows.push(...page);
    if (page.length < PAGE) return rows;
  }
}

function state(tenant) {
  if (tenant.status !== "suspended") return el("span", { class: "status status-ready", text: "active" });
  const reason = tenant.suspendedReason ? `: ${tenant.suspendedReason}` : "";
  return el("span", {},
    el("span", { class: "status status-failed", text: "suspended" }), ` ${when(tenant.suspendedAt)}${reason}`);
}

function actions(tenant, plans) {
  const button = (text, label, open, kind = "secondary") => el("button", {
    type: "button", class: kind, "aria-label": `${label} ${tenant.name}`, text,
    onclick: (event) => { opener = event.currentTarget; open(); },
  });
  return el("div", { class: "actions" },
    tenant.status === "suspended"
      ? button("Resume", "Resume", () => busy(resume(tenant)))
      : button("Suspend", "Suspend", () => openSuspend(tenant), "danger"),
    button("Change", "Change plan or caps of", () => openEdit(tenant, plans)),
    button("Delete", "Delete", () => busy(remove(tenant)), "danger"));
}

function fillPlans(selectId, plans, value) {
  $(selectId).replaceChildren(...plans.map((p) => el("option", { value: p.name, text: p.name, selected: p.name === value })));
}

function close() {
  chosen = null;
  $("suspend-form").hidden = true;
  $("tenant-edit-form").hidden = true;
}

function openSuspend(tenant) {
  close();
  chosen = tenant;
  $("suspend-form").reset();
  showError("suspend-error", null);
  $("suspend-form-title").textContent = `Suspend ${tenant.name}`;
  $("suspend-submit").setAttribute("aria-label", `Suspend ${tenant.name} now`);
  $("suspend-form").hidden = false;
  $("suspend-reason").focus();
}

async function suspend(event) {
  event.preventDefault();
  const tenant = chosen;
  showError("suspend-error", null);
  const reason = $("suspend-reason").value.trim();
  try {
    await api("POST", `/operator/tenants/${tenant.id}/suspend`, { body: reason ? { reason } : {} });
  } catch (error) {
    return showError("suspend-error", error);
  }
  close();
  announce(`${tenant.name} suspended: its keys are refused.`);
  await load();
  $("tenants-title").focus();
}

async function resume(tenant) {
  try {
    await api("POST", `/operator/tenants/${tenant.id}/resume`);
    announce(`${tenant.name} resumed: its keys work again.`);
  } catch (error) {
    announce(describe(error));
    showError("page-error", error);
  }
  await load();
}

function openEdit(tenant, plans) {
  close();
  chosen = tenant;
  showError("tenant-edit-error", null);
  $("tenant-edit-title").textContent = `Change ${tenant.name}`;
  fillPlans("tenant-edit-plan", plans, tenant.plan);
  $("tenant-edit-spend").value = tenant.spendCap ?? "";
  $("tenant-edit-requests").value = tenant.requestCap ?? "";
  $("tenant-edit-form").hidden = false;
  $("tenant-edit-plan").focus();
}

// An empty cap field: null (no cap) when changing, absent (the plan's default) when creating.
function caps(form, empty) {
  const spend = form.elements.spendCap.value.trim();
  const requests = form.elements.requestCap.value.trim();
  const body = {};
  if (spend || empty !== undefined) body.spendCap = spend || empty;
  if (requests || empty !== undefined) body.requestCap = requests ? Number(requests) : empty;
  return body;
}

async function edit(event) {
  event.preventDefault();
  const tenant = chosen;
  showError("tenant-edit-error", null);
  const body = { plan: $("tenant-edit-plan").value, ...caps(event.target, null) };
  try {
    await api("PATCH", `/operator/tenants/${tenant.id}`, { body });
  } catch (error) {
    return showError("tenant-edit-error", error);
  }
  close();
  announce(`${tenant.name} changed.`);
  await load();
  $("tenants-title").focus();
}

async function create(event) {
  event.preventDefault();
  const form = event.target;
  showError("tenant-error", null);
  const body = {
    name: form.elements.name.value.trim(), ownerEmail: form.elements.ownerEmail.value.trim(),
    plan: form.elements.plan.value, ...caps(form),
  };
  try {
    const made = await api("POST", "/operator/tenants", { body });
    form.reset();
    $("new-owner-key-value").value = made.key;
    $("new-owner-key").hidden = false;
    $("new-owner-key-value").focus();
    $("new-owner-key-value").select();
    announce(`Tenant ${made.tenant.name} created: copy its owner key now, it is shown once.`);
    await load();
  } catch (error) {
    showError("tenant-error", error);
  }
}

// Two calls: the first gives a short-lived confirmation token (nothing deleted yet), the second sends it back.
async function remove(tenant) {
  if (!confirm(`Delete the tenant ${tenant.name} with all its data (keys, deployments, usage, invoices)?`)) return;
  try {
    const { confirmationToken } = await api("DELETE", `/operator/tenants/${tenant.id}`);
    await api("DELETE", `/operator/tenants/${tenant.id}?confirm=${encodeURIComponent(confirmationToken)}`);
    announce(`Tenant ${tenant.name} deleted.`);
  } catch (error) {
    announce(describe(error));
    showError("page-error", error);
  }
  close();
  await load();
}

export function wire() {
  $("tenant-form").addEventListener("submit", busily(create));
  $("suspend-form").addEventListener("submit", busily(suspend));
  $("tenant-edit-form").addEventListener("submit", busily(edit));
  for (const id of ["suspend-cancel", "tenant-edit-cancel"]) {
    $(id).addEventListener("click", () => {
      close();
      (opener?.isConnected ? opener : $("tenants-title")).focus();
    });
  }
  $("new-owner-key-copy").addEventListener("click", () => copyFrom("new-owner-key-value"));
  $("new-owner-key-done").addEventListener("click", () => forget("new-owner-key", "new-owner-key-value"));
}
