// The console's shared parts: the session, DOM helpers, the busy marker and the API client. The signed-in key lives in
// sessionStorage only: never in a URL, never in localStorage, never in a cookie.

export const KEY_STORAGE = "cloudeasyml.apiKey";

// What this tab knows of the signed-in key: which pages it may read (probed at sign-in), its scopes when it may list
// keys (null: unknown, the API's 403 decides), whether it is an operator key, and the lists several pages share.
export const session = {
  access: {}, scopes: null, models: [], deployments: [], chosenModel: null, operator: false, tenants: [],
};

let onUnauthorized = () => {};

// What to do when the API refuses the stored key (revoked or expired meanwhile): the console signs out.
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// ---- small DOM helpers -------------------------------------------------------------------------------------------

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes = {}, ...children) {
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

export async function busy(work) {
  pending += 1;
  $("main").setAttribute("aria-busy", "true");
  try {
    return await work;
  } finally {
    pending -= 1;
    if (!pending) $("main").setAttribute("aria-busy", "false");
  }
}

export function announce(message) {
  $("status").textContent = message;
}

export function showError(id, error) {
  $(id).textContent = error ? describe(error) : "";
}

export function describe(error) {
  if (error instanceof ApiError) {
    const detail = error.problem.detail || error.problem.title || "";
    return `${error.status} ${detail}`.trim();
  }
  return String(error.message || error);
}

// A table inside a focusable, labelled scrolling region: keyboard users can scroll it at phone width. A stacked one
// shows each row as a card at phone width instead (each cell after its heading), for wide rows with actions.
export function table(label, headings, rows, empty, { stacked = false } = {}) {
  if (!rows.length) return el("p", { class: "empty", text: empty });
  const wrap = stacked ? "table-wrap stacked" : "table-wrap";
  return el("div", { class: wrap, role: "region", "aria-label": label, tabindex: 0 },
    el("table", {},
      el("caption", { class: "visually-hidden", text: label }),
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) => el("td", { "data-label": headings[i] }, c)))))));
}

export function when(value) {
  return value ? new Date(value).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "—";
}

export function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

// ---- the API -----------------------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export async function request(method, path, { body, accept, key } = {}) {
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
      onUnauthorized(`Signed out: ${problem.detail || "the key was refused"}.`);
    }
    throw new ApiError(response.status, problem);
  }
  return { response, elapsed };
}

export async function api(method, path, options) {
  const { response } = await request(method, path, options);
  return response.status === 204 ? null : response.json();
}

export function can(scope) {
  if (session.scopes === null) return true; // unknown (the key cannot list keys): the API's 403 decides
  if (session.scopes.has("admin") || session.scopes.has(scope)) return true;
  return scope.endsWith(":read") && session.scopes.has(scope.replace(":read", ":write"));
}

// A 403 on a write disables the form that made it: the key lacks that scope.
export function refuse(form, errorId, error) {
  showError(errorId, error);
  if (error instanceof ApiError && error.status === 403) {
    for (const control of form.elements) control.disabled = true;
  }
}

export function denied(page, scope) {
  const note = $(`${page}-denied`);
  note.hidden = session.access[page] !== false;
  note.textContent = `This key lacks the ${scope} scope, so this page has nothing to show.`;
  return session.access[page] === false;
}

export async function copyFrom(inputId) {
  const input = $(inputId);
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  announce("Copied to the clipboard.");
}

export function forget(regionId, inputId) {
  $(inputId).value = "";
  $(regionId).hidden = true;
}

// An event handler that runs async work with <main> marked busy.
export const busily = (handler) => (event) => busy(handler(event));
