// The files of `ropex check --report DIR`, all drawn from report.json's content: report.json,
// report.md, report.html (figures inline, so the page is one file) and the SVG figures
//   loss_<k>.svg     loss vs position (log x), long and short windows, each theory's limit as a
//                    labelled vertical line, the measured limit as a solid one;
//   passkey_<k>.svg  passkey accuracy, depth x length;
//   limits.svg       supported context vs base per theory, with the measured points.
#pragma once
#include <ropex/error.hpp>
#include <ropex/report/svg.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace ropex::report {

using ojson = nlohmann::ordered_json;

namespace detail {

inline void write_file(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  if (!f) throw make_error(p.string(), "", "cannot open for writing");
  f << s;
  f.close();
  if (!f) throw make_error(p.string(), "", "write failed");
}

inline const char* theory_color(const std::string& t) {
  if (t == "liu_scaling_law") return "#e15759";
  if (t == "men_discrimination_bound") return "#4e79a7";
  if (t == "slowest_pair_period") return "#59a14f";
  if (t.rfind("bf16", 0) == 0) return "#b07aa1";
  return "#9c755f";
}

inline std::string opt_tokens(const ojson& v) { return v.is_null() ? std::string("none") : short_number(v.get<double>()); }

}  // namespace detail

inline std::string loss_figure(const ojson& setting, const ojson& report) {
  const double N = report["inputs"]["max_len"]["value"].get<double>();
  const double S = report["inputs"]["short_window"]["value"].get<double>();
  double lo = 1e300, hi = -1e300;
  for (const auto& b : setting["curve"])
    for (const char* k : {"mean_long", "mean_short"}) lo = std::min(lo, b[k].get<double>()), hi = std::max(hi, b[k].get<double>());
  if (!(hi > lo)) lo = 0, hi = 1;
  const double pad = 0.05 * (hi - lo);
  Plot p("Loss vs position: " + setting["label"].get<std::string>(), {1, N, true, "position (tokens)"},
         {std::max(0.0, lo - pad), hi + pad, false, "NLL (nats)"});
  std::vector<double> x, yl, ys;
  for (const auto& b : setting["curve"]) {
    x.push_back(0.5 * (b["begin"].get<double>() + b["end"].get<double>()));
    yl.push_back(b["mean_long"]), ys.push_back(b["mean_short"]);
  }
  p.curve(x, ys, "short windows (S = " + short_number(S) + ")", "#999999");
  p.curve(x, yl, "one long window", "#222222");  // on top: equal to the short ones below S
  p.vline(S, "S = " + short_number(S), "#bbbbbb", false);
  // Numeric bounds are drawn where the run computed in that format (bf16 on the GPU); the CPU is fp32.
  const bool bf16 = report["inputs"].contains("dtype") && report["inputs"]["dtype"]["value"] == "bf16";
  if (setting["predictions_apply"].get<bool>())
    for (const auto& t : setting["predictions"]) {
      const std::string name = t["theory"];
      const bool numeric = name.rfind("bf16", 0) == 0 || name.rfind("fp16", 0) == 0;
      if (numeric && !(bf16 && name.rfind("bf16", 0) == 0)) continue;
      if (!t["context"].is_null()) p.vline(t["context"].get<double>(), t["theory"].get<std::string>() + " " + short_number(t["context"]), detail::theory_color(t["theory"]));
    }
  const auto& m = setting["rise"]["margin_0.50"]["measured_limit"];
  if (!m.is_null()) p.vline(m.get<double>(), "measured " + short_number(m.get<double>()), "#000000", false);
  return p.svg();
}

