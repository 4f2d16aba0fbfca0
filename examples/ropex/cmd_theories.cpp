// ropex theories: the published theories of RoPE context side by side (include/ropex/theories.hpp,
// docs/theories.md): for one model, the context each theory says it supports and the base each asks
// for a target length, plus the dimension cut-points of YaRN / Llama 3 / HoPE / p-RoPE / Liu.
//
// Inputs as `ropex predict`: a preset (--model), a config.json (--config) or flags; flags override.
// cmd_laws.cpp keeps its input plumbing file-local, so the few lines needed are here.
#include "cli.hpp"
#include "gguf_config.hpp"
#include "vocab.hpp"

#include <ropex/error.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/presets.hpp>
#include <ropex/rope/rotary_config.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using ojson = nlohmann::ordered_json;

ojson number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15) return static_cast<std::int64_t>(v);
  return v;
}

std::string fmt(double v, const char* f = "%.10g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

struct Opts {
  std::string model, config;
  int head_dim = 0;
  double train_len = 0, base = 0, pretrain_base = 10000, tune_len = 0, target = 0, tolerance = 1e-2, p = 0.75;
  double grid_step = 1e-3, fine_step = 1e-5;
  bool json = false, csv = false;
  CLI::Option *o_model = nullptr, *o_config = nullptr, *o_head_dim = nullptr, *o_train_len = nullptr,
              *o_base = nullptr, *o_pretrain_base = nullptr, *o_tune_len = nullptr, *o_target = nullptr,
              *o_tolerance = nullptr, *o_p = nullptr, *o_grid_step = nullptr, *o_fine_step = nullptr;
};

struct Inputs {
  int head_dim = 0;      // rotary dims d
  int static_pairs = 0;  // (head dim - rotary dim) / 2: pairs of the head that do not rotate
  double train_len = 0, base = 0, pretrain_base = 10000, tune_len = 0, target = 0;
  std::string label, preset;
  std::string model, model_resolved, config;  // --model as typed and what it named; the config file read
  std::map<std::string, std::string> origin;
};

std::string preset_origin(const ropex::ModelPreset& p) {
  return "preset " + std::string(p.name) + " (" + std::string(p.source) + ")";
}

std::int64_t shape_int(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return -1;
  const double v = j[key].get<double>();
  return v == std::floor(v) && v >= 0 && v < 9e15 ? static_cast<std::int64_t>(v) : -1;
}

// The preset whose released config.json has this shape and these rope settings (first match).
const ropex::ModelPreset* match_preset(const nlohmann::json& j, const ropex::RotaryConfig& rc) {
  const std::string mt = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  const std::int64_t heads = shape_int(j, "num_attention_heads");
  const std::int64_t kv = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                              ? shape_int(j, "num_key_value_heads") : heads;
  for (const auto& p : ropex::model_presets) {
    if (!ropex::preset_matchable(p) || p.model_type != mt) continue;
    if (shape_int(j, "hidden_size") != p.hidden_size || heads != p.num_attention_heads || kv != p.num_key_value_heads ||
        shape_int(j, "num_hidden_layers") != p.num_hidden_layers || shape_int(j, "vocab_size") != p.vocab_size)
      continue;
    if (rc.rotary_dim != p.head_dim || std::fabs(rc.base - p.base) > 1e-9 * p.base) continue;
    if (rc.max_position_embeddings != p.max_position_embeddings) continue;
    return &p;
  }
  return nullptr;
}

Inputs resolve(const Opts& o) {
  Inputs in;
  const auto m = *o.o_model ? std::optional(ropex::cli::resolve_model_arg(o.model)) : std::nullopt;
  if (m) {
    in.model = o.model;
    in.model_resolved = m->kind_name();
  }
  if (m && !m->is_path()) {
    const auto& p = *m->preset;
    in.label = in.preset = std::string(p.name);
    in.head_dim = p.head_dim;
    in.train_len = p.train_len;
    in.base = p.base;
    in.pretrain_base = p.pretrain_base;
    in.tune_len = p.tune_len;
    for (const char* k : {"head_dim", "train_len", "base", "pretrain_base", "tune_len"}) in.origin[k] = preset_origin(p);
  } else if (m || *o.o_config) {
    const ropex::cli::RotarySource src = ropex::cli::read_rotary_source(m ? o.model : o.config);
    const std::string& path = src.path;
    const nlohmann::json& j = src.shape;
    const ropex::RotaryConfig& rc = src.rc;
    in.label = in.config = path;
    in.head_dim = rc.rotary_dim;
    in.static_pairs = (rc.head_dim - rc.rotary_dim) / 2;
    in.origin["head_dim"] = path + ":" + rc.rotary_dim_key;
    in.origin["static_pairs"] = path + ":" + rc.head_dim_key + " - " + rc.rotary_dim_key;
    in.base = rc.base;
    in.origin["base"] = rc.base_is_default ? rc.base_key + " in " + path : path + ":" + rc.base_key;
    if (const auto* p = match_preset(j, rc)) {
      in.preset = std::string(p->name);
      in.train_len = p->train_len;
      in.pretrain_base = p->pretrain_base;
      in.tune_len = p->tune_len;
      for (const char* k : {"train_len", "pretrain_base", "tune_len"}) in.origin[k] = preset_origin(*p);
    }
  }
  auto take = [&](CLI::Option* opt, const char* field, double& dst, double v) {
    if (opt && *opt) {
      dst = v;
      in.origin[field] = "flag " + opt->get_name();
    }
  };
  if (*o.o_head_dim) {
    in.head_dim = o.head_dim;
    in.origin["head_dim"] = "flag --head-dim";
  }
  take(o.o_train_len, "train_len", in.train_len, o.train_len);
  take(o.o_base, "base", in.base, o.base);
  take(o.o_pretrain_base, "pretrain_base", in.pretrain_base, o.pretrain_base);
  take(o.o_tune_len, "tune_len", in.tune_len, o.tune_len);
  if (!in.origin.count("head_dim")) throw ropex::cli::UsageError("--head-dim: required (or --model / --config)");
  if (!in.origin.count("train_len"))
    throw ropex::cli::UsageError("--train-len: required (or --model, or a --config that matches a preset)");
  if (!in.origin.count("base")) throw ropex::cli::UsageError("--base: required (or --model / --config)");
  if (!in.origin.count("pretrain_base")) in.origin["pretrain_base"] = "default 10000 (the paper's; --pretrain-base)";
  if (!in.origin.count("tune_len")) {
    in.tune_len = in.train_len;
    in.origin["tune_len"] = "default = train_len (no continued training; --tune-len)";
  }
  if (!in.origin.count("static_pairs")) in.origin["static_pairs"] = "0 (the whole head rotates)";
  if (*o.o_target) {
    in.target = o.target;
    in.origin["target"] = "flag --target";
  } else {
    in.target = in.tune_len;
    in.origin["target"] = "the model's own context T_tune (" + in.origin["tune_len"] + ")";
  }
  // Checks with the flag named (the library names the field; the flag is what to fix).
  auto bad = [](const std::string& flag, const std::string& what) { throw ropex::cli::UsageError(flag + ": " + what); };
  if (in.head_dim < 2 || in.head_dim % 2) bad("--head-dim", "must be an even number >= 2, got " + std::to_string(in.head_dim));
  // The Men bound scans 2^24 distances x d/2 pairs (~25 CPU-s at d = 1024): past 8192 a run takes
  // many minutes and looks hung. Real heads have d <= 512.
  if (in.head_dim > 8192) bad("--head-dim", "must be <= 8192 (the numeric theories' cost grows with d), got " + std::to_string(in.head_dim));
  if (!(std::isfinite(in.base) && in.base > 1)) bad("--base", "must be > 1, got " + fmt(in.base));
  if (!(std::isfinite(in.pretrain_base) && in.pretrain_base > 1)) bad("--pretrain-base", "must be > 1, got " + fmt(in.pretrain_base));
  if (!(std::isfinite(in.train_len) && in.train_len > ropex::two_pi))
    bad("--train-len", "must be > 2*pi tokens, got " + fmt(in.train_len));
  if (!(std::isfinite(in.tune_len) && in.tune_len >= in.train_len))
    bad("--tune-len", "must be >= the training length " + fmt(in.train_len) + ", got " + fmt(in.tune_len));
  if (!(std::isfinite(in.target) && in.target > ropex::two_pi && in.target <= 1e9 && in.target == std::floor(in.target)))
    bad("--target", "must be a whole number of tokens in (2*pi, 1e9], got " + fmt(in.target));
  if (!(o.tolerance > 0 && o.tolerance < 1e3)) bad("--tolerance", "must be in (0, 1000) radians, got " + fmt(o.tolerance));
  if (!(o.p >= 0 && o.p <= 1)) bad("--p", "must be in [0, 1], got " + fmt(o.p));
  return in;
}

struct Row {
  std::string theory, source, context_formula, base_formula;
  std::optional<double> context;  // nullopt: no bound
  std::optional<double> base;     // nullopt: the theory gives no base
  std::string note;
};

std::vector<Row> theory_rows(const Inputs& in, const Opts& o, ojson& extra) {
  std::vector<Row> rows;
  const int d = in.head_dim;
  // Liu et al. (scaling_law.hpp).
  {
    const auto lim = ropex::extrapolation_limit(d, in.train_len, in.base, in.tune_len, in.pretrain_base);
    const auto bfc = ropex::base_for_context(in.target, d, in.train_len, in.pretrain_base);
    Row r{"liu_scaling_law", "Liu et al., arXiv 2310.05209, Theorem 3 (16a-16d)",
          "2*pi*beta^(d_extra/d) (16b) or T_tune (16c)", "(T/2pi)^(d/d_extra), exact inverse of 16b", {}, {}, ""};
    const bool none = lim.critical_dimension == d && lim.regime == ropex::Regime::larger_base;
    if (!none) r.context = lim.limit;
    r.base = bfc.base;
    r.note = std::string("regime ") + ropex::regime_name(lim.regime) + ", d_extra " + std::to_string(lim.critical_dimension);
    if (none) r.note += ": every pair completes a period in T_train, no bound";
    rows.push_back(r);
  }
  // Men et al.
  {
    constexpr std::int64_t cap = std::int64_t{1} << 24;
    const auto t0 = std::chrono::steady_clock::now();
    const auto len = ropex::men_context_length(d, in.base, cap, in.static_pairs);
    Row r{"men_discrimination_bound", "Men et al., arXiv 2405.14591, eq. 9-11",
          "first distance m with sum_i cos(m theta_i) < 0", "smallest base with B_m >= 0 for m < T", {}, {}, ""};
    if (len.bounded) r.context = static_cast<double>(len.length);
    else r.note = in.static_pairs >= d / 2 ? "static pairs >= rotating pairs: B_m never negative"
                                           : "B_m >= 0 for every distance below 2^24";
    ropex::MenSolverOptions so;
    so.grid_step = o.grid_step;
    so.fine_step = o.fine_step;
    const auto mb = ropex::men_base_for_context(d, static_cast<std::int64_t>(in.target), in.static_pairs, so);
    r.base = mb.base;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r.note.empty()) r.note = "B at the first negative distance " + fmt(len.value_at_length, "%.3g");
    extra["men"] = {{"static_pairs", in.static_pairs},
                    {"scan_cap", cap},
                    {"bounded", len.bounded},
                    {"base_infeasible_below", mb.infeasible_below},
                    {"witness_distance", mb.witness},
                    {"grid_step", o.grid_step},
                    {"fine_step", o.fine_step},
                    {"bases_tried", mb.bases_tried},
                    {"full_scans", mb.full_scans},
                    {"seconds", secs}};
    rows.push_back(r);
  }
  // Aliasing of the slowest pair.
  {
    Row r{"slowest_pair_period", "period of pair d/2-1 (RoFormer frequencies)", "2*pi*b^((d-2)/d)",
          "(T/2pi)^(d/(d-2))", ropex::slowest_period(d, in.base), {}, "2*pi*b = " + fmt(ropex::two_pi * in.base, "%.6g")};
    if (d >= 4) r.base = ropex::base_for_slowest_period(d, in.target);
    rows.push_back(r);
  }
  // Numeric bounds (base-free).
  for (const auto t : {ropex::Dtype::bf16, ropex::Dtype::fp16, ropex::Dtype::fp32}) {
    const auto nb = ropex::numeric_bounds(t, o.tolerance);
    rows.push_back({std::string(ropex::dtype_name(t)) + "_exact_positions", "IEEE 754 / bfloat16 significand",
                    "2^p, p = " + std::to_string(nb.precision), "", nb.exact_positions, {},
                    "positions past 2^p are not all representable"});
    rows.push_back({std::string(ropex::dtype_name(t)) + "_angle_error", "ulp(pos)/2 * theta_0, theta_0 = 1",
                    "2^(p+1+floor(log2 tol)), tol = " + fmt(o.tolerance), "", nb.angle_error_position, {},
                    "fastest pair's angle rounded in " + std::string(ropex::dtype_name(t)) + " errs by > tol"});
  }
  return rows;
}

