// Keeps progress bars current by polling the JSON API every 2 seconds (no framework).
// Every page: a notice says how each of the user's runs ended, also one that ended while the
// user moved between pages (the runs last seen active are kept in sessionStorage).
// The runs page: active runs appear, move and leave.
// A run's page: its progress, counts and what happens next update, its results table fills as batches land, and
// the page reloads once the run has finished.
// While the server cannot be reached, every page says so (and hides what has gone stale); the
// next poll that gets through catches up.
// A form marked data-submit-once (Continue) is sent once: its button is disabled when pressed.
(function () {
  "use strict";

  var INTERVAL_MS = 2000;
  // With no active run to watch, other pages look for new ones less often.
  var IDLE_INTERVAL_MS = 10000;
  var SEEN_KEY = "qualifier.activeRuns";
  var ACTIVE = { PENDING: true, PROCESSING: true };

  var connectionLost = document.querySelector("[data-connection-lost]");
  // What a proxy answers while the application behind it is down or restarting.
  var AWAY = [502, 503, 504];

  // A failed fetch, or a proxy's 502/503/504 while the application is away, means the server
  // cannot be reached; any other answer means it can.
  function reachable(yes) {
    if (connectionLost) connectionLost.hidden = yes;
    document.documentElement.classList.toggle("offline", !yes);
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        reachable(AWAY.indexOf(response.status) < 0);
        if (response.status === 401 || response.status === 403) {
          window.location.reload(); // signed out meanwhile: the page sends us to sign in
          throw new Error("not signed in");
        }
        if (!response.ok) throw new Error(url + " answered " + response.status);
        return response.json();
      }, function (error) {
        reachable(false);
        throw error;
      });
  }

  function getHTML(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error(url + " answered " + response.status);
        return response.text();
      })
      .then(function (html) { return new DOMParser().parseFromString(html, "text/html"); });
  }

  // Polls while the tab is visible; a failed poll is retried at the next tick. `ms` is a
  // number or a function that says how long to wait before the next tick.
  function every(ms, tick) {
    var timer = null;
    function schedule() { timer = window.setTimeout(run, typeof ms === "function" ? ms() : ms); }
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

  function textAll(node, selector, value) {
    Array.prototype.forEach.call(node.querySelectorAll(selector), function (each) { text(each, value); });
  }

  function updateRunNode(node, run) {
    var bar = node.querySelector("progress");
    if (bar) { bar.max = run.total; bar.value = run.completed; bar.textContent = run.completed + " / " + run.total; }
    textAll(node, "[data-completed]", run.completed);
    textAll(node, "[data-activity]", run.activity || "");
    Array.prototype.forEach.call(node.querySelectorAll("[data-outlook]"), function (each) {
      text(each, run.outlook.text);
      each.setAttribute("data-outlook-state", run.outlook.state);
    });
    textAll(node, "[data-total]", run.total);
    if (run.outlook.workers_on_it !== null && run.outlook.workers_on_it !== undefined) {
      textAll(node, "[data-workers-on-it]", run.outlook.workers_on_it);
    }
    textAll(node, "[data-scored]", run.counts.qualified + run.counts.not_qualified + run.counts.errored);
    var status = node.querySelector("[data-status]");
    if (status) {
      status.textContent = run.status_display;
      status.className = "status status-" + run.status.toLowerCase();
    }
    ["qualified", "not_qualified", "errored"].forEach(function (name) {
      var count = node.querySelector('[data-count="' + name + '"]');
      text(count, run.counts[name]);
      if (count && count.parentNode.classList) count.parentNode.classList.toggle("zero", !run.counts[name]);
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
    var activity = el("p", "activity muted");
    activity.setAttribute("data-activity", "");
    card.appendChild(activity);
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
    var left = run.total - run.completed;
    if (run.status === "FAILED" && left > 0) {
      summary += " Press Continue on its page to finish the remaining " + left.toLocaleString("en-US") +
        (left === 1 ? " prospect." : " prospects.");
    }
    note.appendChild(document.createTextNode(summary + " "));
    var history = el("a", "", "Show in history");
    history.href = container.getAttribute("data-runs-url");
    note.appendChild(history);
    container.appendChild(note);
  }

  function loadSeen() {
    try { return JSON.parse(window.sessionStorage.getItem(SEEN_KEY)) || {}; } catch (error) { return {}; }
  }

  function saveSeen(seen) {
    try { window.sessionStorage.setItem(SEEN_KEY, JSON.stringify(seen)); } catch (error) { /* private mode */ }
  }

  // On every page: notices for runs that were active when last seen and no longer are. On the
  // runs page `onActive` also keeps the list of active runs current. A run's own page shows
  // how it ended, so it gets no notice there.
  function watchActiveRuns(notices, onActive) {
    var ownRun = document.querySelector("#run-summary[data-run-id]");
    var ownId = ownRun ? ownRun.getAttribute("data-run-id") : null;
    var seen = loadSeen();
    function tick() {
      return getJSON(notices.getAttribute("data-active-url")).then(function (body) {
        var now = {};
        body.results.forEach(function (run) { now[run.id] = run.url; });
        Object.keys(seen).forEach(function (id) {
          if (now[id] || id === ownId) return;
          getJSON(seen[id]).then(function (run) { notify(notices, run); }).catch(function () {
            // gone, or another user's after a change of account: nothing to say
          });
        });
        seen = now;
        saveSeen(seen);
        if (onActive) onActive(body.results);
      });
    }
    tick().catch(function (error) { if (window.console) console.warn("qualifier: " + error.message); });
    every(function () {
      return onActive || Object.keys(seen).length ? INTERVAL_MS : IDLE_INTERVAL_MS;
    }, tick);
  }

  // The runs page: cards appear for new runs, move, and leave when their run has ended.
  function activeList(section) {
    var list = section.querySelector("[data-active-list]");
    var empty = section.querySelector("[data-empty]");
    return function (runs) {
      var current = {};
      runs.forEach(function (run) {
        current[run.id] = true;
        var card = list.querySelector('[data-run-id="' + run.id + '"]');
        if (card) updateRunNode(card, run);
        else list.appendChild(runCard(run));
      });
      Array.prototype.slice.call(list.children).forEach(function (card) {
        if (!current[card.getAttribute("data-run-id")]) card.remove();
      });
      empty.hidden = list.children.length > 0;
    };
  }

  // The results section is fetched again (this very page, its sort and page kept) whenever the
  // run has more results than the section shows.
  function refreshResults(scored) {
    var results = document.getElementById("results");
    if (!results || results.getAttribute("data-results-count") === String(scored)) return null;
    return getHTML(window.location.href).then(function (page) {
      var fresh = page.getElementById("results");
      var current = document.getElementById("results");
      if (fresh && current) current.replaceWith(document.importNode(fresh, true));
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
        return refreshResults(run.counts.qualified + run.counts.not_qualified + run.counts.errored);
      });
    });
  }

  function submitOnce(form) {
    var buttons = form.querySelectorAll("button[type=submit]");
    function busy(yes) {
      Array.prototype.forEach.call(buttons, function (button) {
        if (!button.hasAttribute("data-idle-label")) button.setAttribute("data-idle-label", button.textContent);
        button.disabled = yes;
        button.textContent = yes && button.getAttribute("data-busy-label") || button.getAttribute("data-idle-label");
      });
    }
    form.addEventListener("submit", function (event) {
      if (form.hasAttribute("data-submitted")) { event.preventDefault(); return; }
      form.setAttribute("data-submitted", "");
      // After the submit event, so that the browser still sends the form.
      window.setTimeout(function () { busy(true); }, 0);
    });
    // Back to this page from the browser's history: the form may be sent again.
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { form.removeAttribute("data-submitted"); busy(false); }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-submit-once]"), submitOnce);

  var notices = document.querySelector("[data-notices][data-active-url]");
  var active = document.getElementById("active-runs");
  if (notices) watchActiveRuns(notices, active ? activeList(active) : null);
  var summary = document.querySelector("#run-summary[data-run-url]");
  if (summary) watchRun(summary);
})();
