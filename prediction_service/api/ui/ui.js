// The dashboard: models and versions, retraining with live curves, and a place to try the models.
// Plain JavaScript, no libraries: every asset comes from this service, so it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "prediction-service-admin-token"; // kept in this tab's session storage only

// ---- talking to the API -------------------------------------------------------------------------

class ApiError extends Error {}

function errorText(status, body) {
  // The API's own words: {"detail": "..."} or FastAPI's list of {loc, msg}.
  if (body && typeof body.detail === "string") return `${status}: ${body.detail}`;
  if (body && Array.isArray(body.detail)) return `${status}: ` + body.detail.map((d) => d.msg).join("\n");
  return `${status}: ${typeof body === "string" ? body : JSON.stringify(body)}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(errorText(response.status, body));
  return body;
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showError(id, error) {
  const box = $(id);
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = error instanceof ApiError ? error.message : `The request failed: ${error.message || error}`;
}

function text(tag, content, className) {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}

function percent(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(2)}%` : "–";
}

// ---- readiness and models -----------------------------------------------------------------------

async function refreshReadiness() {
  const badge = $("readiness");
  try {
    const response = await fetch("/health/ready");
    const body = await response.json();
    badge.textContent = response.ok ? "ready" : "not ready";
    badge.className = `badge ${response.ok ? "ready" : "unavailable"}`;
    badge.title = Object.entries(body.models).map(([name, m]) => `${name}: ${m.state}${m.reason ? " – " + m.reason : ""}`).join("\n");
  } catch (error) {
    badge.textContent = "unreachable";
    badge.className = "badge unavailable";
  }
}

async function refreshModels() {
  try {
    const { models } = await api("/models");
    const container = $("models");
    container.replaceChildren();
    for (const model of models) {
      container.append(text("h3", `${model.name} — serving version ${model.serving_version ?? "none"} (${model.state})`));
      if (model.reason) container.append(text("p", `${model.reason}${model.fix ? " — fix: " + model.fix : ""}`, "error"));
      const table = document.createElement("table");
      table.dataset.model = model.name;
      const head = table.createTHead().insertRow();
      for (const title of ["version", "hold-out accuracy", "created", "trained from", "gate", ""]) head.append(text("th", title));
      const body = table.createTBody();
      for (const version of [...model.versions].reverse()) {
        const row = body.insertRow();
        row.dataset.version = version.version;
        if (version.serving) row.className = "serving";
        const accuracy = version.metrics.holdout_accuracy ?? version.metrics.test_accuracy;
        row.insertCell().textContent = `${version.version}${version.serving ? " (serving)" : ""}`;
        row.insertCell().textContent = percent(accuracy);
        row.insertCell().textContent = version.created_at.replace("T", " ").replace("+00:00", " UTC");
        const origin = row.insertCell();
        origin.className = "origin";
        origin.textContent = version.training_data.description || version.source || "";
        row.insertCell().textContent = version.gate ? (version.gate.passed ? "passed" : "rejected") : "";
        const action = row.insertCell();
        if (!version.serving) {
          const button = text("button", "Activate", "secondary activate");
          button.addEventListener("click", () => activate(model.name, version.version));
          action.append(button);
        }
      }
      container.append(table);
      container.append(await learningFigures(model));
    }
    showError("models-error", null);
  } catch (error) {
    showError("models-error", error);
  }
}

