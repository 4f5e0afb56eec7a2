// The CloudEasyML tenant console: one page, no framework, no build step. It calls the platform's public JSON API
// with the signed-in key (Authorization: Bearer), which lives in sessionStorage only: never in a URL, never in
// localStorage, never in a cookie. Every part of a page that the key's scopes do not allow (a 403 from the API) is
// hidden or disabled. The page's own routes are in the URL fragment (#/models, ...), which is never sent anywhere.
// This module signs in and out and routes; each page is a module of its own with load() and wire().
// An operator key (GET /operator/tenants answers 200) gets the operator's pages instead of the tenant's.

import * as audit from "./audit.js";
import * as batches from "./batches.js";
import {
  $, ApiError, KEY_STORAGE, announce, api, busily, busy, describe, request, session, showError, storedKey,
  whenUnauthorized,
} from "./core.js";
import * as deployments from "./deployments.js";
import * as keys from "./keys.js";
import * as models from "./models.js";
import * as plans from "./plans.js";
import * as tenants from "./tenants.js";
import * as usage from "./usage.js";
import * as webhooks from "./webhooks.js";

// The pages, in the order of the navigation: each with its module and the list call that says whether the key may
// read it (probed at sign-in: a 403 hides the page's link). A page is one entry here, one <section id="page-NAME">
// with an <h1 id="NAME-title"> and one link in index.html, and one module. The operator's pages (operator: true) are
// the only ones an operator key sees, and a tenant key never sees them.
const PAGES = {
  models: { module: models },
  deployments: { module: deployments, probe: "/deployments" },
  keys: { module: keys, probe: "/api-keys" },
  usage: { module: usage, probe: "/usage/quota" },
  webhooks: { module: webhooks, probe: "/webhooks" },
  batches: { module: batches, probe: "/batches" },
  tenants: { module: tenants, operator: true },
  audit: { module: audit, operator: true },
  plans: { module: plans, operator: true },
};

// The page a key starts on, and whether a page belongs to the view of the signed-in key (tenant or operator).
const home = () => (session.operator ? "tenants" : "models");
const inView = (name) => name in PAGES && !PAGES[name].operator === !session.operator;

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
  try {
    await start();
    announce("Signed in.");
  } catch (error) {
    signOut(describe(error));
  }
}

async function start() {
  await probe();
  if (!storedKey()) return; // a 401 meanwhile signed the tab out
  const scopes = session.operator ? " (operator)" : session.scopes ? ` (${[...session.scopes].join(", ")})` : "";
  $("whoami").textContent = `Key ${storedKey().split(".")[0]}${scopes}`; // its id only, never the secret
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  if (!inView(location.hash.slice(2))) {
    location.hash = `#/${home()}`; // its hashchange loads the page
    return;
  }
  await route();
}

// Which pages the key may read (one list call each), and its exact scopes when it may list keys. An operator key
// (the operator's tenant list answers) may read the operator's pages and none of a tenant's.
async function probe() {
  const keyId = storedKey().split(".")[0];
  session.operator = await isOperator();
  session.access = Object.fromEntries(Object.keys(PAGES).map((name) => [name, inView(name)]));
  if (session.operator) return showLinks();
  const probed = Object.entries(PAGES).filter(([, page]) => page.probe);
  await Promise.all(probed.map(async ([page, { probe: path }]) => {
    try {
      const body = await api("GET", path);
      session.access[page] = true;
      if (page === "keys") {
        const own = body.find((k) => k.keyId === keyId);
        session.scopes = own ? new Set(own.scopes) : null;
      }
    } catch (error) {
      // Only a 403 says the key may not read the page; anything else (a 429 of a low rate limit, a 503) leaves the
      // page shown, and the page says what went wrong when it is opened.
      session.access[page] = !(error instanceof ApiError && error.status === 403);
    }
  }));
  showLinks();
}

function showLinks() {
  for (const link of document.querySelectorAll("#nav a")) {
    link.parentElement.hidden = !session.access[link.dataset.page];
  }
}

async function isOperator() {
  if (!storedKey().startsWith("op_")) return false; // only operator keys look like this; spare the tenant a call
  try {
    await api("GET", "/operator/tenants?limit=1");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error; // neither yes nor no (a 503): signing in fails and says why
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  Object.assign(session, {
    access: {}, scopes: null, models: [], deployments: [], chosenModel: null, operator: false, tenants: [],
  });
  $("whoami").textContent = "";
  // Nothing of the tenant stays on the page.
  for (const id of ["models-list", "deployments-table", "keys-table", "usage-totals", "usage-chart", "quota",
    "invoices-table", "webhooks-table", "deliveries-table", "batches-table", "tryit-prediction", "tryit-figures",
    "tryit-curl", "tryit-python", "tenants-table", "audit-table", "audit-tenant", "plans-table", "tenant-plan",
    "tenant-edit-plan"]) $(id).replaceChildren();
  for (const id of ["new-key", "new-secret", "tryit-result", "deliveries", "new-owner-key", "suspend-form",
    "tenant-edit-form", "audit-more"]) $(id).hidden = true;
  for (const id of ["new-key-value", "new-secret-value", "new-owner-key-value"]) $(id).value = "";
  for (const form of document.forms) for (const control of form.elements) control.disabled = false;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  history.replaceState(null, "", location.pathname);
  showPage("signin");
  showError("page-error", null);
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
  let name = hash.slice(2);
  if (!inView(name)) {
    name = home(); // a page of the other view (or none): this key's first page, without a history entry
    history.replaceState(null, "", `#/${name}`);
  }
  showPage(name);
  $(`${name}-title`).focus();
  showError("page-error", null);
  try {
    await busy(PAGES[name].module.load());
  } catch (error) {
    if (storedKey()) showError("page-error", error);
  }
}

function wire() {
  $("signin-form").addEventListener("submit", busily(signIn));
  $("sign-out").addEventListener("click", () => signOut());
  $("skip").addEventListener("click", (event) => { event.preventDefault(); $("main").focus(); });
  // The link of the page already shown loads it again (no hashchange would).
  $("nav").addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (link && link.getAttribute("href") === location.hash) {
      event.preventDefault();
      route();
    }
  });
  for (const { module } of Object.values(PAGES)) module.wire?.();
  whenUnauthorized(signOut);
  window.addEventListener("hashchange", route);
  if (storedKey()) {
    start().catch((error) => signOut(describe(error)));
  } else {
    showPage("signin");
  }
}

wire();
