// Models: the catalog, with versions, schemas and prices.

import { $, api, can, el, session } from "./core.js";

export async function load() {
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
    el("details", {}, el("summary", { text: "Example input" }), json(model.exampleInput)),
    session.access.deployments && can("deployments:write")
      ? el("a", { class: "button", href: "#/deployments", "data-model": model.name, onclick: () => deploy(model),
        "aria-label": `Deploy ${model.name}`, text: "Deploy" })
      : null);
}

// The Deployments page opens with this model chosen in its create form.
function deploy(model) {
  session.chosenModel = model.name;
}
