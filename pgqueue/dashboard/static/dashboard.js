// pgqueue dashboard: refresh each [data-refresh] element in place from its URL (the page's
// own fragment), every data-interval milliseconds, while the tab is visible. No framework.
"use strict";
(function () {
  function refresh(el) {
    if (document.hidden || el.dataset.busy) return;
    el.dataset.busy = "1";
    fetch(el.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        el.innerHTML = html;
        el.dataset.refreshedAt = String(Date.now());
        el.classList.remove("stale");
      })
      .catch(function () { el.classList.add("stale"); })
      .finally(function () { delete el.dataset.busy; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var every = parseInt(el.dataset.interval || "2000", 10);
      setInterval(function () { refresh(el); }, Math.max(every, 200));
    });
  });
})();