// What the model has learned from its users since the serving version, when it retrains next, and its shadow.
async function learningFigures(model) {
  const box = document.createElement("div");
  box.className = "learning";
  box.dataset.model = model.name;
  try {
    const examples = await api(`/models/${model.name}/examples`);
    const labels = Object.entries(examples.by_label).map(([label, count]) => `${label}: ${count}`).join(", ");
    const sources = Object.entries(examples.by_source).map(([source, count]) => `${source} ${count}`).join(", ");
    box.append(text("p", `Examples collected since version ${examples.serving_version ?? "–"}: ${examples.total}` +
      (examples.total ? ` (${sources}; ${labels})` : ""), "examples"));
    box.append(text("p", nextRetraining(examples.automatic_retraining), "next-retraining"));
  } catch (error) {
    box.append(text("p", error.message, "error"));
  }
  const shadow = model.shadow;
  if (shadow) {
    box.append(text("p", `Shadow: version ${shadow.version} on ${percent(shadow.sample_rate)} of requests; ` +
      `${shadow.shadow_requests_compared} compared, agreement ${percent(shadow.shadow_agreement)}; ` +
      `on ${shadow.feedback_labels} with feedback: shadow ${percent(shadow.shadow_feedback_accuracy)}, ` +
      `serving ${percent(shadow.serving_feedback_accuracy)}`, "shadow"));
  }
  return box;
}

function nextRetraining(automatic) {
  if (!automatic.enabled) return "This model is not retrained automatically.";
  if (automatic.job_id) return `Automatic retraining: job ${automatic.job_id} is under way.`;
  const progress = `${automatic.new_examples} of ${automatic.min_examples} new examples`;
  if (automatic.schedule) {
    const when = automatic.next_check ? automatic.next_check.replace("T", " ").replace("+00:00", " UTC") : "–";
    return `Automatic retraining: ${progress}; next check ${when} (${automatic.schedule}).`;
  }
  return `Automatic retraining: ${progress}; it starts as soon as the threshold is reached.`;
}

// "Wrong? It's a …": the true label of the prediction just shown, as feedback.
function offerFeedback(boxId, answer, labels) {
  const box = $(boxId);
  box.replaceChildren();
  box.hidden = !answer.prediction_id;
  if (!answer.prediction_id) return;
  box.append(text("span", "Wrong? It's a "));
  for (const label of labels.filter((label) => label !== answer.result)) {
    const button = text("button", label, "secondary feedback-label");
    button.addEventListener("click", () => sendFeedback(box, answer.prediction_id, label));
    box.append(button);
  }
}

async function sendFeedback(box, predictionId, label) {
  if (!$("token").value.trim()) {
    const token = window.prompt("A feedback or admin token (kept in this tab only):");
    if (!token) return;
    $("token").value = token;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  try {
    const recorded = await api(`/predictions/${predictionId}/feedback`, {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ label }),
    });
    box.replaceChildren(text("span", `Thanks: recorded as ${recorded.label}` +
      (recorded.replaced ? ` (instead of ${recorded.replaced_label})` : "") + ".", "recorded"));
    refreshModels();
  } catch (error) {
    box.replaceChildren(text("span", error.message, "error"));
  }
}

async function activate(name, version) {
  if (!$("token").value.trim()) {
    const token = window.prompt("Admin token (kept in this tab only):");
    if (!token) return;
    $("token").value = token;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  try {
    await api(`/models/${name}/versions/${version}/activate`, { method: "POST", headers: authHeaders() });
    showError("models-error", null);
  } catch (error) {
    showError("models-error", error);
  }
  await refreshModels();
}

// ---- training: upload, live progress, curves, past jobs ------------------------------------------

let events = null;

async function upload(file) {
  showError("training-error", null);
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const job = await api("/upload-images", { method: "POST", body: form, headers: authHeaders() });
    follow(job.job_id);
    refreshJobs();
  } catch (error) {
    showError("training-error", error);
  }
}

function follow(jobId) {
  if (events) events.close();
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  events = new EventSource(`/jobs/${jobId}/events`);
  events.addEventListener("job", (message) => showJob(JSON.parse(message.data)));
  events.addEventListener("end", () => { events.close(); refreshJobs(); refreshModels(); });
  events.onerror = () => { /* the browser reconnects by itself; a finished job sends "end" */ };
}