inline std::string passkey_figure(const ojson& setting) {
  std::vector<double> depths;
  std::vector<int64_t> lengths = setting["passkey"]["lengths"].get<std::vector<int64_t>>();
  for (const auto& c : setting["passkey"]["cells"])
    if (std::find(depths.begin(), depths.end(), c["depth"].get<double>()) == depths.end()) depths.push_back(c["depth"]);
  std::vector<std::string> rows, cols;
  for (double d : depths) rows.push_back(num(d, "%.3g"));
  for (auto L : lengths) cols.push_back(short_number(double(L)));
  std::vector<std::vector<double>> v(depths.size(), std::vector<double>(lengths.size(), std::nan("")));
  for (const auto& c : setting["passkey"]["cells"]) {
    const auto r = size_t(std::find(depths.begin(), depths.end(), c["depth"].get<double>()) - depths.begin());
    const auto k = size_t(std::find(lengths.begin(), lengths.end(), c["length"].get<int64_t>()) - lengths.begin());
    if (k < lengths.size()) v[r][k] = c["accuracy"];
  }
  return heatmap("Passkey accuracy: " + setting["label"].get<std::string>(), rows, cols, v, "needle depth", "length (tokens)");
}

/// Supported context vs base for Liu et al. and Men et al. (and the slowest period), over two
/// decades either side of the model's base, with the measured limits of the base settings.
inline std::string limits_figure(const ojson& report) {
  const auto& in = report["inputs"];
  const int d = in["head_dim"]["value"], sp = in["static_pairs"]["value"];
  const double base = in["base"]["value"], T = in["train_len"]["value"], Tt = in["tune_len"]["value"];
  const double pb = in["pretrain_base"]["value"], N = in["max_len"]["value"];
  double blo = base / 100, bhi = base * 100;
  for (const auto& s : report["settings"])
    if (s["predictions_apply"].get<bool>()) blo = std::min(blo, s["rope_base"].get<double>() / 3), bhi = std::max(bhi, s["rope_base"].get<double>() * 3);
  blo = std::max(blo, 1.5);
  std::vector<double> bs, liu, men, slow;
  const auto cap = std::int64_t(std::max(64.0, 16 * N));
  for (int i = 0; i <= 40; ++i) {
    const double b = blo * std::pow(bhi / blo, i / 40.0);
    bs.push_back(b);
    try {
      const auto l = extrapolation_limit(d, T, b, Tt, pb);
      liu.push_back(l.critical_dimension == d && l.regime == Regime::larger_base ? std::nan("") : l.limit);
    } catch (const Error&) {
      liu.push_back(std::nan(""));
    }
    const auto m = men_context_length(d, b, cap, sp);
    men.push_back(m.bounded ? double(m.length) : std::nan(""));
    slow.push_back(slowest_period(d, b));
  }
  double ylo = 1e300, yhi = 0;
  for (const auto* v : {&liu, &men})
    for (double y : *v)
      if (std::isfinite(y) && y > 0) ylo = std::min(ylo, y), yhi = std::max(yhi, y);
  ylo = std::min(ylo, N / 4), yhi = std::max(yhi, N * 2);
  Plot p("Supported context vs RoPE base", {blo, bhi, true, "RoPE base"}, {std::max(1.0, ylo / 2), yhi * 2, true, "context (tokens)"});
  p.curve(bs, liu, "Liu et al. (scaling law)", detail::theory_color("liu_scaling_law"));
  p.curve(bs, men, "Men et al. (B_m >= 0)", detail::theory_color("men_discrimination_bound"));
  p.curve(bs, slow, "slowest pair's period", detail::theory_color("slowest_pair_period"));
  std::vector<double> mx, my, kx, ky;
  std::vector<bool> hollow;
  for (const auto& s : report["settings"]) {
    if (!s["predictions_apply"].get<bool>()) continue;
    const auto& m = s["rise"]["margin_0.50"]["measured_limit"];
    mx.push_back(s["rope_base"]), my.push_back(m.is_null() ? N : m.get<double>()), hollow.push_back(m.is_null());
    if (!s["passkey"]["passkey_limit"].is_null() && s["passkey"]["passkey_limit"].get<double>() > 0)
      kx.push_back(s["rope_base"]), ky.push_back(s["passkey"]["passkey_limit"]);
  }
  p.points(mx, my, "measured loss limit (hollow: > N)", "#000000", hollow);
  if (!kx.empty()) p.points(kx, ky, "measured passkey limit", "#f28e2b");
  p.vline(base, "model base " + short_number(base), "#bbbbbb", false);
  return p.svg();
}

