// The search and clusters page of bindindex serve. Plain browser JavaScript, no build step.
// Every string from the index (file names above all) is set with textContent, never as HTML.
"use strict";

const token = new URLSearchParams(window.location.search).get("token");
// Members listed per cluster, nearest to the centroid first.
const MEMBERS_SHOWN = 60;

function byId(id) {
  return document.getElementById(id);
}

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  if (text !== null) {
    node.textContent = text;
  }
  return node;
}

function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = !message;
}

// Sends a request and returns its JSON body; raises an Error with the service's message.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token) {
    headers.set("Authorization", `Bearer ${token}`);
  }
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function formatNumber(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "n/a";
}

// -- search --------------------------------------------------------------------------

function searchOptions() {
  return { modality: byId("modality").value, k: Number(byId("k").value) || 12 };
}

async function runSearch(request, summary) {
  showError("");
  byId("query-summary").textContent = `searching: ${summary}…`;
  try {
    const body = await api("/search", request);
    byId("query-summary").textContent = `${body.hits.length} results for ${summary}`;
    renderCards(byId("results"), body.hits, (hit) => `score ${formatNumber(hit.score)}`);
  } catch (error) {
    byId("query-summary").textContent = "";
    showError(error.message);
  }
}

function searchJson(query, summary) {
  const request = {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...query, ...searchOptions() }),
  };
  return runSearch(request, summary);
}

function searchFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const options = searchOptions();
  form.append("modality", options.modality);
  form.append("k", String(options.k));
  return runSearch({ method: "POST", body: form }, `the file ${file.name}`);
}

function moreLikeThis(hit) {
  byId("tab-search").click();
  return searchJson({ item: hit.id }, `items like ${hit.path}`);
}

// Fills `container` with one card per item: a thumbnail or an audio player, the path,
// a caption and a "more like this" button.
function renderCards(container, items, caption) {
  container.replaceChildren();
  for (const item of items) {
    const card = element("article", { class: "card", "data-id": String(item.id) });
    if (item.modality === "image" && item.thumbnail_url) {
      const link = element("a", { href: item.media_url, target: "_blank", rel: "noopener" });
      link.append(element("img", { src: item.thumbnail_url, alt: item.path, loading: "lazy" }));
      card.append(link);
    } else if (item.modality === "audio") {
      card.append(element("audio", { src: item.media_url, controls: "", preload: "none" }));
    } else {
      card.append(element("p", { class: "muted" }, "item no longer in the index"));
    }
    card.append(element("p", { class: "path", title: item.path || "" }, item.path || `item ${item.id}`));
    card.append(element("p", { class: "muted" }, caption(item)));
    if (item.path) {
      const more = element("button", { type: "button", class: "more" }, "More like this");
      more.addEventListener("click", () => moreLikeThis(item));
      card.append(more);
    }
    container.append(card);
  }
}

function setUpSearch() {
  byId("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = byId("text-query").value.trim();
    if (text) {
      searchJson({ text }, `"${text}"`);
    }
  });
  const zone = byId("drop-zone");
  const input = byId("file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      input.click();
    }
  });
  input.addEventListener("change", () => {
    if (input.files.length) {
      searchFile(input.files[0]);
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      searchFile(event.dataTransfer.files[0]);
    }
  });
}

// -- clusters ------------------------------------------------------------------------

async function loadRuns() {
  const body = await api("/clusters");
  const rows = byId("runs").querySelector("tbody");
  rows.replaceChildren();
  for (const run of body.runs.slice().reverse()) {
    const row = element("tr", { class: "run", "data-run": String(run.run), tabindex: "0" });
    row.append(
      element("td", {}, String(run.run)),
      element("td", {}, String(run.k)),
      element("td", {}, String(run.n_items)),
      element("td", {}, formatNumber(run.silhouette)),
      element("td", {}, new Date(run.created_at).toLocaleString()),
    );
    row.addEventListener("click", () => showRun(run.run));
    rows.append(row);
  }
  return body.runs;
}

async function showRun(runId) {
  showError("");
  const detail = byId("run-detail");
  try {
    const run = await api(`/clusters/${runId}?members=${MEMBERS_SHOWN}`);
    detail.replaceChildren(element("h2", {}, `Run ${run.run}: k=${run.k}, ${run.n_items} items`));
    const metrics = [`silhouette ${formatNumber(run.silhouette)}`, `inertia ${formatNumber(run.inertia)}`];
    const consistency = run.metrics.consistency;
    if (consistency) {
      metrics.push(
        `purity ${formatNumber(consistency.purity)}`,
        `ARI ${formatNumber(consistency.ari)}`,
        `NMI ${formatNumber(consistency.nmi)}`,
      );
    }
    detail.append(element("p", { class: "metrics" }, metrics.join(" · ")));
    for (const warning of run.warnings) {
      detail.append(element("p", { class: "muted" }, `warning: ${warning}`));
    }
    for (const cluster of run.clusters) {
      detail.append(renderCluster(cluster));
    }
  } catch (error) {
    showError(error.message);
  }
}

function renderCluster(cluster) {
  const section = element("details", { class: "cluster", "data-cluster": String(cluster.cluster) });
  const counts = Object.entries(cluster.modalities)
    .map(([modality, count]) => `${count} ${modality}`)
    .join(", ");
  const share = cluster.label_share === null ? "" : ` (${Math.round(cluster.label_share * 100)}%)`;
  const title = `Cluster ${cluster.cluster}: ${cluster.label || "no label"}${share}, ` +
    `${cluster.size} items${counts ? ` (${counts})` : ""}`;
  section.append(element("summary", {}, title));
  const grid = element("div", { class: "grid" });
  section.addEventListener("toggle", () => {
    // Members load when the cluster is opened, so a large run does not fetch every thumbnail.
    if (section.open && !grid.childElementCount) {
      renderCards(grid, cluster.members, (member) => `distance ${formatNumber(member.distance)}`);
    }
  });
  section.append(grid);
  if (cluster.members.length < cluster.size) {
    section.append(
      element("p", { class: "muted" }, `the ${cluster.members.length} nearest of ${cluster.size} shown`),
    );
  }
  return section;
}

function setUpClusters() {
  byId("cluster-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    const request = {
      k: Number(byId("cluster-k").value) || 7,
      labels: byId("cluster-labels").checked ? "top-folder" : null,
    };
    try {
      const run = await api("/cluster", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
      await loadRuns();
      await showRun(run.run);
    } catch (error) {
      showError(error.message);
    }
  });
}

// -- page ----------------------------------------------------------------------------

function setUpTabs() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll(".tab")) {
        other.classList.toggle("active", other === tab);
        byId(other.dataset.view).hidden = other !== tab;
      }
      if (tab.dataset.view === "clusters-view") {
        loadRuns().catch((error) => showError(error.message));
      }
    });
  }
}

async function loadInfo() {
  try {
    const info = await api("/info");
    const indexed = info.items.indexed || {};
    const counts = Object.entries(indexed).map(([modality, n]) => `${n} ${modality}`).join(", ");
    let text = `${info.vectors} vectors (${counts || "no items"}), model ${info.model_name || "none yet"}`;
    if (info.note) {
      text += `: ${info.note}`;
    }
    byId("info").textContent = text;
  } catch (error) {
    byId("info").textContent = "";
    showError(error.message);
  }
}

setUpTabs();
setUpSearch();
setUpClusters();
loadInfo();
