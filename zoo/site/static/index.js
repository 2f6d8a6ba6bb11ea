// zoo site: search and filters of the index table. Plain JavaScript, no network: the rows
// hold their facts in data-* attributes, the labels come from search.js (window.ZOO_LABELS).
"use strict";
(function () {
  const table = document.getElementById("models");
  if (!table) return;
  const rows = Array.from(table.tBodies[0].rows).map((tr) => {
    const d = tr.dataset;
    const labels = (window.ZOO_LABELS && window.ZOO_LABELS[d.name]) || "";
    return {
      tr,
      text: [d.name, d.family, labels].join("\n").toLowerCase(),
      classes: Number(d.classes),
      params: Number(d.params),
      weights: Number(d.weights),
      license: d.license,
      formats: d.formats ? d.formats.split(" ") : [],
    };
  });
  const $ = (id) => document.getElementById(id);
  const number = (id) => {
    const v = $(id).value.trim();
    return v === "" || Number.isNaN(Number(v)) ? null : Number(v);
  };
  const count = $("count");
  const none = $("none");

  function apply() {
    const words = $("q").value.toLowerCase().split(/\s+/).filter(Boolean);
    const format = $("format").value;
    const license = $("license").value;
    const cmin = number("classes-min");
    const cmax = number("classes-max");
    const pmax = number("params-max");
    const wmax = number("weights-max");
    let shown = 0;
    for (const r of rows) {
      const ok = words.every((w) => r.text.includes(w)) &&
        (!format || r.formats.includes(format)) &&
        (!license || r.license === license) &&
        (cmin === null || r.classes >= cmin) &&
        (cmax === null || r.classes <= cmax) &&
        (pmax === null || r.params <= pmax * 1e6) &&
        (wmax === null || (r.weights > 0 && r.weights <= wmax * 1048576));
      r.tr.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = `${shown} of ${rows.length} models`;
    none.hidden = shown !== 0;
  }

  const form = $("filters");
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (e) => e.preventDefault());
  apply();
})();
