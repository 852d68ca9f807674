// The run report: RUN_DIR/report.html, one self-contained page (inline SVG charts, images
// embedded as data URIs, no script or style fetched) that `weft train` rewrites at every
// checkpoint and at the end, and `weft report RUN_DIR` rewrites from the folder's files.
// While the run is live the page reloads itself; when it has ended it says how.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "runtime/files.h"
#include "tools/commands.h"

namespace weft {

namespace {

namespace fs = std::filesystem;

std::string slurp_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '<')
      r += "&lt;";
    else if (c == '>')
      r += "&gt;";
    else if (c == '&')
      r += "&amp;";
    else if (c == '"')
      r += "&quot;";
    else
      r += c;
  }
  return r;
}

std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16 | uint32_t(uint8_t(bytes[i + 1])) << 8 |
                       uint32_t(uint8_t(bytes[i + 2]));
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string png_uri(const fs::path& p) { return "data:image/png;base64," + base64(slurp_file(p)); }

struct Series {
  std::string name;
  std::vector<double> x, y;
};

// metrics.csv as columns; empty fields (a phase outside its steps) are NaN.
std::map<std::string, Series> read_metrics(const fs::path& csv, std::vector<std::string>& order) {
  std::map<std::string, Series> cols;
  std::ifstream f(csv);
  std::string line;
  if (!std::getline(f, line)) return cols;
  std::vector<std::string> names;
  std::stringstream hs(line);
  for (std::string c; std::getline(hs, c, ',');) names.push_back(c);
  for (size_t k = 1; k < names.size(); ++k) {
    order.push_back(names[k]);
    cols[names[k]].name = names[k];
  }
  while (std::getline(f, line)) {
    std::vector<std::string> v;
    std::stringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) v.push_back(c);
    if (v.size() != names.size()) continue;  // a torn last row of a live run
    char* end = nullptr;
    const double step = std::strtod(v[0].c_str(), &end);
    for (size_t k = 1; k < names.size(); ++k) {
      Series& s = cols[names[k]];
      s.x.push_back(step);
      s.y.push_back(v[k].empty() ? std::nan("") : std::strtod(v[k].c_str(), nullptr));
    }
  }
  return cols;
}

// An exponential moving average over about a twentieth of the run, NaN left out.
std::vector<double> smoothed(const std::vector<double>& y) {
  const double a = 1.0 / std::max(1.0, double(y.size()) / 20.0);
  std::vector<double> out(y.size(), std::nan(""));
  double m = std::nan("");
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) continue;
    m = std::isnan(m) ? y[i] : (1 - a) * m + a * y[i];
    out[i] = m;
  }
  return out;
}

std::string short_number(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  return a >= 1e4 || a < 1e-2 ? fmt::format("{:.2g}", v) : fmt::format("{:.3g}", v);
}

