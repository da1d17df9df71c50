// Pixelmint's own script (the CSP allows scripts from this origin only: no inline code).
// Pages work without it; it adds confirmations, copy buttons and charts.
(function () {
  "use strict";

  // <form data-confirm="Revoke this key?"> (a form without hx-post; htmx forms use hx-confirm).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  }, true);

  // <button data-copy="#id">: copy the text of the element.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });

  // <canvas data-chart='{"type": ..., "data": ..., "options": ...}'>: a Chart.js chart, when the
  // page loaded vendor/chartjs.
  function drawCharts(root) {
    if (typeof window.Chart === "undefined") return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      new window.Chart(canvas, JSON.parse(canvas.getAttribute("data-chart")));
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.target); });
})();

// Training images (web/templates/model_new.html): <input type=file data-count="#hidden" data-thumbs="#box">
// keeps a hidden count for the cost estimate and shows thumbnails; a [data-dropzone] around it
// takes dropped files. Capture phase: the count is set before htmx's change trigger on the form.
(function () {
  "use strict";

  function showFiles(input) {
    var count = input.getAttribute("data-count") && document.querySelector(input.getAttribute("data-count"));
    if (count) count.value = String(input.files.length);
    var box = input.getAttribute("data-thumbs") && document.querySelector(input.getAttribute("data-thumbs"));
    if (!box) return;
    box.querySelectorAll("img").forEach(function (img) { URL.revokeObjectURL(img.src); });
    box.textContent = "";
    Array.prototype.forEach.call(input.files, function (file) {
      if (!/^image\//.test(file.type)) return;
      var img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      box.appendChild(img);
    });
  }

  // <form data-submit-once="Uploading…">: one submission (an upload takes a while; a second click
  // would train a second model).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.hasAttribute || !form.hasAttribute("data-submit-once")) return;
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      button.textContent = form.getAttribute("data-submit-once");
    });
  });

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input && input.type === "file" && input.hasAttribute("data-count")) showFiles(input);
  }, true);

  function zoneOf(event) {
    return event.target.closest && event.target.closest("[data-dropzone]");
  }
  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      var zone = zoneOf(event);
      if (!zone) return;
      event.preventDefault();
      zone.classList.add("dragging");
    });
  });
  document.addEventListener("dragleave", function (event) {
    var zone = zoneOf(event);
    if (zone) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", function (event) {
    var zone = zoneOf(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    var input = zone.querySelector("input[type=file]");
    if (!input || !event.dataTransfer || !event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
})();
