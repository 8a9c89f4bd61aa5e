// keel web UI, the trace page: pick a span to see its details, load large fields on click.
// Without this file the page still works: each span's row links to its details (#span-ID),
// and a large field's link opens it as JSON.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var view = document.querySelector("[data-trace-view]");
  if (!view) { return; }
  view.classList.add("live");
  var select = function (id) {
    var detail = view.querySelector("section[data-detail='" + CSS.escape(id) + "']");
    if (!detail) { return false; }
    view.querySelectorAll("section.span-detail.shown, tr.selected").forEach(function (el) {
      el.classList.remove("shown", "selected");
    });
    detail.classList.add("shown");
    var row = view.querySelector("tr[data-span='" + CSS.escape(id) + "']");
    if (row) { row.classList.add("selected"); }
    detail.parentElement.scrollTop = 0;
    return true;
  };
  var fromHash = function () {
    var hash = window.location.hash;
    return hash.indexOf("#span-") === 0 && select(decodeURIComponent(hash.slice(6)));
  };
  if (!fromHash()) {
    var first = view.querySelector("tr[data-span]");
    if (first) { select(first.getAttribute("data-span")); }
  }
  window.addEventListener("hashchange", fromHash);
  var pick = function (id) {
    if (select(id)) { window.history.replaceState(null, "", "#span-" + id); }
  };
  var load = function (link) {
    var box = link.closest("[data-lazy]");
    var pre = box.querySelector("pre");
    link.textContent = "Loading…";
    fetch(link.href, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) {
            var error = body && body.error ? body.error.message : "HTTP " + response.status;
            throw new Error(error);
          }
          return body;
        });
      })
      .then(function (value) {
        // textContent: whatever the payload holds is shown as text, never parsed as HTML
        pre.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
        pre.hidden = false;
        link.remove();
      })
      .catch(function (error) {
        link.textContent = "Could not load: " + error.message + " (retry)";
        link.classList.add("bad");
      });
  };
  view.addEventListener("click", function (event) {
    var target = event.target;
    var loader = target.closest("a[data-load]");
    if (loader) {
      event.preventDefault();
      load(loader);
      return;
    }
    var parent = target.closest("a[data-span-link]");
    if (parent) {
      event.preventDefault();
      pick(parent.getAttribute("data-span-link"));
      return;
    }
    var row = target.closest("tr[data-span]");
    if (row) {
      event.preventDefault();
      pick(row.getAttribute("data-span"));
    }
  });
});
