// Paper-style figures as SVG text, with no dependency: a plot with linear or log axes (curves,
// points, labelled vertical lines, legend) and a heatmap. Hand-written because the C++ plotting
// libraries in Debian (matplot++ is not packaged; gnuplot/ROOT are programs, not headers) would add
// a runtime dependency for a few hundred lines of markup. Elements carry classes (`curve`,
// `vline`, `vline-label`, `cell`, ...) so a test can find them in the DOM.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace ropex::report {

inline std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

inline std::string num(double v, const char* f = "%.2f") {
  char b[48];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// Tick label for a count of tokens or a base: 512, 4K, 1M, 1e+09.
inline std::string short_number(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return num(v, "%.3g");
  if (a >= 1 << 20 && std::fmod(a, double(1 << 20)) == 0) return num(v / double(1 << 20), "%.0fM");
  if (a >= 1e6) return num(v / 1e6, "%.3gM");
  if (a >= 1024 && std::fmod(a, 1024.0) == 0) return num(v / 1024, "%.0fK");
  if (a >= 1e4) return num(v / 1e3, "%.3gK");
  return num(v, "%.4g");
}

/// Ten colours that stay apart in print (Tableau 10).
inline const char* palette(size_t i) {
  static const char* c[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                            "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return c[i % 10];
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::string label;
};

class Plot {
 public:
  Plot(std::string title, Axis x, Axis y, int width = 760, int height = 440)
      : title_(std::move(title)), x_(std::move(x)), y_(std::move(y)), w_(width), h_(height) {}

  /// A polyline; points outside a log axis's positive range are skipped.
  void curve(const std::vector<double>& xs, const std::vector<double>& ys, const std::string& label, const char* color) {
    std::string pts;
    for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) {
      if (!usable(xs[i], x_) || !usable(ys[i], y_)) continue;
      pts += num(px(xs[i])) + "," + num(py(ys[i])) + " ";
    }
    body_ += "<polyline class=\"curve\" data-label=\"" + xml_escape(label) + "\" fill=\"none\" stroke=\"" + color +
             "\" stroke-width=\"1.6\" points=\"" + pts + "\"/>\n";
    legend_.push_back({label, color, false});
  }

  /// Markers (circles), e.g. measured limits; `hollow` for censored values.
  void points(const std::vector<double>& xs, const std::vector<double>& ys, const std::string& label, const char* color,
              const std::vector<bool>& hollow = {}) {
    for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) {
      if (!usable(xs[i], x_) || !usable(ys[i], y_)) continue;
      const bool h = i < hollow.size() && hollow[i];
      body_ += "<circle class=\"point\" data-label=\"" + xml_escape(label) + "\" cx=\"" + num(px(xs[i])) + "\" cy=\"" +
               num(py(ys[i])) + "\" r=\"4.5\" fill=\"" + (h ? "white" : color) + "\" stroke=\"" + color + "\" stroke-width=\"1.5\"/>\n";
    }
    legend_.push_back({label, color, true});
  }

  /// A labelled vertical line at x (skipped, and reported false, when x is outside the axis).
  bool vline(double x, const std::string& label, const char* color, bool dashed = true) {
    if (!(x >= x_.lo && x <= x_.hi) || !usable(x, x_)) return false;
    const double X = px(x);
    body_ += "<line class=\"vline\" data-label=\"" + xml_escape(label) + "\" x1=\"" + num(X) + "\" x2=\"" + num(X) +
             "\" y1=\"" + num(top_) + "\" y2=\"" + num(h_ - bottom_) + "\" stroke=\"" + color + "\" stroke-width=\"1.4\"" +
             (dashed ? " stroke-dasharray=\"5,3\"" : "") + "/>\n";
    // Labels stack down the plot so neighbouring lines stay readable.
    // Right of the line in the plot's left half, left of it in the right half: the text stays inside.
    const double ly = top_ + 14 + 13.0 * double(vlines_++ % 8);
    const bool left = X > left_ + 0.5 * (w_ - left_ - right_);
    body_ += "<text class=\"vline-label\" x=\"" + num(left ? X - 3 : X + 3) + "\" y=\"" + num(ly) + "\" font-size=\"11\"" +
             (left ? " text-anchor=\"end\"" : "") + " fill=\"" + color + "\">" + xml_escape(label) + "</text>\n";
    return true;
  }

  /// A horizontal reference line (no legend entry).
  void hline(double y, const std::string& label, const char* color) {
    if (!usable(y, y_) || y < y_.lo || y > y_.hi) return;
    const double Y = py(y);
    body_ += "<line class=\"hline\" x1=\"" + num(left_) + "\" x2=\"" + num(w_ - right_) + "\" y1=\"" + num(Y) + "\" y2=\"" +
             num(Y) + "\" stroke=\"" + color + "\" stroke-dasharray=\"2,3\"/>\n<text x=\"" + num(w_ - right_ - 4) +
             "\" y=\"" + num(Y - 3) + "\" font-size=\"10\" text-anchor=\"end\" fill=\"" + color + "\">" + xml_escape(label) + "</text>\n";
  }

  std::string svg() const {
    std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"ropex-figure\" width=\"" + std::to_string(w_) +
                    "\" height=\"" + std::to_string(h_) + "\" viewBox=\"0 0 " + std::to_string(w_) + " " + std::to_string(h_) +
                    "\" font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += "<text class=\"title\" x=\"" + num(w_ / 2.0) + "\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">" + xml_escape(title_) + "</text>\n";
    s += axes();
    // Curves are clipped to the frame (ids are global in an HTML page: one per figure).
    static int figures = 0;
    const std::string clip = "ropex-plot-" + std::to_string(++figures);
    s += "<defs><clipPath id=\"" + clip + "\"><rect x=\"" + num(left_) + "\" y=\"" + num(top_) + "\" width=\"" +
         num(w_ - left_ - right_) + "\" height=\"" + num(h_ - top_ - bottom_) + "\"/></clipPath></defs>\n";
    s += "<g clip-path=\"url(#" + clip + ")\">\n" + body_ + "</g>\n";
    s += legend();
    return s + "</svg>\n";
  }

 private:
  struct Entry {
    std::string label;
    const char* color;
    bool marker;
  };
  static bool usable(double v, const Axis& a) { return std::isfinite(v) && (!a.log || v > 0); }
  double frac(double v, const Axis& a) const {
    if (a.log) return (std::log(v) - std::log(a.lo)) / (std::log(a.hi) - std::log(a.lo));
    return (v - a.lo) / (a.hi - a.lo);
  }
  double px(double x) const { return left_ + frac(x, x_) * (w_ - left_ - right_); }
  double py(double y) const { return h_ - bottom_ - frac(y, y_) * (h_ - top_ - bottom_); }

  static std::vector<double> ticks(const Axis& a) {
    std::vector<double> t;
    if (a.log) {
      const double decades = std::log10(a.hi / a.lo);
      const double step = decades >= 4 ? 10 : 2;  // powers of 10 over a wide range, else powers of 2
      for (double v = std::pow(step, std::ceil(std::log(a.lo) / std::log(step) - 1e-9)); v <= a.hi * (1 + 1e-9); v *= step) t.push_back(v);
      if (t.size() > 12) {  // thin out
        std::vector<double> u;
        for (size_t i = 0; i < t.size(); i += (t.size() + 11) / 12) u.push_back(t[i]);
        t = u;
      }
      return t;
    }
    const double span = a.hi - a.lo, raw = span / 6, mag = std::pow(10, std::floor(std::log10(raw)));
    const double step = raw / mag < 2 ? mag * 2 : raw / mag < 5 ? mag * 5 : mag * 10;
    for (double v = std::ceil(a.lo / step) * step; v <= a.hi + 1e-9 * span; v += step) t.push_back(v);
    return t;
  }

  std::string axes() const {
    std::string s;
    const double x0 = left_, x1 = w_ - right_, y0 = h_ - bottom_, y1 = top_;
    s += "<rect class=\"frame\" x=\"" + num(x0) + "\" y=\"" + num(y1) + "\" width=\"" + num(x1 - x0) + "\" height=\"" +
         num(y0 - y1) + "\" fill=\"none\" stroke=\"#333\"/>\n";
    for (double t : ticks(x_)) {
      const double X = px(t);
      s += "<line x1=\"" + num(X) + "\" x2=\"" + num(X) + "\" y1=\"" + num(y0) + "\" y2=\"" + num(y0 + 5) + "\" stroke=\"#333\"/>";
      s += "<text class=\"tick\" x=\"" + num(X) + "\" y=\"" + num(y0 + 18) + "\" font-size=\"11\" text-anchor=\"middle\">" +
           short_number(t) + "</text>\n";
    }
    for (double t : ticks(y_)) {
      const double Y = py(t);
      s += "<line x1=\"" + num(x0 - 5) + "\" x2=\"" + num(x0) + "\" y1=\"" + num(Y) + "\" y2=\"" + num(Y) + "\" stroke=\"#333\"/>";
      s += "<line x1=\"" + num(x0) + "\" x2=\"" + num(x1) + "\" y1=\"" + num(Y) + "\" y2=\"" + num(Y) + "\" stroke=\"#eee\"/>";
      s += "<text class=\"tick\" x=\"" + num(x0 - 8) + "\" y=\"" + num(Y + 4) + "\" font-size=\"11\" text-anchor=\"end\">" +
           (y_.log ? short_number(t) : num(t, "%.3g")) + "</text>\n";
    }
    s += "<text class=\"axis-label\" x=\"" + num((x0 + x1) / 2) + "\" y=\"" + num(h_ - 8.0) +
         "\" font-size=\"13\" text-anchor=\"middle\">" + xml_escape(x_.label) + "</text>\n";
    s += "<text class=\"axis-label\" transform=\"translate(16," + num((y0 + y1) / 2) +
         ") rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">" + xml_escape(y_.label) + "</text>\n";
    return s;
  }

  std::string legend() const {
    std::string s;
    double y = top_ + 8;
    const double x = w_ - right_ + 10;
    for (const auto& e : legend_) {
      if (e.marker)
        s += "<circle cx=\"" + num(x + 8) + "\" cy=\"" + num(y) + "\" r=\"4\" fill=\"" + e.color + "\"/>";
      else
        s += "<line x1=\"" + num(x) + "\" x2=\"" + num(x + 16) + "\" y1=\"" + num(y) + "\" y2=\"" + num(y) + "\" stroke=\"" +
             e.color + "\" stroke-width=\"2\"/>";
      s += "<text class=\"legend\" x=\"" + num(x + 22) + "\" y=\"" + num(y + 4) + "\" font-size=\"11\">" + xml_escape(e.label) + "</text>\n";
      y += 16;
    }
    return s;
  }

  std::string title_;
  Axis x_, y_;
  int w_, h_;
  double left_ = 62, right_ = 240, top_ = 32, bottom_ = 46;
  std::string body_;
  std::vector<Entry> legend_;
  int vlines_ = 0;
};

