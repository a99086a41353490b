/* Live job progress: moves the bars, counts and status pills of unfinished jobs on the page.
 *
 * Markup (server-rendered, so the page is right without this script too):
 *   [data-job-id]              anything about one job; inside it [data-field=NAME] shows job[NAME]
 *                              (records_done, records_total, records_failed, chunks_done,
 *                              chunks_total, percent; and with [data-chunks-settled], the failed
 *                              and skipped chunks it was rendered with: chunks_succeeded,
 *                              chunks_pending), [data-bar=ok|failed] are the bar's parts,
 *                              [role=progressbar] carries aria-valuenow, [data-show-if=NAME] hides
 *                              while job[NAME] is 0;
 *   [data-job-shown]           "chunks_done:records_done" the page was rendered with;
 *   [data-job-status]          the status the page was rendered with (finished jobs are not polled,
 *                              except for [data-job-settling-ms] after a cancel: chunks under way
 *                              are still counted, and followed that long);
 *   [data-job-status-pill]     the job's status pill;
 *   [data-job-live]            on the job page: replaced by GET data-live-url when the status
 *                              changes, for what only the server knows (timeline, preview, buttons),
 *                              and at most every LIVE_REFRESH_MS while chunks finish.
 *
 * It polls the JSON API with the session cookie: one job → GET {api}{id}/; several → two list
 * calls (status=queued, status=running) whatever their number, then GET {api}{id}/ once for each
 * job that left both lists (it finished). Polling stops when no job on the page is unfinished,
 * pauses while the tab is hidden, and backs off on errors. No library, no external request.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var API = (script && script.dataset.api) || "/api/v1/jobs/";
  var INTERVAL_MS = 1500;
  var MAX_INTERVAL_MS = 15000;
  // The timeline and chunk breakdown follow finished chunks, but not at every poll: each refresh
  // renders the whole part on the server.
  var LIVE_REFRESH_MS = 5000;
  var FINISHED = ["succeeded", "partially_succeeded", "failed", "cancelled"];
  // The same map as STATUS_PILLS in subscriptions/job_pages/reading.py.
  var PILLS = {
    queued: "off", running: "run", succeeded: "ok",
    partially_succeeded: "warn", failed: "bad", cancelled: "off"
  };
  var PILL_CLASSES = ["ok", "bad", "off", "run", "warn"];

  // A job seen cancelled while polled is followed this long (chunks under way are still counted).
  var SETTLE_MS = 30000;

  var known = {};  // job id → the status last shown
  var stopped = {};  // job id → true once finished or refused (403/404)
  var settleUntil = {};  // job id → until when a cancelled job is still followed
  // job id → chunks and records done when its live part was last rendered (after a cancel, a
  // chunk under way adds records without adding a chunk: it was counted when it was skipped)
  var chunksShown = {};
  var refreshedAt = {};  // job id → when its live part was last asked for
  var delay = INTERVAL_MS;
  var timer = null;

  function isFinished(status) { return FINISHED.indexOf(status) >= 0; }

  function settles(id) { return (settleUntil[id] || 0) > Date.now(); }

  function progressOf(job) { return job.chunks_done + ":" + job.records_done; }

  function collect() {
    var nodes = document.querySelectorAll("[data-job-status][data-job-id]");
    for (var i = 0; i < nodes.length; i++) {
      var id = nodes[i].dataset.jobId;
      if (!(id in known)) { known[id] = nodes[i].dataset.jobStatus; }
      if (!(id in chunksShown) && nodes[i].dataset.jobShown) {
        chunksShown[id] = nodes[i].dataset.jobShown;  // what the page was rendered with
      }
      var settling = Number(nodes[i].dataset.jobSettlingMs || 0);
      if (settling > 0 && !(id in settleUntil)) { settleUntil[id] = Date.now() + settling; }
      if (isFinished(known[id]) && !settles(id)) { stopped[id] = true; }
    }
  }

  function pending() {
    return Object.keys(known).filter(function (id) { return !stopped[id]; });
  }

  function getJson(url) {
    return fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) {
        var error = new Error("HTTP " + response.status);
        error.status = response.status;
        throw error;
      }
      return response.json();
    });
  }

  // Counts as the server renders them: 100,000.
  function grouped(value) {
    return value == null ? "" : Number(value).toLocaleString("en-US");
  }

  function width(part, total) {
    return total ? (part * 100 / total).toFixed(2) + "%" : "0%";
  }

  function show(job) {
    var total = job.records_total || 0;
    var done = Math.min(job.records_done || 0, total);
    var failed = Math.min(job.records_failed || 0, done);
    // Floored, as on the server: 100 only when every record is done.
    var values = {
      records_done: done, records_total: total, records_failed: failed,
      chunks_done: job.chunks_done, chunks_total: job.chunks_total,
      percent: total ? Math.floor(done * 100 / total) : 0
    };
    var boxes = document.querySelectorAll('[data-job-id="' + job.id + '"]');
    for (var i = 0; i < boxes.length; i++) {
      var box = boxes[i];
      if (box.hasAttribute("data-job-status-pill")) {
        PILL_CLASSES.forEach(function (name) { box.classList.remove(name); });
        box.classList.add(PILLS[job.status] || "off");
        box.textContent = job.status.replace(/_/g, " ");
      }
      var shown = values;
      if (box.dataset.chunksSettled != null) {
        // The chunk breakdown is rendered with the live part (every few seconds); between
        // renders, finished chunks move from pending to succeeded with the counts, so it never
        // disagrees with them. A failed or skipped chunk is shown by the next render.
        var settled = Number(box.dataset.chunksSettled) || 0;
        shown = Object.assign({}, values, {
          chunks_succeeded: Math.max((job.chunks_done || 0) - settled, 0),
          chunks_pending: Math.max((job.chunks_total || 0) - (job.chunks_done || 0), 0)
        });
      }
      var fields = box.querySelectorAll("[data-field]");
      for (var f = 0; f < fields.length; f++) {
        var name = fields[f].dataset.field;
        if (name in shown) { fields[f].textContent = grouped(shown[name]); }
      }
      var conditional = box.querySelectorAll("[data-show-if]");
      for (var c = 0; c < conditional.length; c++) {
        conditional[c].classList.toggle("hidden", !values[conditional[c].dataset.showIf]);
      }
      var bars = box.querySelectorAll("[role=progressbar]");
      for (var b = 0; b < bars.length; b++) {
        bars[b].setAttribute("aria-valuenow", String(values.percent));
        var ok = bars[b].querySelector("[data-bar=ok]");
        var bad = bars[b].querySelector("[data-bar=failed]");
        if (ok) { ok.style.width = width(done - failed, total); }
        if (bad) { bad.style.width = width(failed, total); }
      }
      if (box.hasAttribute("data-job-status")) { box.dataset.jobStatus = job.status; }
    }
    var changed = known[job.id] !== job.status;
    known[job.id] = job.status;
    if (changed && job.status === "cancelled") { settleUntil[job.id] = Date.now() + SETTLE_MS; }
    if (isFinished(job.status) && !settles(job.id)) { stopped[job.id] = true; }
    if (!(job.id in chunksShown)) { chunksShown[job.id] = progressOf(job); }
    var moved = chunksShown[job.id] !== progressOf(job) &&
      Date.now() - (refreshedAt[job.id] || 0) >= LIVE_REFRESH_MS;
    if (changed || moved) {
      chunksShown[job.id] = progressOf(job);
      refreshLive(job.id);
    }
  }

  // The parts only the server renders (timeline, preview, buttons) follow a status change.
  function refreshLive(id) {
    var live = document.querySelector('[data-job-live][data-job-id="' + id + '"]');
    if (!live || !live.dataset.liveUrl) { return; }
    refreshedAt[id] = Date.now();
    fetch(live.dataset.liveUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        live.dataset.refreshedStatus = known[id];
      })
      .catch(function () { /* the bar and counts are right; the rest shows on the next load */ });
  }

  function refused(id, error) {
    // Signed out, or the job is no longer visible: asking again would not change that.
    if (error && (error.status === 401 || error.status === 403 || error.status === 404)) {
      stopped[id] = true;
      return;
    }
    throw error;
  }

  function pollOne(id) {
    return getJson(API + encodeURIComponent(id) + "/").then(show, function (error) {
      refused(id, error);
    });
  }

  function pollMany(ids) {
    var lists = ["queued", "running"].map(function (status) {
      return getJson(API + "?status=" + status + "&page_size=500");
    });
    return Promise.all(lists).then(function (pages) {
      var seen = {};
      pages.forEach(function (page) {
        (page.results || []).forEach(function (job) { seen[job.id] = job; });
      });
      var gone = [];
      ids.forEach(function (id) {
        if (seen[id]) { show(seen[id]); } else { gone.push(id); }
      });
      // Not queued or running any more (or beyond the first 500): its own answer says which.
      return Promise.all(gone.map(pollOne));
    });
  }

  function tick() {
    timer = null;
    var ids = pending();
    if (!ids.length) { return; }
    if (document.hidden) { return; }  // resumed by visibilitychange
    var poll = ids.length === 1 ? pollOne(ids[0]) : pollMany(ids);
    poll.then(function () {
      delay = INTERVAL_MS;
    }, function () {
      delay = Math.min(delay * 2, MAX_INTERVAL_MS);
    }).then(schedule);
  }

  function schedule() {
    if (timer === null && pending().length && !document.hidden) {
      timer = window.setTimeout(tick, delay);
    }
  }

  document.addEventListener("visibilitychange", schedule);
  collect();
  schedule();
})();
