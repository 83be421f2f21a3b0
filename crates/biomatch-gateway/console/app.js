// The biomatch console: a client of the REST API v1 and nothing more, so what a person can do
// here is exactly what their token may do through the API. The token lives in sessionStorage
// (gone when the tab closes; never in a URL); a photo is read into the browser's memory, shown
// from a blob URL and sent once; nothing is stored. Every text from the server is set with
// textContent, never parsed as HTML.

const TOKEN = "biomatch.token";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let session = null;
let renders = 0;

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function failure(error) {
  return h("p", { class: "error", id: "error" }, error.message || String(error));
}

/** Calls the API with the session's token; throws the API's error message. */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ""}` };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = json.error || {};
    throw new Error(`${e.code || response.status}: ${e.message || "request failed"} (request ${e.request_id || "?"})`);
  }
  return json;
}

const q = encodeURIComponent;

// ---- sign in -------------------------------------------------------------------------------

function signInView(message) {
  renders++; // no view still loading may replace it
  const token = h("textarea", { id: "token", placeholder: "Paste your bearer token" });
  const submit = h("button", { id: "sign-in", onclick: () => signIn(token.value.trim()) }, "Sign in");
  show(h("section", {}, h("h2", {}, "Sign in"),
    h("p", { class: "note" }, "Your token stays in this tab only and is sent to this server alone."),
    token, h("div", {}, submit), message ? h("p", { class: "error", id: "error" }, message) : null));
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  try {
    const me = await api("GET", "/v1/session");
    if (me.role === "kiosk") {
      sessionStorage.removeItem(TOKEN);
      return signInView("This console is not for kiosk tokens: kiosks use the gRPC API.");
    }
    session = me;
    // A link opened before signing in (a search record, the queue) is kept when the role may
    // see it; otherwise home. One render: the hash change renders, or render now.
    const target = mayOpen(location.hash) ? location.hash : home();
    if (location.hash === target) render();
    else location.hash = target;
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    signInView(e.message);
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  session = null;
  location.hash = "";
  render();
}

// ---- navigation ----------------------------------------------------------------------------

const VIEWS = {
  analyst: [["#/search", "Search"], ["#/queue", "Review queue"], ["#/case", "Case"]],
  auditor: [["#/audit", "Audit log"], ["#/leaf", "Leaf proof"], ["#/checkpoint", "Checkpoint"], ["#/case", "Case"]],
  admin: [["#/galleries", "Galleries"]],
  enroller: [["#/galleries", "Galleries"]],
};

function home() {
  return (VIEWS[session.role] || [["#/galleries"]])[0][0];
}

// Whether the signed-in role may open the view that `hash` names.
function mayOpen(hash) {
  const view = hash.split("/")[1];
  return view === "s" || (VIEWS[session.role] || []).some(([href]) => href === `#/${view}`);
}

function renderNav() {
  const here = location.hash.split("/").slice(0, 2).join("/");
  nav.replaceChildren(...(VIEWS[session.role] || []).map(([href, label]) =>
    h("a", { href, class: href === here ? "active" : null }, label)),
    h("button", { id: "sign-out", onclick: signOut }, "Sign out"));
  who.textContent = `${session.subject} (${session.role})`;
}

async function render() {
  if (!session && sessionStorage.getItem(TOKEN)) {
    try { session = await api("GET", "/v1/session"); } catch { sessionStorage.removeItem(TOKEN); }
  }
  if (!session || session.role === "kiosk") {
    nav.replaceChildren();
    who.textContent = "";
    return signInView();
  }
  renderNav();
  const mine = ++renders;
  const [, view, arg] = location.hash.split("/");
  const views = { search: searchView, s: recordView, queue: queueView, case: caseView, audit: auditView,
    leaf: leafView, checkpoint: checkpointView, galleries: galleriesView };
  const allowed = mayOpen(location.hash);
  // Views build their nodes; only the latest render shows its own (a slower, older one is dropped).
  let nodes;
  try {
    nodes = await (allowed && views[view] ? views[view](arg && decodeURIComponent(arg)) : views[home().slice(2)]());
  } catch (e) {
    nodes = failure(e);
  }
  if (mine === renders) show(...[nodes].flat());
}

window.addEventListener("hashchange", render);

// ---- analyst -------------------------------------------------------------------------------

async function galleryPicker(id) {
  const page = await api("GET", "/v1/galleries?limit=100");
  return h("select", { id }, page.items.map((g) => h("option", { value: g.name }, g.name)));
}

