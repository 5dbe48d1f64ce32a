// examples/r1/svg_chart.hpp — small-multiple line charts as one self-contained SVG file.
//
// Each panel plots one or more series against the step; noisy RL curves get a moving average
// drawn over the raw points (the raw line is kept, faint, so nothing is hidden). No library:
// SVG is text a browser opens, and the file is written whole (temp file + rename).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "reason/io/atomic_file.hpp"

namespace r1 {

struct Series {
  std::string name;
  std::vector<double> x, y;
  int smooth = 1;  // moving-average window (1: raw only)
};

struct Panel {
  std::string title;
  std::vector<Series> series;
};

namespace detail {

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

inline std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

inline std::vector<double> moving_average(const std::vector<double>& y, int window) {
  std::vector<double> out(y.size());
  double sum = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    sum += y[i];
    if (i >= static_cast<std::size_t>(window)) sum -= y[i - static_cast<std::size_t>(window)];
    out[i] = sum / static_cast<double>(std::min<std::size_t>(i + 1, static_cast<std::size_t>(window)));
  }
  return out;
}

}  // namespace detail

/// The SVG text of `panels` laid out `columns` wide.
inline std::string svg_chart(const std::string& title, const std::vector<Panel>& panels, int columns = 3) {
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  const int pw = 360, ph = 220, ml = 52, mr = 12, mt = 28, mb = 30, header = 36;
  const int rows = (static_cast<int>(panels.size()) + columns - 1) / columns;
  const int W = columns * pw, H = header + rows * ph;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(W) + "\" height=\"" +
                  std::to_string(H) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"10\" y=\"24\" font-size=\"16\">" + detail::escape(title) + "</text>\n";
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const Panel& panel = panels[p];
    const int ox = static_cast<int>(p % static_cast<std::size_t>(columns)) * pw;
    const int oy = header + static_cast<int>(p / static_cast<std::size_t>(columns)) * ph;
    const double x0 = ox + ml, x1 = ox + pw - mr, y0 = oy + ph - mb, y1 = oy + mt;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (const Series& sr : panel.series)
      for (std::size_t i = 0; i < sr.x.size() && i < sr.y.size(); ++i) {
        if (!std::isfinite(sr.x[i]) || !std::isfinite(sr.y[i])) continue;
        xmin = std::min(xmin, sr.x[i]);
        xmax = std::max(xmax, sr.x[i]);
        ymin = std::min(ymin, sr.y[i]);
        ymax = std::max(ymax, sr.y[i]);
      }
    s += "<text x=\"" + detail::num(x0) + "\" y=\"" + detail::num(oy + 18) + "\" font-size=\"13\">" +
         detail::escape(panel.title) + "</text>\n";
    s += "<rect x=\"" + detail::num(x0) + "\" y=\"" + detail::num(y1) + "\" width=\"" + detail::num(x1 - x0) +
         "\" height=\"" + detail::num(y0 - y1) + "\" fill=\"none\" stroke=\"#999\"/>\n";
    if (!(xmin <= xmax)) continue;  // no data
    if (xmax == xmin) xmax = xmin + 1;
    if (ymax == ymin) {
      ymax += 0.5 * std::max(1e-9, std::abs(ymax));
      ymin -= 0.5 * std::max(1e-9, std::abs(ymin));
    }
    const double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
    auto X = [&](double v) { return x0 + (v - xmin) / (xmax - xmin) * (x1 - x0); };
    auto Y = [&](double v) { return y0 - (v - ymin) / (ymax - ymin) * (y0 - y1); };
    for (int t = 0; t <= 4; ++t) {  // axis labels at five evenly spaced values
      const double yv = ymin + (ymax - ymin) * t / 4, xv = xmin + (xmax - xmin) * t / 4;
      s += "<text x=\"" + detail::num(x0 - 4) + "\" y=\"" + detail::num(Y(yv) + 4) + "\" text-anchor=\"end\">" +
           detail::num(yv) + "</text>\n";
      s += "<text x=\"" + detail::num(X(xv)) + "\" y=\"" + detail::num(y0 + 14) + "\" text-anchor=\"middle\">" +
           detail::num(xv) + "</text>\n";
      s += "<line x1=\"" + detail::num(x0) + "\" x2=\"" + detail::num(x1) + "\" y1=\"" + detail::num(Y(yv)) + "\" y2=\"" +
           detail::num(Y(yv)) + "\" stroke=\"#eee\"/>\n";
    }
    for (std::size_t k = 0; k < panel.series.size(); ++k) {
      const Series& sr = panel.series[k];
      const char* color = colors[k % (sizeof colors / sizeof *colors)];
      auto polyline = [&](const std::vector<double>& y, const char* extra) {
        std::string pts;
        for (std::size_t i = 0; i < sr.x.size() && i < y.size(); ++i)
          if (std::isfinite(sr.x[i]) && std::isfinite(y[i])) pts += detail::num(X(sr.x[i])) + "," + detail::num(Y(y[i])) + " ";
        s += "<polyline fill=\"none\" stroke=\"" + std::string(color) + "\" " + extra + " points=\"" + pts + "\"/>\n";
      };
      if (sr.smooth > 1) {
        polyline(sr.y, "stroke-opacity=\"0.25\"");
        polyline(detail::moving_average(sr.y, sr.smooth), "stroke-width=\"1.8\"");
      } else {
        polyline(sr.y, "stroke-width=\"1.5\"");
      }
      if (panel.series.size() > 1)
        s += "<text x=\"" + detail::num(x1 - 4) + "\" y=\"" + detail::num(y1 + 12 + 12 * static_cast<double>(k)) +
             "\" text-anchor=\"end\" fill=\"" + color + "\">" + detail::escape(sr.name) + "</text>\n";
    }
  }
  s += "</svg>\n";
  return s;
}

inline void write_svg_chart(const std::filesystem::path& path, const std::string& title, const std::vector<Panel>& panels,
                            int columns = 3) {
  reason::io::write_file_atomic(path, svg_chart(title, panels, columns));
}

}  // namespace r1
