// The overview's live part: the server sends the rendered parts over server-sent events
// (api/console/overview.py); without JavaScript the page is the same, as of its load.
(function () {
  "use strict";
  var figures = document.getElementById("part-figures");
  if (!figures || !window.EventSource) { return; }
  var state = document.getElementById("live-state");
  var source = new EventSource(figures.getAttribute("data-live"));
  source.addEventListener("overview", function (event) {
    var parts = JSON.parse(event.data);
    ["figures", "chart", "latest"].forEach(function (name) {
      var target = document.getElementById("part-" + name);
      if (target && typeof parts[name] === "string") { target.innerHTML = parts[name]; }
    });
    state.setAttribute("data-state", "live");
    state.textContent = "Live: updates every few seconds.";
  });
  source.addEventListener("unavailable", function () {
    state.setAttribute("data-state", "unavailable");
    state.textContent = "Postgres or Redis cannot be reached; the figures below are older.";
  });
  source.onerror = function () {
    state.setAttribute("data-state", "reconnecting");
    state.textContent = "Live updates lost; reconnecting…";
  };
}());