async function searchView() {
  const galleries = await api("GET", "/v1/galleries?limit=100");
  const gallery = h("select", { id: "gallery" }, galleries.items.map((g) => h("option", { value: g.name }, g.name)));
  const purpose = h("select", { id: "purpose" });
  const purposes = () => {
    const g = galleries.items.find((x) => x.name === gallery.value);
    const mine = session.purposes;
    purpose.replaceChildren(...(g ? g.allowed_purposes : []).filter((p) => !mine || mine.includes(p))
      .map((p) => h("option", { value: p }, p)));
  };
  gallery.addEventListener("change", purposes);
  purposes();
  const caseRef = h("input", { id: "case-ref", placeholder: "case reference" });
  const file = h("input", { id: "probe-file", type: "file", accept: "image/jpeg,image/png,image/webp,.json" });
  const preview = h("div", {});
  file.addEventListener("change", () => {
    const f = file.files[0];
    preview.replaceChildren(f && f.type.startsWith("image/")
      ? h("img", { class: "probe", alt: "probe photo", src: URL.createObjectURL(f) }) : "");
  });
  const out = h("div", { id: "result" });
  const run = async () => {
    out.replaceChildren(h("p", { class: "note" }, "Searching…"));
    try {
      const f = file.files[0];
      if (!f) throw new Error("choose a photo or a vector file");
      const path = `/v1/galleries/${q(gallery.value)}/identify`;
      let answer;
      if (f.type.startsWith("image/")) {
        const form = new FormData();
        form.append("image", f);
        form.append("purpose", purpose.value);
        if (caseRef.value) form.append("case_ref", caseRef.value);
        answer = await api("POST", path, form);
      } else {
        const embedding = JSON.parse(await f.text());
        answer = await api("POST", path, { embedding, purpose: purpose.value, case_ref: caseRef.value });
      }
      out.replaceChildren(identifyResult(answer));
    } catch (e) {
      out.replaceChildren(failure(e));
    }
  };
  return [h("section", {}, h("h2", {}, "Identify"),
    h("div", { class: "row" }, h("div", {}, h("label", {}, "Gallery"), gallery), h("div", {}, h("label", {}, "Purpose"), purpose),
      h("div", {}, h("label", {}, "Case"), caseRef)),
    h("label", {}, "Photo (JPEG, PNG, WebP) or vector file (JSON array)"), file, preview,
    h("div", {}, h("button", { id: "run-search", onclick: run }, "Search"))), out];
}

function identifyResult(a) {
  const quality = a.probe_quality
    ? h("p", {}, `Probe quality ${a.probe_quality.overall.toFixed(2)}`, a.probe_quality.issues.length ? ` (${a.probe_quality.issues.join(", ")})` : "")
    : null;
  return h("section", {}, h("h2", {}, "Result"),
    h("p", {}, "Decision: ", h("span", { id: "decision", class: a.decision }, a.decision),
      ` at threshold ${a.threshold.toFixed(3)}`, a.partial ? " (partial: some shards did not answer)" : ""),
    quality,
    h("table", { id: "candidates" }, h("tr", {}, h("th", {}, "Rank"), h("th", {}, "Subject"), h("th", {}, "Score")),
      a.candidates.map((c) => h("tr", { "data-subject": c.subject_id },
        h("td", {}, c.rank), h("td", {}, c.subject_id), h("td", {}, c.score.toFixed(3))))),
    h("p", {}, h("a", { id: "open-search", href: `#/s/${q(a.search_id)}` }, "Open this search to review its candidates")));
}

async function recordView(id) {
  const r = await api("GET", `/v1/searches/${q(id)}`);
  const review = (subject, outcome) => async () => {
    try {
      await api("POST", `/v1/searches/${q(id)}/reviews`, { subject_id: subject, outcome });
      await render();
    } catch (e) {
      main.append(failure(e));
    }
  };
  return h("section", {}, h("h2", {}, `Search ${r.search_id}`),
    h("p", {}, `${r.kind} of ${r.gallery} for ${r.purpose} by ${r.searcher} at ${r.searched_at}; case ${r.case_ref || "none"}`),
    h("p", {}, "Decision: ", h("span", { class: r.decision }, r.decision),
      ` at threshold ${r.threshold.toFixed(3)} (version ${r.threshold_version}), model ${r.model_id}`),
    h("table", { id: "reviewed" }, h("tr", {}, ["Rank", "Subject", "Score", "State", "Reviews", ""].map((t) => h("th", {}, t))),
      r.candidates.map((c) => h("tr", { "data-subject": c.subject_id },
        h("td", {}, c.rank), h("td", {}, c.subject_id), h("td", {}, c.score.toFixed(3)),
        h("td", {}, h("span", { class: `state ${c.state}` }, c.state)),
        h("td", {}, c.reviews.map((x) => h("div", {}, `${x.reviewer}: ${x.outcome}`))),
        h("td", {}, session.role === "analyst" ? ["confirmed", "rejected", "inconclusive"].map((o) =>
          h("button", { class: "secondary", "data-outcome": o, onclick: review(c.subject_id, o) }, o)) : null)))));
}