/// The verdict of docs/validation.md section 6, test 1, for one prediction.
inline std::string loss_verdict(const ojson& pred, const ojson& rise, double N) {
  if (pred["context"].is_null() || !pred["context_limit"].get<bool>()) return "";
  const double P = pred["context"];
  const auto& m = rise["margin_0.50"]["measured_limit"];
  if (m.is_null()) return P >= N / 2 ? "holds (no rise up to N; P >= N/2)" : "fails (no rise up to N; P < N/2)";
  const double r = m.get<double>() / P;
  return std::string(r >= 0.5 && r <= 2 ? "holds" : "fails") + " (measured/predicted " + num(r, "%.3g") + ")";
}

inline std::string check_summary(const ojson& report) {
  const double N = report["inputs"]["max_len"]["value"];
  std::string s = "ropex check: " + report["inputs"]["model"]["value"].get<std::string>() + ", N = " + short_number(N) +
                  ", S = " + short_number(report["inputs"]["short_window"]["value"].get<double>()) + "\n";
  for (const auto& st : report["settings"]) {
    const auto& m = st["rise"]["margin_0.50"]["measured_limit"];
    s += "  " + st["label"].get<std::string>() + ": measured limit " + (m.is_null() ? "> " + short_number(N) : short_number(m.get<double>())) +
         ", passkey limit " + detail::opt_tokens(st["passkey"]["passkey_limit"]) + "\n";
    if (st["predictions_apply"].get<bool>())
      for (const auto& p : st["predictions"])
        if (p["context_limit"].get<bool>())
          s += "    " + p["theory"].get<std::string>() + " predicts " + detail::opt_tokens(p["context"]) + ": " +
               loss_verdict(p, st["rise"], N) + "\n";
  }
  const auto& t = report["time"];
  s += "  time " + num(t["total_seconds"].get<double>(), "%.1f") + " s, " + num(100 * t["model_fraction"].get<double>(), "%.1f") +
       "% in the model forward";
  return s;
}