// A line chart as inline SVG: each series raw (faint) and smoothed; a log scale when the
// values are positive and span more than two decades.
std::string chart(const std::string& title, const std::vector<Series>& series) {
  const double w = 660, h = 220, left = 64, right = 12, top = 24, bottom = 28;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  bool positive = true;
  for (auto& s : series)
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      positive = positive && s.y[i] > 0;
    }
  if (x0 > x1) return "";
  const bool log_y = positive && y1 / y0 > 100;
  auto ty = [&](double v) { return log_y ? std::log10(v) : v; };
  double ly0 = ty(y0), ly1 = ty(y1);
  if (ly1 - ly0 < 1e-12) ly0 -= 0.5, ly1 += 0.5;
  if (x1 == x0) x1 = x0 + 1;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (w - left - right); };
  auto py = [&](double y) { return top + (ly1 - ty(y)) / (ly1 - ly0) * (h - top - bottom); };
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} "
      "{}\" role=\"img\"><title>{}</title>"
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
      w, h, w, h, escape(title), left, top, w - left - right, h - top - bottom);
  svg += fmt::format("<text x=\"{}\" y=\"16\" class=\"t\">{}{}</text>", left, escape(title),
                     log_y ? " (log scale)" : "");
  const double ticks[] = {ly1, (ly0 + ly1) / 2, ly0};
  for (double t : ticks) {
    const double v = log_y ? std::pow(10, t) : t;
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" class=\"a\" text-anchor=\"end\">{}</text>",
                       left - 4, py(v) + 3, short_number(v));
  }
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" class=\"a\">{}</text><text x=\"{}\" y=\"{}\" class=\"a\" "
      "text-anchor=\"end\">step {}</text>",
      left, h - 10, short_number(x0), w - right, h - 10, short_number(x1));
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const char* color = colors[k % 6];
    const std::vector<double> sm = smoothed(s.y);
    const size_t stride = std::max<size_t>(1, s.y.size() / 800);  // bounded page size
    for (int pass = 0; pass < 2; ++pass) {
      const std::vector<double>& y = pass == 0 ? s.y : sm;
      std::string pts;
      for (size_t i = 0; i < y.size(); i += stride)
        if (std::isfinite(y[i]) && (!log_y || y[i] > 0))
          pts += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(y[i]));
      svg += fmt::format(
          "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-opacity=\"{}\" "
          "points=\"{}\"/>",
          color, pass == 0 ? 0.8 : 1.8, pass == 0 ? 0.35 : 1.0, pts);
    }
    svg += fmt::format(
        "<text x=\"{}\" y=\"{}\" class=\"a\" fill=\"{}\" text-anchor=\"end\">{} (last {})</text>",
        w - right - 4, top + 14 + 13 * double(k), color, escape(s.name),
        short_number(s.y.empty() ? std::nan("") : s.y.back()));
  }
  return svg + "</svg>";
}

std::string seconds_str(double s) {
  const int64_t t = int64_t(s);
  return t >= 3600 ? fmt::format("{}h {:02d}m", t / 3600, int(t % 3600 / 60))
                   : fmt::format("{}m {:02d}s", t / 60, int(t % 60));
}

const char* kStyle =
    "body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:24px;max-width:1100px;"
    "color:#222}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;"
    "border-bottom:1px solid #ddd}table{border-collapse:collapse}td,th{padding:2px 10px;"
    "text-align:left;font-size:14px}.t{font-size:13px;font-weight:600}.a{font-size:11px;"
    "fill:#555}.banner{padding:8px 12px;border-radius:4px;margin:10px 0}.live{background:#"
    "fff4cc}.done{background:#e3f0d9}.fail{background:#f6d6d6}.warn{color:#a33}img.grid{"
    "image-rendering:pixelated;width:320px;border:1px solid #ccc}.graph svg{max-width:100%;"
    "height:auto}";

}  // namespace

