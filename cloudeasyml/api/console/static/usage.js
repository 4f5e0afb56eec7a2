// Usage: totals, the per-day chart, this month's caps and the invoices.

import { $, api, busily, busy, denied, el, request, session, showError, table, utcDay, when } from "./core.js";

const PALETTE = ["#1f5fa8", "#b3541e", "#2e7d32", "#6a3d9a", "#8a6d00", "#c2185b", "#00796b", "#5d4037"];
const DAY_MS = 86400000;
export async function load() {
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

export async function showUsage() {
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
    "No invoices yet: a month has one once it has usage.", { stacked: true }));
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

export function wire() {
  $("usage-form").addEventListener("submit", busily((event) => { event.preventDefault(); return showUsage(); }));
  for (const id of ["usage-by", "usage-metric"]) $(id).addEventListener("change", busily(showUsage));
}