function showJob(job) {
  $("job-id").textContent = job.job_id;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `badge ${job.status}`;
  const progress = job.progress || {};
  const parts = [];
  const finished = !["queued", "running"].includes(job.status);
  if (finished && job.finished_at) parts.push(`finished ${job.finished_at.replace("T", " ").replace("+00:00", " UTC")}`);
  else if (progress.stage) parts.push(`stage: ${progress.stage}`);
  if (progress.epochs) parts.push(`epoch ${progress.epoch || 0} of ${progress.epochs}`);
  if (typeof progress.eta_seconds === "number" && job.status === "running") parts.push(`ETA ${Math.round(progress.eta_seconds)} s`);
  if (typeof progress.loss === "number") parts.push(`loss ${progress.loss.toFixed(4)}`);
  if (typeof progress.accuracy === "number") parts.push(`accuracy ${percent(progress.accuracy)}`);
  $("job-progress").textContent = parts.join(" · ");
  drawChart($("loss-chart"), job.history, "loss", "val_loss");
  drawChart($("accuracy-chart"), job.history, "accuracy", "val_accuracy");
  const verdict = $("job-verdict");
  if (job.result) {
    const r = job.result;
    verdict.textContent = `${r.published ? "Published" : "Not published"}: version ${r.version} scored ${percent(r.holdout_accuracy)} ` +
      `on the hold-out set, against ${percent(r.serving_accuracy)} for version ${r.serving_version} (allowed drop ${percent(r.margin)}).`;
    verdict.className = r.published ? "" : "warning";
  } else if (job.error) {
    verdict.textContent = job.error;
    verdict.className = "error";
  } else {
    verdict.textContent = "";
  }
}

function drawChart(svg, history, trainKey, valKey) {
  const width = 320, height = 180, left = 34, right = 8, top = 10, bottom = 22;
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attributes) => {
    const element = document.createElementNS(ns, tag);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    svg.append(element);
    return element;
  };
  make("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" });
  make("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" });
  const points = (history || []).filter((entry) => typeof entry[trainKey] === "number");
  if (!points.length) return;
  const values = points.flatMap((entry) => [entry[trainKey], entry[valKey]]).filter((v) => typeof v === "number");
  let low = Math.min(...values), high = Math.max(...values);
  if (high - low < 1e-9) { high += 0.5; low -= 0.5; }
  const epochs = Math.max(points[points.length - 1].epochs || points.length, 2);
  const x = (epoch) => left + ((epoch - 1) / (epochs - 1)) * (width - left - right);
  const y = (value) => top + (1 - (value - low) / (high - low)) * (height - top - bottom);
  for (const [key, className] of [[trainKey, "train"], [valKey, "val"]]) {
    const series = points.filter((entry) => typeof entry[key] === "number");
    if (!series.length) continue;
    make("polyline", { class: className, points: series.map((entry) => `${x(entry.epoch)},${y(entry[key])}`).join(" ") });
    for (const entry of series) make("circle", { cx: x(entry.epoch), cy: y(entry[key]), r: 2, class: className });
  }
  make("text", { x: 2, y: top + 8 }).textContent = high.toFixed(3);
  make("text", { x: 2, y: height - bottom }).textContent = low.toFixed(3);
  make("text", { x: left, y: height - 6 }).textContent = "epoch 1";
  make("text", { x: width - right - 40, y: height - 6 }).textContent = `epoch ${epochs}`;
}

async function refreshJobs() {
  try {
    const { jobs } = await api("/jobs?limit=20");
    const body = $("jobs").tBodies[0];
    body.replaceChildren();
    for (const job of jobs) {
      const row = body.insertRow();
      row.className = "clickable";
      row.dataset.jobId = job.job_id;
      row.insertCell().textContent = job.created_at.replace("T", " ").replace("+00:00", " UTC");
      const status = row.insertCell();
      status.append(text("span", job.status, `badge ${job.status}`));
      row.insertCell().textContent = job.upload.images ?? `${job.upload.rows} penguins`;
      row.insertCell().textContent = job.result?.refused
        ? `not stored: ${job.result.refused}`
        : job.result
        ? `v${job.result.version} ${percent(job.result.holdout_accuracy)} vs v${job.result.serving_version} ${percent(job.result.serving_accuracy)}`
        : job.error || "";
      row.addEventListener("click", () => (["queued", "running"].includes(job.status) ? follow(job.job_id) : showPastJob(job.job_id)));
    }
  } catch (error) {
    showError("training-error", error);
  }
}

