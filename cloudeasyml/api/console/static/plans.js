// The operator's Plans page (read-only): every plan, stored or the code's, with its limits, caps and prices.

import { $, api, el, table } from "./core.js";

export async function load() {
  const plans = await api("GET", "/plans");
  const none = (value) => (value === null || value === undefined ? "—" : String(value));
  $("plans-table").replaceChildren(table("Plans",
    ["Name", "Source", "Description", "Rate limit", "Spend cap", "Request cap", "Max deployments", "Max loaded", "Prices"],
    plans.map((p) => [el("code", { text: p.name }), p.source, p.description || "—",
      p.rateLimitPerMinute ? `${p.rateLimitPerMinute}/min` : "—", none(p.spendCap),
      none(p.requestCap), none(p.maxDeployments), none(p.maxLoadedDeployments), prices(p.prices)]),
    "No plans.", { stacked: true }));
}

// Per model, only the parts that cost something.
function prices(byModel) {
  const parts = (p) => [[p.perRequest, "request"], [p.perSecond, "s"], [p.perGpuHour, "GPU hour"]]
    .filter(([amount]) => Number(amount)).map(([amount, unit]) => `${amount} / ${unit}`).join(", ") || "free";
  const lines = Object.entries(byModel).map(([model, p]) => el("li", {}, el("code", { text: model }), `: ${parts(p)}`));
  return lines.length ? el("ul", { class: "changes" }, lines) : "the models' own";
}
