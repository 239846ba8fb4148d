// The page of gramx serve: a query (text or a dropped file), candidate modalities and k; hits as cards.
"use strict";
const $ = (id) => document.getElementById(id);
let dropped = null;  // the file to search with, until the text box is used again

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error + (body.hint ? ` (${body.hint})` : ""));
  return body;
}

function option(parent, value, checked) {
  const label = document.createElement("label");
  const box = Object.assign(document.createElement("input"), { type: "checkbox", value, checked });
  label.append(box, " " + value);
  parent.append(label);
}

async function start() {
  try {
    const info = await call("/api/info");
    const rows = Object.entries(info.index.modalities).map(([m, n]) => `${n} ${m}`).join(", ");
    $("about").textContent = `${info.index.rows} rows (${rows}) · score ${info.model.score} · ${info.model.path}`;
    for (const m of Object.keys(info.index.modalities)) option($("candidates"), m, m !== "text");
    for (const m of info.index.queries) $("query-modality").append(new Option(m, m));
  } catch (e) {
    status(e.message, true);
  }
}

function candidates() {
  return [...$("candidates").querySelectorAll("input:checked")].map((box) => box.value).join(",");
}

function guessModality(file) {
  const kind = (file.type || "").split("/")[0];
  const known = [...$("query-modality").options].map((o) => o.value);
  const wanted = { audio: "audio", image: "image", video: "video" }[kind];
  return known.includes(wanted) ? wanted : $("query-modality").value;
}

function show(id, modality, value, type) {
  const url = `/media/${encodeURIComponent(id)}/${encodeURIComponent(modality)}`;
  const kind = (type || "").split("/")[0];
  if (!type) return Object.assign(document.createElement("div"), { className: "text", textContent: value });
  if (kind === "image") return Object.assign(document.createElement("img"), { src: url, alt: `${modality} of ${id}` });
  if (kind === "audio" || kind === "video") {
    const player = Object.assign(document.createElement(kind), { src: url, controls: true, preload: "none" });
    player.dataset.modality = modality;
    return player;
  }
  return Object.assign(document.createElement("a"), { href: url, textContent: `download ${modality}`, download: "" });
}

function render(result) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of result.hits) {
    const card = Object.assign(document.createElement("article"), { className: "card" });
    card.dataset.id = hit.id;
    const head = Object.assign(document.createElement("div"), { className: "head" });
    head.append(Object.assign(document.createElement("span"), { className: "id", textContent: `${hit.rank}. ${hit.id}` }),
                Object.assign(document.createElement("span"), { textContent: `${result.score} ${hit.score.toFixed(4)}` }));
    card.append(head);
    for (const [modality, value] of Object.entries(hit.values)) card.append(show(hit.id, modality, value, hit.media[modality]));
    grid.append(card);
  }
  status(`${result.hits.length} results by ${result.score}`);
}

async function search(event) {
  if (event) event.preventDefault();
  const k = $("k").value, modality = candidates();
  status("searching…");
  try {
    if (dropped) {
      const form = new FormData();
      form.append("file", dropped);
      form.append("query_modality", $("query-modality").value);
      form.append("modality", modality);
      form.append("k", k);
      render(await call("/api/search", { method: "POST", body: form }));
    } else {
      const query = new URLSearchParams({ q: $("query").value, modality, k });
      render(await call(`/api/search?${query}`));
    }
  } catch (e) {
    $("results").replaceChildren();
    status(e.message, true);
  }
}

function useFile(file) {
  dropped = file;
  $("query-modality").value = guessModality(file);
  $("drop").firstChild.textContent = `${file.name} `;
  $("query").value = "";
  search();
}

$("search").addEventListener("submit", search);
$("query").addEventListener("input", () => { dropped = null; $("drop").firstChild.textContent = "or drop a recording, photo or clip here "; });
$("file").addEventListener("change", () => { if ($("file").files.length) useFile($("file").files[0]); });
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  if (e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]);
});
start();
