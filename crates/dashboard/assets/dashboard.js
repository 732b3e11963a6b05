// Herald dashboard: the little that needs a script.
//
// - times are shown in the viewer's own time zone;
// - the signing secret is fetched (POST with the CSRF token) only when asked;
// - the first page of a log polls for new attempts every 2 s.
//
// Every value from the server is written with textContent or setAttribute,
// never parsed as HTML.
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  var timeFormat = null;
  try {
    timeFormat = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
      timeZoneName: "short"
    });
  } catch (e) {
    timeFormat = null;
  }

  function localiseTime(el) {
    var ms = Number(el.getAttribute("data-ts"));
    if (!timeFormat || !isFinite(ms)) return;
    el.title = el.getAttribute("datetime") || "";
    el.textContent = timeFormat.format(new Date(ms));
  }

  function localiseAll(root) {
    var times = root.querySelectorAll("time[data-ts]");
    for (var i = 0; i < times.length; i++) localiseTime(times[i]);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- the signing secret -------------------------------------------------
  function setUpSecret() {
    var button = document.getElementById("reveal-secret");
    var value = document.getElementById("secret-value");
    var copy = document.getElementById("copy-secret");
    if (!button || !value) return;
    var masked = value.textContent;
    var secret = null;
    button.addEventListener("click", function () {
      if (secret !== null) {
        secret = null;
        value.textContent = masked;
        button.textContent = "Reveal";
        if (copy) copy.hidden = true;
        return;
      }
      button.disabled = true;
      fetch(button.getAttribute("data-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf }
      }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      }).then(function (body) {
        secret = String(body.secret);
        value.textContent = secret;
        button.textContent = "Hide";
        if (copy) copy.hidden = false;
      }).catch(function () {
        value.textContent = "Could not load the secret; reload the page and try again.";
      }).then(function () {
        button.disabled = false;
      });
    });
    if (copy) {
      copy.addEventListener("click", function () {
        if (secret === null || !navigator.clipboard) return;
        navigator.clipboard.writeText(secret).then(function () {
          copy.textContent = "Copied";
          setTimeout(function () { copy.textContent = "Copy"; }, 1500);
        }, function () {});
      });
    }
  }

  // --- the live log ---------------------------------------------------------
  function buildRow(row, resendAction) {
    var tr = el("tr");
    tr.setAttribute("data-id", row.id);
    tr.setAttribute("data-cursor", row.cursor);

    var type = el("td");
    type.setAttribute("data-label", "Event type");
    type.appendChild(el("div", "mono", row.eventType));
    type.appendChild(el("div", "sub mono event-id", row.eventId));
    tr.appendChild(type);

    var when = el("td");
    when.setAttribute("data-label", "Timestamp");
    var time = el("time", null, row.utc);
    time.setAttribute("datetime", row.iso);
    time.setAttribute("data-ts", String(row.timestamp));
    localiseTime(time);
    when.appendChild(time);
    tr.appendChild(when);

    var status = el("td");
    status.setAttribute("data-label", "Status");
    var cell = el("div", "status-cell");
    var badge = el("span", row.badgeClass);
    badge.appendChild(el("span", "dot"));
    badge.appendChild(document.createTextNode(row.statusLabel));
    cell.appendChild(badge);
    if (row.manual) {
      var tag = el("span", "tag tag-manual", "manual");
      tag.title = "Sent by a person: a resend or a test event";
      cell.appendChild(tag);
    }
    status.appendChild(cell);
    status.appendChild(el("div", "sub", "Attempt " + row.attempt + " · " + row.outcome));
    tr.appendChild(status);

    var actions = el("td", "actions");
    actions.setAttribute("data-label", "Actions");
    var inspect = el("a", "btn btn-sm btn-secondary inspect", "Inspect");
    inspect.setAttribute("href", row.inspectUrl);
    actions.appendChild(inspect);
    if (resendAction) {
      var form = el("form", "inline");
      form.method = "post";
      form.setAttribute("action", resendAction);
      var token = el("input");
      token.type = "hidden";
      token.name = "_csrf";
      token.value = csrf;
      var event = el("input");
      event.type = "hidden";
      event.name = "event_id";
      event.value = row.eventId;
      var button = el("button", "btn btn-sm btn-ghost resend", "Resend");
      button.type = "submit";
      form.appendChild(token);
      form.appendChild(event);
      form.appendChild(button);
      actions.appendChild(form);
    }
    tr.appendChild(actions);
    return tr;
  }

  function setUpLog() {
    var table = document.getElementById("log");
    if (!table) return;
    var pollUrl = table.getAttribute("data-poll");
    if (!pollUrl) return;
    var limit = Number(table.getAttribute("data-limit")) || 25;
    var resendAction = table.getAttribute("data-resend");
    var body = table.tBodies[0];
    var empty = document.getElementById("log-empty");
    var older = document.getElementById("older-link");
    var live = document.getElementById("live");
    var busy = false;

    function known() {
      var ids = {};
      for (var i = 0; i < body.rows.length; i++) ids[body.rows[i].getAttribute("data-id")] = true;
      return ids;
    }

    function poll() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(pollUrl, { credentials: "same-origin", headers: { "accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (page) {
          if (live) live.classList.remove("paused");
          var progress = document.getElementById("recover-progress");
          if (progress && typeof page.recover === "string") {
            progress.textContent = page.recover;
            progress.hidden = false;
          }
          var ids = known();
          var fresh = [];
          for (var i = 0; i < page.rows.length; i++) {
            if (!ids[page.rows[i].id]) fresh.push(page.rows[i]);
          }
          if (fresh.length === 0) return;
          var first = body.firstChild;
          for (var j = 0; j < fresh.length; j++) {
            var tr = buildRow(fresh[j], resendAction);
            tr.className = "fresh";
            body.insertBefore(tr, first);
          }
          var trimmed = false;
          while (body.rows.length > limit) {
            body.deleteRow(body.rows.length - 1);
            trimmed = true;
          }
          if (empty) empty.hidden = body.rows.length > 0;
          if (trimmed && older) {
            var last = body.rows[body.rows.length - 1];
            older.setAttribute("href", older.getAttribute("data-base") + encodeURIComponent(last.getAttribute("data-cursor")));
            older.hidden = false;
          }
        })
        .catch(function () {
          if (live) live.classList.add("paused");
        })
        .then(function () {
          busy = false;
        });
    }

    setInterval(poll, 2000);
    document.addEventListener("visibilitychange", poll);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localiseAll(document);
    setUpSecret();
    setUpLog();
  });
})();
