// The CloudEasyML tenant console: one page, no framework, no build step. It calls the platform's public JSON API
// with the signed-in key (Authorization: Bearer), which lives in sessionStorage only: never in a URL, never in
// localStorage, never in a cookie. Every part of a page that the key's scopes do not allow (a 403 from the API) is
// hidden or disabled. The page's own routes are in the URL fragment (#/models, ...), which is never sent anywhere.

const KEY_STORAGE = "cloudeasyml.apiKey";
const SCOPES = ["predict", "deployments:read", "deployments:write", "keys:read", "keys:write", "usage:read",
  "webhooks:read", "webhooks:write", "feedback:write", "admin"];
const PAGES = ["models", "deployments", "keys", "usage", "webhooks", "batches"];
// What each page lists, and so the read it needs: probed at sign-in; a 403 hides the page's link.
const PROBES = { deployments: "/deployments", keys: "/api-keys", usage: "/usage/quota", webhooks: "/webhooks",
  batches: "/batches" };
const PALETTE = ["#1f5fa8", "#b3541e", "#2e7d32", "#6a3d9a", "#8a6d00", "#c2185b", "#00796b", "#5d4037"];
const DAY_MS = 86400000;

const session = { access: {}, scopes: null, models: [], deployments: [] };

// ---- small DOM helpers -------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// While a page loads or an action runs, <main> says it is busy (assistive technology waits; so do the tests).
let pending = 0;

async function busy(work) {
  pending += 1;
  $("main").setAttribute("aria-busy", "true");
  try {
    return await work;
  } finally {
    pending -= 1;
    if (!pending) $("main").setAttribute("aria-busy", "false");
  }
}

function announce(message) {
  $("status").textContent = message;
}

function showError(id, error) {
  $(id).textContent = error ? describe(error) : "";
}

function describe(error) {
  if (error instanceof ApiError) {
    const detail = error.problem.detail || error.problem.title || "";
    return `${error.status} ${detail}`.trim();
  }
  return String(error.message || error);
}

// A table inside a focusable, labelled scrolling region: keyboard users can scroll it at phone width.
function table(label, headings, rows, empty) {
  if (!rows.length) return el("p", { class: "empty", text: empty });
  return el("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: 0 },
    el("table", {},
      el("caption", { class: "visually-hidden", text: label }),
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))))));
}

function when(value) {
  return value ? new Date(value).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "—";
}

function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

