// advlab lab: a small page over the lab's JSON API. No framework, no build step.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const state = { info: null, model: null, image: null, result: null, jobs: {} };
const $ = (id) => document.getElementById(id);

function withToken(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  if (options.body && typeof options.body === "string") headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => (d.loc || []).slice(-1)[0] + ": " + d.msg).join("; ");
    throw new Error(detail || ("HTTP " + response.status));
  }
  return body;
}

function post(path, body) { return api(path, { method: "POST", body: JSON.stringify(body || {}) }); }

function showError(panel, error) {
  $(panel + "-error").textContent = error ? String(error.message || error) : "";
}

function setProgress(panel, snapshot) {
  const bar = $(panel + "-progress");
  if (bar) {
    if (snapshot.progress === null) bar.removeAttribute("value"); else bar.value = snapshot.progress;
  }
  const message = $(panel + "-message");
  if (message) message.textContent = snapshot.status === "running" ? snapshot.message : snapshot.status;
}

// Start a job and follow its server-sent events until it ends; onLive sees the live fields.
async function runJob(panel, path, body, onLive) {
  showError(panel, null);
  const started = await post(path, body);
  if (!started.job) return started;  // answered at once (e.g. a model already prepared)
  state.jobs[panel] = started.job;
  return new Promise((resolve, reject) => {
    const events = new EventSource(withToken("/api/jobs/" + started.job + "/events"));
    events.onmessage = (event) => {
      const snapshot = JSON.parse(event.data);
      setProgress(panel, snapshot);
      if (onLive && snapshot.live) onLive(snapshot.live);
      if (["done", "error", "cancelled"].includes(snapshot.status)) {
        events.close();
        delete state.jobs[panel];
        if (snapshot.status === "done") resolve(snapshot.result);
        else reject(new Error(snapshot.status === "cancelled" ? "cancelled" : snapshot.error));
      }
    };
    events.onerror = () => { events.close(); reject(new Error("lost the connection to the lab")); };
  });
}

function guarded(panel, action) {
  return async () => {
    try { await action(); } catch (error) { showError(panel, error); }
  };
}

function bars(container, top, highlight) {
  const box = typeof container === "string" ? $(container) : container;
  box.innerHTML = "";
  for (const entry of top) {
    const row = document.createElement("div");
    row.className = "bar" + (entry.index === highlight ? " highlight" : "");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * entry.probability).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * entry.probability).toFixed(1) + "%";
    row.append(name, track, value);
    box.appendChild(row);
  }
}

function table(id, rows) {
  const box = $(id);
  box.innerHTML = "";
  for (const [key, value] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = key;
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(th, td);
    box.appendChild(tr);
  }
}

function fmt(value, digits = 4) { return value === null || value === undefined ? "-" : Number(value).toFixed(digits); }
function classes() { return state.model ? state.model.classes : []; }
function className(index) { return index === null || index === undefined || index < 0 ? "abstain" : classes()[index]; }

function fillClassSelect(select, withAny) {
  select.innerHTML = withAny ? '<option value="">any</option>' : "";
  classes().forEach((name, index) => {
    const option = document.createElement("option");
    option.value = index;
    option.textContent = index + ": " + name;
    select.appendChild(option);
  });
}

function selectModel(id) {
  state.model = state.info.models.find((m) => m.id === id);
  fillClassSelect($("pick-label"), true);
  fillClassSelect($("wb-target"), false);
  fillClassSelect($("fool-target"), false);
  $("status").textContent = state.model.label;
}

function needImage() {
  if (!state.image) throw new Error("pick or upload an image first");
  return state.image.image;
}

function showImage(answer) {
  state.image = answer;
  $("image-png").src = answer.png;
  const label = answer.label === null ? "uploaded (no label: the model's prediction stands in)"
    : answer.source + ", label " + answer.label_name;
  $("image-caption").textContent = label;
  bars("image-top5", answer.top5, answer.label);
  $("bd-trigger").checked = false;
  if (state.backdoorReady) toggleTrigger();
}

async function pick() {
  showError("image", null);
  const body = { model: state.model.id };
  if ($("pick-label").value !== "") body.label = Number($("pick-label").value);
  if ($("pick-index").value !== "") body.index = Number($("pick-index").value);
  showImage(await post("/api/images/pick", body));
}

