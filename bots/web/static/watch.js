// The Watch page's charts (Chart.js, vendored beside this file) and their refresh: /watch.json is
// asked again every 5 s while the page is visible; the A/B table's cells are updated in place.
// A new or ended A/B test changes the page's shape, so the page is then loaded again.
(function () {
  "use strict";
  const EVERY_MS = 5000;
  const charts = {};

  const percent = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);
  function shown(field, value) {
    if (value === null || value === undefined) return "–";
    if (field === "rated_share" || field === "up_share") return percent(value);
    if (field === "interval" || field === "newcombe" || field === "bootstrap") {
      return `${percent(value[0])} to ${percent(value[1])}`;
    }
    if (field === "difference") return `${value >= 0 ? "+" : ""}${(value * 100).toFixed(1)} points`;
    if (field === "reached") return value ? "yes" : "not yet";
    if (field === "versions") return value.join(", ");
    return String(value);
  }

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) return;
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update("none");
    } else {
      config.options = Object.assign({ animation: false, maintainAspectRatio: false }, config.options || {});
      charts[id] = new window.Chart(canvas, config);
    }
  }

  function toggle(id, empty) {
    const note = document.getElementById(id);
    if (note) note.hidden = !empty;
  }

  const shareAxis = { y: { min: 0, max: 1, ticks: { callback: (v) => `${Math.round(v * 100)} %` } } };

  function render(data) {
    draw("chart-ratings", {
      type: "line",
      data: {
        labels: data.ratings.labels,
        datasets: data.ratings.series.map((s) => ({ label: `${s.model} 👍 share`, data: s.up_share, spanGaps: true })),
      },
      options: { scales: shareAxis },
    });
    toggle("ratings-empty", !data.ratings.series.length);
    draw("chart-turns", {
      type: "bar",
      data: {
        labels: data.turns.labels,
        datasets: [
          { label: "voice", data: data.turns.voice },
          { label: "text", data: data.turns.text },
        ],
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
    toggle("turns-empty", !data.turns.labels.length);
    draw("chart-languages", {
      type: "bar",
      data: {
        labels: data.languages.map((l) => l.language),
        datasets: [{ label: "messages", data: data.languages.map((l) => l.turns) }],
      },
    });
    toggle("languages-empty", !data.languages.length);
    draw("chart-hours", {
      type: "bar",
      data: {
        labels: data.hours.map((_, h) => `${String(h).padStart(2, "0")}:00`),
        datasets: [{ label: "messages", data: data.hours }],
      },
    });
    toggle("hours-empty", !data.hours.some((n) => n > 0));
    if (data.ab) renderAb(data.ab);
  }

  function renderAb(ab) {
    for (const [arm, figures] of Object.entries(ab.arms)) {
      document.querySelectorAll(`#ab-arms tr[data-arm="${arm}"] [data-field]`).forEach((cell) => {
        const value = figures[cell.dataset.field];
        cell.dataset.value = JSON.stringify(value === undefined ? null : value);
        cell.textContent = shown(cell.dataset.field, value);
      });
    }
    document.querySelectorAll("#ab-comparison [data-field]").forEach((cell) => {
      const field = cell.dataset.field;
      const value = field === "reached" || field === "decision" ? ab[field] : ab.comparison && ab.comparison[field];
      cell.dataset.value = JSON.stringify(value === undefined ? null : value);
      cell.textContent = shown(field, value);
    });
    const arms = ["control", "candidate"].map((arm) => ab.arms[arm]);
    draw("chart-ab", {
      type: "bar",
      data: {
        labels: arms.map((a, i) => `${i ? "candidate" : "control"}: ${a.name || "active"}`),
        datasets: [
          { label: "👍 share", data: arms.map((a) => a.up_share) },
          { label: "95 % interval", data: arms.map((a) => a.interval) },
        ],
      },
      options: { scales: shareAxis },
    });
  }

  const abState = (ab) => (ab ? `${ab.experiment.id}:${ab.experiment.ended_at ? "ended" : "running"}` : "");

  async function refresh(section) {
    const response = await fetch(`/watch.json?days=${encodeURIComponent(section.dataset.days)}`, {
      credentials: "same-origin",
      redirect: "manual",
      headers: { accept: "application/json" },
    });
    if (response.type === "opaqueredirect" || response.status === 403) {
      window.location.assign("/signin"); // the session ended
      return false;
    }
    if (!response.ok) throw new Error(`status ${response.status}`);
    const data = await response.json();
    if (abState(data.ab) !== section.dataset.abState) {
      window.location.reload(); // a test started or ended since the page was drawn
      return false;
    }
    render(data);
    return true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("watch");
    if (!section) return;
    const status = document.getElementById("watch-refreshed");
    async function tick() {
      if (!document.hidden) {
        try {
          if (!(await refresh(section))) return;
          status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every 5 s.`;
        } catch (error) {
          status.textContent = `Could not refresh (${error.message}); trying again in 5 s.`;
        }
      }
      window.setTimeout(tick, EVERY_MS);
    }
    tick();
  });
})();