ojson cut_json(const ropex::CutPoints& c) {
  return {{"yarn", {{"low", c.yarn_low}, {"high", c.yarn_high}, {"low_fractional", c.yarn_low_fractional},
                    {"high_fractional", c.yarn_high_fractional}, {"fast_period", c.yarn_fast_period},
                    {"slow_period", c.yarn_slow_period}}},
          {"llama3", {{"high_freq_wavelen", c.llama3_high_freq_wavelen}, {"low_freq_wavelen", c.llama3_low_freq_wavelen},
                      {"pairs_kept", c.llama3_pairs_kept}, {"pairs_scaled", c.llama3_pairs_scaled}}},
          {"hope", {{"pairs_kept", c.hope_pairs_kept}}},
          {"p_rope", {{"p", c.p_rope_p}, {"pairs_kept", c.p_rope_pairs_kept}}},
          {"liu", {{"critical_pairs", c.liu_critical_pairs}, {"critical_dimension", 2 * c.liu_critical_pairs}}}};
}

std::string m_origin(const Opts& o) { return *o.o_model ? "flag --model" : "flag --config"; }

void run(Opts& o) {
  const Inputs in = resolve(o);
  ojson extra;
  const auto rows = theory_rows(in, o, extra);
  ropex::CutPointInputs ci;
  ci.head_dim = in.head_dim;
  ci.base = in.base;
  ci.original_context = in.train_len;
  ci.train_len = in.train_len;
  ci.pretrain_base = in.pretrain_base;
  ci.p = o.p;
  const auto cuts = ropex::cut_points(ci);
  if (o.json) {
    ojson j;
    j["model"] = in.label.empty() ? ojson(nullptr) : ojson(in.label);
    j["preset"] = in.preset.empty() ? ojson(nullptr) : ojson(in.preset);
    ojson inputs;
    auto one = [&](const char* k, double v) { inputs[k] = {{"value", number(v)}, {"origin", in.origin.at(k)}}; };
    one("head_dim", in.head_dim);
    one("static_pairs", in.static_pairs);
    one("train_len", in.train_len);
    one("pretrain_base", in.pretrain_base);
    one("base", in.base);
    one("tune_len", in.tune_len);
    one("target", in.target);
    const ojson none = ropex::cli::input_json(nullptr, "not given");
    inputs["model"] = in.model.empty() ? none
                                       : ojson{{"value", in.model}, {"origin", "flag --model"}, {"resolved", in.model_resolved}};
    inputs["config"] = in.config.empty() ? none : ropex::cli::input_json(in.config, m_origin(o));
    inputs["tolerance"] = ropex::cli::input_json(o.tolerance, ropex::cli::flag_origin(o.o_tolerance, "default 0.01"));
    inputs["p"] = ropex::cli::input_json(o.p, ropex::cli::flag_origin(o.o_p, "default 0.75"));
    inputs["grid_step"] = ropex::cli::input_json(o.grid_step, ropex::cli::flag_origin(o.o_grid_step, "default 1e-3"));
    inputs["fine_step"] = ropex::cli::input_json(o.fine_step, ropex::cli::flag_origin(o.o_fine_step, "default 1e-5"));
    j["inputs"] = inputs;
    j["target"] = number(in.target);
    ojson arr = ojson::array();
    for (const auto& r : rows)
      arr.push_back({{"theory", r.theory},
                     {"supported_context", r.context ? number(*r.context) : ojson(nullptr)},
                     {"base_for_target", r.base ? ojson(*r.base) : ojson(nullptr)},
                     {"context_formula", r.context_formula},
                     {"base_formula", r.base_formula},
                     {"source", r.source},
                     {"note", r.note}});
    j["theories"] = arr;
    j["men_solver"] = extra["men"];
    j["cut_points"] = cut_json(cuts);
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  if (o.csv) {
    std::printf("theory,supported_context,base_for_target,source\n");
    for (const auto& r : rows)
      std::printf("%s,%s,%s,\"%s\"\n", r.theory.c_str(), r.context ? fmt(*r.context, "%.17g").c_str() : "",
                  r.base ? fmt(*r.base, "%.17g").c_str() : "", r.source.c_str());
    return;
  }
  std::printf("ropex theories%s%s: d=%d, base=%s, T_train=%s (pre-training base %s), T_tune=%s, target %s tokens\n",
              in.label.empty() ? "" : " ", in.label.c_str(), in.head_dim, fmt(in.base).c_str(), fmt(in.train_len).c_str(),
              fmt(in.pretrain_base).c_str(), fmt(in.tune_len).c_str(), fmt(in.target).c_str());
  auto line = [&](const char* label, const char* key, double v) {
    std::printf("  %-34s %s <- %s\n", label, fmt(v).c_str(), in.origin.at(key).c_str());
  };
  if (!in.model.empty() && in.model_resolved != "built-in preset")
    std::printf("  %-34s %s <- flag --model (%s)\n", "input model", in.model.c_str(), in.model_resolved.c_str());
  line("input d (rotary dims)", "head_dim", in.head_dim);
  line("input static (non-rotating) pairs", "static_pairs", in.static_pairs);
  line("input base", "base", in.base);
  line("input T_train", "train_len", in.train_len);
  line("input pre-training base", "pretrain_base", in.pretrain_base);
  line("input T_tune", "tune_len", in.tune_len);
  line("input target", "target", in.target);
  std::printf("  %-26s %16s %16s  %s\n", "theory", "context", "base for target", "note");
  for (const auto& r : rows)
    std::printf("  %-26s %16s %16s  %s\n", r.theory.c_str(), r.context ? fmt(*r.context, "%.1f").c_str() : "none",
                r.base ? fmt(*r.base, "%.6g").c_str() : "-", r.note.c_str());
  std::printf("  cut-points (pairs of %d; L0 = T_train = %s):\n", in.head_dim / 2, fmt(in.train_len).c_str());
  std::printf("    YaRN ramp (beta 32 / 1)       pairs %s .. %s (fractional %.3f .. %.3f; periods %s / %s tokens)\n",
              fmt(cuts.yarn_low).c_str(), fmt(cuts.yarn_high).c_str(), cuts.yarn_low_fractional, cuts.yarn_high_fractional,
              fmt(cuts.yarn_fast_period).c_str(), fmt(cuts.yarn_slow_period).c_str());
  std::printf("    Llama 3 bands (low 1, high 4) %d pairs kept (period < %s), %d scaled (period > %s)\n",
              cuts.llama3_pairs_kept, fmt(cuts.llama3_high_freq_wavelen).c_str(), cuts.llama3_pairs_scaled,
              fmt(cuts.llama3_low_freq_wavelen).c_str());
  std::printf("    HoPE                          %d pairs keep rotating (full period inside T_train)\n", cuts.hope_pairs_kept);
  std::printf("    p-RoPE (p = %s)             %d highest-frequency pairs kept\n", fmt(cuts.p_rope_p).c_str(),
              cuts.p_rope_pairs_kept);
  std::printf("    Liu critical dimension        %d dims (%d pairs)\n", 2 * cuts.liu_critical_pairs, cuts.liu_critical_pairs);
  std::printf("  Men solver: grid %s then %s, %s s\n", fmt(o.grid_step).c_str(), fmt(o.fine_step).c_str(),
              fmt(extra["men"]["seconds"].get<double>(), "%.2f").c_str());
}

ROPEX_SUBCOMMAND(14, [](CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* s = app.add_subcommand("theories",
                               "Context each published RoPE theory predicts for a model, and the base each needs "
                               "for a target length (Liu et al., Men et al., cut-points, numeric bounds)");
  s->footer("Examples:\n  ropex theories --model llama2-7b --target 131072\n"
            "  ropex theories --config tests/fixtures/configs/Llama-3.1-8B --json\n"
            "  ropex theories --head-dim 128 --train-len 4096 --base 1000000 --csv");
  o->o_model = s->add_option("--model", o->model,
                             "a model path (directory, GGUF file, llama2.c .bin: read as --config) or a built-in preset: " +
                                 ropex::model_preset_names());
  o->o_config = s->add_option("--config", o->config, "config.json, GGUF file or a directory holding config.json");
  o->o_config->excludes(o->o_model);
  o->o_head_dim = s->add_option("--head-dim", o->head_dim, "rotary dimensions per head d");
  o->o_train_len = s->add_option("--train-len", o->train_len, "pre-training context T_train (YaRN / Llama 3 L0)");
  o->o_base = s->add_option("--base", o->base, "rotary base of the model");
  o->o_pretrain_base = s->add_option("--pretrain-base", o->pretrain_base, "base of the pre-training stage (default 10000)");
  o->o_tune_len = s->add_option("--tune-len", o->tune_len, "continued-training context (default T_train)");
  o->o_target = s->add_option("--target", o->target, "target context, tokens (default: the model's T_tune)");
  o->o_tolerance = s->add_option("--tolerance", o->tolerance, "angle error tolerance in radians for the numeric bound (default 0.01)");
  o->o_p = s->add_option("--p", o->p, "p-RoPE's kept fraction (default 0.75)");
  o->o_grid_step = s->add_option("--grid-step", o->grid_step, "Men solver: coarse relative base step (default 1e-3)");
  o->o_fine_step = s->add_option("--fine-step", o->fine_step, "Men solver: fine relative base step below the coarse hit (default 1e-5, 0: none)");
  auto* js = s->add_flag("--json", o->json, "print JSON");
  s->add_flag("--csv", o->csv, "print CSV")->excludes(js);
  s->callback([o] { run(*o); });
});

}  // namespace