async function upload() {
  showError("image", null);
  const file = $("upload").files[0];
  if (!file) return;
  const answer = await api("/api/images/upload?model=" + encodeURIComponent(state.model.id),
    { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
  showImage(answer);
}

function whiteboxBody() {
  const body = { model: state.model.id, image: needImage(), attack: $("wb-attack").value, norm: $("wb-norm").value,
    eps: Number($("wb-eps").value), seed: Number($("wb-seed").value || 0) };
  if ($("wb-steps").value !== "") body.steps = Number($("wb-steps").value);
  if ($("wb-targeted").checked) body.target = Number($("wb-target").value);
  return body;
}

async function whitebox() {
  const r = await runJob("whitebox", "/api/jobs/whitebox", whiteboxBody());
  state.result = r;
  $("wb-result").hidden = false;
  $("wb-clean").src = r.images.clean;
  $("wb-pert").src = r.images.perturbation;
  $("wb-adv").src = r.images.adversarial;
  $("wb-clean-caption").textContent = "clean: " + className(r.clean_prediction);
  $("wb-pert-caption").textContent = "perturbation x" + r.magnification.toFixed(1);
  $("wb-adv-pred").textContent = r.adversarial_prediction_name;
  $("wb-adv-pred").dataset.index = r.adversarial_prediction;
  bars("wb-top5-clean", r.top5_clean, r.label);
  bars("wb-top5-adv", r.top5_adversarial, r.label);
  table("wb-numbers", [["success", r.success ? "yes" : "no"], ["L2", fmt(r.norms.l2)], ["Linf", fmt(r.norms.linf)],
    ["L0 (values changed)", r.norms.l0], ["forward passes", r.cost.forward], ["backward passes", r.cost.backward],
    ["8-bit PNG predicted", className(r.png_prediction)]]);
  $("wb-dl-triptych").href = withToken("/api/results/" + r.result + "/triptych.png");
  $("wb-dl-adv").href = withToken("/api/results/" + r.result + "/adversarial.png");
  $("wb-dl-json").href = withToken("/api/results/" + r.result + "/numbers.json");
  $("phys-summary").textContent = "ready: the adversarial image of the last attack (" + r.attack + ")";
}

function polyline(svg, points, width, height, pad, yMax, colourOf) {
  // points: [[x, y]] in data units; draws axes, a line and coloured markers
  const ns = "http://www.w3.org/2000/svg";
  svg.innerHTML = "";
  const xs = points.map((p) => p[0]);
  const xMin = Math.min(...xs), xMax = Math.max(...xs) || 1;
  const ys = points.map((p) => p[1]);
  const yMin = Math.min(0, ...ys), yTop = yMax !== null ? yMax : Math.max(...ys, 1e-9);
  const sx = (x) => pad + (width - 2 * pad) * (x - xMin) / ((xMax - xMin) || 1);
  const sy = (y) => height - pad - (height - 2 * pad) * (y - yMin) / ((yTop - yMin) || 1);
  const axis = document.createElementNS(ns, "path");
  axis.setAttribute("d", `M${pad},${pad} V${height - pad} H${width - pad}`);
  axis.setAttribute("class", "axis");
  svg.appendChild(axis);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p) => sx(p[0]) + "," + sy(p[1])).join(" "));
  line.setAttribute("class", "line");
  svg.appendChild(line);
  if (colourOf) points.forEach((p, k) => {
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", sx(p[0])); dot.setAttribute("cy", sy(p[1])); dot.setAttribute("r", 4);
    dot.setAttribute("class", colourOf(k));
    svg.appendChild(dot);
  });
  const labels = [[pad, height - 4, fmt(xMin, 2)], [width - pad - 20, height - 4, fmt(xMax, 2)],
    [2, pad, fmt(yTop, 2)], [2, height - pad, fmt(yMin, 2)]];
  for (const [x, y, text] of labels) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.textContent = text;
    svg.appendChild(t);
  }
}

