// Deployments: the list, create and delete, and the "try it" panel.

import {
  $, announce, api, busily, busy, can, denied, describe, el, refuse, request, session, showError, table, utcDay,
} from "./core.js";

export async function load() {
  if (!session.models.length) session.models = await api("GET", "/models");
  fillModelChoices();
  $("deployment-form").hidden = !can("deployments:write") || session.access.deployments === false;
  if (denied("deployments", "deployments:read")) {
    $("deployments-table").replaceChildren();
    $("tryit").hidden = true;
    return;
  }
  session.deployments = await api("GET", "/deployments");
  const today = await requestsToday();
  $("deployments-table").replaceChildren(table("Deployments",
    ["Name", "Model", "Status", "Version(s) and traffic", "Requests today (UTC)", "Actions"],
    session.deployments.map((d) => [
      d.name, d.modelName, el("span", { class: `status status-${d.status}`, text: d.status }),
      traffic(d), today === null ? "—" : String(today[d.id] || 0),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", onclick: () => tryDeployment(d.id),
          "aria-label": `Try it with ${d.name}`, text: "Try it" }),
        can("deployments:write") ? el("button", { type: "button", class: "danger", onclick: () => busy(remove(d)),
          "aria-label": `Delete ${d.name}`, text: "Delete" }) : null),
    ]), "No deployments yet: create one from a model below.", { stacked: true }));
  $("tryit").hidden = false;
  fillTryIt();
}

function traffic(deployment) {
  const routes = deployment.traffic.length ? deployment.traffic : [{ modelVersion: deployment.modelVersion, weight: 100 }];
  return routes.map((r) => `${r.modelVersion}${r.variant ? ` (${r.variant})` : ""} ${r.mode === "shadow" ? "shadow " : ""}${r.weight}%`)
    .join(" · ");
}

async function requestsToday() {
  if (!session.access.usage) return null;
  const start = `${utcDay(new Date())}T00:00:00Z`;
  const report = await api("GET", `/usage?start=${encodeURIComponent(start)}&groupBy=deployment`);
  return Object.fromEntries((report.groups || []).map((g) => [g.key.deployment, g.requests]));
}

function fillModelChoices() {
  const select = $("deployment-model");
  const chosen = session.chosenModel || select.value;
  session.chosenModel = null;
  select.replaceChildren(...session.models.map((m) => el("option", { value: m.name, text: `${m.name} — ${m.description}` })));
  if (chosen) select.value = chosen;
  fillVersions();
}

function fillVersions() {
  const model = session.models.find((m) => m.name === $("deployment-model").value);
  $("deployment-version").replaceChildren(...(model ? model.versions : []).map((v) => el("option", { value: v, text: v })));
}

async function createDeployment(event) {
  event.preventDefault();
  const form = event.target;
  showError("deployment-error", null);
  const body = { modelName: form.elements.modelName.value, modelVersion: form.elements.modelVersion.value || undefined };
  if (form.elements.name.value.trim()) body.name = form.elements.name.value.trim();
  try {
    const made = await api("POST", "/deployments", { body });
    form.elements.name.value = "";
    announce(`Deployment ${made.name} created.`);
    await load();
    $("tryit-deployment").value = made.id;
    renderTryItInputs();
  } catch (error) {
    refuse(form, "deployment-error", error);
  }
}

async function remove(deployment) {
  if (!confirm(`Delete the deployment ${deployment.name}? Its usage stays.`)) return;
  try {
    await api("DELETE", `/deployments/${deployment.id}`);
    announce(`Deployment ${deployment.name} deleted.`);
  } catch (error) {
    announce(describe(error));
  }
  await load();
}

function fillTryIt() {
  const select = $("tryit-deployment");
  const chosen = select.value;
  select.replaceChildren(...session.deployments.map((d) => el("option", { value: d.id, text: `${d.name} (${d.modelName})` })));
  const kept = chosen && session.deployments.some((d) => d.id === chosen);
  if (kept) select.value = chosen;
  const none = !session.deployments.length;
  const lacksPredict = session.access.batches === false; // GET /batches needs the predict scope
  $("tryit-denied").hidden = !lacksPredict;
  $("tryit-denied").textContent = "This key lacks the predict scope: it cannot run predictions.";
  $("tryit-form").hidden = none || lacksPredict;
  if (!kept) renderTryItInputs(); // the same deployment keeps its input and its last answer
}

function tryDeployment(id) {
  $("tryit-deployment").value = id;
  renderTryItInputs();
  $("tryit-title").scrollIntoView();
  $("tryit-deployment").focus();
}

// Resolves a local "$ref" (msgspec writes "#/$defs/Name") and a nullable "anyOf".
function resolve(schema, root) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/$defs/")) {
    return resolve(root.$defs[schema.$ref.slice(8)], root);
  }
  if (schema && Array.isArray(schema.anyOf)) {
    const other = schema.anyOf.filter((s) => s.type !== "null");
    if (other.length === 1) return resolve(other[0], root);
  }
  return schema || {};
}