/// A heatmap of values in [0, 1] (e.g. passkey accuracy): rows x columns, white (0) to blue (1),
/// each cell printed with its value; NaN cells (not run) grey.
inline std::string heatmap(const std::string& title, const std::vector<std::string>& row_labels,
                           const std::vector<std::string>& col_labels, const std::vector<std::vector<double>>& v,
                           const std::string& row_axis, const std::string& col_axis) {
  const int cw = std::max(44, 560 / std::max<int>(1, int(col_labels.size()))), ch = 30, left = 120, top = 40;
  const int w = left + cw * int(col_labels.size()) + 30, h = top + ch * int(row_labels.size()) + 60;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"ropex-figure\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) + " " + std::to_string(h) +
                  "\" font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text class=\"title\" x=\"" + num(w / 2.0) + "\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">" + xml_escape(title) + "</text>\n";
  for (size_t r = 0; r < row_labels.size(); ++r) {
    const int y = top + ch * int(r);
    s += "<text class=\"row-label\" x=\"" + std::to_string(left - 8) + "\" y=\"" + std::to_string(y + ch / 2 + 4) +
         "\" font-size=\"11\" text-anchor=\"end\">" + xml_escape(row_labels[r]) + "</text>\n";
    for (size_t c = 0; c < col_labels.size(); ++c) {
      const double a = r < v.size() && c < v[r].size() ? v[r][c] : std::numeric_limits<double>::quiet_NaN();
      std::string fill = "#cccccc";
      if (std::isfinite(a)) {
        const double t = std::clamp(a, 0.0, 1.0);  // white -> #08519c
        fill = "rgb(" + std::to_string(int(255 - t * (255 - 8))) + "," + std::to_string(int(255 - t * (255 - 81))) + "," +
               std::to_string(int(255 - t * (255 - 156))) + ")";
      }
      const int x = left + cw * int(c);
      s += "<rect class=\"cell\" data-row=\"" + xml_escape(row_labels[r]) + "\" data-col=\"" + xml_escape(col_labels[c]) +
           "\" data-value=\"" + (std::isfinite(a) ? num(a, "%.4g") : "nan") + "\" x=\"" + std::to_string(x) + "\" y=\"" +
           std::to_string(y) + "\" width=\"" + std::to_string(cw - 1) + "\" height=\"" + std::to_string(ch - 1) + "\" fill=\"" + fill +
           "\" stroke=\"#999999\" stroke-width=\"0.5\"/>";
      s += "<text x=\"" + std::to_string(x + cw / 2) + "\" y=\"" + std::to_string(y + ch / 2 + 4) + "\" font-size=\"11\" text-anchor=\"middle\" fill=\"" +
           (std::isfinite(a) && a > 0.55 ? "white" : "black") + "\">" + (std::isfinite(a) ? num(a, "%.2f") : "-") + "</text>\n";
    }
  }
  for (size_t c = 0; c < col_labels.size(); ++c)
    s += "<text class=\"col-label\" x=\"" + std::to_string(left + cw * int(c) + cw / 2) + "\" y=\"" +
         std::to_string(top + ch * int(row_labels.size()) + 16) + "\" font-size=\"11\" text-anchor=\"middle\">" +
         xml_escape(col_labels[c]) + "</text>\n";
  s += "<text class=\"axis-label\" x=\"" + std::to_string(left + cw * int(col_labels.size()) / 2) + "\" y=\"" + std::to_string(h - 10) +
       "\" font-size=\"13\" text-anchor=\"middle\">" + xml_escape(col_axis) + "</text>\n";
  s += "<text class=\"axis-label\" transform=\"translate(16," + std::to_string(top + ch * int(row_labels.size()) / 2) +
       ") rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">" + xml_escape(row_axis) + "</text>\n";
  return s + "</svg>\n";
}

}  // namespace ropex::report
