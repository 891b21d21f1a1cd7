// The knowledge-base page: every request goes to this server's own /v1 API with the session's key.
"use strict";

const state = {key: sessionStorage.getItem("ragglm-key") || "", kb: "", history: [], documents: [],
               maxUpload: 0, polling: null};
const $ = (id) => document.getElementById(id);

class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

function headers(extra = {}) {
  return state.key ? {...extra, Authorization: `Bearer ${state.key}`} : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: headers(options.headers)});
  const body = await response.json().catch(() => null);
  if (response.status === 401) askForKey(Boolean(state.key));
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

function kbPath(suffix = "") {
  return `/v1/knowledge-bases/${encodeURIComponent(state.kb)}${suffix}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// --- the key ------------------------------------------------------------------------------------

function askForKey(rejected) {
  state.key = "";
  sessionStorage.removeItem("ragglm-key");
  $("key-panel").hidden = false;
  $("app").hidden = true;
  $("key-error").textContent = rejected ? t("keyWrong") : "";
  $("api-key").focus();
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("ragglm-key", state.key);
  await start();
});

// --- knowledge bases ----------------------------------------------------------------------------

async function start() {
  let listed;
  try {
    listed = await api("/v1/knowledge-bases");
  } catch (failure) {
    if (failure.status !== 401) $("key-error").textContent = failure.message;
    return;
  }
  state.maxUpload = listed.max_upload_bytes || 0;
  $("key-panel").hidden = true;
  $("app").hidden = false;
  const select = $("kb-select");
  select.replaceChildren(...listed.data.map((kb) => element("option", {value: kb.id, text: kb.id})));
  state.kb = listed.data.some((kb) => kb.id === state.kb) ? state.kb : listed.data[0].id;
  select.value = state.kb;
  newConversation();
  await loadDocuments();
}

$("kb-select").addEventListener("change", async (event) => {
  state.kb = event.target.value;
  newConversation();
  $("search-results").replaceChildren();
  $("uploads").replaceChildren();
  await loadDocuments();
});

// --- asking -------------------------------------------------------------------------------------

function newConversation() {
  state.history = [];
  $("conversation").replaceChildren();
  $("sources").replaceChildren();
}

$("new-chat").addEventListener("click", newConversation);

$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("question").value = "";
  $("ask").disabled = true;
  try {
    await ask(question);
  } finally {
    $("ask").disabled = false;
  }
});

$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

async function ask(question) {
  for (const old of document.querySelectorAll("[data-testid=answer]")) old.removeAttribute("data-testid");
  const answer = element("div", {class: "answer", "data-testid": "answer", text: t("thinking")});
  const turn = element("article", {class: "turn"}, element("p", {class: "question", text: question}), answer);
  $("conversation").append(turn);
  turn.scrollIntoView({block: "end"});
  state.history.push({role: "user", content: question});
  let text = "";
  let final = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers({"Content-Type": "application/json"}),
      body: JSON.stringify({model: `ragglm:${state.kb}`, stream: true, messages: state.history}),
    });
    if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => null));
    for await (const event of serverEvents(response)) {
      if (event.error) throw new ApiFailure(event.error.code || 500, event);
      const choice = event.choices && event.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        text += choice.delta.content;
        renderAnswer(answer, text);
      }
      if (choice.finish_reason) final = event;
    }
  } catch (failure) {
    state.history.pop();
    if (failure.status === 401) askForKey(true);
    answer.classList.add("error");
    answer.textContent = `${t("error")}: ${failure.message}`;
    return;
  }
  state.history.push({role: "assistant", content: text});
  const citations = (final && final.citations) || [];
  const details = (final && final.ragglm) || {};
  renderAnswer(answer, text);
  showOutcome(turn, question, details);
  showSources(citations, question);
}

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim()).join("\n");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

function renderAnswer(node, text) {
  // [n] marks become links to the numbered sources beside the answer
  node.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    node.append(text.slice(last, match.index));
    node.append(element("a", {class: "mark", href: `#source-${match[1]}`, text: match[0],
                              onclick: (event) => { event.preventDefault(); focusSource(match[1]); }}));
    last = match.index + match[0].length;
  }
  node.append(text.slice(last));
}

function showOutcome(turn, question, details) {
  const plan = details.plan || {};
  if (plan.refused) {
    turn.classList.add("refusal");
    turn.insertBefore(element("p", {class: "refusal-label", text: t("refused")}), turn.lastChild);
  }
  if (plan.standalone_question && plan.standalone_question !== question) {
    turn.insertBefore(element("p", {class: "standalone", text: `${t("understoodAs")} ${plan.standalone_question}`}),
                      turn.lastChild);
  }
  const facts = Object.entries({mode: details.mode, ...plan}).filter(([, value]) => value !== undefined)
    .map(([name, value]) => element("li", {}, element("b", {text: `${name}: `}),
                                    typeof value === "object" ? JSON.stringify(value) : String(value)));
  turn.append(element("details", {class: "plan"}, element("summary", {text: t("howAnswered")}),
                      element("ul", {}, ...facts)));
}