async function queueView() {
  const gallery = await galleryPicker("queue-gallery");
  const list = h("div", { id: "queue" });
  const load = async (cursor) => {
    const page = await api("GET", `/v1/galleries/${q(gallery.value)}/reviews/pending?limit=20${cursor ? `&cursor=${q(cursor)}` : ""}`);
    if (!cursor) list.replaceChildren();
    list.append(...page.items.map((p) => h("p", { class: "pending" },
      h("a", { href: `#/s/${q(p.search_id)}` }, `${p.subject_id} in search ${p.search_id}`), ` first confirmed by ${p.first_reviewer}`)));
    if (!page.items.length && !cursor) list.append(h("p", { class: "note" }, "Nothing awaits a second review."));
    if (page.next_cursor) list.append(h("button", { class: "secondary", onclick: () => load(page.next_cursor) }, "More"));
  };
  gallery.addEventListener("change", () => load());
  await load();
  return h("section", {}, h("h2", {}, "Awaiting a second review"), gallery, list);
}

async function caseView(ref) {
  const input = h("input", { id: "case", value: ref || "", placeholder: "case reference" });
  const list = h("div", { id: "case-searches" });
  const section = h("section", {}, h("h2", {}, "A case's searches"), input,
    h("button", { onclick: () => { location.hash = `#/case/${q(input.value)}`; } }, "Show"), list);
  if (!ref) return section;
  const page = await api("GET", `/v1/cases/${q(ref)}/searches?limit=100`);
  list.append(h("table", {}, h("tr", {}, ["When", "Kind", "Gallery", "By", "Decision", "Candidates"].map((t) => h("th", {}, t))),
    page.items.map((s) => h("tr", {}, h("td", {}, h("a", { href: `#/s/${q(s.search_id)}` }, s.searched_at)),
      h("td", {}, s.kind), h("td", {}, s.gallery), h("td", {}, s.searcher), h("td", { class: s.decision }, s.decision),
      h("td", {}, s.candidate_count)))));
  return section;
}

// ---- auditor -------------------------------------------------------------------------------

const FILTERS = ["operation", "gallery", "actor", "subject_id", "case_ref", "from", "to"];

async function auditView() {
  const inputs = Object.fromEntries(FILTERS.map((f) => [f, h("input", { id: `filter-${f}`, placeholder: f })]));
  const table = h("table", { id: "leaves" });
  const more = h("div", {});
  let latest = 0;
  const load = async (cursor) => {
    const params = new URLSearchParams({ limit: "50", order: "desc" });
    for (const f of FILTERS) if (inputs[f].value) params.set(f, inputs[f].value);
    if (cursor) params.set("cursor", cursor);
    const mine = ++latest;
    const page = await api("GET", `/v1/audit/leaves?${params}`);
    if (mine !== latest) return; // a newer query was asked for
    params.delete("cursor");
    table.dataset.query = params.toString();
    if (!cursor) table.replaceChildren(h("tr", {}, ["#", "When", "Who", "Operation", "Gallery", "Outcome", "Detail"].map((t) => h("th", {}, t))));
    table.append(...page.items.map((l) => h("tr", { "data-index": l.index, "data-operation": l.event.operation },
      h("td", {}, h("a", { href: `#/leaf/${l.index}` }, l.index)), h("td", {}, l.appended_at),
      h("td", {}, `${l.event.actor_subject} (${l.event.actor_role})`), h("td", {}, l.event.operation),
      h("td", {}, l.event.gallery), h("td", {}, l.event.outcome),
      h("td", {}, [l.event.decision, l.event.subject_ids.join(" "), l.event.detail].filter(Boolean).join(" · ")))));
    more.replaceChildren(page.next_cursor ? h("button", { class: "secondary", onclick: () => load(page.next_cursor) }, "Older") : "");
  };
  await load();
  return h("section", {}, h("h2", {}, "Audit log"), h("div", { class: "row" }, Object.values(inputs)),
    h("button", { id: "apply-filters", onclick: () => load().catch((e) => main.append(failure(e))) }, "Apply"), table, more);
}

