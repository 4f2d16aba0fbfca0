// ropex predict | base | periods: the paper's scaling laws on the command line
// (Liu et al., arXiv 2310.05209; formulas in include/ropex/scaling_law.hpp, docs/scaling-laws.md).
//
// Inputs come from flags, a built-in preset (--model) or a Hugging Face config.json (--config);
// explicit flags override the preset/file. Every value remembers where it came from, so an error
// names the flag or file field to fix.
#include "cli.hpp"

#include <ropex/io/memory_budget.hpp>
#include <ropex/error.hpp>
#include <ropex/presets.hpp>
#include <ropex/rope/rotary_config.hpp>
#include "gguf_config.hpp"
#include "vocab.hpp"
#include <ropex/rope/scaling.hpp>
#include <ropex/scaling_law.hpp>

#include <ropex/io/json_file.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ojson = nlohmann::ordered_json;

// Integral values print as integers in JSON ("train_len": 4096, not 4096.0).
ojson number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15) return static_cast<std::int64_t>(v);
  return v;
}

std::string fmt(double v, const char* f = "%.10g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// ---- inputs -------------------------------------------------------------------------------------

struct InputFlags {  // what the user typed
  int head_dim = 0;
  double train_len = 0, base = 0, tune_len = 0, pretrain_base = 10000, target = 0;
  std::string model, config;
  CLI::Option *o_head_dim = nullptr, *o_train_len = nullptr, *o_base = nullptr, *o_tune_len = nullptr,
              *o_pretrain_base = nullptr, *o_model = nullptr, *o_config = nullptr;
};

struct Inputs {  // resolved values + provenance
  int head_dim = 0;
  double train_len = 0, base = 0, tune_len = 0, pretrain_base = 10000;
  bool has_base = false, has_tune = false;
  std::string model, config, scaling = "default";
  std::string model_resolved;                 // "built-in preset", "GGUF file", ... ("" without --model)
  double factor = 1;
  std::vector<std::string> presets;           // --model, or the presets a config.json matched
  std::map<std::string, std::string> origin;  // law field -> "flag --x" / "preset X (source)" / "file:key"
};

void add_input_flags(CLI::App* s, InputFlags& f, bool with_base, bool with_tune) {
  f.o_model = s->add_option("--model", f.model,
                            "a model path (directory, GGUF file, llama2.c .bin: read as --config) or a built-in preset: " +
                                ropex::model_preset_names());
  f.o_config = s->add_option("--config", f.config,
                             "config.json, GGUF file or a directory holding config.json: d and the base from the file, "
                             "T_train and the pre-training base from the preset it matches (else give --train-len and "
                             "--pretrain-base)");
  f.o_config->excludes(f.o_model);
  f.o_head_dim = s->add_option("--head-dim", f.head_dim, "rotary dimensions per head d (e.g. 128)");
  f.o_train_len = s->add_option("--train-len", f.train_len, "pre-training context T_train, tokens (e.g. 4096)");
  if (with_base) f.o_base = s->add_option("--base", f.base, "rotary base beta used (after tuning), e.g. 1000000");
  if (with_tune)
    f.o_tune_len = s->add_option("--tune-len", f.tune_len, "continued-training context T_tune (default: T_train)");
  f.o_pretrain_base = s->add_option("--pretrain-base", f.pretrain_base,
                                    "base of the pre-training stage (the paper: 10000)");
}

std::string preset_origin(const ropex::ModelPreset& p) {
  return "preset " + std::string(p.name) + " (" + std::string(p.source) + ")";
}

// Integer field for preset matching; absent or not an integer -> -1 (never equal to a preset's).
std::int64_t shape_int(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return -1;
  const double v = j[key].get<double>();
  return v == std::floor(v) && v >= 0 && v < 9e15 ? static_cast<std::int64_t>(v) : -1;
}

// The presets whose released config.json has this shape and these rope settings.
std::vector<const ropex::ModelPreset*> match_presets(const nlohmann::json& j, const ropex::RotaryConfig& rc) {
  const std::string model_type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  const std::int64_t heads = shape_int(j, "num_attention_heads");
  const std::int64_t kv = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                              ? shape_int(j, "num_key_value_heads")
                              : heads;  // HF default: no GQA
  const std::string type = ropex::to_string(rc.rope.type);
  std::vector<const ropex::ModelPreset*> out;
  for (const auto& p : ropex::model_presets) {
    if (!ropex::preset_matchable(p) || p.model_type != model_type) continue;
    if (shape_int(j, "hidden_size") != p.hidden_size || heads != p.num_attention_heads ||
        kv != p.num_key_value_heads || shape_int(j, "num_hidden_layers") != p.num_hidden_layers ||
        shape_int(j, "vocab_size") != p.vocab_size)
      continue;
    if (rc.rotary_dim != p.head_dim || std::fabs(rc.base - p.base) > 1e-9 * p.base) continue;
    if (type != p.scaling || (type != "default" && rc.rope.factor != p.factor)) continue;
    if (rc.max_position_embeddings != p.max_position_embeddings) continue;
    out.push_back(&p);
  }
  return out;
}

// `arg`: --config, or a --model path. A GGUF file's keys are named as the file names them.
void read_config(Inputs& in, const InputFlags& f, const std::string& arg) {
  const ropex::cli::RotarySource src = ropex::cli::read_rotary_source(arg);
  const std::string& path = src.path;
  const nlohmann::json& j = src.shape;
  const ropex::RotaryConfig& rc = src.rc;
  in.config = path;
  in.head_dim = rc.rotary_dim;
  in.origin["head_dim"] = rc.partial ? path + ":" + rc.rotary_dim_key + " (of head_dim " + std::to_string(rc.head_dim) +
                                           " from " + rc.head_dim_key + ")"
                                     : path + ":" + rc.head_dim_key;
  in.base = rc.base;
  in.has_base = true;
  in.origin["base"] = rc.base_is_default ? rc.base_key + " in " + path : path + ":" + rc.base_key;
  in.scaling = ropex::to_string(rc.rope.type);
  in.factor = rc.rope.factor;

  const auto found = match_presets(j, rc);
  if (found.empty()) return;
  // Several presets can share one released config (Qwen2 / Qwen2.5 7B); they must agree on the law's inputs.
  const auto* p = found.front();
  std::string origin, names;
  for (const auto* q : found) {
    if (q->train_len != p->train_len || q->pretrain_base != p->pretrain_base || q->tune_len != p->tune_len) {
      if (*f.o_train_len && *f.o_pretrain_base && (!f.o_tune_len || *f.o_tune_len)) break;
      for (const auto* r : found) names += (names.empty() ? "" : ", ") + std::string(r->name);
      throw ropex::make_error(path, "", "matches presets " + names + " with different pre-training facts; choose one "
                                        "with --model NAME, or give --train-len, --pretrain-base and --tune-len");
    }
    in.presets.emplace_back(q->name);
    origin += (origin.empty() ? "" : " = ") + preset_origin(*q);
  }
  in.train_len = p->train_len;
  in.pretrain_base = p->pretrain_base;
  in.tune_len = p->tune_len;
  in.has_tune = p->tune_len != p->train_len;
  for (const char* k : {"train_len", "pretrain_base", "tune_len"}) in.origin[k] = origin;
}

Inputs resolve(const InputFlags& f, bool need_base) {
  Inputs in;
  const auto m = *f.o_model ? std::optional(ropex::cli::resolve_model_arg(f.model)) : std::nullopt;
  if (m) {
    in.model = f.model;
    in.model_resolved = m->kind_name();
  }
  if (m && m->is_path()) {
    read_config(in, f, f.model);
  } else if (m) {
    const ropex::ModelPreset& p = *m->preset;
    in.presets.emplace_back(p.name);
    in.head_dim = p.head_dim;
    in.train_len = p.train_len;
    in.base = p.base;
    in.has_base = true;
    in.tune_len = p.tune_len;
    in.has_tune = p.tune_len != p.train_len;
    in.pretrain_base = p.pretrain_base;
    in.scaling = std::string(p.scaling);
    in.factor = p.factor;
    for (const char* k : {"head_dim", "train_len", "base", "tune_len", "pretrain_base"}) in.origin[k] = preset_origin(p);
  } else if (*f.o_config) {
    read_config(in, f, f.config);
  }
  auto take = [&](CLI::Option* o, const char* field, auto& dst, auto value) {
    if (o && *o) {
      dst = value;
      in.origin[field] = "flag " + o->get_name();
    }
  };
  take(f.o_head_dim, "head_dim", in.head_dim, f.head_dim);
  take(f.o_train_len, "train_len", in.train_len, f.train_len);
  take(f.o_pretrain_base, "pretrain_base", in.pretrain_base, f.pretrain_base);
  if (f.o_base && *f.o_base) {
    in.base = f.base;
    in.has_base = true;
    in.origin["base"] = "flag --base";
  }
  if (f.o_tune_len && *f.o_tune_len) {
    in.tune_len = f.tune_len;
    in.has_tune = true;
    in.origin["tune_len"] = "flag --tune-len";
  }
  if (!in.config.empty()) {
    // A config.json records neither the pre-training context nor its base: without a preset they are the user's.
    std::string missing;
    if (!in.origin.count("train_len")) missing = "--train-len";
    if (!in.origin.count("pretrain_base")) missing += (missing.empty() ? "" : ", ") + std::string("--pretrain-base");
    if (!missing.empty())
      throw ropex::cli::UsageError(missing + ": required: " + in.config +
                                   " matches no built-in preset, and a config.json or GGUF file does not record the "
                                   "pre-training context or base");
  }
  if (!in.origin.count("head_dim")) throw ropex::cli::UsageError("--head-dim: required (or --model / --config)");
  if (!in.origin.count("train_len")) throw ropex::cli::UsageError("--train-len: required (or --model / --config)");
  if (need_base && !in.has_base) throw ropex::cli::UsageError("--base: required (or --model / --config)");
  if (!in.has_tune) in.tune_len = in.train_len;
  if (!in.origin.count("pretrain_base")) in.origin["pretrain_base"] = "default 10000 (the paper's; --pretrain-base)";
  if (!in.origin.count("tune_len")) in.origin["tune_len"] = "default = train_len (no continued training; --tune-len)";
  return in;
}

// Runs a law; a ropex::Error "field: problem" gets " (from <origin>)" appended so the user knows
// which flag or file field to fix.
template <class F>
auto with_origin(const Inputs& in, F&& f) {
  try {
    return f();
  } catch (const ropex::Error& e) {
    std::string msg = e.what();
    const auto colon = msg.find(':');
    if (colon != std::string::npos) {
      auto it = in.origin.find(msg.substr(0, colon));
      if (it != in.origin.end()) msg += " (from " + it->second + ")";
    }
    throw ropex::Error(msg);
  }
}

// {"head_dim": {"value": 128, "origin": "config.json:head_dim"}, ...}: every input and where it came
// from; one not given has "value": null, so the keys are the same whatever was given.
ojson origins_json(const Inputs& in, bool with_base) {
  ojson o;
  const ojson none = ropex::cli::input_json(nullptr, "not given");
  auto one = [&](const char* k, double v) {
    o[k] = ropex::cli::input_json(number(v), in.origin.count(k) ? in.origin.at(k) : std::string("?"));
  };
  one("head_dim", in.head_dim);
  one("train_len", in.train_len);
  one("pretrain_base", in.pretrain_base);
  if (with_base) {
    if (in.has_base) one("base", in.base);
    else o["base"] = none;
  }
  one("tune_len", in.tune_len);
  o["model"] = in.model.empty() ? none : ojson{{"value", in.model}, {"origin", "flag --model"}, {"resolved", in.model_resolved}};
  const bool from_model = !in.model.empty() && in.model_resolved != "built-in preset";
  o["config"] = in.config.empty() ? none : ropex::cli::input_json(in.config, from_model ? "flag --model" : "flag --config");
  return o;
}

void preset_json(ojson& j, const Inputs& in) {
  j["preset"] = in.presets.empty() ? ojson(nullptr) : ojson(in.presets.front());
  j["preset_matches"] = in.presets;
}

ojson inputs_json(const Inputs& in) {
  ojson j;
  j["head_dim"] = in.head_dim;
  j["train_len"] = number(in.train_len);
  j["base"] = in.has_base ? number(in.base) : ojson(nullptr);
  j["tune_len"] = number(in.tune_len);
  j["pretrain_base"] = number(in.pretrain_base);
  j["model"] = in.model.empty() ? ojson(nullptr) : ojson(in.model);
  j["config"] = in.config.empty() ? ojson(nullptr) : ojson(in.config);
  preset_json(j, in);
  j["scaling"] = in.scaling;
  j["factor"] = in.scaling != "default" ? number(in.factor) : ojson(nullptr);
  j["inputs"] = origins_json(in, true);
  return j;
}

// The text report's provenance lines: which preset, and where each input came from.
void print_origins(const Inputs& in, bool with_base) {
  if (!in.model.empty() && in.model_resolved != "built-in preset")  // a preset shows as each input's origin
    std::printf("  %-50s %s <- flag --model (%s)\n", "input model", in.model.c_str(), in.model_resolved.c_str());
  if (!in.config.empty()) {
    std::string names;
    for (const auto& n : in.presets) names += (names.empty() ? "" : " / ") + n;
    std::printf("  %-50s %s\n", "preset matched by config.json", names.empty() ? "none" : names.c_str());
  }
  auto line = [&](const char* label, const char* key, double v) {
    std::printf("  %-50s %s <- %s\n", label, fmt(v).c_str(), in.origin.at(key).c_str());
  };
  line("input d (rotary dims)", "head_dim", in.head_dim);
  line("input T_train", "train_len", in.train_len);
  line("input pre-training base", "pretrain_base", in.pretrain_base);
  if (with_base && in.has_base) line("input base", "base", in.base);
  line("input T_tune", "tune_len", in.tune_len);
}

std::string tokens_human(double t) {
  if (t >= 1e6) return fmt(t / 1048576.0, "%.2fM");
  if (t >= 1024) return fmt(t / 1024.0, "%.1fK");
  return fmt(t, "%.0f");
}

// ---- predict ------------------------------------------------------------------------------------

// When d_extra = d every pair completes a full period within T_train at the pre-training base: 16b's
// 2*pi*beta^(d_extra/d) is then the period of a pair the head does not have, so the law gives no bound.
bool no_bound_from_base(const Inputs& in, const ropex::ExtrapolationLimit& r) {
  return r.critical_dimension == in.head_dim;
}
bool unbounded(const Inputs& in, const ropex::ExtrapolationLimit& r) {
  return no_bound_from_base(in, r) && r.regime == ropex::Regime::larger_base;
}
std::string unbounded_reason(const Inputs& in) {
  return "d_extra = d = " + std::to_string(in.head_dim) +
         ": every rotary pair completes a full period within T_train at the pre-training base, so the "
         "scaling law (16b) gives no extrapolation bound from the base";
}

// The law's result at one base (the keys of a --sweep-base row, too).
ojson limit_json(const Inputs& in, const ropex::ExtrapolationLimit& r, ojson j = ojson::object()) {
  const bool none = unbounded(in, r);
  j["critical_dimension"] = r.critical_dimension;
  j["critical_base"] = r.critical_base;
  j["extrapolation_limit"] = none ? ojson(nullptr) : ojson(r.limit);
  j["bounded"] = !none;
  j["reason"] = none ? ojson(unbounded_reason(in)) : ojson(nullptr);
  j["regime"] = ropex::regime_name(r.regime);
  j["equation"] = ropex::regime_equation(r.regime);
  j["hard_bound"] = r.hard_bound && !none;
  j["updated_critical_dimension"] = r.updated_applies ? ojson(r.updated_critical_dimension) : ojson(nullptr);
  j["larger_base_limit"] = no_bound_from_base(in, r) ? ojson(nullptr) : ojson(r.larger_base_limit);
  j["beta_1"] = r.thresholds.beta_1;
  j["beta_2"] = r.thresholds.beta_2;
  j["beta_3"] = r.thresholds.beta_3;
  return j;
}

// The inputs, the result (null for a sweep) and the sweep rows (null for one base): one key set.
ojson predict_json(const Inputs& in, const ropex::ExtrapolationLimit* r, const std::vector<double>& sweep,
                   ojson rows) {
  ojson j = inputs_json(in);
  j["inputs"]["sweep_base"] = sweep.empty() ? ropex::cli::input_json(nullptr, "not given")
                                            : ropex::cli::input_json(sweep, "flag --sweep-base");
  if (r) {
    j = limit_json(in, *r, std::move(j));
    j["sweep"] = nullptr;
    return j;
  }
  j["base"] = nullptr;  // each row has its own
  for (const auto& [k, v] : rows.front().items())
    if (!j.contains(k)) j[k] = nullptr;
  j["sweep"] = std::move(rows);
  return j;
}

const char* kCsvHeader =
    "base,extrapolation_limit,regime,hard_bound,critical_dimension,updated_critical_dimension,"
    "critical_base,larger_base_limit,beta_1,beta_2,beta_3,bounded\n";

// Unbounded rows leave extrapolation_limit (and larger_base_limit when d_extra = d) empty.
void print_csv_row(const Inputs& in, double base, const ropex::ExtrapolationLimit& r) {
  const bool none = unbounded(in, r);
  std::printf("%.10g,%s,%s,%d,%d,%s,%.10g,%s,%.10g,%.10g,%.10g,%d\n", base, none ? "" : fmt(r.limit).c_str(),
              ropex::regime_name(r.regime), r.hard_bound && !none ? 1 : 0, r.critical_dimension,
              r.updated_applies ? std::to_string(r.updated_critical_dimension).c_str() : "", r.critical_base,
              no_bound_from_base(in, r) ? "" : fmt(r.larger_base_limit).c_str(), r.thresholds.beta_1,
              r.thresholds.beta_2, r.thresholds.beta_3, none ? 0 : 1);
}

void print_predict_table(const Inputs& in, const ropex::ExtrapolationLimit& r) {
  const char* what = in.model.empty() ? (in.config.empty() ? "" : in.config.c_str()) : in.model.c_str();
  std::printf("ropex predict%s%s: d=%d, T_train=%s (pre-training base %s), base=%s, T_tune=%s\n", *what ? " " : "",
              what, in.head_dim, fmt(in.train_len).c_str(), fmt(in.pretrain_base).c_str(), fmt(in.base).c_str(),
              fmt(in.tune_len).c_str());
  print_origins(in, true);
  if (in.scaling != "default")
    std::printf("  note: the model also uses '%s' scaling (factor %s); the law models the base only\n",
                in.scaling.c_str(), fmt(in.factor).c_str());
  const bool none = unbounded(in, r);
  std::printf("  %-50s %d\n", "critical dimension d_extra (eq. 13)", r.critical_dimension);
  std::printf("  %-50s %s\n", "critical base beta_0 (16a)", fmt(r.critical_base, "%.6g").c_str());
  std::printf("  %-50s %s (%s)%s\n", "regime", ropex::regime_name(r.regime), ropex::regime_equation(r.regime),
              none ? ": no bound from the base"
                   : (r.hard_bound ? ": hard bound" : ": no hard bound, degrades smoothly past T_tune"));
  if (r.updated_applies)
    std::printf("  %-50s %d\n", "updated critical dimension d'_extra (16c)", r.updated_critical_dimension);
  if (none)
    std::printf("  %-50s none: %s\n", "extrapolation limit", unbounded_reason(in).c_str());
  else
    std::printf("  %-50s %s tokens (%s)\n", "extrapolation limit", fmt(r.limit, "%.1f").c_str(),
                tokens_human(r.limit).c_str());
  if (r.regime != ropex::Regime::larger_base && !no_bound_from_base(in, r))
    std::printf("  %-50s %s tokens\n", "(16b alone would give 2*pi*beta^(d_extra/d))",
                fmt(r.larger_base_limit, "%.1f").c_str());
  std::printf("  %-50s %s / %s / %s\n", "small-base thresholds beta_1/2/3 (16d)",
              fmt(r.thresholds.beta_1, "%.2f").c_str(), fmt(r.thresholds.beta_2, "%.2f").c_str(),
              fmt(r.thresholds.beta_3, "%.2f").c_str());
}

struct PredictOpts {
  InputFlags f;
  bool json = false, csv = false, list = false;
  std::vector<double> sweep;
};

void run_predict(PredictOpts& o) {
  if (o.list && o.json) {
    ojson arr = ojson::array();
    for (const auto& p : ropex::model_presets)
      arr.push_back({{"name", p.name}, {"hf_id", p.hf_id}, {"head_dim", p.head_dim}, {"train_len", number(p.train_len)},
                     {"pretrain_base", number(p.pretrain_base)}, {"base", number(p.base)},
                     {"tune_len", number(p.tune_len)}, {"scaling", p.scaling},
                     {"factor", p.scaling != "default" ? number(p.factor) : ojson(nullptr)}, {"source", p.source}});
    std::printf("%s\n", ojson{{"presets", arr}}.dump(2).c_str());
    return;
  }
  if (o.list && o.csv) {
    std::printf("name,hf_id,head_dim,train_len,pretrain_base,base,tune_len,scaling,factor\n");
    for (const auto& p : ropex::model_presets)
      std::printf("%s,%s,%d,%.10g,%.10g,%.10g,%.10g,%s,%.10g\n", std::string(p.name).c_str(), std::string(p.hf_id).c_str(),
                  p.head_dim, p.train_len, p.pretrain_base, p.base, p.tune_len, std::string(p.scaling).c_str(), p.factor);
    return;
  }
  if (o.list) {
    for (const auto& p : ropex::model_presets)
      std::printf("%-17s d=%d T_train=%s base_pt=%s base=%s T_tune=%s scaling=%s  %s  [%s]\n",
                  std::string(p.name).c_str(), p.head_dim, fmt(p.train_len).c_str(), fmt(p.pretrain_base).c_str(),
                  fmt(p.base).c_str(), fmt(p.tune_len).c_str(), std::string(p.scaling).c_str(),
                  std::string(p.hf_id).c_str(), std::string(p.source).c_str());
    return;
  }
  if (!o.sweep.empty()) {
    // --sweep-base LO,HI,N: N log-spaced bases, CSV (for plots) unless --json.
    if (o.sweep.size() != 3) throw ropex::cli::UsageError("--sweep-base: expected LO,HI,N");
    const double lo = o.sweep[0], hi = o.sweep[1], n = o.sweep[2];
    if (!(std::isfinite(lo) && lo > 1)) throw ropex::cli::UsageError("--sweep-base: LO must be a finite number > 1");
    if (!(std::isfinite(hi) && hi >= lo)) throw ropex::cli::UsageError("--sweep-base: HI must be finite and >= LO");
    if (!(n >= 2 && n <= 100000 && n == std::floor(n)))
      throw ropex::cli::UsageError("--sweep-base: N must be an integer in [2, 100000]");
    Inputs in = resolve(o.f, false);
    in.has_base = false;  // each row has its own
    in.origin.erase("base");
    if (!o.json) std::fputs(kCsvHeader, stdout);
    ojson rows = ojson::array();
    const int count = static_cast<int>(n);
    for (int i = 0; i < count; ++i) {
      const double b = lo * std::pow(hi / lo, static_cast<double>(i) / (count - 1));
      in.base = b;
      const auto r = with_origin(in, [&] {
        return ropex::extrapolation_limit(in.head_dim, in.train_len, b, in.tune_len, in.pretrain_base);
      });
      if (o.json) rows.push_back(limit_json(in, r, ojson{{"base", b}}));
      else print_csv_row(in, b, r);
    }
    if (o.json) std::printf("%s\n", predict_json(in, nullptr, o.sweep, std::move(rows)).dump(2).c_str());
    return;
  }
  const Inputs in = resolve(o.f, true);
  const auto r = with_origin(in, [&] {
    return ropex::extrapolation_limit(in.head_dim, in.train_len, in.base, in.tune_len, in.pretrain_base);
  });
  if (o.json) {
    std::printf("%s\n", predict_json(in, &r, {}, nullptr).dump(2).c_str());
  } else if (o.csv) {
    std::fputs(kCsvHeader, stdout);
    print_csv_row(in, in.base, r);
  } else {
    print_predict_table(in, r);
  }
}

ROPEX_SUBCOMMAND(10, [](CLI::App& app) {
  auto o = std::make_shared<PredictOpts>();
  auto* s = app.add_subcommand("predict",
                               "Predict the extrapolation limit of a RoPE model tuned with a new base "
                               "(Theorem 3, eq. 16a-16d)");
  s->footer(
      "Examples:\n"
      "  ropex predict --model llama2-7b --base 1000000\n"
      "  ropex predict --head-dim 128 --train-len 4096 --base 500 --tune-len 16384 --json\n"
      "  ropex predict --config path/to/config.json\n"
      "  ropex predict --model llama2-7b --sweep-base 100,1e7,200 > limits.csv");
  add_input_flags(s, o->f, true, true);
  auto* js = s->add_flag("--json", o->json, "print JSON (keys: critical_dimension, critical_base, "
                                            "extrapolation_limit, regime, updated_critical_dimension, sweep, inputs)");
  s->add_flag("--csv", o->csv, "print CSV (with header): one row, or one per --sweep-base base")->excludes(js);
  s->add_option("--sweep-base", o->sweep,
                "LO,HI,N: N log-spaced bases in [LO, HI] (ignores --base): CSV rows, or with --json a \"sweep\" array")
      ->delimiter(',')
      ->expected(3);
  s->add_flag("--list-models", o->list, "list the built-in presets (text, --json or --csv) and exit");
  s->callback([o] { run_predict(*o); });
});

// ---- base ---------------------------------------------------------------------------------------

struct BaseOpts {
  InputFlags f;
  bool json = false, csv = false;
};

void run_base(BaseOpts& o) {
  const Inputs in = resolve(o.f, false);
  Inputs with_target = in;
  with_target.origin["target"] = "--target";
  const auto r = with_origin(with_target, [&] {
    return ropex::base_for_context(o.f.target, in.head_dim, in.train_len, in.pretrain_base);
  });
  if (o.json) {
    ojson j;
    j["head_dim"] = in.head_dim;
    j["train_len"] = number(in.train_len);
    j["pretrain_base"] = number(in.pretrain_base);
    j["model"] = in.model.empty() ? ojson(nullptr) : ojson(in.model);
    j["config"] = in.config.empty() ? ojson(nullptr) : ojson(in.config);
    preset_json(j, in);
    j["inputs"] = origins_json(in, false);
    j["inputs"]["target"] = ropex::cli::input_json(number(r.target), "flag --target");
    j["target"] = number(r.target);
    j["critical_dimension"] = r.critical_dimension;
    j["base"] = r.base;
    j["base_ceiling_free"] = r.base_ceiling_free;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  if (o.csv) {
    std::printf("target,base,base_ceiling_free,critical_dimension,head_dim,train_len,pretrain_base\n");
    std::printf("%.10g,%.17g,%.17g,%d,%d,%.10g,%.10g\n", r.target, r.base, r.base_ceiling_free, r.critical_dimension,
                in.head_dim, in.train_len, in.pretrain_base);
    return;
  }
  std::printf("ropex base: target %s tokens, d=%d, T_train=%s (pre-training base %s), d_extra=%d\n",
              fmt(r.target).c_str(), in.head_dim, fmt(in.train_len).c_str(), fmt(in.pretrain_base).c_str(),
              r.critical_dimension);
  print_origins(in, false);
  std::printf("  %-50s %s\n", "base (exact inverse of 16b: (T/2pi)^(d/d_extra))", fmt(r.base, "%.1f").c_str());
  std::printf("  %-50s %s\n", "base_ceiling_free (16a form, no ceil)", fmt(r.base_ceiling_free, "%.1f").c_str());
}

ROPEX_SUBCOMMAND(11, [](CLI::App& app) {
  auto o = std::make_shared<BaseOpts>();
  auto* s = app.add_subcommand("base", "Base whose larger-base bound (16b) reaches a target context");
  s->footer("Example:\n  ropex base --head-dim 128 --train-len 4096 --target 131072 --json");
  add_input_flags(s, o->f, false, false);
  s->add_option("--target", o->f.target, "target context T, tokens (e.g. 131072)")->required();
  auto* js = s->add_flag("--json", o->json, "print JSON (keys: base, base_ceiling_free, critical_dimension, inputs)");
  s->add_flag("--csv", o->csv, "print CSV (with header)")->excludes(js);
  s->callback([o] { run_base(*o); });
});

// ---- periods ------------------------------------------------------------------------------------

struct PeriodOpts {
  InputFlags f;
  bool json = false, csv = false;
};

void run_periods(PeriodOpts& o) {
  Inputs in = resolve(o.f, false);
  if (!in.has_base) {  // no base given: the pre-training base
    in.base = in.pretrain_base;
    in.has_base = true;
    in.origin["base"] = in.origin["pretrain_base"];
  }
  const std::string& head_origin = in.origin["head_dim"];  // "flag --head-dim", or the preset / file key
  ropex::io::require_memory(head_origin.rfind("flag ", 0) == 0 ? head_origin.substr(5) : head_origin, double(in.head_dim) / 2 * (sizeof(ropex::PairPeriod) + 256.0),
                            "the period table and its output");
  const auto rows = with_origin(in, [&] { return ropex::period_table(in.head_dim, in.base, in.train_len, in.tune_len); });
  const int d = in.head_dim;
  if (o.json) {
    ojson j = inputs_json(in);
    ojson arr = ojson::array();
    int seen_train = 0, seen_tune = 0;
    for (const auto& p : rows) {
      seen_train += p.full_period_in_train;
      seen_tune += p.full_period_in_tune;
      arr.push_back({{"pair", p.pair},
                     {"dims_half", {p.pair, p.pair + d / 2}},
                     {"dims_interleaved", {2 * p.pair, 2 * p.pair + 1}},
                     {"theta", p.theta},
                     {"period", p.period},
                     {"full_period_in_train", p.full_period_in_train},
                     {"full_period_in_tune", p.full_period_in_tune}});
    }
    j["dims_full_period_in_train"] = 2 * seen_train;
    j["dims_full_period_in_tune"] = 2 * seen_tune;
    j["pairs"] = arr;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  if (o.csv) {
    std::printf("pair,dim_half_a,dim_half_b,theta,period,full_period_in_train,full_period_in_tune\n");
    for (const auto& p : rows)
      std::printf("%d,%d,%d,%.17g,%.17g,%d,%d\n", p.pair, p.pair, p.pair + d / 2, p.theta, p.period,
                  p.full_period_in_train ? 1 : 0, p.full_period_in_tune ? 1 : 0);
    return;
  }
  std::printf("ropex periods: d=%d, base=%s, T_train=%s, T_tune=%s\n", d, fmt(in.base).c_str(),
              fmt(in.train_len).c_str(), fmt(in.tune_len).c_str());
  print_origins(in, true);
  std::printf("%5s  %-11s %-14s %16s  %-8s %-8s\n", "pair", "dims(half)", "theta", "period", "T_train", "T_tune");
  for (const auto& p : rows) {
    const std::string dims = std::to_string(p.pair) + "," + std::to_string(p.pair + d / 2);
    std::printf("%5d  %-11s %-14.6e %16.2f  %-8s %-8s\n", p.pair, dims.c_str(), p.theta, p.period,
                p.full_period_in_train ? "full" : "partial", p.full_period_in_tune ? "full" : "partial");
  }
}

ROPEX_SUBCOMMAND(12, [](CLI::App& app) {
  auto o = std::make_shared<PeriodOpts>();
  auto* s = app.add_subcommand("periods",
                               "Per-pair frequency/period table and whether each pair sees a full period "
                               "inside T_train / T_tune");
  s->footer("Example:\n  ropex periods --model llama2-7b --csv\n"
            "  ropex periods --head-dim 128 --train-len 4096 --base 1000000 --tune-len 16384 --json");
  add_input_flags(s, o->f, true, true);
  auto* js = s->add_flag("--json", o->json, "print JSON");
  s->add_flag("--csv", o->csv, "print CSV")->excludes(js);
  s->callback([o] { run_periods(*o); });
});

}  // namespace
