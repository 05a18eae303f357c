// The ganforge playground: plain JavaScript over the service's own HTTP API.
//   POST /generate          digits as base64 PNGs (no token)
//   GET  /interpolate       a PNG strip between two seeds (no token)
//   GET  /models            the model picker and its metrics
//   /jobs...                list, submit, cancel, sample grids, loss curves (bearer token)

const $ = (id) => document.getElementById(id);
const MAX_SEED = 4294967295;
const TOKEN_KEY = "ganforge.token";
const FINISHED = new Set(["SUCCESS", "FAILURE", "CANCELLED", "REVOKED"]);

// ------------------------------------------------------------------ talking to the API
class ApiError extends Error {
  constructor(message, status = 0) { super(message); this.status = status; }
}

// Turn any failed request into a sentence a person can act on.
function explain(status, body) {
  const detail = body && body.detail;
  if (status === 401) return "The API token was not accepted. Enter the token the service was started with.";
  if (Array.isArray(detail)) {  // 422: one entry per field
    return detail.map((d) => {
      const field = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
      return field ? `${field}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  if (typeof detail === "string") return detail.charAt(0).toUpperCase() + detail.slice(1);
  if (status >= 500) return `The service failed (HTTP ${status}). Try again; if it keeps failing, look at the service's log.`;
  return `The request was refused (HTTP ${status}).`;
}

async function api(path, { method = "GET", body, token, as = "json" } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError("The ganforge service cannot be reached. Is it still running?");
  }
  if (!resp.ok) {
    let parsed = null;
    try { parsed = await resp.json(); } catch { /* not JSON: explain() says what it can */ }
    throw new ApiError(explain(resp.status, parsed), resp.status);
  }
  return as === "blob" ? resp.blob() : resp.json();
}

function say(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`;
}

function fail(el, err) {
  if (!(err instanceof ApiError)) console.warn(err);  // a bug of ours: keep it visible to developers
  say(el, err instanceof ApiError ? err.message : "Something went wrong in the page; reload it.", "error");
}

// Read a whole-number field, or explain what it allows.
function wholeNumber(input, name, lo, hi, { optional = false } = {}) {
  const raw = input.value.trim();
  if (raw === "" && optional) return null;
  const n = Number(raw);
  if (raw === "" || !Number.isInteger(n) || n < lo || n > hi) {
    throw new ApiError(`${name} must be a whole number from ${lo} to ${hi}.`);
  }
  return n;
}

// ------------------------------------------------------------------ models
let models = [];

function currentModel() {
  return models.find((m) => m.tag === $("model").value) || null;
}

function pct(x) { return x == null ? "?" : `${(100 * x).toFixed(1)}%`; }

function describeModel(m) {
  const k = m.metrics || {};
  const parts = [`${m.family} ${m.conditional ? "conditional" : "unconditional"}`, `stage ${m.stage}`];
  if (m.steps) parts.push(`${m.steps} steps`);
  if (k.label_accuracy != null) parts.push(`label accuracy ${pct(k.label_accuracy)}`);
  if (k.fcd != null) parts.push(`Fréchet distance ${k.fcd.toFixed(1)} (real data ${(k.fcd_baseline ?? 0).toFixed(1)})`);
  if (k.class_kl != null) parts.push(`class KL ${k.class_kl.toFixed(4)}`);
  return parts.join(" · ");
}

const DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

function classNames(m) {
  return m && m.class_names && m.class_names.length ? m.class_names : DIGITS;
}

function isDigits(names) { return names.join() === DIGITS.join(); }

function className(index) { return classNames(currentModel())[index] ?? String(index); }

// One button per class of the chosen model (index in data-digit, the class name as its text),
// and the same classes in the interpolation's picker; rebuilt only when the classes change.
function showClasses(names) {
  const box = $("classes");
  const have = [...box.querySelectorAll("[data-digit]")].map((b) => b.textContent);
  if (have.join("\u0000") !== names.join("\u0000")) {
    box.replaceChildren(...names.map((name, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.digit = String(i);
      b.textContent = name;
      return b;
    }), $("draw-any"));
    const picker = $("walk-digit");
    const keep = Number(picker.value);
    picker.replaceChildren(...names.map((name, i) => new Option(name, String(i))));
    picker.value = String(keep < names.length ? keep : 0);
  }
  const digits = isDigits(names);
  $("draw-title").textContent = digits ? "Draw a digit" : "Draw a class";
  $("walk-label").textContent = digits ? "Digit" : "Class";
}

function showModel() {
  const m = currentModel();
  $("model-info").textContent = m ? describeModel(m) : "";
  const conditional = !m || m.conditional;
  showClasses(classNames(m));
  document.querySelectorAll("[data-digit]").forEach((b) => { b.disabled = !conditional; });
  $("draw-any").hidden = conditional;
  $("walk-digit").disabled = !conditional;
  const side = m && m.image_shape ? m.image_shape[1] : 28;
  $("frame").width = side;
  $("frame").height = side;
}

async function loadModels() {
  try {
    const data = await api("/models");
    models = data.models;
    const select = $("model");
    const before = select.value;
    select.replaceChildren(...models.map((m) => {
      const opt = document.createElement("option");
      opt.value = m.tag;
      const acc = (m.metrics || {}).label_accuracy;
      opt.textContent = `${m.tag}${m.tag === data.default ? " (default)" : ""}` +
        (acc == null ? "" : ` · ${pct(acc)} read right`);
      return opt;
    }));
    select.value = models.some((m) => m.tag === before) ? before : (data.default || "");
    if (!models.length) say($("draw-status"), "No model is being served yet: train one below, or start the service with the shipped default.", "error");
    showModel();
  } catch (err) {
    fail($("draw-status"), err);
  }
}

// ------------------------------------------------------------------ drawing digits
let lastDigit = null;

async function draw(digit) {
  const status = $("draw-status");
  try {
    const count = wholeNumber($("count"), "Count", 1, 64);
    const seed = wholeNumber($("seed"), "Seed", 0, MAX_SEED, { optional: true });
    const body = { n: count, model: $("model").value || undefined };
    if (seed !== null) body.seed = seed;
    if (digit !== null) body.labels = Array(count).fill(digit);
    lastDigit = digit;
    say(status, "Drawing…");
    const out = await api("/generate", { method: "POST", body });
    $("gallery").replaceChildren(...out.images.map((b64, i) => {
      const img = document.createElement("img");
      img.className = "pixels digit";
      img.src = `data:image/png;base64,${b64}`;
      img.alt = digit === null ? `sample ${i + 1}` : `a generated ${className(digit)}`;
      if (digit !== null) img.dataset.digit = String(digit);
      return img;
    }));
    const names = classNames(currentModel());
    const what = digit === null ? "Samples" : isDigits(names) ? `Digit ${names[digit]}` : `“${names[digit]}”`;
    say(status, `${what} from ${out.model}, seed ${out.seed}.`, "ok");
  } catch (err) {
    fail(status, err);
  }
}

// ------------------------------------------------------------------ interpolation
const PAD = 2;  // the strip's layout: the model's images side by side with 2-pixel gaps

function showFrame() {
  const i = Number($("frame-slider").value);
  const SIDE = $("frame").width;
  $("frame-label").textContent = String(i + 1);
  const strip = $("strip");
  const ctx = $("frame").getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, SIDE, SIDE);
  ctx.drawImage(strip, PAD + i * (SIDE + PAD), PAD, SIDE, SIDE, 0, 0, SIDE, SIDE);
}

async function interpolate(event) {
  event.preventDefault();
  const status = $("walk-status");
  try {
    const params = new URLSearchParams({
      seed_a: wholeNumber($("seed-a"), "Seed A", 0, MAX_SEED),
      seed_b: wholeNumber($("seed-b"), "Seed B", 0, MAX_SEED),
      steps: wholeNumber($("walk-steps"), "Steps", 2, 32),
    });
    const m = currentModel();
    if (m) params.set("model", m.tag);
    if (!m || m.conditional) params.set("label", $("walk-digit").value);
    say(status, "Interpolating…");
    const blob = await api(`/interpolate?${params}`, { as: "blob" });
    const strip = $("strip");
    if (strip.src.startsWith("blob:")) URL.revokeObjectURL(strip.src);
    strip.src = URL.createObjectURL(blob);
    await strip.decode();
    const steps = Number(params.get("steps"));
    $("frame-slider").max = String(steps - 1);
    $("frame-slider").value = "0";
    $("walk-result").hidden = false;
    showFrame();
    say(status, `${steps} steps from seed ${params.get("seed_a")} to seed ${params.get("seed_b")}.`, "ok");
  } catch (err) {
    fail(status, err);
  }
}

// ------------------------------------------------------------------ jobs
let token = sessionStorage.getItem(TOKEN_KEY);
let pollTimer = null;
let listFailed = false;
const shown = new Map();  // job id -> {el, key of the images shown}

function showTokenState() {
  $("token-form").hidden = !!token;
  $("token-set").hidden = !token;
  $("job-form").hidden = !token;
}

function jobLine(job) {
  const p = job.progress || {};
  if (job.state === "SUCCESS" && job.result) {
    const k = job.result.metrics || {};
    return `Done: ${job.result.tag} (${job.result.stage}), label accuracy ${pct(k.label_accuracy)}, ` +
      `Fréchet distance ${k.fcd == null ? "?" : k.fcd.toFixed(1)}.`;
  }
  if (job.state === "FAILURE") return `Failed: ${job.error || "no reason given"}`;
  if (job.state === "PENDING") return "Waiting for a worker.";
  if (job.state === "CANCELLED") return `Cancelled${p.step ? ` at step ${p.step}` : ""}; its checkpoint is kept.`;
  if (p.phase === "evaluating") return "Training done: evaluating, exporting and registering the model.";
  const parts = [`step ${p.step ?? 0} of ${p.total ?? job.spec.steps}`];
  if (p.images_per_s) parts.push(`${p.images_per_s} images/s`);
  if (p.d_loss != null) parts.push(`D loss ${p.d_loss.toFixed(3)}, G loss ${p.g_loss.toFixed(3)}`);
  if (p.eta_s != null) parts.push(`about ${Math.ceil(p.eta_s)} s left`);
  if (p.resumed_from) parts.push(`resumed from step ${p.resumed_from}`);
  return parts.join(" · ");
}

function fraction(job) {
  if (job.state === "SUCCESS") return 1;
  const p = job.progress || {};
  return p.total ? Math.min(1, (p.step || 0) / p.total) : 0;
}

// Which of the job's images exist by now (asking for one that does not would be a 404).
function artifacts(job) {
  const p = job.progress || {};
  // a cancelled job has only what it wrote before the cancel (none, if it never started), so
  // its progress decides, as for a running one
  const ended = job.state === "SUCCESS" || p.phase === "evaluating";
  return {
    "samples.png": ended || !!p.sample,
    "losses.png": ended || (p.step || 0) >= (job.spec.sample_every || Infinity),
  };
}

async function showImage(img, jobId, name) {
  const blob = await api(`/jobs/${jobId}/${name}`, { token, as: "blob" });
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.closest("figure").hidden = false;
}

function renderJob(job) {
  let entry = shown.get(job.id);
  if (!entry) {
    const el = $("job-template").content.firstElementChild.cloneNode(true);
    el.dataset.job = job.id;
    el.querySelector(".job-id").textContent = job.id.slice(0, 8);
    el.querySelector(".job-id").title = job.id;
    el.querySelector(".cancel").addEventListener("click", () => cancelJob(job.id));
    entry = { el, key: "" };
    shown.set(job.id, entry);
  }
  const { el } = entry;
  const s = job.spec;
  el.dataset.state = job.state;
  el.querySelector(".state").textContent = job.state.toLowerCase();
  el.querySelector(".state").className = `state ${job.state.toLowerCase()}`;
  el.querySelector(".job-spec").textContent =
    `${s.family}${s.conditional ? " conditional" : ""}, ${s.loss}, ${s.steps} steps`;
  el.querySelector(".cancel").hidden = FINISHED.has(job.state);
  el.querySelector("progress").value = fraction(job);
  el.querySelector(".job-line").textContent = jobLine(job);
  // refresh the images when the job has moved on since they were fetched
  const key = `${job.state}:${(job.progress || {}).step ?? ""}`;
  if (key !== entry.key && job.state !== "FAILURE") {
    entry.key = key;
    const ready = artifacts(job);
    const imgs = { "samples.png": el.querySelector("img.samples"), "losses.png": el.querySelector("img.losses") };
    for (const [name, img] of Object.entries(imgs)) {
      if (ready[name]) showImage(img, job.id, name).catch(() => { img.closest("figure").hidden = true; });
    }
  }
  return el;
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  if (!token) return;
  let active = false;
  try {
    const data = await api("/jobs?limit=20", { token });
    const newlyDone = data.jobs.some((j) => j.state === "SUCCESS" && shown.has(j.id) &&
                                            shown.get(j.id).el.dataset.state !== "SUCCESS");
    $("job-list").replaceChildren(...data.jobs.map(renderJob));
    // a finished job may have registered a production model: the service swaps it in within a
    // poll interval, so look again shortly
    if (newlyDone) setTimeout(loadModels, 2000);
    active = data.jobs.some((j) => !FINISHED.has(j.state));
    if (!data.jobs.length) say($("jobs-status"), "No jobs yet: submit one.");
    else if (listFailed) say($("jobs-status"), "");
    listFailed = false;
  } catch (err) {
    fail($("jobs-status"), err);
    listFailed = true;
    if (err.status === 401) { forgetToken(); return; }
    if (err.status === 503) return;  // job endpoints switched off: asking again will not help
  }
  pollTimer = setTimeout(refreshJobs, active ? 1000 : 5000);
}

async function submitJob(event) {
  event.preventDefault();
  const status = $("jobs-status");
  try {
    // empty: the recipe's own steps (the server's default, every 500 a grid and a checkpoint)
    const steps = wholeNumber($("job-steps"), "Steps", 1, 10000000, { optional: true });
    say(status, "Submitting…");
    const every = steps === null ? null : Math.max(1, Math.min(500, Math.round(steps / 10)));
    const spec = {
      family: $("job-family").value,
      conditional: $("job-conditional").checked,
      loss: $("job-loss").value,
      ...($("job-dataset").value === "mnist" ? {} : { dataset: $("job-dataset").value }),
      // a grid and a checkpoint about every tenth of the run, at most every 500 steps
      ...(steps === null ? {} : { steps, sample_every: every, checkpoint_every: every }),
    };
    const job = await api("/jobs", { method: "POST", body: spec, token });
    say(status, `Job ${job.id.slice(0, 8)} queued.`, "ok");
    await refreshJobs();
  } catch (err) {
    fail(status, err);
  }
}

async function cancelJob(jobId) {
  try {
    await api(`/jobs/${jobId}`, { method: "DELETE", token });
    say($("jobs-status"), `Asked job ${jobId.slice(0, 8)} to stop.`, "ok");
    await refreshJobs();
  } catch (err) {
    fail($("jobs-status"), err);
  }
}

function useToken(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) { say($("jobs-status"), "Enter the API token first.", "error"); return; }
  token = value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  say($("jobs-status"), "");
  showTokenState();
  refreshJobs();
}

function forgetToken() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(pollTimer);
  shown.clear();
  $("job-list").replaceChildren();
  showTokenState();
}

// ------------------------------------------------------------------ wiring
$("classes").addEventListener("click", (event) => {
  const b = event.target.closest("[data-digit]");
  if (b && !b.disabled) draw(Number(b.dataset.digit));
});
$("draw-any").addEventListener("click", () => draw(null));
$("shuffle").addEventListener("click", () => {
  $("seed").value = String(Math.floor(Math.random() * MAX_SEED));
  if (lastDigit !== null || !(currentModel() || {}).conditional) draw(lastDigit);
});
$("model").addEventListener("change", showModel);
$("walk-form").addEventListener("submit", interpolate);
$("frame-slider").addEventListener("input", showFrame);
$("token-form").addEventListener("submit", useToken);
$("forget-token").addEventListener("click", () => { forgetToken(); say($("jobs-status"), ""); });
$("job-form").addEventListener("submit", submitJob);

showTokenState();
loadModels();
refreshJobs();
