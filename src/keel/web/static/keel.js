// keel web UI: small progressive enhancements; every page works without this file.
"use strict";
// MLflow's links ("View run NAME at: <server>/#/experiments/E/runs/R", printed by the MLflow
// client) keep the page in the fragment, which never reaches the server: the server sends "/"
// on to the projects page or, signed out, to the sign-in page (browsers keep the fragment across
// redirects), and this maps it to keel's page. Signed out, it becomes the sign-in form's "next",
// so signing in lands on the run.
(function () {
  var script = document.currentScript;
  var prefix = script ? new URL(script.src).pathname.replace(/\/static\/[^/]*$/, "") : "/ui";
  var segment = "([^/?#]+)";
  var rules = [
    [new RegExp("^#/experiments/\\d+/runs/([0-9a-fA-F]{8,64})(?:[/?].*)?$"), "/runs/$1"],
    [new RegExp("^#/experiments/(\\d+)(?:[/?].*)?$"), "/experiments/$1"],
    [new RegExp("^#/models/" + segment + "/versions/(\\d+)(?:[/?].*)?$"), "/models/$1/versions/$2"],
    [new RegExp("^#/models/" + segment + "/?(?:\\?.*)?$"), "/models/$1"],
    [new RegExp("^#/prompts/" + segment + "/?(?:\\?.*)?$"), "/prompts/$1"]
  ];
  var dotSegment = function (part) {
    try { part = decodeURIComponent(part); } catch (e) { return true; }
    return part === "." || part === "..";
  };
  var follow = function () {
    var path = window.location.pathname;
    if (path !== prefix + "/" && path !== prefix + "/login") { return; }
    var hash = window.location.hash;
    for (var i = 0; i < rules.length; i++) {
      var match = rules[i][0].exec(hash);
      if (!match || match.slice(1).some(dotSegment)) { continue; }  // "..": not a name, never a way up
      var target = prefix + hash.replace(rules[i][0], rules[i][1]);
      var next = path === prefix + "/login" ? document.querySelector("form input[name=next]") : null;
      if (next) {
        next.value = target;  // signed out: sign in first, then the page
        window.history.replaceState(null, "", path + window.location.search);
      } else if (path === prefix + "/") {
        window.location.replace(target);
      }
      return;
    }
  };
  follow();
  window.addEventListener("hashchange", follow);  // a link pasted into a tab already on this page
})();
document.addEventListener("DOMContentLoaded", function () {
  // Runs table: enable "Compare" only with two or more runs selected, and show the count.
  document.querySelectorAll("form[data-compare]").forEach(function (form) {
    var button = form.querySelector("button[data-compare-button]");
    var all = form.querySelector("input[data-select-all]");
    var boxes = function () { return form.querySelectorAll("input[name=run]"); };
    var update = function () {
      var n = form.querySelectorAll("input[name=run]:checked").length;
      if (button) {
        button.disabled = n < 2;
        button.textContent = n ? "Compare " + n + " runs" : "Compare selected runs";
      }
    };
    form.addEventListener("change", function (event) {
      if (event.target === all) {
        boxes().forEach(function (box) { box.checked = all.checked; });
      }
      update();
    });
    update();
  });
  // Anything marked data-autosubmit submits its form when changed (page size, sort pickers).
  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { if (el.form) { el.form.submit(); } });
  });
});
