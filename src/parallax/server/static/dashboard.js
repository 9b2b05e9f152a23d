// The Parallax dashboard: the runs list (#/) and one page per run (#/runs/<id>) with the views its
// plan calls for (fan-out/merge, cohorts, task graph) and those of every run (agent lanes, the
// control log's timeline with fork, cost over time). Vanilla JS, no build step; every piece of
// run data is put in the page as text (textContent, or the Markdown renderer's DOM nodes).
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) localStorage.setItem("parallax-token", params.get("token"));
  const token = () => localStorage.getItem("parallax-token") || "";
  const app = document.getElementById("app");
  const conn = document.getElementById("conn");
  const md = window.ParallaxMarkdown;
  let teardown = () => {};

  // Helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const enc = encodeURIComponent;
  async function request(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token() } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const response = await fetch(path, init);
    if (response.status === 401) { login(); throw new Error("unauthorised"); }
    if (!response.ok) throw new Error(method + " " + path + ": " + response.status + " " + await response.text());
    return response.json();
  }
  const api = (path) => request("GET", path);
  const post = (path, body) => request("POST", path, body || {});
  const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : "");
  const fmtCost = (usd) => "$" + Number(usd || 0).toFixed(4);
  const fmtConf = (c) => (c === null || c === undefined ? "" : "conf " + Number(c).toFixed(2));
  const isPlain = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
  const roundOf = (id) => { const m = String(id).match(/\.(\d+)$/); return m ? Number(m[1]) : 0; };

  function flatten(value, prefix, out) {
    out = out || {};
    for (const [key, item] of Object.entries(value || {})) {
      const path = prefix ? prefix + "." + key : key;
      if (item && typeof item === "object" && !Array.isArray(item) && Object.keys(item).length) flatten(item, path, out);
      else if (item !== null && item !== undefined) out[path] = item;
    }
    return out;
  }
  const same = (a, b) => {
    const norm = (v) => JSON.stringify(typeof v === "string" ? v.trim().toLowerCase() : v);
    return norm(a) === norm(b);
  };

  // A value as fields: objects as <dl>, lists as <ul>, strings as Markdown.
  function valueNode(value) {
    if (value === null || value === undefined) return el("span", { class: "dim" }, "—");
    if (typeof value === "string") return value.includes("\n") || value.length > 80 ? md.render(value) : el("span", {}, value);
    if (isPlain(value)) return el("span", {}, JSON.stringify(value));
    if (Array.isArray(value)) {
      if (!value.length) return el("span", { class: "dim" }, "(none)");
      return el("ul", {}, ...value.map((v) => el("li", {}, valueNode(v))));
    }
    return fieldsNode(value);
  }
  function fieldsNode(obj) {
    const dl = el("dl", { class: "fields" });
    for (const [k, v] of Object.entries(obj)) dl.append(el("dt", {}, k), el("dd", { "data-field": k }, valueNode(v)));
    return dl;
  }

  // Login and routing

  function login() {
    teardown();
    const input = el("input", { type: "password", id: "token", autocomplete: "off" });
    input.addEventListener("change", () => { localStorage.setItem("parallax-token", input.value); route(); });
    app.replaceChildren(el("div", { id: "login" }, el("label", { for: "token" }, "The server's token (or open /?token=...)"), input));
    input.focus();
  }
  function route() {
    teardown();
    teardown = () => {};
    conn.textContent = ""; conn.dataset.state = "idle";
    if (!token()) { login(); return; }
    const match = location.hash.match(/^#\/runs\/(.+)$/);
    try {
      teardown = match ? showRun(decodeURIComponent(match[1])) : listRuns();
    } catch (err) {
      app.replaceChildren(el("pre", {}, String(err)));
    }
  }
  window.addEventListener("hashchange", route);

  // The runs list

  function listRuns() {
    document.getElementById("where").textContent = "";
    const status = el("select", { id: "status-filter" },
      ...["all", "running", "succeeded", "failed", "cancelled", "stalled", "budget_exhausted"].map((s) => el("option", { value: s }, s)));
    const name = el("input", { id: "name-filter", type: "search", placeholder: "run or plan name" });
    const body = el("tbody");
    const table = el("table", { id: "runs", "aria-label": "runs" },
      el("thead", {}, el("tr", {}, ...["run", "plan", "pattern", "status", "steps", "tokens", "cost", "started", "finished"]
        .map((h) => el("th", { scope: "col" }, h)))), body);
    status.value = sessionStorage.getItem("parallax-status-filter") || "all";
    name.value = sessionStorage.getItem("parallax-name-filter") || "";
    app.replaceChildren(el("h2", {}, "Runs"), el("div", { id: "filters" },
      el("span", {}, el("label", { for: "status-filter" }, "status"), status),
      el("span", {}, el("label", { for: "name-filter" }, "name"), name)), table);
    let runs = [];
    let stopped = false;
    let timer = null;
    function draw() {
      const want = status.value;
      const needle = name.value.trim().toLowerCase();
      sessionStorage.setItem("parallax-status-filter", want);
      sessionStorage.setItem("parallax-name-filter", name.value);
      const rows = runs.slice().reverse()
        .filter((r) => want === "all" || r.status === want)
        .filter((r) => !needle || r.run_id.toLowerCase().includes(needle) || String(r.name).toLowerCase().includes(needle))
        .map((r) => el("tr", { "data-run": r.run_id, "data-status": r.status },
          el("td", {}, el("a", { href: "#/runs/" + enc(r.run_id) }, r.run_id)), el("td", {}, r.name),
          el("td", { class: "shape" }, r.shape || ""), el("td", { class: "status " + r.status }, r.status),
          el("td", { class: "num steps" }, (r.succeeded || r.status !== "running" ? r.succeeded + "/" : "") + r.steps),
          el("td", { class: "num" }, String(r.tokens || 0)), el("td", { class: "num" }, fmtCost(r.cost_usd)),
          el("td", {}, fmtTime(r.created_at)), el("td", {}, fmtTime(r.finished_at))));
      body.replaceChildren(...rows);
      if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "dim" }, "no runs")));
    }
    async function poll() {
      try {
        runs = await api("/runs");
        conn.dataset.state = "live"; conn.textContent = "live";
        draw();
      } catch (err) {
        if (String(err.message) === "unauthorised") return;
        conn.dataset.state = "reconnecting"; conn.textContent = "reconnecting";
      }
      if (!stopped) timer = setTimeout(poll, 1500);
    }
    status.addEventListener("change", draw);
    name.addEventListener("input", draw);
    poll();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // One run

  function showRun(runId) {
    document.getElementById("where").textContent = runId;
    const runPath = "/runs/" + enc(runId);
    let run = null;
    let closed = false;

    const summary = el("div", { id: "summary", "data-status": "loading", "aria-live": "polite" }, "loading…");
    const stalled = el("div", { id: "stalled", hidden: true, role: "alert" });
    const views = el("div", { id: "views" });
    const lanes = el("div", { id: "lanes" });
    const lanesSection = el("section", { "aria-labelledby": "lanes-h" }, el("h2", { id: "lanes-h" }, "Agent lanes"), lanes);
    const chart = el("div", { id: "cost-chart" });
    const timeline = el("tbody");
    const timelineTable = el("table", { id: "timeline", "aria-label": "control log" },
      el("thead", {}, el("tr", {}, ...["seq", "time", "event", "step / agent", ""].map((h) => el("th", { scope: "col" }, h)))),
      timeline);
    app.replaceChildren(summary, stalled, views, lanesSection,
      el("section", { "aria-labelledby": "cost-h" }, el("h2", { id: "cost-h" }, "Cost and tokens over time"), chart),
      el("section", { "aria-labelledby": "tl-h" }, el("h2", { id: "tl-h" }, "Timeline (control log)"),
        el("p", { class: "dim" }, "Fork the run after any record: the new run keeps the log up to it and carries on from there."),
        el("div", { id: "timeline-wrap" }, timelineTable)));

    // Lanes: one per agent step, placed once (in a pattern view, or in #lanes); streamed text
    // as Markdown until the step's output arrives, then the output as fields instead of it.
    const laneOf = {};
    function lane(stepId) {
      let l = laneOf[stepId];
      if (!l) {
        const status = el("span", { class: "status pending" }, "pending");
        const stream = el("div", { class: "stream", "aria-live": "off" });
        const output = el("div", { class: "output" });
        const title = el("span", { class: "step-id" }, stepId);
        const node = el("article", { class: "lane", "data-step": stepId, "data-status": "pending", "aria-label": "step " + stepId },
          el("h3", {}, title, status), stream, output);
        l = laneOf[stepId] = { node, status, stream, output, title, text: "", done: false, drawn: false };
      }
      return l;
    }
    function setStatus(stepId, status, extra) {
      const l = lane(stepId);
      l.status.textContent = status + (extra ? " · " + extra : "");
      l.status.className = "status " + status;
      l.node.dataset.status = status;
    }
    function drawStream(l) {
      l.drawn = false;
      if (l.done) return;
      const text = l.text;
      const trimmed = text.trimStart();
      l.stream.replaceChildren(trimmed.startsWith("{") || trimmed.startsWith("[")
        ? el("pre", {}, text) : md.render(text));
      l.stream.scrollTop = l.stream.scrollHeight;
    }
    function chunk(stepId, text) {
      const l = lane(stepId);
      if (l.done) return; // the output replaced the stream
      l.text += text;
      if (!l.drawn) { l.drawn = true; requestAnimationFrame(() => drawStream(l)); }
    }
    function setOutput(step) {
      const l = lane(step.id);
      if (l.done) return;
      l.done = true;
      l.stream.replaceChildren();
      l.stream.hidden = true;
      l.output.replaceChildren(outputNode(step));
    }
    function outputNode(step) {
      const out = step.output;
      if (step.kind === "merge") {
        const conflicts = out && Array.isArray(out.conflicts) ? out.conflicts.length : 0;
        return el("p", { class: "dim" }, `merged ${step.after.length} contributions, ${conflicts} conflict(s): see the merged document`);
      }
      if (step.kind === "gate") return fieldsNode(out || {});
      if (out && typeof out === "object" && Array.isArray(out.actions)) return decisionsNode(out);
      if (out && typeof out === "object" && "summary" in out && "recommendation" in out) return synthesisNode(out);
      if (typeof out === "string") return md.render(out);
      if (out && typeof out === "object" && !Array.isArray(out)) return fieldsNode(out);
      return valueNode(out);
    }
    function decisionsNode(out) {
      return el("div", { class: "decisions" },
        out.reasoning ? el("p", { class: "reasoning" }, out.reasoning) : null,
        ...out.actions.map((a) => el("span", { class: "decision", "data-action": a.action },
          a.action + (a.to ? " → " + a.to : "") + (a.cohort ? " " + a.cohort : "") + (a.name ? " " + a.name : "")
          + (a.text ? ": " + a.text : "") + (a.phase ? " " + a.phase : ""))));
    }
    function synthesisNode(out) {
      const list = (title, items) => (Array.isArray(items) && items.length
        ? el("div", {}, el("h4", {}, title), el("ul", {}, ...items.map((i) => el("li", {}, valueNode(i))))) : null);
      const known = new Set(["summary", "agreements", "disagreements", "recommendation", "confidence"]);
      const rest = Object.fromEntries(Object.entries(out).filter(([k]) => !known.has(k)));
      return el("div", { class: "synthesis" },
        el("div", { class: "summary-text" }, md.render(String(out.summary || ""))),
        list("Where the cohorts agree", out.agreements), list("Where they disagree", out.disagreements),
        out.recommendation ? el("div", {}, el("h4", {}, "Recommendation"), md.render(String(out.recommendation))) : null,
        out.confidence !== undefined ? el("p", { class: "dim" }, fmtConf(out.confidence)) : null,
        Object.keys(rest).length ? fieldsNode(rest) : null);
    }
    function gateButtons(step) {
      const l = lane(step.id);
      const existing = l.node.querySelector(".decide");
      if (step.kind !== "gate" || step.status !== "waiting") { if (existing) existing.remove(); return; }
      if (existing) return;
      const decide = (approved) => async () => {
        box.remove();
        await post(runPath + "/approve", { step: step.id, approved, by: "dashboard" });
        soon();
      };
      const box = el("div", { class: "decide" },
        el("button", { class: "approve primary", onclick: decide(true) }, "approve"),
        el("button", { class: "reject danger", onclick: decide(false) }, "reject"));
      l.node.append(box);
    }

    // The pattern views

    const placed = new Set(); // steps whose lane sits in a pattern view
    function place(stepId, parent) {
      const l = lane(stepId);
      placed.add(stepId);
      if (l.node.parentNode !== parent) parent.append(l.node);
    }

    const mergeView = { root: null };
    function drawMerge() {
      const merges = run.steps.filter((s) => s.kind === "merge");
      if (!merges.length) return;
      if (!mergeView.root) {
        mergeView.root = el("section", { id: "merge-view", "aria-labelledby": "merge-h" }, el("h2", { id: "merge-h" }, "Merged document"));
        views.append(mergeView.root);
      }
      const stepsById = Object.fromEntries(run.steps.map((s) => [s.id, s]));
      const blocks = merges.map((m) => mergeBlock(m, stepsById));
      mergeView.root.replaceChildren(mergeView.root.firstChild, ...blocks);
    }
    function mergeBlock(m, stepsById) {
      const head = el("h3", {}, m.id + " ", el("span", { class: "status " + m.status }, m.status));
      const inputs = m.after.map((a) => stepsById[a]).filter(Boolean);
      if (!m.output || typeof m.output !== "object" || !m.output.document) {
        return el("div", { class: "merge", "data-step": m.id, "data-state": "waiting" }, head,
          el("p", { class: "dim" }, "Waiting for the contributions: "),
          el("ul", { class: "waiting-inputs" }, ...inputs.map((s) => el("li", {}, s.id + " ", el("span", { class: "status " + s.status }, s.status)))));
      }
      const doc = m.output.document;
      const sections = m.sections || {};
      const conflicts = (m.output.conflicts || run.conflicts.filter((c) => c.step === m.id));
      const confidenceOf = (agent) => {
        const s = stepsById[agent];
        return s && s.confidence !== null ? s.confidence : null;
      };
      // path -> agent -> value, from each section; plus fields outside the sections (agreed)
      const byPath = {};
      const order = [];
      for (const [key, value] of Object.entries(doc)) {
        const agent = sections[key];
        if (agent && value && typeof value === "object" && !Array.isArray(value)) {
          for (const [path, v] of Object.entries(flatten(value))) {
            if (!byPath[path]) { byPath[path] = { values: {}, agreed: undefined }; order.push(path); }
            byPath[path].values[agent] = v;
          }
        } else if (!agent) {
          for (const [path, v] of Object.entries(isPlain(value) || Array.isArray(value) ? { [key]: value } : flatten(value, key))) {
            if (!byPath[path]) { byPath[path] = { values: {}, agreed: undefined }; order.push(path); }
            byPath[path].agreed = v;
          }
        }
      }
      const conflictAt = {};
      const elsewhere = [];
      for (const c of conflicts) {
        if (c.kind === "disagreement" && byPath[c.path]) (conflictAt[c.path] = conflictAt[c.path] || []).push(c);
        else elsewhere.push(c);
      }
      const rows = order.map((path) => {
        const entry = byPath[path];
        const here = conflictAt[path];
        if (here) {
          const c = here[0];
          const contributors = Object.keys(c.values).length ? c.values : entry.values;
          return el("tr", { class: "conflict", "data-path": path },
            el("th", { scope: "row", class: "path" }, path),
            el("td", {}, el("div", { class: "kind" }, "disagreement: not merged"),
              el("div", { class: "contribs" }, ...Object.entries(contributors).map(([agent, v]) => el("div", { class: "contrib", "data-agent": agent },
                el("div", { class: "who" }, agent + (confidenceOf(agent) !== null ? " · " + fmtConf(confidenceOf(agent)) : "")),
                valueNode(v))))),
            el("td", { class: "by" }, "filled differently by " + Object.keys(contributors).join(", ")));
        }
        if (entry.agreed !== undefined) {
          const agents = Object.keys(entry.values).filter((a) => same(entry.values[a], entry.agreed));
          return el("tr", { class: "agreed", "data-path": path }, el("th", { scope: "row", class: "path" }, path),
            el("td", {}, valueNode(entry.agreed)),
            el("td", { class: "by" }, "filled by " + (agents.length ? agents.join(", ") : Object.keys(sections).map((s) => sections[s]).join(", ")) + " (agreed)"));
        }
        const agents = Object.keys(entry.values);
        const values = Object.values(entry.values);
        if (agents.length === 1 || values.every((v) => same(v, values[0]))) {
          return el("tr", { class: "filled", "data-path": path }, el("th", { scope: "row", class: "path" }, path),
            el("td", {}, valueNode(values[0])), el("td", { class: "by" }, "filled by " + agents.join(", ")));
        }
        return el("tr", { class: "each", "data-path": path }, el("th", { scope: "row", class: "path" }, path),
          el("td", {}, el("div", { class: "contribs" }, ...agents.map((agent) => el("div", { class: "contrib", "data-agent": agent },
            el("div", { class: "who" }, agent), valueNode(entry.values[agent]))))),
          el("td", { class: "by" }, "each contributor's own (not compared)"));
      });
      for (const c of elsewhere) {
        rows.push(el("tr", { class: c.kind === "gap" ? "gap conflict" : "conflict", "data-path": c.path, "data-kind": c.kind },
          el("th", { scope: "row", class: "path" }, c.path),
          el("td", {}, el("div", { class: "kind" }, c.kind === "gap" ? "gap: missing" : c.kind), c.message),
          el("td", { class: "by" }, c.agents.join(", "))));
      }
      const counts = conflicts.length ? `${conflicts.length} conflict(s)` : "no conflicts";
      return el("div", { class: "merge", "data-step": m.id, "data-state": "merged" }, head,
        el("p", { class: "dim" }, `${inputs.length} contributions, ${counts}. Sections: `
          + Object.entries(sections).map(([s, a]) => (s === a ? s : s + " ← " + a)).join(", ")),
        el("table", { class: "merged-fields", "aria-label": "merged fields of " + m.id },
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "field"), el("th", { scope: "col" }, "value"), el("th", { scope: "col" }, "filled by"))),
          el("tbody", {}, ...rows)));
    }

    const cohortView = { root: null, grid: null, synth: null, matrix: null, topo: null, known: new Set() };
    function drawCohorts() {
      const session = (run.sessions && run.sessions.moderator) || null;
      const members = run.steps.filter((s) => s.cohort);
      if (!members.length && !session) return;
      if (!cohortView.root) {
        cohortView.synth = el("div", { id: "synthesis-slot" });
        cohortView.matrix = el("div", { id: "divergence-slot" });
        cohortView.grid = el("div", { id: "cohort-grid" });
        cohortView.topo = el("ul", { id: "topology" });
        cohortView.status = el("p", { id: "cohort-status", class: "dim" });
        cohortView.root = el("section", { id: "cohorts-view", "aria-labelledby": "cohorts-h" },
          el("h2", { id: "cohorts-h" }, "Cohorts"), cohortView.status,
          el("h3", {}, "Synthesis"), cohortView.synth,
          el("h3", {}, "Divergence between cohorts"), cohortView.matrix,
          cohortView.grid, el("h3", {}, "Topology changes"), cohortView.topo);
        views.append(cohortView.root);
      }
      const cohorts = [];
      for (const c of Object.keys((session && session.members) || {})) cohorts.push(c);
      for (const s of members) if (!cohorts.includes(s.cohort)) cohorts.push(s.cohort);
      const active = new Set((session && session.active) || cohorts);
      cohortView.status.textContent = session
        ? `round ${session.rounds} · phase ${Number(session.phase) + 1} · active: ${[...active].join(", ")}` + (session.concluded ? " · concluded" : "")
        : "";
      // synthesis at the top
      const synthesis = run.steps.find((s) => s.id === "synthesis" || s.role === "synthesis");
      if (synthesis) place(synthesis.id, cohortView.synth);
      else if (!cohortView.synth.firstChild) cohortView.synth.append(el("p", { class: "dim" }, "not yet: the moderator writes it when the cohorts are done"));
      if (synthesis && cohortView.synth.firstChild && cohortView.synth.firstChild.tagName === "P") cohortView.synth.firstChild.remove();
      cohortView.matrix.replaceChildren(divergenceNode(run.divergence, cohorts));
      // one column per cohort; a row per round, the moderator's band after it
      const grid = cohortView.grid;
      grid.style.gridTemplateColumns = `repeat(${Math.max(cohorts.length, 1)}, minmax(220px, 1fr))`;
      const rounds = new Set(members.map((s) => roundOf(s.id)));
      for (const s of run.steps) if (/^(moderator|round|decide)\.\d+$/.test(s.id)) rounds.add(roundOf(s.id));
      const heads = cohorts.map((c) => {
        const head = el("div", { class: "cohort-head", "data-cohort": c }, c,
          active.has(c) ? null : el("span", { class: "dim" }, " (inactive)"),
          session && session.reads && session.reads[c] && session.reads[c].length ? el("div", { class: "dim" }, "reads " + session.reads[c].join(", ")) : null);
        if (cohortView.known.size && !cohortView.known.has(c)) head.classList.add("new");
        return head;
      });
      const cells = [];
      for (const r of [...rounds].sort((a, b) => a - b)) {
        const roundStep = run.steps.find((s) => s.id === "round." + r);
        const phase = roundStep && roundStep.output && roundStep.output.phase ? " · " + roundStep.output.phase : "";
        cells.push(el("div", { class: "round-label" }, "round " + r + phase));
        for (const c of cohorts) {
          const col = el("div", { class: "turns", "data-cohort": c, "data-round": r });
          for (const s of members.filter((m) => m.cohort === c && roundOf(m.id) === r)) place(s.id, col);
          cells.push(col);
        }
        const mod = run.steps.find((s) => s.id === "moderator." + r);
        const decide = run.steps.find((s) => s.id === "decide." + r);
        if (mod || decide) {
          const band = el("div", { class: "band", "data-round": r, "aria-label": "moderator, round " + r },
            el("div", { class: "dim" }, "moderator after round " + r));
          if (mod) place(mod.id, band);
          if (decide && decide.output) {
            const o = decide.output;
            band.append(el("div", { class: "dim decide-outcome" },
              o.concluded ? "concluded" + (o.divergence !== undefined ? ` · divergence ${Number(o.divergence).toFixed(2)}` : "")
                : `next: round ${o.next_round}` + (o.phase ? ` · phase ${o.phase}` : "") + (o.cohorts ? ` · ${o.cohorts.join(", ")}` : "")));
          }
          cells.push(band);
        }
      }
      grid.replaceChildren(...heads, ...cells);
      for (const c of cohorts) cohortView.known.add(c);
      // live topology changes: requests and what became of them, the moderator's log
      const items = [];
      for (const r of run.requests || []) {
        items.push(el("li", { "data-seq": r.seq }, `#${r.seq} ${r.action || ""} ${r.cohort || r.to || r.name || ""} by ${r.by || "?"}: ${r.outcome}`));
      }
      for (const line of (session && session.log) || []) items.push(el("li", { class: "dim" }, line));
      cohortView.topo.replaceChildren(...items);
    }
    function divergenceNode(div, cohorts) {
      if (!div || !div.similarity) return el("p", { class: "dim" }, "measured when the cohorts conclude");
      const names = div.cohorts && div.cohorts.length ? div.cohorts : cohorts;
      const cell = (a, b) => {
        if (a === b) return el("td", { class: "dim" }, "—");
        const key = div.similarity[a + "|" + b] !== undefined ? a + "|" + b : b + "|" + a;
        const s = div.similarity[key];
        if (s === undefined) return el("td", { class: "dim" }, "?");
        const agree = div.agreement ? div.agreement[key] : undefined;
        const d = 1 - s;
        return el("td", { "data-pair": key, style: `background: rgba(255, 123, 114, ${(0.12 + 0.5 * d).toFixed(2)})`,
          title: `similarity ${s}` }, d.toFixed(2) + (agree === undefined ? "" : agree ? " ✓" : " ✗"));
      };
      return el("div", {},
        el("table", { id: "divergence", "aria-label": "divergence per pair of cohorts (0 same, 1 opposed; ✓ agree)" },
          el("thead", {}, el("tr", {}, el("th", {}), ...names.map((n) => el("th", { scope: "col" }, n)))),
          el("tbody", {}, ...names.map((a) => el("tr", {}, el("th", { scope: "row" }, a), ...names.map((b) => cell(a, b)))))),
        el("p", { class: "dim" }, `divergence ${Number(div.divergence).toFixed(2)} (${div.measure || "?"}); cells: 1 − similarity, ✓ the pair agrees`));
    }

    const taskView = { root: null, graph: null, detail: null, chosen: null };
    function drawTasks() {
      if (!run.tasks) return;
      if (!taskView.root) {
        taskView.graph = el("div", { id: "task-graph" });
        taskView.detail = el("div", { id: "task-detail", "aria-live": "polite" }, el("p", { class: "dim" }, "Choose a task for its diff and verify output."));
        taskView.root = el("section", { id: "tasks-view", "aria-labelledby": "tasks-h" }, el("h2", { id: "tasks-h" }, "Task graph"),
          taskView.graph, el("h3", {}, "Task"), taskView.detail);
        views.append(taskView.root);
      }
      const tasks = run.tasks;
      const depth = {};
      const depthOf = (id) => {
        if (depth[id] !== undefined) return depth[id];
        depth[id] = 0;
        depth[id] = Math.max(0, ...(tasks[id].after || []).filter((d) => tasks[d]).map((d) => depthOf(d) + 1));
        return depth[id];
      };
      const layers = [];
      for (const id of Object.keys(tasks)) (layers[depthOf(id)] = layers[depthOf(id)] || []).push(id);
      taskView.graph.replaceChildren(...layers.map((ids, i) => el("div", { class: "layer", "aria-label": "layer " + (i + 1) },
        ...ids.map((id) => {
          const t = tasks[id];
          return el("button", { class: "task", "data-task": id, "data-status": t.status, "aria-pressed": String(taskView.chosen === id),
            onclick: () => { taskView.chosen = id; drawTasks(); showTask(id); } },
            el("div", {}, el("strong", {}, id), " ", el("span", { class: "status " + t.status }, t.status)),
            el("div", { class: "dim" }, `attempt ${t.attempt}` + (t.holder && ["claimed", "running"].includes(t.status) ? ` · held by ${t.holder}` : "")),
            el("div", { class: "dim" }, "writes " + (t.writes || []).join(", ")),
            t.after && t.after.length ? el("div", { class: "dim" }, "after " + t.after.join(", ")) : null,
            t.status === "merged" ? el("div", { class: "merged" }, "integrated") : null,
            t.status === "succeeded" && t.review ? el("div", { class: "waiting" }, "waiting for review") : null,
            t.feedback ? el("div", { class: "failed" }, "sent back: " + t.feedback) : null,
            t.error ? el("div", { class: "failed" }, t.error) : null);
        }))));
      if (taskView.chosen && tasks[taskView.chosen]) refreshTaskButtons(taskView.chosen);
    }
    function refreshTaskButtons(id) {
      const t = run.tasks[id];
      const box = taskView.detail.querySelector(".review");
      if (!box) return;
      const waiting = t.review && t.status === "succeeded";
      box.hidden = !waiting;
    }
    async function showTask(id) {
      const detail = taskView.detail;
      const note = el("input", { id: "review-note", type: "text", placeholder: "what the agent should know" });
      const review = el("div", { class: "review", hidden: true },
        el("label", { for: "review-note" }, "note"), note, " ",
        el("button", { class: "approve primary", onclick: () => decide(true) }, "approve (merge)"), " ",
        el("button", { class: "reject danger", onclick: () => decide(false) }, "reject (send back)"));
      const outcome = el("p", { class: "outcome", role: "status" });
      detail.replaceChildren(el("p", {}, "loading " + id + "…"));
      async function decide(approve) {
        try {
          const result = await post(`${runPath}/tasks/${enc(id)}/review`, { approve, note: note.value, by: "dashboard" });
          outcome.textContent = result.outcome;
        } catch (err) { outcome.textContent = String(err.message); }
        soon();
      }
      let diff;
      try { diff = await api(`${runPath}/tasks/${enc(id)}/diff`); } catch (err) { diff = { diff: "", verify: "", error: String(err.message) }; }
      const t = run.tasks[id];
      detail.replaceChildren(el("div", { "data-task": id },
        el("p", {}, el("strong", {}, id), " · ", el("span", { class: "status " + t.status }, t.status), ` · attempt ${t.attempt}`),
        diff.error ? el("p", { class: "dim" }, diff.error) : el("pre", { class: "diff", "aria-label": "diff of " + id }, diffNode(diff.diff)),
        el("h4", {}, "verify"), el("pre", { class: "verify" }, diff.verify || ""), review, outcome));
      refreshTaskButtons(id);
    }
    function highlight(code) {
      // strings, comments and keywords of the common languages, as text nodes in spans
      const frag = document.createDocumentFragment();
      const pattern = /("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(#.*$|\/\/.*$)|\b(def|class|return|import|from|if|else|elif|for|while|in|not|and|or|const|let|var|function|async|await|None|True|False|null|true|false|self|this|new|try|except|catch|finally|with|as|pass|raise|throw)\b/g;
      let last = 0;
      let m;
      while ((m = pattern.exec(code)) !== null) {
        if (m.index > last) frag.append(document.createTextNode(code.slice(last, m.index)));
        frag.append(el("span", { class: m[1] ? "str" : m[2] ? "com" : "kw" }, m[0]));
        last = pattern.lastIndex;
      }
      if (last < code.length) frag.append(document.createTextNode(code.slice(last)));
      return frag;
    }
    function diffNode(text) {
      const frag = document.createDocumentFragment();
      for (const line of String(text || "").split("\n")) {
        let node;
        if (/^(diff --git|index |--- |\+\+\+ )/.test(line)) node = el("span", { class: "meta" }, line);
        else if (line.startsWith("@@")) node = el("span", { class: "hunk" }, line);
        else if (line.startsWith("+")) node = el("span", { class: "add" }, "+", highlight(line.slice(1)));
        else if (line.startsWith("-")) node = el("span", { class: "del" }, "-", highlight(line.slice(1)));
        else node = el("span", {}, highlight(line));
        frag.append(node, "\n");
      }
      return frag;
    }

    // Every run: header, stalled state, cost over time, timeline with fork

    function drawSummary() {
      const u = run.usage;
      const done = run.steps.filter((s) => s.status === "succeeded").length;
      const finished = ["succeeded", "failed", "cancelled", "budget_exhausted"].includes(run.status);
      summary.dataset.status = run.status;
      summary.dataset.stalled = String(Boolean(run.stalled));
      const buttons = [];
      if (!finished) buttons.push(el("button", { id: "cancel", class: "danger", onclick: async () => { await post(runPath + "/cancel"); soon(); } }, "cancel"));
      if (!finished && (run.stalled || !run.live)) buttons.push(el("button", { id: "resume", class: "primary", onclick: async () => { await post(runPath + "/resume"); soon(); } }, "resume"));
      summary.replaceChildren(...[
        el("span", { class: "title" }, run.plan || "?"),
        el("span", { class: "badge" }, run.shape || ""),
        el("span", { class: "status " + (run.stalled ? "stalled" : run.status), id: "run-status" }, run.stalled ? "stalled" : run.status),
        el("span", {}, `${done}/${run.steps.length} steps`),
        el("span", {}, `${u.input_tokens + u.output_tokens} tokens`),
        el("span", {}, fmtCost(u.cost_usd)),
        el("span", { class: "dim" }, "started " + fmtTime(run.created_at) + (run.finished_at ? " · finished " + fmtTime(run.finished_at) : "")),
        run.forked_from ? el("span", { class: "dim" }, "forked from ", el("a", { href: "#/runs/" + enc(run.forked_from[0]) }, run.forked_from[0]), " at " + run.forked_from[1]) : null,
        ...buttons].filter(Boolean));
      stalled.hidden = !run.stalled;
      if (run.stalled) {
        stalled.replaceChildren("Stalled: the run is not finished and its coordinator has stopped (killed, crashed, or its server went away). ",
          el("button", { class: "primary", onclick: async () => { await post(runPath + "/resume"); soon(); } }, "resume it here"));
      }
    }

    const usagePoints = []; // [timestamp, tokens so far, cost so far]
    let tokensSoFar = 0;
    let costSoFar = 0;
    function drawChart() {
      const w = 640, h = 140, pad = 30;
      if (!usagePoints.length) { chart.replaceChildren(el("p", { class: "dim" }, "no usage yet")); return; }
      const t0 = usagePoints[0][0];
      const t1 = Math.max(usagePoints[usagePoints.length - 1][0], t0 + 1);
      const maxTok = Math.max(1, ...usagePoints.map((p) => p[1]));
      const maxCost = Math.max(1e-9, ...usagePoints.map((p) => p[2]));
      const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
      const line = (i, max) => usagePoints.map((p, k) => (k ? "L" : "M") + x(p[0]).toFixed(1) + " " + (h - pad - (p[i] / max) * (h - 2 * pad)).toFixed(1)).join(" ");
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", String(w)); svg.setAttribute("height", String(h));
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", `tokens and cost over time: ${tokensSoFar} tokens, ${fmtCost(costSoFar)}`);
      const path = (d, color, dash) => { const p = document.createElementNS(ns, "path"); p.setAttribute("d", d); p.setAttribute("fill", "none"); p.setAttribute("stroke", color); p.setAttribute("stroke-width", "2"); if (dash) p.setAttribute("stroke-dasharray", "5 4"); return p; };
      const text = (tx, ty, s, color) => { const t = document.createElementNS(ns, "text"); t.setAttribute("x", String(tx)); t.setAttribute("y", String(ty)); t.setAttribute("fill", color); t.setAttribute("font-size", "11"); t.textContent = s; return t; };
      svg.append(path(line(1, maxTok), "#79c0ff"), path(line(2, maxCost), "#56d364", true),
        text(pad, 14, `tokens ${tokensSoFar}`, "#79c0ff"), text(pad + 140, 14, `cost ${fmtCost(costSoFar)}`, "#56d364"),
        text(pad, h - 8, new Date(t0).toLocaleTimeString(), "#a3abbb"), text(w - pad - 60, h - 8, new Date(t1).toLocaleTimeString(), "#a3abbb"));
      chart.replaceChildren(svg);
    }
    let chartPending = false;
    function addUsage(rec) {
      const usage = rec.body && typeof rec.body === "object" ? rec.body.usage : null;
      const type = rec.headers.type;
      if (!usage || (type !== "step.output" && type !== "step.failed")) return;
      tokensSoFar += (usage.input_tokens || 0) + (usage.output_tokens || 0);
      costSoFar += usage.cost_usd || 0;
      usagePoints.push([rec.timestamp, tokensSoFar, costSoFar]);
      if (!chartPending) { chartPending = true; requestAnimationFrame(() => { chartPending = false; drawChart(); }); }
    }

    function addTimeline(rec) {
      const h = rec.headers;
      const task = rec.body && typeof rec.body === "object" && typeof rec.body.task === "string" ? "task " + rec.body.task : null;
      const who = [h.step, h.agent && h.agent !== h.step ? h.agent : null, task].filter(Boolean).join(" / ");
      const fork = el("button", { class: "fork", "data-seq": rec.seq, "aria-label": `fork the run after record ${rec.seq}`,
        onclick: async () => {
          try {
            const result = await post(runPath + "/fork", { at: rec.seq + 1 });
            location.hash = "#/runs/" + enc(result.run_id);
          } catch (err) { fork.textContent = "fork failed"; fork.title = String(err.message); }
        } }, "fork after");
      timeline.append(el("tr", { "data-seq": rec.seq, "data-type": h.type || "" },
        el("td", { class: "seq" }, String(rec.seq)), el("td", { class: "dim" }, new Date(rec.timestamp).toLocaleTimeString()),
        el("td", {}, h.type || "(record)"), el("td", {}, who), el("td", {}, fork)));
    }

    // Refresh from GET /runs/{id}, on control events (debounced)

    async function refresh() {
      try {
        run = await api(runPath);
      } catch (err) {
        if (String(err.message) === "unauthorised") return;
        if (!run) summary.textContent = String(err.message);
        return;
      }
      if (closed) return;
      drawSummary();
      drawMerge();
      drawCohorts();
      drawTasks();
      for (const step of run.steps) {
        const isAgentLike = step.kind !== "control";
        if (!isAgentLike) continue;
        lane(step.id);
        if (!placed.has(step.id) && laneOf[step.id].node.parentNode !== lanes) lanes.append(laneOf[step.id].node);
        setStatus(step.id, step.status, fmtConf(step.confidence) + (step.attempts > 1 ? ` · attempt ${step.attempts}` : ""));
        if (step.status === "succeeded" && step.output !== null && step.output !== undefined) setOutput(step);
        if (step.status === "failed" && step.error && !laneOf[step.id].node.querySelector(".error")) {
          laneOf[step.id].node.append(el("p", { class: "error failed" }, step.error));
        }
        gateButtons(step);
      }
      lanesSection.hidden = !lanes.children.length;
    }
    drawChart();
    let pending = null;
    const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 120); };
    refresh();

    // The live feed: resumable (each event's id is a cursor; EventSource sends it back as
    // Last-Event-ID when it reconnects, after a network error or a server restart).
    const source = new EventSource(`${runPath}/live?token=${enc(token())}`);
    source.addEventListener("open", () => { conn.dataset.state = "live"; conn.textContent = "live"; soon(); });
    source.addEventListener("error", () => { conn.dataset.state = "reconnecting"; conn.textContent = "reconnecting"; });
    source.addEventListener("control", (e) => {
      const rec = JSON.parse(e.data);
      addTimeline(rec);
      addUsage(rec);
      if (rec.headers.step && rec.headers.type === "step.started" && laneOf[rec.headers.step]) setStatus(rec.headers.step, "running");
      soon();
    });
    source.addEventListener("agent", (e) => {
      const rec = JSON.parse(e.data);
      const step = rec.stream.split("/").pop();
      if (rec.headers.type === "agent.chunk" && rec.body && typeof rec.body.text === "string") chunk(step, rec.body.text);
    });
    return () => { closed = true; source.close(); clearTimeout(pending); };
  }

  route();
})();
