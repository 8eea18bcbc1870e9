// Downloads: search the Hub (POST /lms/hub/search), pick a repository to see its variants (POST /lms/hub/variants),
// start a download (POST /lms/downloads); the jobs come live from the `state` event with progress, speed and ETA,
// Cancel while running and Resume (start again) once cancelled or failed.

import { el, followState, formatBytes, formatDuration, formatNumber, describeError } from "../app.js";

const STATUS_BADGE = {
  downloading: "accent",
  completed: "ok",
  already_downloaded: "ok",
  cancelled: "warn",
  failed: "danger",
};

export function mount(root, ctx) {
  // --- search ---
  const query = el("input", { id: "hub-query", type: "search", name: "query", placeholder: "e.g. qwen 0.5b gguf",
                              autocomplete: "off", dataset: { testid: "hub-search" } });
  const searchButton = el("button", { type: "submit", class: "primary", dataset: { testid: "hub-search-button" },
                                      text: "Search" });
  const searchForm = el("form", { class: "row search-form", role: "search" },
    el("label", { for: "hub-query", text: "Search the Hub" }), query, searchButton);
  const searchStatus = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const results = el("ul", { class: "results", dataset: { testid: "hub-results" } });
  const variantsBox = el("div", { dataset: { testid: "hub-variants" } });
  const searchCard = el("div", { class: "card stack" }, el("h2", { text: "Get a model" }), searchForm, searchStatus,
    results, variantsBox);

  // --- jobs ---
  const jobsStatus = el("p", { class: "empty", text: "Waiting for the daemon's live feed…" });
  const jobsList = el("div", { dataset: { testid: "job-list" } });
  const jobsCard = el("div", { class: "card" }, el("h2", { text: "Download jobs" }), jobsStatus, jobsList);

  root.replaceChildren(el("div", { class: "view-header" }, el("h1", { text: "Downloads" })), searchCard, jobsCard);

  let searchSequence = 0;
  let chosenRepo = null;
  // the Download buttons of the variants shown, by "repo@variant", and the jobs already finished when they were
  // shown (a later job of the same variant changes its button: Downloading…, Downloaded, or Download again)
  let variantButtons = new Map();
  let finishedBefore = new Set();

  searchForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = query.value.trim();
    if (!text) {
      query.focus();
      return;
    }
    const mine = ++searchSequence;
    searchButton.disabled = true;
    searchStatus.className = "muted";
    searchStatus.textContent = `Searching for “${text}”…`;
    results.replaceChildren();
    variantsBox.replaceChildren();
    try {
      const found = await ctx.api("/lms/hub/search", { query: text });
      if (mine !== searchSequence) return;
      searchStatus.textContent = found.length
        ? `${found.length} repositor${found.length === 1 ? "y" : "ies"} found. Pick one to see its variants.`
        : `Nothing found for “${text}”.`;
      results.replaceChildren(...found.map((item) => resultItem(item)));
    } catch (error) {
      if (mine !== searchSequence) return;
      searchStatus.className = "error";
      searchStatus.textContent = `Search failed: ${describeError(error)}`;
    } finally {
      if (mine === searchSequence) searchButton.disabled = false;
    }
  });

  function resultItem(item) {
    const button = el("button", { type: "button", class: "result-button", "aria-pressed": "false",
                                  dataset: { testid: "hub-result", repo: item.repo_id } },
      el("span", {}, el("strong", { class: "mono", text: item.repo_id }),
        item.exact ? el("span", { class: "badge accent", text: "exact match" }) : null),
      el("span", { class: "muted small",
                   text: `${(item.formats || []).map((f) => f.toUpperCase()).join(", ")} · ` +
                     `${formatNumber(item.downloads)} downloads · ${formatNumber(item.likes)} likes` }));
    button.addEventListener("click", () => {
      for (const other of results.querySelectorAll(".result-button")) other.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      showVariants(item.repo_id);
    });
    return el("li", {}, button);
  }

  async function showVariants(repoId) {
    chosenRepo = repoId;
    variantsBox.replaceChildren(el("p", { class: "muted", role: "status", text: `Reading ${repoId}…` }));
    try {
      const repo = await ctx.api("/lms/hub/variants", { repo_id: repoId });
      if (chosenRepo !== repoId) return;
      const downloading = new Set(repo.downloading || []);
      variantButtons = new Map();
      finishedBefore = new Set((((ctx.latest("state") || {}).downloads) || [])
        .filter((job) => job.status !== "downloading").map((job) => job.job_id));
      const rows = (repo.variants || []).map((variant) => variantRow(repo, variant, downloading.has(variant.name)));
      variantsBox.replaceChildren(
        el("h3", { text: `Variants of ${repo.repo_id}` }),
        rows.length ? el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, ...["Variant", "Format", "Size", "", ""].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...rows)))
          : el("p", { class: "empty", text: "No GGUF or MLX variant in this repository." }));
    } catch (error) {
      if (chosenRepo !== repoId) return;
      variantsBox.replaceChildren(el("p", { class: "error", role: "alert",
                                            text: `Could not read ${repoId}: ${describeError(error)}` }));
    }
  }

  function variantRow(repo, variant, running) {
    const notes = [];
    if (variant.recommended) notes.push(el("span", { class: "badge accent", text: "recommended" }));
    if (variant.fits === false) notes.push(el("span", { class: "badge warn", text: "may not fit in memory" }));
    if (variant.downloaded) notes.push(el("span", { class: "badge ok", text: "downloaded" }));
    const button = el("button", { type: "button", class: "primary small",
                                  dataset: { testid: "download-button", variant: variant.name },
                                  text: variant.downloaded ? "Downloaded" : running ? "Downloading…" : "Download",
                                  disabled: Boolean(variant.downloaded || running) });
    button.addEventListener("click", async () => {
      button.disabled = true;
      button.textContent = "Starting…";
      try {
        const job = await ctx.api("/lms/downloads", { model: repo.repo_id, variant: variant.name });
        button.textContent = job.status === "downloading" ? "Downloading…" : "Downloaded";
        ctx.toast(job.status === "already_downloaded" ? `${repo.repo_id}@${variant.name} is already downloaded.`
          : `Downloading ${repo.repo_id}@${variant.name}.`, "success");
      } catch (error) {
        button.disabled = false;
        button.textContent = "Download";
        ctx.toast(`Could not start the download: ${describeError(error)}`, "error");
      }
    });
    variantButtons.set(`${repo.repo_id}@${variant.name}`, button);
    return el("tr", { dataset: { testid: "variant-row", variant: variant.name } },
      el("td", { class: "mono" }, variant.name, variant.quantization && variant.quantization !== variant.name
        ? el("span", { class: "muted small", text: ` (${variant.quantization})` }) : null),
      el("td", { text: (variant.format || "").toUpperCase() }),
      el("td", { text: formatBytes(variant.size_bytes) }),
      el("td", {}, el("div", { class: "badges" }, ...notes)),
      el("td", {}, button));
  }

  // --- jobs, live ---
  const jobs = new Map(); // job_id -> row

  function render(state) {
    // the daemon lists its jobs oldest first: newest first here, and only a variant's newest job can be resumed
    const list = ((state && state.downloads) || []).slice().reverse();
    const newest = new Set();
    const variants = new Set();
    for (const job of list) {
      const key = `${job.model}@${job.variant}`;
      if (!variants.has(key)) newest.add(job.job_id);
      variants.add(key);
    }
    for (const job of list) {
      const button = variantButtons.get(`${job.model}@${job.variant}`);
      if (!button || !newest.has(job.job_id) || finishedBefore.has(job.job_id)) continue;
      const done = job.status === "completed" || job.status === "already_downloaded";
      button.textContent = done ? "Downloaded" : job.status === "downloading" ? "Downloading…" : "Download";
      button.disabled = done || job.status === "downloading";
    }
    const seen = new Set();
    let previous = null;
    for (const job of list) {
      seen.add(job.job_id);
      let row = jobs.get(job.job_id);
      if (!row) {
        row = jobRow(job.job_id, ctx);
        jobs.set(job.job_id, row);
      }
      row.update(job, newest.has(job.job_id));
      const expected = previous ? previous.nextSibling : jobsList.firstChild;
      if (expected !== row.node) jobsList.insertBefore(row.node, expected);
      previous = row.node;
    }
    for (const [id, row] of jobs) {
      if (!seen.has(id)) {
        row.node.remove();
        jobs.delete(id);
      }
    }
    jobsStatus.hidden = list.length > 0;
    jobsStatus.textContent = "No downloads yet.";
  }

  followState(ctx, render, jobsStatus);
}