async function curve() {
  const body = whiteboxBody();
  delete body.target;
  const r = await runJob("whitebox", "/api/jobs/curve", body);
  $("wb-curve-result").hidden = false;
  polyline($("wb-curve-svg"), r.points.map((p) => [p.eps, p.true_class_probability]), 420, 200, 30, 1,
    (k) => (r.points[k].correct ? "ok" : "fooled"));
  $("wb-curve-caption").textContent = "probability of the true class against eps (" + r.attack + ", " + r.norm +
    "); red: misclassified. Smallest eps that fools: " + (r.smallest_eps_that_fools === null ? "none tried"
      : fmt(r.smallest_eps_that_fools, 3));
}

async function fooling() {
  const r = await runJob("fooling", "/api/jobs/fooling", { model: state.model.id, target: Number($("fool-target").value),
    eps: Number($("fool-eps").value), steps: Number($("fool-steps").value) });
  $("fool-result").hidden = false;
  $("fool-noise").src = r.images.noise;
  $("fool-image").src = r.images.fooling;
  $("fool-caption").textContent = "predicted " + r.prediction_name + " with " + (100 * r.confidence).toFixed(1) +
    "% for " + r.target_name + (r.fooled ? " (fooled)" : " (below 50%)");
  bars("fool-top5", r.top5, r.target);
}

function showBlackboxLive(live) {
  if (live.queries !== undefined) $("bb-queries").textContent = live.queries;
  if (live.budget !== undefined) $("bb-budget-shown").textContent = live.budget;
  if (live.best_margin !== undefined) $("bb-margin").textContent = fmt(live.best_margin);
  if (live.success !== undefined) $("bb-success").textContent = live.success ? "yes" : "not yet";
  if (live.best_image) $("bb-best").src = live.best_image;
}

async function blackbox() {
  $("bb-outcome").textContent = "";
  $("bb-queries").textContent = "0";
  const body = { model: state.model.id, image: needImage(), attack: $("bb-attack").value, norm: $("bb-norm").value,
    eps: Number($("bb-eps").value), budget: Number($("bb-budget").value), seed: Number($("bb-seed").value || 0) };
  if ($("bb-url").value.trim()) body.url = $("bb-url").value.trim();
  if ($("bb-url-token").value) body.url_token = $("bb-url-token").value;
  const r = await runJob("blackbox", "/api/jobs/blackbox", body, showBlackboxLive);
  state.result = r;
  $("bb-queries").textContent = r.queries;
  $("bb-budget-shown").textContent = r.budget;
  $("bb-success").textContent = r.success ? "yes: " + r.adversarial_prediction_name : "no";
  $("bb-best").src = r.images.adversarial;
  $("bb-outcome").textContent = r.stopped;
  const points = r.history.filter((p) => p[1] !== null);
  if (points.length > 1) polyline($("bb-history"), points, 300, 140, 26, null, null);
  $("phys-summary").textContent = "ready: the adversarial image of the last attack (" + r.attack + ")";
}

async function certify() {
  const r = await runJob("certify", "/api/jobs/certify", { model: state.model.id, image: needImage(),
    sigma: Number($("cert-sigma").value), n0: Number($("cert-n0").value), n: Number($("cert-n").value),
    alpha: Number($("cert-alpha").value) });
  $("cert-result").hidden = false;
  $("cert-summary").textContent = r.abstain
    ? "The smoothed classifier abstains at sigma " + r.sigma + " (the top class is not likely enough)."
    : "Smoothed prediction " + r.certified_class_name + ", certified L2 radius " + fmt(r.radius) + " at sigma " +
      r.sigma + " (n = " + r.n + ", alpha = " + r.alpha + "); PREDICT says " + className(r.prediction) + ".";
  const total = r.counts.reduce((a, b) => a + b, 0) || 1;
  const top = r.counts.map((c, k) => ({ index: k, name: classes()[k], probability: c / total }))
    .sort((a, b) => b.probability - a.probability).filter((e, k) => k < 5 || e.probability > 0);
  bars("cert-hist", top, r.certified_class);
  if (r.attack) {
    $("cert-adv").src = r.attack.image;
    $("cert-attack").textContent = "PGD-L2 at eps = radius (L2 " + fmt(r.attack.l2) + "): smoothed prediction " +
      className(r.attack.smoothed_prediction) + (r.attack.held ? " - the attack failed, as certified" : " - !") +
      "; base model says " + className(r.attack.base_prediction);
  } else {
    $("cert-adv").removeAttribute("src");
    $("cert-attack").textContent = "no radius, no attack";
  }
}

