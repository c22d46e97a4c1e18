// The host panel: `system-monitor` frames as small live uPlot charts, with the current
// values as text next to each (the charts are pictures; the text is what screen readers read).

import uPlot from "../../vendor/uplot/dist/uPlot.esm.js";
import { notifyError } from "./notices.js";
import { $, formatRate } from "./ui.js";

const POINTS = 60;
const INTERVAL = 2000;
const PALETTE = ["#2f7ed8", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#16a085", "#c0392b", "#7f8c8d"];

function color(i) {
  return PALETTE[i % PALETTE.length];
}

class Chart {
  constructor(id, series, { percent = false } = {}) {
    this.box = $(id);
    this.names = series;
    this.percent = percent;
    this.data = [[], ...series.map(() => [])];
    this.plot = null;
  }

  options(width) {
    const axisColor = getComputedStyle(document.documentElement).getPropertyValue("--fg").trim();
    const axis = { stroke: axisColor, grid: { stroke: "rgba(128,128,128,0.2)" }, ticks: { show: false } };
    return {
      width,
      height: 120,
      legend: { show: false },
      cursor: { show: false },
      scales: this.percent ? { y: { range: [0, 100] } } : { y: { range: (u, min, max) => [0, Math.max(1024, max)] } },
      axes: [
        { ...axis, values: (u, ticks) => ticks.map(() => "") , size: 8 },
        { ...axis, size: 60, values: (u, ticks) => ticks.map((v) => (this.percent ? `${v}%` : formatRate(v))) },
      ],
      series: [{}, ...this.names.map((label, i) => ({ label, stroke: color(i), width: 1.5 }))],
    };
  }

  ensureSeries(names) {
    if (names.length === this.names.length) return;
    this.names = names;
    this.data = [[], ...names.map(() => [])];
    this.destroy();
  }

  push(time, values) {
    this.data[0].push(time);
    values.forEach((v, i) => this.data[i + 1].push(v));
    if (this.data[0].length > POINTS) for (const column of this.data) column.shift();
    this.box.dataset.samples = String(Number(this.box.dataset.samples || 0) + 1);
    this.draw();
  }

  draw() {
    const width = Math.max(160, this.box.clientWidth - 4);
    if (!this.plot) {
      this.plot = new uPlot(this.options(width), this.data, this.box);
    } else {
      if (Math.abs(this.plot.width - width) > 2) this.plot.setSize({ width, height: 120 });
      this.plot.setData(this.data);
    }
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

export class HostPanel {
  constructor() {
    this.conn = null;
    this.charts = {
      cpu: new Chart("chart-cpu", ["cpu"], { percent: true }),
      mem: new Chart("chart-mem", ["memory"], { percent: true }),
      disk: new Chart("chart-disk", ["read", "write"]),
      net: new Chart("chart-net", ["rx", "tx"]),
    };
    new ResizeObserver(() => Object.values(this.charts).forEach((c) => c.plot && c.draw()))
      .observe($("host"));
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.restyle());
  }

  restyle() {
    for (const chart of Object.values(this.charts)) {
      chart.destroy();
      if (chart.data[0].length) chart.draw();
    }
  }

  start(principal) {
    if (!(principal.scopes || []).includes("monitor:read")) {
      $("host-note").textContent = "This token has no monitor:read scope: no host metrics.";
      $("host-note").hidden = false;
      this.conn.unsubscribe("host");
      return;
    }
    this.conn.subscribe("host", { topic: "system-monitor", interval: INTERVAL }, (err) => {
      $("host-note").textContent = `Host metrics unavailable: ${err.message || err.code}`;
      notifyError(err, "Host metrics");
    });
  }

  sample(data) {
    $("host-note").hidden = true;
    const t = Date.now() / 1000;
    const cores = (data.cpu && data.cpu.cores) || [];
    if (cores.length) {
      this.charts.cpu.ensureSeries(cores.map((_, i) => `cpu${i}`));
      this.charts.cpu.push(t, cores);
    }
    $("cpu-now").textContent = data.cpu
      ? `${data.cpu.usage} % (${cores.map((c) => Math.round(c)).join(" / ")})` : "";
    if (data.memory) {
      this.charts.mem.push(t, [data.memory.usage]);
      $("mem-now").textContent = `${data.memory.usage} % of ${(data.memory.total / 2 ** 30).toFixed(1)} GiB`;
    }
    if (data.disk) {
      this.charts.disk.push(t, [data.disk.read, data.disk.write]);
      $("disk-now").textContent = `read ${formatRate(data.disk.read)}, write ${formatRate(data.disk.write)}`;
    }
    if (data.network) {
      this.charts.net.push(t, [data.network.rx, data.network.tx]);
      $("net-now").textContent = `↓ ${formatRate(data.network.rx)}, ↑ ${formatRate(data.network.tx)}`;
    }
  }
}