async function showPastJob(jobId) {
  if (events) events.close();
  try {
    $("job").hidden = false;
    showJob(await api(`/jobs/${jobId}`));
  } catch (error) {
    showError("training-error", error);
  }
}

function setUpDropzone() {
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(event.dataTransfer.files[0]);
  });
  $("zip-input").addEventListener("change", (event) => upload(event.target.files[0]));
}

// ---- try it: drawing, image file, penguin --------------------------------------------------------

function bars(container, labels, values) {
  container.replaceChildren();
  const best = values.indexOf(Math.max(...values));
  labels.forEach((label, index) => {
    container.append(text("span", label));
    const bar = text("div", "", index === best ? "bar top" : "bar");
    bar.style.width = `${Math.max(values[index] * 100, 0.5)}%`;
    bar.dataset.label = label;
    container.append(bar, text("span", percent(values[index])));
  });
}

async function predictDigit(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const answer = await api("/predict-image", { method: "POST", body: form });
    $("digit").textContent = answer.result;
    $("digit-detail").textContent = `confidence ${percent(answer.confidence)}, model version ${answer.model_version}`;
    bars($("digit-bars"), [..."0123456789"], answer.probabilities);
    offerFeedback("digit-feedback", answer, [..."0123456789"]);
    showError("digit-error", null);
  } catch (error) {
    $("digit").textContent = "–";
    $("digit-detail").textContent = "";
    $("digit-bars").replaceChildren();
    $("digit-feedback").hidden = true;
    showError("digit-error", error);
  }
}

function setUpCanvas() {
  const canvas = $("canvas");
  const context = canvas.getContext("2d");
  const clear = () => {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  context.lineWidth = 18;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = "#000";
  let drawing = false;
  let drawn = false;
  const position = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    drawn = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...position(event));
    context.lineTo(...position(event));
    context.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...position(event));
    context.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    sendDrawing();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  const sendDrawing = () => {
    if (drawn) canvas.toBlob((blob) => predictDigit(blob, "drawing.png"), "image/png");
  };
  $("predict-drawing").addEventListener("click", sendDrawing);
  $("clear").addEventListener("click", () => {
    clear();
    drawn = false;
    $("digit").textContent = "–";
    $("digit-detail").textContent = "";
    $("digit-bars").replaceChildren();
    $("digit-feedback").hidden = true;
  });
  $("image-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) predictDigit(file, file.name);
  });
}

function setUpPenguinForm() {
  $("penguin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ bill_length_mm: $("bill").value, flipper_length_mm: $("flipper").value });
    try {
      const answer = await api(`/predict?${query}`);
      $("species").textContent = answer.result;
      $("species-detail").textContent = `model version ${answer.model_version}`;
      const names = Object.keys(answer.probabilities);
      bars($("species-bars"), names, names.map((name) => answer.probabilities[name]));
      offerFeedback("species-feedback", answer, names);
      const warnings = $("penguin-warnings");
      warnings.hidden = !answer.warnings.length;
      warnings.textContent = answer.warnings.join("\n");
      showError("penguin-error", null);
    } catch (error) {
      $("species").textContent = "–";
      $("species-detail").textContent = "";
      $("species-bars").replaceChildren();
      $("species-feedback").hidden = true;
      $("penguin-warnings").hidden = true;
      showError("penguin-error", error);
    }
  });
}

// ---- start --------------------------------------------------------------------------------------

function setUpToken() {
  const input = $("token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
}

setUpToken();
setUpDropzone();
setUpCanvas();
setUpPenguinForm();
refreshReadiness();
refreshModels();
refreshJobs().then(() => {
  const running = document.querySelector("#jobs tbody tr .badge.running, #jobs tbody tr .badge.queued");
  if (running) follow(running.closest("tr").dataset.jobId);
});
setInterval(refreshReadiness, 5000);
setInterval(refreshModels, 10000);
