// keel web UI: small progressive enhancements; every page works without this file.
"use strict";
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
