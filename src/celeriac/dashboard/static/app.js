// celeriac dashboard: live fragments by server-sent events, confirmations, select-all.
// No inline script anywhere (the Content-Security-Policy forbids it); this file is all there is.
"use strict";
(function () {
  function live() {
    var main = document.querySelector("main[data-live]");
    if (!main || !window.EventSource) return;
    var source = new EventSource("/live?view=" + encodeURIComponent(main.dataset.live));
    source.addEventListener("fragment", function (event) {
      var data = JSON.parse(event.data);
      var target = document.getElementById(data.id);
      // never replace a form the user is typing in
      if (target && !target.contains(document.activeElement)) {
        target.innerHTML = data.html;
        document.body.dataset.updated = String(Date.now());
      }
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.dataset ? form.dataset.confirm : null;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.classList || !box.classList.contains("select-all")) return;
    var form = box.closest("form");
    form.querySelectorAll("input[name=selected]").forEach(function (each) {
      each.checked = box.checked;
    });
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", live);
  } else {
    live();
  }
})();
