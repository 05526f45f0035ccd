// kuper-bridge operator console: the one script (no inline scripts: the CSP forbids them).
// - Board rows are clickable as a whole (the link in the first cell stays the real target).
// - The board refreshes its rows every 5 s from /ui/orders/rows?<same query>, while the tab
//   is visible; an ended session reloads the page (which then goes to the login form).
// - Forms with data-confirm ask before submitting.
// - The language links keep the page's query (the board's filters).
(function () {
  "use strict";

  var POLL_MS = 5000;

  function onRowClick(event) {
    if (event.target.closest("a, button, input, select, textarea, label, form")) return;
    var row = event.target.closest("tr[data-href]");
    if (!row) return;
    if (window.getSelection && String(window.getSelection()).length > 0) return;
    window.location.assign(row.getAttribute("data-href"));
  }

  function updateCounts(tbody) {
    var counts = new URLSearchParams(tbody.getAttribute("data-counts") || "");
    var total = 0;
    counts.forEach(function (value, state) {
      var n = parseInt(value, 10) || 0;
      total += n;
      var el = document.querySelector('[data-count-state="' + state + '"]');
      if (el) {
        el.textContent = String(n);
        var chip = el.closest(".chip");
        if (chip) chip.classList.toggle("empty", n === 0);
      }
    });
    var all = document.querySelector('[data-count-state=""]');
    if (all) all.textContent = String(total);
  }

  function startBoard(table) {
    var source = table.getAttribute("data-live");
    var status = document.querySelector("[data-live-status]");
    var busy = false;

    function tick() {
      if (busy || document.hidden) return;
      var query = window.location.search;
      busy = true;
      fetch(source + query, {
        credentials: "same-origin",
        headers: { "X-KB-Fragment": "1" },
        cache: "no-store"
      })
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload();
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          // The operator may have changed the filters meanwhile: then this answer is stale.
          if (window.location.search !== query) return;
          var template = document.createElement("template");
          template.innerHTML = html.trim();
          var fresh = template.content.querySelector("tbody");
          var current = table.querySelector("tbody");
          if (fresh && current) {
            current.replaceWith(fresh);
            updateCounts(fresh);
          }
          if (status) status.classList.remove("stale");
        })
        .catch(function () {
          if (status) status.classList.add("stale");
        })
        .then(function () {
          busy = false;
        });
    }

    window.setInterval(tick, POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) tick();
    });
  }

  function onSubmit(event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // One press, one submission: a double tap at the counter must not hand over twice.
    if ((form.getAttribute("method") || "").toLowerCase() !== "post") return;
    var buttons = form.querySelectorAll("button[type=submit]");
    window.setTimeout(function () {
      buttons.forEach(function (b) {
        if (!b.disabled) { b.disabled = true; b.setAttribute("data-kb-busy", ""); }
      });
    }, 0);
  }

  // The RU/EN links come from the server as "?lang=xx" (plus what the page knows to keep);
  // here they carry the page's whole current query, so a switch keeps the board's filters.
  function keepQueryOnLanguageLinks() {
    document.querySelectorAll("a[data-lang]").forEach(function (link) {
      var params = new URLSearchParams(window.location.search);
      params.set("lang", link.getAttribute("data-lang"));
      link.setAttribute("href", "?" + params.toString());
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    keepQueryOnLanguageLinks();
    document.addEventListener("click", onRowClick);
    document.addEventListener("submit", onSubmit);
    // Back to a page kept by the browser: its buttons must work again.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      document.querySelectorAll("button[data-kb-busy]").forEach(function (b) {
        b.disabled = false;
        b.removeAttribute("data-kb-busy");
      });
    });
    var board = document.querySelector("table[data-live]");
    if (board) startBoard(board);
  });
})();