// --- sources ------------------------------------------------------------------------------------

function showSources(citations, question) {
  const terms = keyTerms(question);
  $("sources").replaceChildren(...citations.map((citation) => {
    const doc = state.documents.find((row) => row.id === citation.document);
    const name = doc ? doc.name : citation.source.split(/[\\/]/).pop();
    const where = citation.page ? ` · ${t("page")} ${citation.page}` : "";
    const context = element("div", {class: "context", hidden: ""});
    const item = element("li", {id: `source-${citation.id}`, class: "citation", "data-testid": "citation",
                                "data-name": name, "data-page": citation.page ?? ""},
      element("span", {class: "number", text: `[${citation.id}]`}),
      element("span", {class: "file", text: `${name}${where}`}),
      element("blockquote", {}, ...highlighted(citation.text, terms)),
      context);
    item.addEventListener("click", () => toggleContext(item, context, doc, citation, terms));
    return item;
  }));
}

function focusSource(number) {
  const item = $(`source-${number}`);
  if (!item) return;
  item.scrollIntoView({block: "nearest"});
  item.classList.add("focused");
  setTimeout(() => item.classList.remove("focused"), 1500);
}

async function toggleContext(item, context, doc, citation, terms) {
  if (!context.hidden) {
    context.hidden = true;
    return;
  }
  if (!doc) return;
  try {
    const page = citation.page ? `?page=${citation.page}` : "";
    const body = await api(kbPath(`/documents/${doc.id}/text${page}`));
    context.replaceChildren(...inContext(body.text, citation.text, terms));
  } catch (failure) {
    context.textContent = failure.message;
  }
  context.hidden = false;
  const passage = context.querySelector(".passage");
  if (passage) passage.scrollIntoView({block: "nearest"});
}

function keyTerms(question) {
  const words = question.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  const terms = new Set();
  for (const word of words) {
    if (/\p{Script=Han}/u.test(word)) {
      for (let i = 0; i + 1 < word.length; i++) terms.add(word.slice(i, i + 2));
    } else if (word.length > 3) {
      terms.add(word);
    }
  }
  return [...terms];
}

