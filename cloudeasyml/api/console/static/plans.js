// The operator's Plans page: every plan, stored or the code's, with its limits, caps and prices; create a plan, or
// change one (only what was changed is sent: an untouched field keeps the plan's value, an emptied one is removed).

import { $, announce, api, busily, el, showError, table } from "./core.js";

// The form's fields, by the API's names: how a field's text becomes a value ("" when empty).
const FIELDS = {
  description: (text) => text,
  rateLimitPerMinute: (text) => Number(text),
  spendCap: (text) => text,
  requestCap: (text) => Number(text),
  maxDeployments: (text) => Number(text),
  maxLoadedDeployments: (text) => Number(text),
  billShadow: (text) => text === "true",
};

let chosen = null; // the plan being changed (null: the form creates one)
let shown = {}; // the form's texts as they were filled for it, to send only what changed
let opener = null; // the button that opened the change: focus goes back there on Cancel

export async function load() {
  const plans = await api("GET", "/plans");
  const none = (value) => (value === null || value === undefined ? "—" : String(value));
  $("plans-table").replaceChildren(table("Plans",
    ["Name", "Source", "Description", "Rate limit", "Spend cap", "Request cap", "Max deployments", "Max loaded",
      "Prices", "Actions"],
    plans.map((p) => [el("code", { text: p.name }), p.source, p.description || "—",
      p.rateLimitPerMinute ? `${p.rateLimitPerMinute}/min` : "—", none(p.spendCap),
      none(p.requestCap), none(p.maxDeployments), none(p.maxLoadedDeployments), prices(p.prices),
      el("button", {
        type: "button", class: "secondary", text: "Change", "aria-label": `Change plan ${p.name}`,
        onclick: (event) => { opener = event.currentTarget; openChange(p); },
      })]),
    "No plans.", { stacked: true }));
}

// Per model, only the parts that cost something.
function prices(byModel) {
  const parts = (p) => [[p.perRequest, "request"], [p.perSecond, "s"], [p.perGpuHour, "GPU hour"]]
    .filter(([amount]) => Number(amount)).map(([amount, unit]) => `${amount} / ${unit}`).join(", ") || "free";
  const lines = Object.entries(byModel).map(([model, p]) => el("li", {}, el("code", { text: model }), `: ${parts(p)}`));
  return lines.length ? el("ul", { class: "changes" }, lines) : "the models' own";
}

function texts(form) {
  const values = { prices: form.elements.prices.value.trim() };
  for (const name of Object.keys(FIELDS)) values[name] = form.elements[name].value.trim();
  return values;
}

function fill(plan) {
  const form = $("plan-form");
  const text = (value) => (value === null || value === undefined ? "" : String(value));
  for (const name of Object.keys(FIELDS)) form.elements[name].value = text(plan[name]);
  form.elements.prices.value = JSON.stringify(plan.prices, null, 2);
  shown = texts(form);
}

function openChange(plan) {
  chosen = plan;
  showError("plan-error", null);
  $("plan-form-title").textContent = `Change ${plan.name}`;
  $("plan-name").value = plan.name;
  $("plan-name").readOnly = true;
  $("plan-submit").textContent = "Save";
  $("plan-submit").setAttribute("aria-label", `Save plan ${plan.name}`);
  $("plan-cancel").hidden = false;
  fill(plan);
  $("plan-description").focus();
}

function reset() {
  chosen = null;
  shown = {};
  $("plan-form").reset();
  $("plan-name").readOnly = false;
  $("plan-form-title").textContent = "Create a plan";
  $("plan-submit").textContent = "Create plan";
  $("plan-submit").removeAttribute("aria-label");
  $("plan-cancel").hidden = true;
  showError("plan-error", null);
}

// The request's body: on a change, the fields whose text changed (emptied: null); on a creation, those given.
function body(form) {
  const now = texts(form);
  const out = {};
  for (const [name, parse] of Object.entries(FIELDS)) {
    if (chosen ? now[name] === shown[name] : !now[name]) continue;
    out[name] = now[name] ? parse(now[name]) : name === "description" ? "" : null; // a description is never null
  }
  if (chosen ? now.prices !== shown.prices : now.prices && now.prices !== "{}") {
    try {
      out.prices = JSON.parse(now.prices || "{}");
    } catch (error) {
      throw new Error(`Prices are not valid JSON: ${error.message}`);
    }
  }
  return out;
}

async function save(event) {
  event.preventDefault();
  const form = event.target;
  showError("plan-error", null);
  const plan = chosen;
  try {
    const data = body(form);
    if (plan) {
      await api("PATCH", `/plans/${encodeURIComponent(plan.name)}`, { body: data });
    } else {
      await api("POST", "/plans", { body: { name: form.elements.name.value.trim(), ...data } });
    }
  } catch (error) {
    return showError("plan-error", error);
  }
  const name = plan ? plan.name : form.elements.name.value.trim();
  reset();
  announce(plan ? `Plan ${name} changed.` : `Plan ${name} created.`);
  await load();
  $("plans-title").focus();
}

export function wire() {
  $("plan-form").addEventListener("submit", busily(save));
  $("plan-cancel").addEventListener("click", () => {
    reset();
    (opener?.isConnected ? opener : $("plans-title")).focus();
  });
}