inline std::string markdown(const ojson& report) {
  const double N = report["inputs"]["max_len"]["value"];
  std::string s = "# ropex check\n\n## Inputs\n\n| input | value | origin |\n|---|---|---|\n";
  for (const auto& [k, v] : report["inputs"].items())
    if (k != "settings") s += "| " + k + " | " + v["value"].dump() + " | " + v["origin"].get<std::string>() + " |\n";
  s += "\nRule: " + report["rule"]["comparison"].get<std::string>() + "; bins of " + report["rule"]["bin_width"].dump() +
       " tokens from " + report["rule"]["first_bin_begin"].dump() + "; limit = first bin whose mean difference exceeds " +
       report["rule"]["margin"].dump() + " nats (" + report["rule"]["text"].get<std::string>() + ").\n\n![limits](limits.svg)\n";
  size_t k = 0;
  for (const auto& st : report["settings"]) {
    s += "\n## " + st["label"].get<std::string>() + "\n\n";
    s += "rope_type " + st["rope_type"].get<std::string>() + ", base " + short_number(st["rope_base"]) + ", factor " +
         num(st["factor"].get<double>(), "%g") + "\n\n";
    if (!st["predictions_apply"].get<bool>()) s += "The theories model the unscaled base only: the predictions below are the base's, for reference.\n\n";
    s += "| theory | predicted context | verdict (loss) | note |\n|---|---|---|---|\n";
    for (const auto& p : st["predictions"])
      s += "| " + p["theory"].get<std::string>() + " | " + detail::opt_tokens(p["context"]) + " | " +
           (st["predictions_apply"].get<bool>() ? loss_verdict(p, st["rise"], N) : "") + " | " + p["note"].get<std::string>() + " |\n";
    s += "\n| measured limit (margin) | tokens |\n|---|---|\n";
    for (const char* m : {"margin_0.50", "margin_0.25", "margin_1.00"}) {
      const auto& v = st["rise"][m]["measured_limit"];
      s += std::string("| ") + m + " | " + (v.is_null() ? "> " + short_number(N) : short_number(v.get<double>())) + " |\n";
    }
    s += "\n![loss](loss_" + std::to_string(k) + ".svg)\n";
    if (!st["passkey"]["cells"].empty()) {
      s += "\nPasskey limit: " + detail::opt_tokens(st["passkey"]["passkey_limit"]) +
           "\n\n| length | depth | correct | accuracy | answer NLL |\n|---|---|---|---|---|\n";
      for (const auto& c : st["passkey"]["cells"])
        s += "| " + c["length"].dump() + " | " + num(c["depth"].get<double>(), "%g") + " | " + c["correct"].dump() + "/" +
             c["trials"].dump() + " | " + num(c["accuracy"].get<double>(), "%.2f") + " | " + num(c["answer_nll"].get<double>(), "%.3f") + " |\n";
      s += "\n![passkey](passkey_" + std::to_string(k) + ".svg)\n";
    }
    ++k;
  }
  const auto& t = report["time"];
  s += "\n## Time\n\n" + num(t["total_seconds"].get<double>(), "%.2f") + " s in all, " + num(t["model_seconds"].get<double>(), "%.2f") +
       " s in the model forward (" + num(100 * t["model_fraction"].get<double>(), "%.1f") + "%); " + t["units_computed"].dump() +
       " units computed, " + t["units_resumed"].dump() + " resumed.\n";
  return s;
}

/// report.html: the same content, figures inline (one self-contained file).
inline std::string html(const ojson& report, const std::vector<std::string>& figures) {
  std::string s = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ropex check</title>\n"
                  "<style>body{font-family:Helvetica,Arial,sans-serif;margin:24px;max-width:1100px}"
                  "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
                  "figure{margin:12px 0}</style></head><body>\n<h1>ropex check</h1>\n";
  s += "<pre id=\"summary\">" + xml_escape(check_summary(report)) + "</pre>\n";
  for (const auto& f : figures) s += "<figure>\n" + f + "</figure>\n";
  s += "<h2>Inputs</h2>\n<table id=\"inputs\"><tr><th>input</th><th>value</th><th>origin</th></tr>\n";
  for (const auto& [k, v] : report["inputs"].items())
    if (k != "settings") s += "<tr><td>" + xml_escape(k) + "</td><td>" + xml_escape(v["value"].dump()) + "</td><td>" + xml_escape(v["origin"].get<std::string>()) + "</td></tr>\n";
  return s + "</table>\n</body></html>\n";
}

/// Writes report.json, report.md, report.html and the SVG figures into `dir`.
inline void write_check_report(const std::filesystem::path& dir, const ojson& report) {
  std::vector<std::string> figs{limits_figure(report)};
  detail::write_file(dir / "limits.svg", figs[0]);
  size_t k = 0;
  for (const auto& st : report["settings"]) {
    figs.push_back(loss_figure(st, report));
    detail::write_file(dir / ("loss_" + std::to_string(k) + ".svg"), figs.back());
    if (!st["passkey"]["cells"].empty()) {
      figs.push_back(passkey_figure(st));
      detail::write_file(dir / ("passkey_" + std::to_string(k) + ".svg"), figs.back());
    }
    ++k;
  }
  detail::write_file(dir / "report.json", report.dump(2) + "\n");
  detail::write_file(dir / "report.md", markdown(report));
  detail::write_file(dir / "report.html", html(report, figs));
}

}  // namespace ropex::report
