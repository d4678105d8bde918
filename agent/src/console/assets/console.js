// rollgate console: live updates of a service page, no dependencies.
// The page works without this script; with it, the server's event stream
// replaces the live section in place and the countdown ticks.
(function () {
  "use strict";
  var body = document.body;
  var service = body.getAttribute("data-service");

  function fmt(ms) {
    if (ms <= 0) { return "now"; }
    var s = Math.ceil(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    return "in " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }

  // Deadlines are the server's times (ms since the epoch): the countdown
  // trusts this machine's clock to be set.
  function tick() {
    var els = document.querySelectorAll("[data-deadline]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      el.textContent = fmt(Number(el.getAttribute("data-deadline")) - Date.now());
    }
  }
  setInterval(tick, 1000);

  if (!service || !window.EventSource) { return; }
  var state = document.getElementById("live-state");
  function say(text) { if (state) { state.textContent = text; } }

  var stream = new EventSource("/services/" + encodeURIComponent(service) + "/events");
  stream.onopen = function () {
    body.setAttribute("data-live", "on");
    say("Live: this page updates as the rollout moves.");
  };
  stream.onerror = function () {
    body.setAttribute("data-live", "off");
    say("Live updates interrupted; reconnecting (or reload the page).");
  };
  stream.addEventListener("update", function (e) {
    var old = document.getElementById("live");
    if (!old) { return; }
    var tpl = document.createElement("template");
    tpl.innerHTML = e.data;
    var fresh = tpl.content.getElementById("live");
    if (!fresh) { return; }
    // Keep what the operator is typing (an abort reason, say).
    var typing = document.activeElement;
    var keep = typing && typing.id && old.contains(typing) ? { id: typing.id, value: typing.value } : null;
    old.replaceWith(fresh);
    if (keep) {
      var again = document.getElementById(keep.id);
      if (again) { again.value = keep.value; again.focus(); }
    }
    var img = document.getElementById("timeline");
    if (img) { img.src = img.getAttribute("src").split("?")[0] + "?t=" + Date.now(); }
    tick();
  });
  stream.addEventListener("problem", function (e) { say("Live updates: " + e.data); });
})();