function jobRow(jobId, ctx) {
  const title = el("strong", { class: "mono" });
  const badge = el("span", { class: "badge", dataset: { testid: "job-status" } });
  const bar = el("div", {});
  const progress = el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                               "aria-valuenow": "0", dataset: { testid: "job-progress" } }, bar);
  const percent = el("span", { dataset: { testid: "job-percent" } });
  const meta = el("span", { class: "meta", dataset: { testid: "job-meta" } });
  const error = el("p", { class: "error small", role: "alert", hidden: true });
  const cancel = el("button", { type: "button", class: "small", dataset: { testid: "job-cancel" }, text: "Cancel",
                                hidden: true });
  const resume = el("button", { type: "button", class: "small primary", dataset: { testid: "job-resume" },
                                text: "Resume", hidden: true });
  const node = el("div", { class: "job", dataset: { testid: "job-row", jobId } },
    el("div", { class: "row spread" }, el("span", { class: "row" }, title, badge), el("span", { class: "row" },
      cancel, resume)),
    progress,
    el("div", { class: "row spread" }, percent, meta),
    error);
  progress.setAttribute("aria-label", `Download ${jobId}`);

  let job = null;
  let sample = null; // [time ms, downloaded bytes] of the previous update, for a speed when the job has none

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await ctx.api(`/lms/downloads/${encodeURIComponent(jobId)}/cancel`, {});
      ctx.toast(`Cancelled ${job.model}@${job.variant}.`);
    } catch (failure) {
      ctx.toast(`Could not cancel: ${describeError(failure)}`, "error");
    } finally {
      cancel.disabled = false;
    }
  });

  resume.addEventListener("click", async () => {
    resume.disabled = true;
    try {
      await ctx.api("/lms/downloads", { model: job.model, variant: job.variant });
      ctx.toast(`Resuming ${job.model}@${job.variant}.`, "success");
    } catch (failure) {
      ctx.toast(`Could not resume: ${describeError(failure)}`, "error");
    } finally {
      resume.disabled = false;
    }
  });

  function update(next, latest = true) {
    const now = Date.now();
    const total = next.total_size_bytes || 0;
    const done = next.status === "completed" || next.status === "already_downloaded";
    const downloaded = done ? total : next.downloaded_bytes || 0;
    const value = total ? Math.min(100, Math.floor((downloaded / total) * 1000) / 10) : done ? 100 : 0;
    let speed = next.bytes_per_second || 0;
    if (!speed && sample && next.status === "downloading" && now > sample[0]) {
      speed = Math.max(0, ((downloaded - sample[1]) * 1000) / (now - sample[0]));
    }
    sample = [now, downloaded];
    job = next;
    title.textContent = `${next.model}@${next.variant}`;
    badge.textContent = next.status.replace("_", " ");
    badge.className = `badge ${STATUS_BADGE[next.status] || ""}`;
    node.dataset.status = next.status;
    bar.style.width = `${value}%`;
    progress.setAttribute("aria-valuenow", String(value));
    progress.setAttribute("aria-valuetext", `${value}%`);
    progress.classList.toggle("done", done);
    progress.classList.toggle("failed", next.status === "failed");
    percent.textContent = `${value.toFixed(value % 1 ? 1 : 0)}% · ${formatBytes(downloaded)} of ${formatBytes(total)}`;
    const parts = [];
    if (next.status === "downloading") {
      parts.push(speed ? `${formatBytes(speed)}/s` : "starting…");
      let eta = null;
      if (next.estimated_completion) eta = (Date.parse(next.estimated_completion) - now) / 1000;
      else if (speed) eta = (total - downloaded) / speed;
      if (eta !== null && Number.isFinite(eta)) parts.push(`${formatDuration(Math.max(eta, 0))} left`);
    } else if (next.duration_seconds !== undefined && done) {
      parts.push(`took ${formatDuration(next.duration_seconds)}`);
    }
    meta.textContent = parts.join(" · ");
    error.hidden = !next.error;
    error.textContent = next.error ? `Error: ${next.error}` : "";
    cancel.hidden = next.status !== "downloading";
    resume.hidden = !latest || !(next.status === "cancelled" || next.status === "failed");
  }

  return { node, update };
}
