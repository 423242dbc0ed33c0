#include "report/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "io/file.h"

namespace mf {

namespace {

// Colour-blind-safe palette (Okabe & Ito).
const char* const kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"};

constexpr size_t kPalette = sizeof kColors / sizeof kColors[0];
size_t style_of(const Series& s, size_t k) { return s.style >= 0 ? static_cast<size_t>(s.style) : k; }
const char* color_of(const Series& s, size_t k) { return kColors[style_of(s, k) % kPalette]; }
bool dashed(const Series& s, size_t k) { return style_of(s, k) / kPalette % 2 == 1; }

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi] with about `target` intervals.
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double span = hi - lo;
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::fabs(v) < 1e-12 * span ? 0 : v);
  return t;
}

std::string tick_text(double v) {
  if (v != 0 && (std::fabs(v) >= 1e5 || std::fabs(v) < 1e-3)) return fmt::format("{:.0e}", v);
  return fmt::format("{:g}", v);
}

void render_one(const Plot& p, double ox, double oy, std::string& out) {
  const double left = 64, right = 16, top = 34, bottom = 48;
  const double w = p.width - left - right, h = p.height - top - bottom;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : p.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (p.log_x && s.x[i] <= 0)) continue;
      const double xv = p.log_x ? std::log10(s.x[i]) : s.x[i];
      x0 = std::min(x0, xv);
      x1 = std::max(x1, xv);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
  const double ypad = 0.05 * (y1 - y0), xpad = 0.03 * (x1 - x0);
  y0 -= ypad, y1 += ypad, x0 -= xpad, x1 += xpad;
  auto X = [&](double v) { return ox + left + (((p.log_x ? std::log10(v) : v) - x0) / (x1 - x0)) * w; };
  auto Y = [&](double v) { return oy + top + (1.0 - (v - y0) / (y1 - y0)) * h; };

  out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="15" text-anchor="middle" font-weight="bold">{}</text>)",
                     ox + left + w / 2, oy + 20, escape(p.title)) + "\n";
  out += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#444"/>)",
                     ox + left, oy + top, w, h) + "\n";
  // Ticks and grid.
  std::vector<double> xt;
  if (p.log_x) {
    for (double e = std::floor(x0); e <= std::ceil(x1); ++e)
      if (e >= x0 && e <= x1) xt.push_back(std::pow(10.0, e));
    if (xt.size() < 2) xt = nice_ticks(std::pow(10.0, x0), std::pow(10.0, x1), 5);
  } else {
    xt = nice_ticks(x0, x1, 6);
  }
  for (double t : xt) {
    if ((p.log_x ? std::log10(t) : t) < x0 || (p.log_x ? std::log10(t) : t) > x1) continue;
    out += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="#ddd"/>)", X(t), oy + top,
                       oy + top + h) + "\n";
    out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="middle">{}</text>)", X(t),
                       oy + top + h + 15, tick_text(t)) + "\n";
  }
  for (double t : nice_ticks(y0, y1, 5)) {
    out += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{2:.1f}" y2="{1:.1f}" stroke="#ddd"/>)", ox + left, Y(t),
                       ox + left + w) + "\n";
    out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end">{}</text>)", ox + left - 5,
                       Y(t) + 4, tick_text(t)) + "\n";
  }
  out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">{}</text>)", ox + left + w / 2,
                     oy + p.height - 10, escape(p.x_label)) + "\n";
  out += fmt::format(
      R"svg(<text x="{0:.1f}" y="{1:.1f}" font-size="12" text-anchor="middle" transform="rotate(-90 {0:.1f} {1:.1f})">{2}</text>)svg",
      ox + 16, oy + top + h / 2, escape(p.y_label)) + "\n";
  // Series.
  for (size_t k = 0; k < p.series.size(); ++k) {
    const auto& s = p.series[k];
    const char* color = color_of(s, k);
    std::string pts;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (p.log_x && s.x[i] <= 0)) continue;
      pts += fmt::format("{:.1f},{:.1f} ", X(s.x[i]), Y(s.y[i]));
      if (s.markers)
        out += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3.5" fill="{}"/>)", X(s.x[i]), Y(s.y[i]), color) + "\n";
      if (i < s.point_labels.size() && !s.point_labels[i].empty())
      {
        // Labels of points near the right edge go to their left, so that they stay inside the frame.
        const bool right = X(s.x[i]) > ox + left + 0.7 * w;
        out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="10" fill="{}"{}>{}</text>)",
                           X(s.x[i]) + (right ? -5 : 5), Y(s.y[i]) - 5, color, right ? R"( text-anchor="end")" : "",
                           escape(s.point_labels[i])) + "\n";
      }
    }
    if (s.line && !pts.empty())
      out += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8"{}/>)", pts, color,
                         dashed(s, k) ? R"( stroke-dasharray="6,3")" : "") + "\n";
  }
  // Legend: in whichever inside corner covers the fewest data points.
  size_t entries = 0, longest = 0;
  for (const auto& s : p.series) {
    entries += !s.label.empty();
    longest = std::max(longest, s.label.size());
  }
  if (entries == 0) return;
  const double lw = 24 + 6.2 * static_cast<double>(longest), lh = 15.0 * static_cast<double>(entries) + 6;
  double best_x = ox + left + w - lw - 6, best_y = oy + top + 4;
  size_t best_hits = SIZE_MAX;
  for (int corner = 0; corner < 4; ++corner) {
    const double cx = corner % 2 ? ox + left + 6 : ox + left + w - lw - 6;
    const double cy = corner / 2 ? oy + top + h - lh - 4 : oy + top + 4;
    size_t hits = 0;
    for (const auto& s : p.series)
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (p.log_x && s.x[i] <= 0)) continue;
        const double px = X(s.x[i]), py = Y(s.y[i]);
        hits += px >= cx - 8 && px <= cx + lw + 8 && py >= cy - 8 && py <= cy + lh + 8;
      }
    if (hits < best_hits) best_hits = hits, best_x = cx, best_y = cy;
  }
  out += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="white" fill-opacity="0.85"/>)",
                     best_x - 4, best_y, lw, lh) + "\n";
  double ly = best_y + 4;
  for (size_t k = 0; k < p.series.size(); ++k) {
    if (p.series[k].label.empty()) continue;
    const char* color = color_of(p.series[k], k);
    if (dashed(p.series[k], k))
      out += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="2" stroke-dasharray="4,2"/>)",
                         best_x, ly + 6, best_x + 12, ly + 6, color) + "\n";
    else
      out += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="12" height="4" fill="{}"/>)", best_x, ly + 4, color) + "\n";
    out += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11">{}</text>)", best_x + 17, ly + 9,
                       escape(p.series[k].label)) + "\n";
    ly += 15;
  }
}

}  // namespace

std::string render_svg(const std::vector<Plot>& plots, int columns) {
  columns = std::max(1, columns);
  const int rows = static_cast<int>((plots.size() + static_cast<size_t>(columns) - 1) / static_cast<size_t>(columns));
  int cw = 0, ch = 0;
  for (const auto& p : plots) cw = std::max(cw, p.width), ch = std::max(ch, p.height);
  std::string out = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="Helvetica, Arial, sans-serif">)",
      cw * std::min<int>(columns, static_cast<int>(plots.size())), ch * rows) + "\n";
  out += R"(<rect width="100%" height="100%" fill="white"/>)" "\n";
  for (size_t i = 0; i < plots.size(); ++i)
    render_one(plots[i], static_cast<double>((static_cast<int>(i) % columns) * cw),
               static_cast<double>((static_cast<int>(i) / columns) * ch), out);
  return out + "</svg>\n";
}

std::string render_svg(const Plot& plot) { return render_svg(std::vector<Plot>{plot}, 1); }

void write_svg(const std::string& path, const std::string& svg) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(svg.data()), svg.size()});
}

}  // namespace mf