async function prepareBackdoor() {
  const r = await runJob("backdoor", "/api/jobs/backdoor", {});
  state.backdoorReady = true;
  $("bd-trigger").disabled = false;
  $("bd-projection").src = r.projection;
  $("bd-summary").textContent = "poisoned LeNet: clean accuracy " + fmt(r.clean_accuracy, 3) + ", attack success " +
    fmt(r.attack_success, 3) + ". SPECTRE removed " + r.removed + " of the " + r.class_size + " '" + r.target_name +
    "' images: " + r.poisons_removed + " of " + r.poisons_in_class + " poisons, " + r.clean_removed + " clean.";
  $("backdoor-message").textContent = "ready";
  if (state.image) await toggleTrigger();
}

async function toggleTrigger() {
  showError("backdoor", null);
  const r = await post("/api/backdoor/toggle", { image: needImage(), trigger: $("bd-trigger").checked });
  $("bd-image").src = r.png;
  $("bd-pred").textContent = r.prediction_name;
  $("bd-pred").dataset.index = r.prediction;
  bars("bd-top5", r.top5, r.target);
}

async function physical() {
  if (!state.result) throw new Error("run a white-box or black-box attack first: the simulation prints its result");
  const r = await runJob("physical", "/api/jobs/physical", { result: state.result.result,
    draws: Number($("phys-draws").value), seed: Number($("phys-seed").value || 0) });
  $("phys-summary").textContent = r.still_fooling + " of " + r.n + " simulated photographs still fool the model.";
  const box = $("phys-draws-shown");
  box.innerHTML = "";
  for (const draw of r.draws) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = draw.image;
    img.alt = "simulated photograph";
    const caption = document.createElement("figcaption");
    caption.textContent = draw.prediction_name + (draw.fools ? " (fools)" : " (recovered)");
    caption.className = draw.fools ? "fooled-text" : "ok-text";
    figure.append(img, caption);
    box.appendChild(figure);
  }
}

async function cancel(panel) {
  const job = state.jobs[panel];
  if (job) await post("/api/jobs/" + job + "/cancel");
}

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    $("status").textContent = "cannot reach the lab: " + error.message;
    return;
  }
  const select = $("model");
  for (const m of state.info.models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.label;
    select.appendChild(option);
  }
  select.value = state.info.default_model;
  select.onchange = () => { selectModel(select.value); state.image = null; };
  for (const name of state.info.whitebox_attacks) {
    const option = document.createElement("option");
    option.textContent = name;
    $("wb-attack").appendChild(option);
  }
  $("wb-attack").value = "pgd";
  selectModel(state.info.default_model);
  $("wb-eps").oninput = () => { $("wb-eps-value").textContent = Number($("wb-eps").value).toFixed(2); };
  $("wb-norm").onchange = () => { $("wb-eps").max = $("wb-norm").value === "l2" ? 10 : 1; };
  $("wb-attack").onchange = () => {  // C&W and L-BFGS are L2 attacks; minimal-norm attacks ignore eps
    const name = $("wb-attack").value;
    if (name === "cw" || name === "lbfgs") { $("wb-norm").value = "l2"; $("wb-norm").onchange(); }
    $("wb-eps").disabled = state.info.minimal_norm_attacks.includes(name);
  };
  $("pick").onclick = guarded("image", pick);
  $("upload").onchange = guarded("image", upload);
  $("wb-run").onclick = guarded("whitebox", whitebox);
  $("wb-curve").onclick = guarded("whitebox", curve);
  $("fool-run").onclick = guarded("fooling", fooling);
  $("bb-run").onclick = guarded("blackbox", blackbox);
  $("cert-run").onclick = guarded("certify", certify);
  $("bd-prepare").onclick = guarded("backdoor", prepareBackdoor);
  $("bd-trigger").onchange = guarded("backdoor", toggleTrigger);
  $("phys-run").onclick = guarded("physical", physical);
  for (const button of document.querySelectorAll("button.cancel")) {
    button.onclick = guarded(button.dataset.panel, () => cancel(button.dataset.panel));
  }
  document.body.dataset.ready = "1";
}

start();