// ---- the API -----------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function request(method, path, { body, accept, key } = {}) {
  const headers = { Authorization: `Bearer ${key || storedKey()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  const started = performance.now();
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
  });
  const elapsed = performance.now() - started;
  if (!response.ok) {
    let problem = {};
    try { problem = await response.json(); } catch { /* not JSON: the status says enough */ }
    if (response.status === 401 && !key && storedKey()) {
      signOut(`Signed out: ${problem.detail || "the key was refused"}.`);
    }
    throw new ApiError(response.status, problem);
  }
  return { response, elapsed };
}

async function api(method, path, options) {
  const { response } = await request(method, path, options);
  return response.status === 204 ? null : response.json();
}

function can(scope) {
  if (session.scopes === null) return true; // unknown (the key cannot list keys): the API's 403 decides
  if (session.scopes.has("admin") || session.scopes.has(scope)) return true;
  return scope.endsWith(":read") && session.scopes.has(scope.replace(":read", ":write"));
}

// A 403 on a write disables the form that made it: the key lacks that scope.
function refuse(form, errorId, error) {
  showError(errorId, error);
  if (error instanceof ApiError && error.status === 403) {
    for (const control of form.elements) control.disabled = true;
  }
}

// ---- sign in, sign out, navigation -------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("signin-key").value.trim();
  showError("signin-error", null);
  try {
    await request("GET", "/models", { key });
  } catch (error) {
    showError("signin-error", error);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("signin-key").value = "";
  await start();
  announce("Signed in.");
}

async function start() {
  await probe();
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  if (!PAGES.includes(location.hash.slice(2))) {
    location.hash = "#/models"; // its hashchange loads the page
    return;
  }
  await route();
}

// Which pages the key may read (one list call each), and its exact scopes when it may list keys.
async function probe() {
  session.access = { models: true };
  await Promise.all(Object.entries(PROBES).map(async ([page, path]) => {
    try {
      const body = await api("GET", path);
      session.access[page] = true;
      if (page === "keys") {
        const own = body.find((k) => k.keyId === storedKey().split(".")[0]);
        session.scopes = own ? new Set(own.scopes) : null;
      }
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 403)) throw error;
      session.access[page] = false;
    }
  }));
  for (const link of document.querySelectorAll("#nav a")) {
    link.parentElement.hidden = !session.access[link.dataset.page];
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  Object.assign(session, { access: {}, scopes: null, models: [], deployments: [] });
  // Nothing of the tenant stays on the page.
  for (const id of ["models-list", "deployments-table", "keys-table", "usage-totals", "usage-chart", "quota",
    "invoices-table", "webhooks-table", "deliveries-table", "batches-table", "tryit-prediction", "tryit-figures",
    "tryit-curl", "tryit-python"]) $(id).replaceChildren();
  for (const id of ["new-key", "new-secret", "tryit-result", "deliveries"]) $(id).hidden = true;
  $("new-key-value").value = "";
  $("new-secret-value").value = "";
  for (const form of document.forms) for (const control of form.elements) control.disabled = false;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  history.replaceState(null, "", location.pathname);
  showPage("signin");
  showError("signin-error", null);
  if (typeof message === "string") $("signin-error").textContent = message;
  announce("Signed out.");
}

function showPage(name) {
  for (const section of document.querySelectorAll("main > section.page")) {
    section.hidden = section.id !== `page-${name}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name === "signin" ? "Sign in" : $(`${name}-title`).textContent} · CloudEasyML console`;
}

async function route() {
  if (!storedKey()) return showPage("signin");
  const hash = location.hash;
  if (!hash.startsWith("#/")) return; // an in-page anchor (the skip link), not a page
  const name = PAGES.includes(hash.slice(2)) ? hash.slice(2) : "models";
  showPage(name);
  $(`${name}-title`).focus();
  try {
    await busy(LOADERS[name]());
  } catch (error) {
    announce(describe(error));
  }
}

function denied(page, scope) {
  const note = $(`${page}-denied`);
  note.hidden = session.access[page] !== false;
  note.textContent = `This key lacks the ${scope} scope, so this page has nothing to show.`;
  return session.access[page] === false;
}

// ---- Models ------------------------------------------------------------------------------------------------------

async function loadModels() {
  session.models = await api("GET", "/models");
  $("models-list").replaceChildren(...session.models.map(modelCard));
}

function modelCard(model) {
  const p = model.pricing;
  const json = (value) => el("pre", { class: "code" }, JSON.stringify(value, null, 2));
  return el("article", { class: "card", "aria-labelledby": `model-${model.name}` },
    el("h2", { id: `model-${model.name}` }, model.name, " ", el("span", { class: "tag", text: model.task })),
    el("p", { text: model.description }),
    el("dl", { class: "figures" },
      el("dt", { text: "Versions" }), el("dd", { text: model.versions.join(", ") }),
      el("dt", { text: "Per request" }), el("dd", { text: p.perRequest }),
      el("dt", { text: "Per second" }), el("dd", { text: p.perSecond }),
      el("dt", { text: "Per GPU hour" }), el("dd", { text: p.perGpuHour }),
      el("dt", { text: "Inputs per request" }), el("dd", { text: model.limits.maxItemsPerRequest })),
    el("details", {}, el("summary", { text: "Input schema" }), json(model.inputSchema)),
    el("details", {}, el("summary", { text: "Output schema" }), json(model.outputSchema)),
    el("details", {}, el("summary", { text: "Example input" }), json(model.exampleInput)));
}

// ---- Deployments and "try it" ------------------------------------------------------------------------------------

async function loadDeployments() {
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
    ["Name", "Model", "Status", "Version(s) and traffic", "Requests today", "Actions"],
    session.deployments.map((d) => [
      d.name, d.modelName, el("span", { class: `status status-${d.status}`, text: d.status }),
      traffic(d), today === null ? "—" : String(today[d.id] || 0),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", onclick: () => tryDeployment(d.id),
          "aria-label": `Try ${d.name}`, text: "Try it" }),
        can("deployments:write") ? el("button", { type: "button", class: "danger", onclick: () => busy(remove(d)),
          "aria-label": `Delete ${d.name}`, text: "Delete" }) : null),
    ]), "No deployments yet: create one from a model below."));
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
  const chosen = select.value;
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
    await loadDeployments();
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
  await loadDeployments();
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
    await loadDeployments(); // its status and requests today have changed
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

// ---- Keys --------------------------------------------------------------------------------------------------------

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

async function loadKeys() {
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
    ]), "No keys."));
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
    await loadKeys();
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
  await loadKeys();
}

async function copyFrom(inputId) {
  const input = $(inputId);
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  announce("Copied to the clipboard.");
}

function forget(regionId, inputId) {
  $(inputId).value = "";
  $(regionId).hidden = true;
}

// ---- Usage -------------------------------------------------------------------------------------------------------

async function loadUsage() {
  if (denied("usage", "usage:read")) {
    for (const id of ["usage-totals", "usage-chart", "quota", "invoices-table"]) $(id).replaceChildren();
    $("usage-form").hidden = true;
    return;
  }
  $("usage-form").hidden = false;
  if (!$("usage-from").value) {
    const now = new Date();
    $("usage-to").value = utcDay(now);
    $("usage-from").value = utcDay(new Date(now.getTime() - 6 * DAY_MS));
  }
  await Promise.all([showUsage(), showQuota(), showInvoices()]);
}

async function showUsage() {
  showError("usage-error", null);
  const from = $("usage-from").value;
  const to = $("usage-to").value;
  const by = $("usage-by").value;
  const metric = $("usage-metric").value;
  const end = new Date(Date.parse(`${to}T00:00:00Z`) + DAY_MS);
  const query = new URLSearchParams({ start: `${from}T00:00:00Z`, end: end.toISOString(), groupBy: `day,${by}` });
  let report;
  try {
    report = await api("GET", `/usage?${query}`);
  } catch (error) {
    showError("usage-error", error);
    return;
  }
  const dl = $("usage-totals");
  dl.replaceChildren(
    el("dt", { text: "Requests" }), el("dd", { text: report.totalRequests }),
    el("dt", { text: "Items" }), el("dd", { text: report.totalItems }),
    el("dt", { text: "Cost" }), el("dd", { text: report.totalCost }));
  const days = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t < end.getTime() && days.length < 366; t += DAY_MS) {
    days.push(utcDay(new Date(t)));
  }
  if (by === "deployment" && session.access.deployments && !session.deployments.length) {
    session.deployments = await api("GET", "/deployments");
  }
  // Deleted deployments keep their usage; they show by id.
  const names = by === "deployment"
    ? Object.fromEntries(session.deployments.map((d) => [d.id, d.name]))
    : {};
  chart($("usage-chart"), days, report.groups || [], by, metric, names);
}

function chart(figure, days, groups, by, metric, names) {
  const series = [...new Set(groups.map((g) => g.key[by]))].sort();
  const values = {};
  for (const g of groups) {
    const v = metric === "cost" ? Number(g.cost) : g[metric];
    values[g.key.day] = values[g.key.day] || {};
    values[g.key.day][g.key[by]] = (values[g.key.day][g.key[by]] || 0) + v;
  }
  const totals = days.map((d) => Object.values(values[d] || {}).reduce((a, b) => a + b, 0));
  const highest = Math.max(...totals, 0);
  // Counts get whole-number gridlines (an even top, so its half is whole too); costs any.
  const max = metric === "cost" ? highest || 1 : Math.max(2, Math.ceil(highest / 2) * 2);
  const width = 640, height = 240, left = 56, bottom = 36, top = 12;
  const slot = (width - left - 8) / days.length;
  const label = (s) => names[s] || s || "(none)";
  const format = (v) => (metric === "cost" ? v.toFixed(6).replace(/\.?0+$/, "") : String(Math.round(v)));
  const tick = (v) => (metric === "cost" ? Number(v.toPrecision(3)).toString() : String(Math.round(v * 10) / 10));
  const total = totals.reduce((a, b) => a + b, 0);
  const title = `${metric} per day by ${by}, ${days[0]} to ${days[days.length - 1]} (UTC): ${format(total)} in all`;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "usage-chart-title",
    class: "bars", "data-total": format(total) }, el("svg:title", { id: "usage-chart-title", text: title }));
  for (const f of [0, 0.5, 1]) {
    const y = top + (height - top - bottom) * (1 - f);
    svg.append(el("svg:line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }),
      el("svg:text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis", text: tick(max * f) }));
  }
  days.forEach((day, i) => {
    let y = height - bottom;
    series.forEach((s, j) => {
      const v = (values[day] || {})[s] || 0;
      if (!v) return;
      const h = (height - top - bottom) * (v / max);
      y -= h;
      svg.append(el("svg:rect", { x: left + i * slot + slot * 0.15, y, width: slot * 0.7, height: Math.max(h, 1),
        fill: PALETTE[j % PALETTE.length], "data-day": day, "data-series": label(s) },
        el("svg:title", { text: `${day} · ${label(s)}: ${format(v)}` })));
    });
    const every = Math.ceil(days.length / 8);
    if (i % every === 0) {
      svg.append(el("svg:text", { x: left + i * slot + slot / 2, y: height - bottom + 16, "text-anchor": "middle",
        class: "axis", text: day.slice(5) }));
    }
  });
  const legend = el("ul", { class: "legend", "aria-label": "Series" }, series.map((s, j) =>
    el("li", {}, el("svg:svg", { viewBox: "0 0 10 10", class: "swatch", "aria-hidden": "true" },
      el("svg:rect", { width: 10, height: 10, fill: PALETTE[j % PALETTE.length] })), label(s))));
  const rows = days.filter((d) => values[d]).map((d) => [d, ...series.map((s) => format((values[d] || {})[s] || 0))]);
  figure.replaceChildren(
    el("figcaption", { text: title }), svg, series.length ? legend : el("p", { class: "empty", text: "No usage in this range." }),
    el("details", {}, el("summary", { text: "The same figures as a table" }),
      table(`Usage per day (${metric})`, ["Day (UTC)", ...series.map(label)], rows, "No usage in this range.")));
}

async function showQuota() {
  const q = await api("GET", "/usage/quota");
  const cap = (value, used, left) => (value === null ? `${used} used (no cap)` : `${used} of ${value} (${left} left)`);
  $("quota").replaceChildren(
    el("dt", { text: "Spend" }), el("dd", { text: cap(q.spendCap, q.spent, q.remainingSpend) }),
    el("dt", { text: "Requests" }), el("dd", { text: cap(q.requestCap, q.requests, q.remainingRequests) }),
    el("dt", { text: "Resets" }), el("dd", { text: when(q.resetsAt) }));
}

async function showInvoices() {
  const months = await api("GET", "/invoices");
  $("invoices-table").replaceChildren(table("Invoices", ["Month", "Requests", "Total", "Download"],
    months.map((m) => [m.month, String(m.requests ?? "—"), String(m.total ?? "—"),
      el("button", { type: "button", class: "secondary", onclick: () => busy(download(m.month)),
        "aria-label": `Download the invoice of ${m.month} (PDF)`, text: "PDF" })]),
    "No invoices yet: a month has one once it has usage."));
}

async function download(month) {
  showError("invoices-error", null);
  try {
    const { response } = await request("GET", `/invoices/${month}`, { accept: "application/pdf" });
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `invoice-${month}.pdf` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError("invoices-error", error);
  }
}

// ---- Webhooks and batch jobs -------------------------------------------------------------------------------------

async function loadWebhooks() {
  $("webhook-form").hidden = !can("webhooks:write") || session.access.webhooks === false;
  if (denied("webhooks", "webhooks:read")) return $("webhooks-table").replaceChildren();
  const endpoints = await api("GET", "/webhooks");
  $("webhooks-table").replaceChildren(table("Webhook endpoints", ["URL", "Events", "State", "Failing since", "Log"],
    endpoints.map((w) => [w.url, w.events.join(", "), w.enabled ? "enabled" : `disabled ${w.disabledReason || ""}`,
      when(w.failingSince), el("button", { type: "button", class: "secondary", onclick: () => busy(deliveries(w)),
        "aria-label": `Deliveries to ${w.url}`, text: "Deliveries" })]),
    "No endpoints yet."));
}

async function deliveries(endpoint) {
  const page = await api("GET", `/webhooks/${endpoint.id}/deliveries`);
  $("deliveries").hidden = false;
  $("deliveries-title").textContent = `Deliveries to ${endpoint.url}`;
  $("deliveries-table").replaceChildren(table("Deliveries", ["Event", "Status", "Attempts", "Last attempt", "Answer"],
    page.items.map((d) => [d.eventId, d.status, String(d.attempts), when(d.lastAttemptAt),
      d.responseStatus ? `${d.responseStatus} in ${Math.round(d.latencyMs)} ms` : d.error || "—"]),
    "Nothing delivered yet."));
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
    await loadWebhooks();
  } catch (error) {
    refuse(form, "webhook-error", error);
  }
}

async function loadBatches() {
  if (denied("batches", "predict")) return $("batches-table").replaceChildren();
  const jobs = await api("GET", "/batches");
  $("batches-table").replaceChildren(table("Batch jobs", ["Job", "Deployment", "Status", "Progress", "Created", "Finished"],
    jobs.map((b) => {
      const done = b.counts.completed + b.counts.failed;
      return [el("code", { text: b.id }), b.deploymentName, b.status + (b.message ? `: ${b.message}` : ""),
        el("span", { class: "progress" },
          el("progress", { max: b.counts.total || 1, value: done, "aria-label": `Progress of ${b.id}` }),
          ` ${done} / ${b.counts.total}${b.counts.failed ? ` (${b.counts.failed} failed)` : ""}`),
        when(b.createdAt), when(b.finishedAt)];
    }), "No batch jobs yet."));
}

const LOADERS = { models: loadModels, deployments: loadDeployments, keys: loadKeys, usage: loadUsage,
  webhooks: loadWebhooks, batches: loadBatches };

// ---- wiring ------------------------------------------------------------------------------------------------------

// An event handler that runs async work with <main> marked busy.
const busily = (handler) => (event) => busy(handler(event));

function wire() {
  $("signin-form").addEventListener("submit", busily(signIn));
  $("sign-out").addEventListener("click", () => signOut());
  $("deployment-form").addEventListener("submit", busily(createDeployment));
  $("deployment-model").addEventListener("change", fillVersions);
  $("tryit-deployment").addEventListener("change", renderTryItInputs);
  $("tryit-form").addEventListener("submit", busily(runPrediction));
  $("key-form").addEventListener("submit", busily(createKey));
  $("webhook-form").addEventListener("submit", busily(createWebhook));
  $("new-key-copy").addEventListener("click", () => copyFrom("new-key-value"));
  $("new-key-done").addEventListener("click", () => forget("new-key", "new-key-value"));
  $("new-secret-copy").addEventListener("click", () => copyFrom("new-secret-value"));
  $("new-secret-done").addEventListener("click", () => forget("new-secret", "new-secret-value"));
  $("usage-form").addEventListener("submit", busily((event) => { event.preventDefault(); return showUsage(); }));
  for (const id of ["usage-by", "usage-metric"]) $(id).addEventListener("change", busily(showUsage));
  $("skip").addEventListener("click", (event) => { event.preventDefault(); $("main").focus(); });
  window.addEventListener("hashchange", route);
  if (storedKey()) {
    start().catch((error) => signOut(describe(error)));
  } else {
    showPage("signin");
  }
}

wire();