const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text) => new Uint8Array(text.match(/../g).map((b) => parseInt(b, 16)));

async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}

/** RFC 9162 inclusion check, in this browser: the leaf's bytes up to the checkpoint's root. */
async function checkInclusion(leaf, proof, root) {
  const bytes = Uint8Array.from(atob(leaf.leaf), (c) => c.charCodeAt(0));
  let r = await sha256(new Uint8Array([0]), bytes);
  if (hex(r) !== leaf.leaf_hash) return false;
  let f = leaf.index, s = proof.tree_size - 1;
  for (const p of proof.hashes.map(unhex)) {
    if (s === 0) return false;
    if (f % 2 === 1 || f === s) {
      r = await sha256(new Uint8Array([1]), p, r);
      while (f % 2 === 0 && f !== 0) { f = Math.floor(f / 2); s = Math.floor(s / 2); }
    } else {
      r = await sha256(new Uint8Array([1]), r, p);
    }
    f = Math.floor(f / 2); s = Math.floor(s / 2);
  }
  return s === 0 && hex(r) === root;
}

async function leafView(index) {
  const input = h("input", { id: "leaf-index", value: index || "", placeholder: "leaf index" });
  const out = h("div", {});
  const section = h("section", {}, h("h2", {}, "A leaf and its proof"), input,
    h("button", { id: "show-leaf", onclick: () => { location.hash = `#/leaf/${q(input.value)}`; } }, "Show"), out);
  if (!index) return section;
  const p = await api("GET", `/v1/audit/leaves/${q(index)}`);
  const here = await checkInclusion(p.leaf, p.proof, p.checkpoint.root_hash);
  const e = p.leaf.event;
  out.append(h("p", {}, "Server check: ", h("span", { id: "server-verified", class: p.verified ? "verified" : "failed" },
    p.verified ? "verified" : `failed: ${p.problem}`)),
    h("p", {}, "Checked in this browser: ", h("span", { id: "browser-verified", class: here ? "verified" : "failed" },
      here ? "the leaf is in the signed tree" : "the proof does not lead to the checkpoint's root")),
    h("table", {}, [["Index", p.leaf.index], ["Appended", p.leaf.appended_at], ["Who", `${e.actor_subject} (${e.actor_role})`],
      ["Operation", e.operation], ["Gallery", e.gallery], ["Outcome", e.outcome], ["Request", e.request_id],
      ["Subjects", e.subject_ids.join(" ")], ["Decision", e.decision], ["Detail", e.detail],
      ["Leaf hash", h("code", {}, p.leaf.leaf_hash)], ["Tree size", p.checkpoint.tree_size],
      ["Root", h("code", {}, p.checkpoint.root_hash)], ["Proof", p.proof.hashes.map((x) => h("div", { class: "mono" }, x))]]
      .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
  return section;
}

async function checkpointView() {
  const c = await api("GET", "/v1/audit/checkpoint");
  const key = await api("GET", "/v1/audit/public-key");
  return h("section", {}, h("h2", {}, "Latest signed checkpoint"),
    h("p", { id: "checkpoint-age" }, `${c.tree_size} leaves, signed ${c.signed_at} (${c.age_seconds} s ago)`),
    h("p", {}, `Key ${key.key_id} (${key.algorithm}) for ${key.origin}`), h("pre", { class: "mono" }, c.note));
}

// ---- admin ---------------------------------------------------------------------------------

async function galleriesView() {
  const page = await api("GET", "/v1/galleries?limit=100");
  const days = (s) => (s ? `${(s / 86400).toFixed(1)} days` : "none");
  return h("section", {}, h("h2", {}, "Galleries"),
    h("table", { id: "galleries" }, h("tr", {}, ["Name", "Subjects", "Templates", "Threshold (version)", "Retention", "Purposes", "Index", "Model"].map((t) => h("th", {}, t))),
      page.items.map((g) => h("tr", { "data-gallery": g.name }, h("td", {}, g.name), h("td", {}, g.subject_count),
        h("td", {}, g.template_count), h("td", {}, `${g.threshold.toFixed(3)} (v${g.threshold_version})`),
        h("td", {}, days(g.retention_seconds)), h("td", {}, g.allowed_purposes.join(", ")),
        h("td", {}, g.index ? g.index.kind : ""), h("td", {}, g.model_id)))));
}

render();