void write_report(const std::string& dir) {
  const fs::path d(dir);
  json run = json::object();
  if (fs::exists(d / "run.json")) {
    try {
      run = json::parse(slurp_file(d / "run.json"));
    } catch (const std::exception&) {
      run = json::object();  // a report without the run's facts rather than none
    }
  }
  const bool finished = run.value("finished", true);
  const std::string name = run.value("name", d.filename().string());
  std::string html = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">";
  if (!finished) html += "<meta http-equiv=\"refresh\" content=\"15\">";
  html += fmt::format("<title>weft run: {}</title><style>{}</style></head><body>", escape(name),
                      kStyle);
  html += fmt::format("<h1>{}</h1>", escape(name));
  if (run.contains("doc")) html += fmt::format("<p>{}</p>", escape(run.value("doc", "")));

  // How the run stands.
  const int64_t step = run.value("step", int64_t(0)), steps = run.value("steps", int64_t(0));
  const std::string error = run.value("error", ""), stopped = run.value("stopped", "");
  if (!error.empty())
    html += fmt::format("<div class=\"banner fail\">The run failed at step {}: {}</div>", step,
                        escape(error));
  else if (!finished)
    html += fmt::format(
        "<div class=\"banner live\">Running: step {} of {}. This page reloads every 15 s.</div>",
        step, steps);
  else if (!stopped.empty())
    html += fmt::format(
        "<div class=\"banner done\">Stopped by {} after step {} of {}; `weft train ... "
        "--resume` continues it.</div>",
        escape(stopped), step, steps);
  else
    html += fmt::format("<div class=\"banner done\">Finished: {} steps.</div>", step);

  html += "<table>";
  auto row = [&](const char* k, const std::string& v) {
    if (!v.empty()) html += fmt::format("<tr><th>{}</th><td>{}</td></tr>", k, escape(v));
  };
  auto str = [&](const char* k) {
    if (!run.contains(k)) return std::string();
    return run[k].is_string() ? run[k].get<std::string>() : run[k].dump();
  };
  row("graph", str("graph"));
  row("command", str("command"));
  row("seed", str("seed"));
  row("batch", str("batch"));
  row("steps", str("steps"));
  row("threads", str("threads"));
  row("device", str("device"));
  row("ranks", str("ranks"));
  row("weft", str("version"));
  row("started", str("started"));
  if (run.contains("wall_seconds")) row("wall-clock", seconds_str(run["wall_seconds"]));
  row("samples/s", str("samples_per_s"));
  html += "</table>";

  // Warnings: divergence, the first node that was not finite.
  if (run.contains("warnings") && !run["warnings"].empty()) {
    html += "<h2>Warnings</h2><ul>";
    for (auto& w : run["warnings"]) html += fmt::format("<li class=\"warn\">{}</li>", escape(w));
    html += "</ul>";
  }

  // Curves: each phase's loss, the other logged values, the gradient norms, throughput.
  std::vector<std::string> order;
  auto cols = read_metrics(d / "metrics.csv", order);
  if (!cols.empty()) {
    html += "<h2>Losses and logged values</h2>";
    std::vector<std::string> losses = run.value("losses", std::vector<std::string>{});
    if (losses.empty())
      for (auto& n : order)
        if (n.rfind("grad_norm.", 0) != 0 && n != "samples_per_s") losses.push_back(n);
    for (auto& n : losses)
      if (cols.count(n)) html += chart(n, {cols[n]});
    for (auto& n : order)
      if (std::find(losses.begin(), losses.end(), n) == losses.end() &&
          n.rfind("grad_norm.", 0) != 0 && n != "samples_per_s")
        html += chart(n, {cols[n]});
    std::vector<Series> norms;
    for (auto& n : order)
      if (n.rfind("grad_norm.", 0) == 0) norms.push_back(cols[n]);
    if (!norms.empty()) html += chart("gradient norms (before clipping)", norms);
    if (cols.count("samples_per_s")) html += chart("samples/s", {cols["samples_per_s"]});
  }

  // Sample grids over time: at most 24 of them, evenly spaced, and the last.
  std::vector<std::pair<int64_t, fs::path>> grids;
  const std::regex grid_name("samples_step(\\d+)\\.png");
  if (fs::exists(d))
    for (auto& e : fs::directory_iterator(d)) {
      std::smatch m;
      const std::string f = e.path().filename().string();
      if (std::regex_match(f, m, grid_name)) grids.push_back({std::stoll(m[1]), e.path()});
    }
  std::sort(grids.begin(), grids.end());
  if (grids.size() > 24) {
    std::vector<std::pair<int64_t, fs::path>> kept;
    for (size_t i = 0; i < 24; ++i) kept.push_back(grids[i * (grids.size() - 1) / 23]);
    grids = kept;
  }
  if (fs::exists(d / "samples.png")) grids.push_back({step, d / "samples.png"});
  if (!grids.empty()) {
    html += "<h2>Samples over the run</h2>";
    html += fmt::format(
        "<p><input type=\"range\" id=\"grid\" min=\"0\" max=\"{}\" value=\"{}\" "
        "style=\"width:320px\" oninput=\"showGrid(this.value)\"> <span id=\"gridstep\"></span>"
        "</p>",
        grids.size() - 1, grids.size() - 1);
    for (size_t i = 0; i < grids.size(); ++i)
      html += fmt::format(
          "<figure class=\"g\" data-step=\"{}\" style=\"display:{}\"><img class=\"grid\" "
          "alt=\"samples at step {}\" src=\"{}\"><figcaption>step {}</figcaption></figure>",
          grids[i].first, i + 1 == grids.size() ? "block" : "none", grids[i].first,
          png_uri(grids[i].second), grids[i].first);
    html +=
        "<script>function showGrid(k){var f=document.querySelectorAll('figure.g');"
        "for(var i=0;i<f.length;i++)f[i].style.display=(i==k?'block':'none');"
        "document.getElementById('gridstep').textContent='step '+f[k].dataset.step;}"
        "showGrid(document.getElementById('grid').value);</script>";
  }

  // The numbers of every `weft eval` of the run's checkpoints, over the steps they were
  // taken at (eval_history.jsonl, a line per evaluation; a torn line is left out).
  if (fs::exists(d / "eval_history.jsonl")) {
    std::map<std::string, Series> over;  // "split: key" -> values by step
    std::ifstream f(d / "eval_history.jsonl");
    for (std::string line; std::getline(f, line);) {
      json e;
      try {
        e = json::parse(line);
      } catch (const std::exception&) {
        continue;
      }
      if (!e.contains("step") || !e["step"].is_number()) continue;
      for (auto& [k, v] : e.items())
        if (k != "step" && v.is_number()) {
          Series& sr = over[e.value("split", "") + ": " + k];
          sr.name = k;
          sr.x.push_back(e["step"].get<double>());
          sr.y.push_back(v.get<double>());
        }
    }
    if (!over.empty()) html += "<h2>Evaluations over the run (weft eval)</h2>";
    for (auto& [title, sr] : over) html += chart(title, {sr});
  }

  // Autoencoders: the inputs whose reconstructions the sample grids show.
  if (fs::exists(d / "inputs.png") && fs::exists(d / "samples.png"))
    html += fmt::format(
        "<h2>Inputs and their reconstructions</h2><figure style=\"display:inline-block\"><img "
        "class=\"grid\" alt=\"inputs\" src=\"{}\"><figcaption>test images</figcaption></figure> "
        "<figure style=\"display:inline-block\"><img class=\"grid\" alt=\"reconstructions\" "
        "src=\"{}\"><figcaption>their reconstructions at step {}</figcaption></figure>",
        png_uri(d / "inputs.png"), png_uri(d / "samples.png"), step);

  // What `weft eval` recorded: its numbers and pictures (reconstructions beside their
  // inputs for an autoencoder).
  std::vector<fs::path> evals;
  if (fs::exists(d))
    for (auto& e : fs::directory_iterator(d))
      if (e.path().filename().string().rfind("eval_", 0) == 0 && e.path().extension() != ".jsonl")
        evals.push_back(e.path());
  std::sort(evals.begin(), evals.end());
  if (!evals.empty()) {
    html += "<h2>Evaluation (weft eval)</h2>";
    for (auto& p : evals) {
      if (p.extension() == ".png")
        html += fmt::format(
            "<figure><img class=\"grid\" alt=\"{}\" src=\"{}\"><figcaption>{}"
            "</figcaption></figure>",
            escape(p.filename().string()), png_uri(p), escape(p.filename().string()));
      if (p.extension() == ".json") {
        try {
          const json e = json::parse(slurp_file(p));
          html += fmt::format("<h3>{}</h3><table>", escape(p.filename().string()));
          for (auto& [k, v] : e.items())
            html += fmt::format("<tr><th>{}</th><td>{}</td></tr>", escape(k),
                                escape(v.is_string() ? v.get<std::string>() : v.dump()));
          html += "</table>";
        } catch (const std::exception&) {
        }
      }
    }
  }

  // The graph, as `weft dot` draws it.
  html += "<h2>The graph</h2>";
  if (fs::exists(d / "graph.svg")) {
    std::string svg = slurp_file(d / "graph.svg");
    const size_t at = svg.find("<svg");
    html += "<div class=\"graph\">" + (at == std::string::npos ? "" : svg.substr(at)) + "</div>";
  } else {
    html += fmt::format(
        "<p>{}</p>",
        escape(run.value("graph_drawing", "No drawing: this run folder has no graph.svg.")));
  }
  html += "</body></html>\n";
  write_atomic((d / "report.html").string(), html);
}

}  // namespace weft
