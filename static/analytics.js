// The analytics page's charts: progressive enhancement over the server-rendered tables. The numbers come from
// the page itself (<script id="analytics-data" type="application/json">, written by json_script); Chart.js is
// served from our own static files (static/vendor/chartjs). Money arrives as exact decimal strings.
(function () {
  "use strict";
  const blob = document.getElementById("analytics-data");
  if (!blob || typeof window.Chart === "undefined") return;
  const data = JSON.parse(blob.textContent);

  // Okabe–Ito: distinguishable with the common colour-vision deficiencies; each line also has its own dash
  // pattern and point shape, so colour is never the only cue. All have >= 3:1 contrast on white.
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#B8528F", "#7A5C00", "#56779E", "#000000"];
  const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3], [4, 2], [1, 2], [8, 8]];
  const POINTS = ["circle", "triangle", "rect", "rectRot", "star", "crossRot", "cross"];
  const UNIT_TITLES = { "$": "US dollars", requests: "requests", tokens: "tokens", "%": "% of requests", ms: "milliseconds" };

  function formatValue(unit, value, raw) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (unit === "$") return "$" + (typeof raw === "string" ? raw : String(value));
    if (unit === "%") return value + "%";
    if (unit === "ms") return Number(value).toLocaleString("en-US") + " ms";
    return Number(value).toLocaleString("en-US") + " " + unit;
  }

  function tickLabel(unit, value) {
    if (unit === "$") return "$" + Number(value).toLocaleString("en-US", { maximumSignificantDigits: 6 });
    if (unit === "%") return value + "%";
    if (unit === "ms") return Number(value).toLocaleString("en-US") + " ms";
    return Number(value).toLocaleString("en-US");
  }

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#3d4450";

  for (const spec of data.charts) {
    const box = document.querySelector('.chart-box[data-chart="' + spec.id + '"]');
    if (!box) continue;
    const names = Object.keys(spec.data);
    if (!names.length) continue;
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", spec.title + " (" + UNIT_TITLES[spec.unit] + ") over time; the same numbers are in the table below.");
    box.appendChild(canvas);
    const datasets = names.map((name, i) => {
      const colour = PALETTE[i % PALETTE.length];
      const raw = spec.data[name];
      return {
        label: name,
        data: raw.map((v) => (v === null ? null : Number(v))),
        raw: raw,
        borderColor: colour,
        backgroundColor: spec.kind === "bar" ? colour : colour + "22",
        borderDash: spec.kind === "bar" ? [] : DASHES[i % DASHES.length],
        pointStyle: POINTS[i % POINTS.length],
        pointRadius: spec.labels.length > 40 ? 0 : 3,
        pointHoverRadius: 5,
        borderWidth: 2,
        spanGaps: false,
      };
    });
    // the chart now shows what the open table showed without JavaScript: fold the table away (one click opens it)
    const details = box.parentElement.querySelector("details.chart-table");
    if (details) details.open = false;
    new Chart(canvas, {
      type: spec.kind,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom", labels: { usePointStyle: true, boxWidth: 10 } },
          tooltip: {
            callbacks: {
              label: (ctx) => ctx.dataset.label + ": " + formatValue(spec.unit, ctx.parsed.y, ctx.dataset.raw[ctx.dataIndex]),
            },
          },
        },
        scales: {
          x: { stacked: spec.stacked, title: { display: true, text: "Time (UTC)" }, ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 } },
          y: {
            stacked: spec.stacked,
            beginAtZero: true,
            title: { display: true, text: spec.unit === "$" ? "$ (USD)" : UNIT_TITLES[spec.unit] },
            ticks: { callback: (value) => tickLabel(spec.unit, value) },
          },
        },
      },
    });
  }
})();
