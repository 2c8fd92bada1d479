// Keeps progress bars current by polling the JSON API every 2 seconds (no framework).
// The runs page: active runs appear, move and leave (with a notice saying how they ended).
// A run's page: its progress updates, and the page reloads once the run has finished.
(function () {
  "use strict";

  var INTERVAL_MS = 2000;
  var ACTIVE = { PENDING: true, PROCESSING: true };

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          window.location.reload(); // signed out meanwhile: the page sends us to sign in
          throw new Error("not signed in");
        }
        if (!response.ok) throw new Error(url + " answered " + response.status);
        return response.json();
      });
  }

  // Polls while the tab is visible; a failed poll is retried at the next tick.
  function every(ms, tick) {
    var timer = null;
    function schedule() { timer = window.setTimeout(run, ms); }
    function run() {
      if (document.hidden) { schedule(); return; }
      Promise.resolve().then(tick).catch(function (error) {
        if (window.console) console.warn("qualifier: " + error.message);
      }).then(function (keepGoing) { if (keepGoing !== false) schedule(); });
    }
    schedule();
    return function stop() { window.clearTimeout(timer); };
  }

  function text(node, value) { if (node) node.textContent = String(value); }

  function updateRunNode(node, run) {
    var bar = node.querySelector("progress");
    if (bar) { bar.max = run.total; bar.value = run.completed; bar.textContent = run.completed + " / " + run.total; }
    text(node.querySelector("[data-completed]"), run.completed);
    text(node.querySelector("[data-total]"), run.total);
    var status = node.querySelector("[data-status]");
    if (status) {
      status.textContent = run.status_display;
      status.className = "status status-" + run.status.toLowerCase();
    }
    ["qualified", "not_qualified", "errored"].forEach(function (name) {
      text(node.querySelector('[data-count="' + name + '"]'), run.counts[name]);
    });
  }

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function runCard(run) {
    var card = el("li", "run-card");
    card.setAttribute("data-run-id", run.id);
    card.setAttribute("data-run-url", run.url);
    var head = el("div", "run-card-head");
    var link = el("a", "", "Run " + run.id);
    link.href = run.page_url;
    head.appendChild(link);
    var status = el("span", "", "");
    status.setAttribute("data-status", "");
    head.appendChild(document.createTextNode(" "));
    head.appendChild(status);
    card.appendChild(head);
    var progress = el("div", "progress");
    var bar = el("progress");
    bar.setAttribute("aria-label", "Run " + run.id + " progress");
    progress.appendChild(bar);
    var label = el("span", "progress-text");
    var done = el("span"); done.setAttribute("data-completed", "");
    var total = el("span"); total.setAttribute("data-total", "");
    label.appendChild(done); label.appendChild(document.createTextNode(" / ")); label.appendChild(total);
    progress.appendChild(label);
    card.appendChild(progress);
    updateRunNode(card, run);
    return card;
  }

  function notify(container, run) {
    var counts = run.counts;
    var note = el("p", "notice notice-" + run.status.toLowerCase());
    var link = el("a", "", "Run " + run.id);
    link.href = run.page_url;
    note.appendChild(link);
    var summary = run.status === "COMPLETED"
      ? " completed: " + counts.qualified + " qualified, " + counts.not_qualified +
        " not qualified, " + counts.errored + " errored."
      : " " + run.status_display.toLowerCase() + (run.failure_reason ? ": " + run.failure_reason : ".");
    note.appendChild(document.createTextNode(summary + " "));
    var refresh = el("a", "", "Show in history");
    refresh.href = window.location.pathname;
    note.appendChild(refresh);
    container.appendChild(note);
  }

  function watchActiveRuns(section) {
    var list = section.querySelector("[data-active-list]");
    var empty = section.querySelector("[data-empty]");
    var notices = section.querySelector("[data-notices]");
    every(INTERVAL_MS, function () {
      return getJSON(section.getAttribute("data-active-url")).then(function (body) {
        var seen = {};
        body.results.forEach(function (run) {
          seen[run.id] = true;
          var card = list.querySelector('[data-run-id="' + run.id + '"]');
          if (card) updateRunNode(card, run);
          else list.appendChild(runCard(run));
        });
        Array.prototype.slice.call(list.children).forEach(function (card) {
          var id = card.getAttribute("data-run-id");
          if (seen[id]) return;
          card.remove();
          getJSON(card.getAttribute("data-run-url")).then(function (run) { notify(notices, run); });
        });
        empty.hidden = list.children.length > 0;
      });
    });
  }

  function watchRun(section) {
    var url = section.getAttribute("data-run-url");
    every(INTERVAL_MS, function () {
      return getJSON(url).then(function (run) {
        updateRunNode(document, run);
        if (!ACTIVE[run.status]) {
          window.location.reload();
          return false;
        }
      });
    });
  }

  var active = document.getElementById("active-runs");
  if (active) watchActiveRuns(active);
  var summary = document.querySelector("#run-summary[data-run-url]");
  if (summary) watchRun(summary);
})();
