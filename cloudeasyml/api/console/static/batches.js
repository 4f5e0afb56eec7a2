// Batch jobs: a read view with progress (jobs are created over the API or the CLI).

import { $, api, denied, el, table, when } from "./core.js";

export async function load() {
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
    }), "No batch jobs yet.", { stacked: true }));
}
