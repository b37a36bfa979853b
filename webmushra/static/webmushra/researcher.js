/* Researcher pages: sortable tables and live progress (no dependencies). */
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return "";
    var raw = cell.getAttribute("data-value");
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var n = parseFloat(raw);
    return isNaN(n) ? Infinity : n;
  }

  /* Tables with class "sortable": select a heading to sort by it; again to reverse. */
  function makeSortable(table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      var button = th.querySelector("button");
      if (!button) {
        button = document.createElement("button");
        button.className = "linklike";
        button.textContent = th.textContent;
        th.textContent = "";
        th.appendChild(button);
      }
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "number";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
          var c = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function poll(url, every, onData) {
    var timer = setInterval(function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) { if (d && onData(d) === false) clearInterval(timer); })
        .catch(function () {});
    }, every);
  }

  function renderProgress(box) {
    var status = document.getElementById("status");
    if (!status || status.getAttribute("data-status") !== "rendering") return;
    poll(box.getAttribute("data-url"), 1000, function (d) {
      document.getElementById("overall").value = d.overall;
      document.getElementById("overall-text").textContent = Math.round(d.overall * 100) + " %";
      d.jobs.forEach(function (j) {
        var row = box.querySelector('tr[data-job="' + j.id + '"]');
        if (!row) return;
        row.querySelector(".job-status").textContent = j.status;
        row.querySelector(".job-progress").textContent = Math.round(j.progress * 100) + " %";
      });
      if (d.status !== "rendering") { location.reload(); return false; }
    });
  }

  function liveMonitor(box) {
    if (!box.getAttribute("data-live")) return;
    poll(box.getAttribute("data-url"), 5000, function (d) {
      var s = d.summary;
      document.getElementById("n-started").textContent = s.started;
      document.getElementById("n-completed").textContent = s.completed;
      document.getElementById("n-screened").textContent = s.screened_out;
      document.getElementById("median").textContent =
        s.median_duration_s === null ? "\u2014" : Math.round(s.median_duration_s) + " s";
      document.getElementById("n-flagged").textContent = s.flagged;
      document.getElementById("n-excluded").textContent = s.excluded;
      var means = (d.screening && d.screening.means) || [];
      if (means.length !== box.querySelectorAll("#means tbody tr").length) location.reload();
      means.forEach(function (m) {
        var row = box.querySelector('#means tr[data-condition="' + CSS.escape(m.condition) + '"]');
        if (!row) return;
        row.querySelector(".m-n").textContent = m.n;
        row.querySelector(".m-mean").textContent = m.mean.toFixed(1);
        row.querySelector(".m-ci").textContent =
          m.ci_low === null ? "\u2014" : m.ci_low.toFixed(1) + " \u2013 " + m.ci_high.toFixed(1);
      });
      var rows = document.querySelectorAll("#participants tbody tr").length;
      if (d.participants.length !== rows) location.reload();
      // Trials and quality-control flags as they come in (a form being typed in is left alone).
      d.participants.forEach(function (p) {
        var row = box.querySelector('tr[data-participant="' + p.pk + '"]');
        if (!row) return;
        row.querySelector(".p-trials").textContent = p.trials_answered + " / " + p.trials_planned;
        row.querySelector(".p-flagged").textContent = p.flagged_trials;
        row.querySelector(".p-flags").textContent = p.flags_text;
      });
    });
  }

  function liveReports(box) {
    if (!box.getAttribute("data-live")) return;
    poll(box.getAttribute("data-url"), 1500, function (d) {
      var busy = d.reports.some(function (r) { return r.status === "queued" || r.status === "running"; });
      if (!busy) { location.reload(); return false; }
      var bars = box.querySelectorAll("progress");
      d.reports.forEach(function (r, i) { if (bars[i]) bars[i].value = r.progress; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    var box = document.getElementById("render-progress");
    if (box) renderProgress(box);
    var monitor = document.getElementById("monitor");
    if (monitor) liveMonitor(monitor);
    var reports = document.getElementById("reports");
    if (reports) liveReports(reports);
    // The messages of a form's section (an upload refused, say) sit beside that form: bring
    // them into view and give them focus, so the reason is read where the form is.
    // After the load: the browser's own move to the URL's #fragment would take the focus back.
    var said = document.getElementById("section-messages") || document.getElementById("failed-cells");
    if (said) {
      window.addEventListener("load", function () {
        setTimeout(function () {
          said.scrollIntoView({ block: "center" });
          said.focus({ preventScroll: true });
        }, 0);
      });
    }
  });
})();
