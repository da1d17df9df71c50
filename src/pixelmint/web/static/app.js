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
