// evalstack viewer: keyboard navigation and live progress. No inline script anywhere (CSP).
(function () {
  "use strict";

  function typing(event) {
    var el = event.target;
    return el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA" || el.isContentEditable);
  }

  function follow(id) {
    var link = document.getElementById(id);
    if (link) { window.location.href = link.href; return true; }
    return false;
  }

  // Sample page: j / k open the next / previous sample of the current filter.
  // Sample list: j / k move the selection (across pages), Enter opens the selected sample.
  var selected = -1;
  function rows() { return document.querySelectorAll("#sample-list tbody tr"); }
  function select(index) {
    var all = rows();
    if (!all.length) { return; }
    if (selected >= 0 && all[selected]) { all[selected].classList.remove("selected"); }
    selected = Math.max(0, Math.min(index, all.length - 1));
    all[selected].classList.add("selected");
    all[selected].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event)) { return; }
    var list = rows().length > 0;
    if (event.key === "j") {
      if (follow("next-sample")) { return; }
      if (list) {
        if (selected === rows().length - 1) { follow("next-page"); } else { select(selected + 1); }
      }
    } else if (event.key === "k") {
      if (follow("prev-sample")) { return; }
      if (list) {
        if (selected <= 0) { follow("prev-page"); } else { select(selected - 1); }
      }
    } else if (event.key === "Enter" && list && selected >= 0) {
      var link = rows()[selected].querySelector("a.sample-link");
      if (link) { window.location.href = link.href; }
    }
  });

  // Counts that could scan a large job come apart (capped), so no page waits for them.
  document.querySelectorAll(".lazy-count[data-count-url]").forEach(function (el) {
    fetch(el.getAttribute("data-count-url"), { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        el.textContent = body.count.toLocaleString() + (body.at_least ? "+" : "") + (el.getAttribute("data-suffix") || "");
        if (body.count > 0 && el.classList.contains("n")) { el.classList.add("bad"); }
      });
  });

  // Live progress: while a job on the page runs, refresh its progress from the JSON listing.
  function refresh() {
    var cells = document.querySelectorAll(".progress[data-job]");
    if (!cells.length) { return; }
    fetch("/v1/evalstack/jobs?limit=500", { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        var byId = {};
        body.data.forEach(function (job) { byId[job.id] = job; });
        var stillRunning = false;
        cells.forEach(function (cell) {
          var job = byId[cell.getAttribute("data-job")];
          if (!job) { return; }
          var p = job.progress || {};
          var done = p.samples_processed || 0, total = p.samples_total || 0;
          var bar = cell.querySelector("progress");
          bar.max = total || 1; bar.value = done;
          var text = done.toLocaleString() + " / " + total.toLocaleString();
          if (p.elapsed_s) { text += " · " + (done / p.elapsed_s).toFixed(1) + "/s"; }
          if (p.errors) { text += " · " + p.errors + " errors"; }
          cell.querySelector(".progress-text").textContent = text;
          if (["completed", "failed", "cancelled"].indexOf(job.status) < 0) { stillRunning = true; }
        });
        if (stillRunning) { window.setTimeout(refresh, 2000); } else { window.location.reload(); }
      })
      .catch(function () { window.setTimeout(refresh, 5000); });
  }
  if (document.body && document.body.getAttribute("data-live") === "1") { window.setTimeout(refresh, 2000); }
})();