function renderTryItInputs() {
  const fieldset = $("tryit-inputs");
  fieldset.replaceChildren(el("legend", { text: "Input" }));
  $("tryit-result").hidden = true;
  const deployment = session.deployments.find((d) => d.id === $("tryit-deployment").value);
  const model = deployment && session.models.find((m) => m.name === deployment.modelName);
  if (!model) return;
  const schema = resolve(model.inputSchema, model.inputSchema);
  const example = model.exampleInput;
  if (schema.type !== "object" || !schema.properties) {
    fieldset.append(el("label", { for: "tryit-raw", text: "Input (JSON)" }),
      el("textarea", { id: "tryit-raw", rows: 6, spellcheck: "false", "data-kind": "json" },
        JSON.stringify(example, null, 2)));
    return;
  }
  const required = new Set(schema.required || []);
  const grid = el("div", { class: "fields" });
  for (const [name, raw] of Object.entries(schema.properties)) {
    const field = resolve(raw, model.inputSchema);
    const value = example && typeof example === "object" ? example[name] : undefined;
    grid.append(inputField(name, field, value, required.has(name)));
  }
  fieldset.append(grid);
}

function inputField(name, schema, value, required) {
  const id = `tryit-field-${name}`;
  const label = el("label", { for: id }, schema.title || name, required ? "" : el("span", { class: "optional", text: " (optional)" }));
  const common = { id, name, "data-field": name, required: required || undefined };
  let control;
  if (schema.type === "boolean") {
    control = el("input", { ...common, type: "checkbox", "data-kind": "boolean", checked: value === true, required: undefined });
    return el("div", { class: "field check" }, control, label);
  }
  if (schema.type === "number" || schema.type === "integer") {
    control = el("input", { ...common, type: "number", step: schema.type === "integer" ? 1 : "any",
      min: schema.minimum, max: schema.maximum, "data-kind": "number", value: value ?? "" });
  } else if (schema.type === "string" && Array.isArray(schema.enum)) {
    control = el("select", { ...common, "data-kind": "string" }, schema.enum.map((v) => el("option", { value: v, text: v })));
    if (value !== undefined) control.value = value;
  } else if (schema.type === "string") {
    control = el("textarea", { ...common, rows: 2, "data-kind": "string", maxlength: schema.maxLength }, value ?? "");
  } else {
    control = el("textarea", { ...common, rows: 3, spellcheck: "false", "data-kind": "json" },
      value === undefined ? "" : JSON.stringify(value));
  }
  const hint = schema.description ? el("p", { class: "hint", id: `${id}-hint`, text: schema.description }) : null;
  if (hint) control.setAttribute("aria-describedby", hint.id);
  return el("div", { class: "field" }, label, control, hint);
}

function readTryItInput() {
  const raw = $("tryit-raw");
  if (raw) return JSON.parse(raw.value);
  const input = {};
  for (const control of $("tryit-inputs").querySelectorAll("[data-field]")) {
    const kind = control.dataset.kind;
    if (kind === "boolean") input[control.name] = control.checked;
    else if (control.value === "") continue;
    else if (kind === "number") input[control.name] = Number(control.value);
    else if (kind === "json") input[control.name] = JSON.parse(control.value);
    else input[control.name] = control.value;
  }
  return input;
}

async function runPrediction(event) {
  event.preventDefault();
  showError("tryit-error", null);
  const id = $("tryit-deployment").value;
  let input;
  try {
    input = readTryItInput();
  } catch (error) {
    showError("tryit-error", `The input is not valid JSON: ${error.message}`);
    return;
  }
  const body = { inputs: [input] };
  try {
    const { response, elapsed } = await request("POST", `/deployments/${id}/predict`, { body });
    const answer = await response.json();
    showPrediction(id, body, answer, response.headers, elapsed);
    announce("Prediction done.");
    await load(); // its status and requests today have changed
  } catch (error) {
    refuse(event.target, "tryit-error", error);
  }
}

function showPrediction(id, body, answer, headers, elapsed) {
  $("tryit-prediction").textContent = JSON.stringify(answer.predictions, null, 2);
  const figures = [
    ["Round trip", `${elapsed.toFixed(1)} ms`],
    ["Processing (billed)", `${headers.get("X-Usage-Processing-Ms") ?? answer.processingTimeMs} ms`],
    ["Cost", headers.get("X-Usage-Cost") ?? "—"],
    ["Items", headers.get("X-Usage-Items") ?? String(body.inputs.length)],
    ["Model", `${answer.modelName} ${answer.modelVersion}`],
    ["Request id", answer.requestId],
  ];
  $("tryit-figures").replaceChildren(...figures.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const url = `${location.origin}/deployments/${id}/predict`;
  const json = JSON.stringify(body);
  $("tryit-curl").textContent = `curl -s -H "Authorization: Bearer $CLOUDEASYML_API_KEY" `
    + `-H 'Content-Type: application/json' \\\n  -d '${json.replaceAll("'", "'\\''")}' ${url}`;
  $("tryit-python").textContent = "from cloudeasyml.client import Client\n\n"
    + `with Client(${python(location.origin)}) as client:  # the key from $CLOUDEASYML_API_KEY\n`
    + `    answer = client.deployments.predict(${python(id)}, ${python(body.inputs)})\n`
    + "    print(answer.predictions)";
  $("tryit-result").hidden = false;
}

// A JSON value as a Python literal.
function python(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(python).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

export function wire() {
  $("deployment-form").addEventListener("submit", busily(createDeployment));
  $("deployment-model").addEventListener("change", fillVersions);
  $("tryit-deployment").addEventListener("change", renderTryItInputs);
  $("tryit-form").addEventListener("submit", busily(runPrediction));
}