function highlighted(text, terms) {
  // the question's words in the passage, marked; a word is matched by its start ("cartridge" in "cartridges")
  if (!terms.length) return [text];
  const escaped = terms.map((term) => term.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(${escaped.join("|")})`, "giu");
  return text.split(pattern).map((part, i) => (i % 2 ? element("mark", {text: part}) : part));
}

function inContext(page, passage, terms) {
  // the cited passage inside its page; the page text is rebuilt from chunks, so match loosely on spaces
  const squeeze = (s) => s.replace(/\s+/g, " ").trim();
  const flat = squeeze(page);
  const at = flat.indexOf(squeeze(passage).slice(0, 80));
  if (at < 0) return highlighted(flat, terms);
  const end = Math.min(flat.length, at + squeeze(passage).length);
  return [flat.slice(0, at), element("span", {class: "passage"}, ...highlighted(flat.slice(at, end), terms)),
          flat.slice(end)];
}

// --- documents ----------------------------------------------------------------------------------

async function loadDocuments() {
  let listed;
  try {
    listed = await api(kbPath("/documents"));
  } catch (failure) {
    return;
  }
  state.documents = listed.data;
  const rows = listed.data.map((doc) => element("tr", {"data-testid": "document-row", "data-name": doc.name},
    element("td", {class: "name", text: doc.name, title: doc.source}),
    element("td", {text: doc.type}),
    element("td", {text: doc.pages ?? "–"}),
    element("td", {text: doc.chunks}),
    element("td", {text: doc.size == null ? "–" : formatSize(doc.size)}),
    element("td", {text: doc.added ? new Date(doc.added).toLocaleString(LANG === "zh" ? "zh-CN" : "en") : "–"}),
    element("td", {"data-testid": "doc-status", class: `status ${doc.status.replace(" ", "-")}`,
                   text: t(doc.status)},
      // what its last reading left out (pages without text, OCR missing or failed), on hover
      doc.warnings && doc.warnings.length ? element("span", {class: "doc-warning", "data-testid": "doc-warning",
                                                             title: doc.warnings.join("\n"), text: " ⚠"}) : null),
    element("td", {class: "actions"},
      element("button", {type: "button", "data-testid": "reindex", text: t("reindex"),
                         onclick: () => reindex(doc)}),
      element("button", {type: "button", "data-testid": "delete", text: t("delete"),
                         onclick: () => remove(doc)}))));
  if (!rows.length) rows.push(element("tr", {}, element("td", {colspan: 8, class: "empty", text: t("noDocuments")})));
  $("documents").replaceChildren(...rows);
  const busy = listed.data.some((doc) => doc.status === "queued" || doc.status === "indexing");
  clearTimeout(state.polling);
  if (busy) state.polling = setTimeout(loadDocuments, 1000);
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function remove(doc) {
  try {
    await api(kbPath(`/documents/${doc.id}`), {method: "DELETE"});
  } catch (failure) {
    alert(failure.message);
  }
  await loadDocuments();
}

async function reindex(doc) {
  const line = uploadLine(doc.name);
  try {
    const job = await api(kbPath(`/documents/${doc.id}/reindex`), {method: "POST"});
    await followJob(job, [line]);
  } catch (failure) {
    line.fail(failure.message);
  }
}

// --- uploads ------------------------------------------------------------------------------------

$("upload").addEventListener("change", (event) => {
  uploadAll([...event.target.files]);
  event.target.value = "";
});

const dropZone = $("drop-zone");
dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("over"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("over");
  uploadAll([...event.dataTransfer.files]);
});

function uploadAll(files) {
  // one request per file: each has its own progress bar, and one refused file stops no other
  for (const file of files) uploadOne(file);
}

function uploadLine(name) {
  const bar = element("progress", {max: 100, value: 0});
  const status = element("span", {class: "upload-status", text: t("uploading")});
  const line = element("li", {"data-testid": "upload-item", "data-name": name},
                       element("span", {class: "name", text: name}), bar, status);
  $("uploads").prepend(line);
  return {
    progress: (share) => { bar.value = Math.round(share * 100); },
    status: (key, chunks) => { status.textContent = t(key) + (chunks ? ` (${chunks})` : ""); },
    fail: (message) => { line.classList.add("failed"); bar.value = 100; status.textContent = message; },
    done: () => { line.classList.add("done"); bar.value = 100; },
    // how the file was read, and what was left out of it (pages without text, OCR missing or failed)
    details: (read, warnings) => {
      if (read) status.textContent += ` · ${howRead(read)}`;
      if (warnings && warnings.length) {
        line.append(element("ul", {class: "upload-warnings"},
          ...warnings.map((text) => element("li", {"data-testid": "upload-warning", text}))));
      }
    },
  };
}

function howRead(read) {
  const parts = [t("pagesRead", {n: read.pages})];
  if (read.ocr_pages && read.ocr_pages.length) parts.push(t("ocrPages", {n: read.ocr_pages.length}));
  if (read.tables) parts.push(t("tablesFound", {n: read.tables}));
  return parts.join(", ");
}

function uploadOne(file) {
  const line = uploadLine(file.name);
  if (state.maxUpload && file.size > state.maxUpload) {
    line.fail(`${t("failed")}: ${t("tooLarge", {limit: formatSize(state.maxUpload)})}`);
    return;
  }
  const form = new FormData();
  form.append("files", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", kbPath("/documents"));
  if (state.key) request.setRequestHeader("Authorization", `Bearer ${state.key}`);
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) line.progress(event.loaded / event.total);
  });
  request.addEventListener("load", () => {
    let body = null;
    try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON: reported by status below */ }
    if (request.status === 401) askForKey(true);
    if (request.status !== 202) {
      line.fail(`${t("failed")}: ${(body && body.error && body.error.message) || `HTTP ${request.status}`}`);
      return;
    }
    followJob(body, [line]);
  });
  request.addEventListener("error", () => line.fail(`${t("failed")}: ${t("error")}`));
  request.send(form);
}

async function followJob(job, lines) {
  await loadDocuments();
  while (job.status === "queued" || job.status === "running") {
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await api(`/v1/jobs/${job.id}`);
  }
  job.files.forEach((file, i) => {
    const line = lines[i];
    if (!line) return;
    if (file.status === "failed") line.fail(`${t("failed")}: ${file.error}`);
    else { line.status(file.status, file.chunks); line.done(); line.details(file.read, file.warnings); }
  });
  await loadDocuments();
}

$("url-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const url = $("url").value.trim();
  const line = uploadLine(url);
  try {
    const job = await api(kbPath("/documents"), {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify({url})});
    $("url").value = "";
    await followJob(job, [line]);
  } catch (failure) {
    line.fail(`${t("failed")}: ${failure.message}`);
  }
});

// --- search -------------------------------------------------------------------------------------

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("search").value.trim();
  const results = $("search-results");
  try {
    const found = await api(kbPath("/search"), {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({query, k: 5})});
    const terms = keyTerms(query);
    results.replaceChildren(...found.data.map((hit) => element("li", {"data-testid": "search-hit"},
      element("span", {class: "file", text: `${hit.name}${hit.page ? ` · ${t("page")} ${hit.page}` : ""}`}),
      element("span", {class: "score", text: `${t("score")} ${hit.score.toFixed(3)}`}),
      element("blockquote", {}, ...highlighted(hit.text, terms)))));
    if (!found.data.length) results.replaceChildren(element("li", {text: t("noHits")}));
  } catch (failure) {
    results.replaceChildren(element("li", {class: "error", text: failure.message}));
  }
});

translatePage();
start();
