// One `ropex check` run: every theory's prediction for the model as released and for each
// training-free variant asked for (eval/check.hpp), the position-driven loss rise measured on the
// same tokens in one long window and in short windows (eval/position_rise.hpp, the rule of
// docs/validation.md section 6), passkey retrieval at lengths around each prediction
// (eval/passkey.hpp), and the report (report.md / report.json / report.html with SVG figures,
// per_token.csv, curve.csv). Resumable: finished units are kept in DIR/partial.jsonl and not redone.
// The CLI (examples/ropex/cmd_check.cpp) and the Python module (ropex.check) both run this; they
// differ only in how a given input is named ("flag --max-len", "argument max_len").
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/check.hpp>
#include <ropex/eval/model_codec.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/eval/position_rise.hpp>
#include <ropex/eval/scorer.hpp>
#include <ropex/io/journal.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/report/check_report.hpp>
#include <ropex/rope/scaling.hpp>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ropex::eval {

/// What to check; an empty optional is "not given" (its default is computed and its origin says so).
struct CheckSpec {
  std::string text;                        ///< text file scored by the model
  std::string report_dir = "ropex-check";  ///< report directory; its partial.jsonl resumes a run
  std::optional<int64_t> max_len;          ///< long window N (default 4 x the largest finite prediction)
  std::optional<int64_t> windows;          ///< long windows from the text (default 1)
  std::optional<int64_t> short_window;     ///< short window S (default tune_len)
  std::optional<double> train_len, tune_len, pretrain_base;
  std::vector<nlohmann::json> rope_scaling;  ///< training-free variants measured too (HF rope_scaling JSON)
  std::vector<double> rope_base;             ///< other bases measured too
  std::optional<std::vector<double>> depths; ///< passkey depths (default 0, 0.5, 1)
  std::optional<int> trials;                 ///< passkey trials per cell (default 4; 0: no passkey)
  std::optional<uint64_t> seed;              ///< passkey seed (default 0)
};

/// How the caller names things, and its hooks.
struct CheckEnv {
  /// The caller's name of a CheckSpec field: "--max-len" (CLI) or "max_len" (Python).
  std::function<std::string(std::string_view field)> name = [](std::string_view f) { return std::string(f); };
  std::string given_by = "argument";  ///< origin of a given value: "<given_by> <name>"
  std::string model, model_origin;    ///< the model as the user named it, and how
  std::string tokenizer_origin = "the model's own";
  /// Where the checkpoint's rope came from, when not from the checkpoint itself (an override).
  std::string rope_origin;
  nlohmann::ordered_json extra_inputs = nlohmann::ordered_json::object();  ///< device, dtype, ...
  /// The scorer over `ck` (made on first use; rope settings are read from ck at every forward).
  std::function<Scorer&()> scorer;
  /// Progress in tokens through the model: (done, total, what just ended).
  std::function<void(int64_t, int64_t, const std::string&)> progress;
  /// One-line notices (resuming).
  std::function<void(const std::string&)> notice;
};

namespace detail {

using ojson = nlohmann::ordered_json;

inline ojson input(const ojson& v, const std::string& origin) { return {{"value", v}, {"origin", origin}}; }

// Reads the text's first tokens: only as many bytes as `want` tokens need (doubling until enough),
// cut at a line end, so a large book costs what the run uses.
inline std::vector<int32_t> read_text_tokens(const std::string& path, const std::string& field, int64_t want,
                                             const TextCodec& codec) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw make_error(field, path, "cannot open");
  const auto size = int64_t(std::filesystem::file_size(path));
  int64_t bytes = std::max<int64_t>(4096, want * 6);
  for (;;) {
    const bool all = bytes >= size;
    std::string text(size_t(std::min(bytes, size)), '\0');
    in.clear();
    in.seekg(0);
    in.read(text.data(), std::streamsize(text.size()));
    if (!all) {
      const auto nl = text.rfind('\n');
      if (nl != std::string::npos && nl > text.size() / 2) text.resize(nl + 1);
    }
    auto ids = codec.encode(text);
    if (int64_t(ids.size()) >= want || all) return ids;
    bytes *= 2;
  }
}

struct Setting {
  std::string label;
  std::optional<double> base;
  std::optional<nlohmann::json> scaling;
};

inline std::string setting_label(const Setting& s) {
  if (s.base) return "base " + report::short_number(*s.base);
  if (s.scaling) {
    const auto& j = *s.scaling;
    const std::string type = j.value("rope_type", j.value("type", std::string("?")));
    return type + (j.contains("factor") ? " x" + j["factor"].dump() : "");
  }
  return "as released";
}

// Puts the checkpoint's rope back however the run ends (an interrupted Python call keeps its model).
struct RopeRestore {
  model::Checkpoint& ck;
  RopeScaling released;
  ~RopeRestore() { ck.config().rope = released; }
};

}  // namespace detail

/// Runs the check on `ck` (its rope settings are changed per setting and restored after), writes
/// the report into spec.report_dir and returns report.json's content.
inline nlohmann::ordered_json run_check(model::Checkpoint& ck, const ModelCodec& codec, const CheckSpec& spec,
                                        const CheckEnv& env) {
  namespace fs = std::filesystem;
  using detail::input;
  using ojson = nlohmann::ordered_json;
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  const auto given = [&](std::string_view field) { return env.given_by + " " + env.name(field); };
  const int64_t windows = spec.windows.value_or(1);
  if (windows < 1) throw make_error(env.name("windows"), "", "must be >= 1, got " + std::to_string(windows));
  const detail::RopeRestore restore{ck, ck.config().rope};
  const RopeScaling released = restore.released;
  const auto& cfg = ck.config();
  const std::string ckfile = ck.path().string();

  // ---- RoPE facts, each with its origin
  TheoryInputs facts;
  ojson inputs;
  inputs["model"] = input(env.model, env.model_origin);
  facts.head_dim = cfg.rotary_dim();
  facts.static_pairs = int((cfg.head_dim - cfg.rotary_dim()) / 2);
  facts.base = released.base;
  inputs["head_dim"] = input(facts.head_dim, ckfile + ": head_dim x partial_rotary_factor (" + ck.format() + ")");
  inputs["static_pairs"] = input(facts.static_pairs, ckfile + ": (head_dim - rotary dims) / 2");
  inputs["base"] = input(facts.base, env.rope_origin.empty() ? ckfile + ": rope_theta (" + ck.format() + ")" : env.rope_origin);
  if (spec.tune_len) {
    facts.tune_len = *spec.tune_len;
    inputs["tune_len"] = input(facts.tune_len, given("tune_len"));
  } else {
    facts.tune_len = double(released.original_length() > 0 ? released.original_length() : cfg.max_position_embeddings);
    if (!(facts.tune_len > 0))
      throw make_error(ckfile, "max_position_embeddings",
                       "is absent: give " + env.name("tune_len") + " (the context the model was trained at)");
    inputs["tune_len"] = input(facts.tune_len, ckfile + ": " +
                                                   std::string(released.original_max_position_embeddings > 0 ? "original_max_position_embeddings"
                                                                                                             : "max_position_embeddings") +
                                                   " (" + ck.format() + ")");
  }
  // A fact the caller gave, or its default with where that default comes from.
  const auto fact = [&](const char* field, const std::optional<double>& v, double fallback, const std::string& origin) {
    inputs[field] = input(v ? *v : fallback, v ? given(field) : origin);
    return v ? *v : fallback;
  };
  facts.train_len = fact("train_len", spec.train_len, facts.tune_len,
                         "= tune_len (no continued training assumed; " + env.name("train_len") + ")");
  facts.pretrain_base = fact("pretrain_base", spec.pretrain_base, facts.base,
                             "= base (no continued training assumed; " + env.name("pretrain_base") + ")");
  if (facts.tune_len < facts.train_len) throw make_error(env.name("tune_len"), "", "must be >= " + env.name("train_len"));
  const int64_t S = spec.short_window.value_or(int64_t(facts.tune_len));
  inputs["short_window"] = input(S, spec.short_window ? given("short_window") : "= tune_len");
  if (S < 8) throw make_error(env.name("short_window"), "", "must be >= 8 tokens, got " + std::to_string(S));

  // ---- settings and their predictions
  std::vector<detail::Setting> settings{{"", std::nullopt, std::nullopt}};
  for (double b : spec.rope_base) settings.push_back({"", b, std::nullopt});
  for (const auto& s : spec.rope_scaling) settings.push_back({"", std::nullopt, s});
  std::vector<std::vector<TheoryPrediction>> preds;
  double largest = 0;
  for (auto& s : settings) {
    s.label = detail::setting_label(s);
    ck.config().rope = released;
    apply_rope_override(ck.config().rope, s.base, s.scaling ? &*s.scaling : nullptr);  // validates now
    auto f = facts;
    if (s.base) f.base = *s.base;
    preds.push_back(theory_predictions(f));
    for (const auto& p : preds.back())
      if (p.context_limit && p.context) largest = std::max(largest, *p.context);
  }
  ck.config().rope = released;

  // ---- lengths
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  const int64_t mem_cap = memory_cap_tokens(cfg, 0.5 * double(pages) * double(page));
  int64_t N = 0;
  inputs["tokenizer"] = input(codec.file, env.tokenizer_origin);
  if (spec.max_len) {
    N = *spec.max_len;
    inputs["max_len"] = input(N, given("max_len"));
  } else {
    N = std::max<int64_t>(2 * S, int64_t(4 * largest));
    std::string origin = "4 x the largest finite prediction (" + report::short_number(largest) + "), at least 2 x short_window";
    if (N > mem_cap) N = mem_cap, origin += ", capped by memory (half the RAM)";
    inputs["max_len"] = input(N, origin);
  }
  if (N < S / 2 + 2) throw make_error(env.name("max_len"), "", "must exceed the short window's half (" + std::to_string(S / 2) + ")");
  const auto tokens = detail::read_text_tokens(spec.text, env.name("text"), N * windows, codec.codec);
  if (int64_t(tokens.size()) < N * windows) {
    if (spec.max_len || spec.windows)
      throw make_error(env.name("text"), spec.text,
                       "has " + std::to_string(tokens.size()) + " tokens, fewer than " + env.name("max_len") + " x " +
                           env.name("windows") + " = " + std::to_string(N * windows));
    N = int64_t(tokens.size());
    inputs["max_len"] = input(N, inputs["max_len"]["origin"].get<std::string>() + ", capped by the text's tokens");
  }
  const std::vector<double> depths = spec.depths.value_or(std::vector<double>{0, 0.5, 1});
  const int trials = spec.trials.value_or(4);
  const uint64_t seed = spec.seed.value_or(0);
  if (trials < 0) throw make_error(env.name("trials"), "", "must be >= 0, got " + std::to_string(trials));
  if (trials > 0 && depths.empty()) throw make_error(env.name("depths"), "", "needs at least one depth");
  for (double d : depths)
    if (!(d >= 0 && d <= 1)) throw make_error(env.name("depths"), "", "each must lie in [0, 1], got " + std::to_string(d));
  inputs["text"] = input(spec.text, given("text"));
  inputs["windows"] = input(windows, spec.windows ? given("windows") : "default 1");
  inputs["passkey_depths"] = input(depths, spec.depths ? given("depths") : "default");
  inputs["passkey_trials"] = input(trials, spec.trials ? given("trials") : "default");
  inputs["seed"] = input(seed, spec.seed ? given("seed") : "default 0");
  for (const auto& [k, v] : env.extra_inputs.items()) inputs[k] = v;
  ojson set_json = ojson::array();
  for (const auto& s : settings)
    set_json.push_back({{"label", s.label}, {"rope_base", s.base ? ojson(*s.base) : ojson(nullptr)},
                        {"rope_scaling", s.scaling ? ojson::parse(s.scaling->dump()) : ojson(nullptr)}});
  inputs["settings"] = input(set_json, "the checkpoint, then each " + env.name("rope_base") + ", then each " + env.name("rope_scaling"));

  // ---- passkey grid per setting
  const int64_t min_prompt = int64_t(passkey_tokens(codec.codec, passkey_max_key, 0, 0).tokens.size());
  std::vector<std::vector<int64_t>> pk_lengths;
  for (const auto& p : preds) {
    std::vector<int64_t> L;
    if (trials > 0)
      for (int64_t l : passkey_lengths(p, S, N))
        if (l >= min_prompt + 16) L.push_back(l);
    pk_lengths.push_back(L);
  }

  // ---- the journal (resume)
  fs::create_directories(spec.report_dir);
  nlohmann::json plan = nlohmann::json::parse(ojson(inputs).dump());
  plan["model_bytes"] = fs::is_regular_file(ckfile) ? fs::file_size(ckfile) : 0;
  plan["text_bytes"] = fs::file_size(spec.text);
  plan["max_len"] = N;
  plan["short_window"] = S;
  plan["passkey_lengths"] = pk_lengths;
  for (auto& [k, v] : plan.items())
    if (v.is_object() && v.contains("origin")) v.erase("origin");  // the plan is values, not where they came from
  io::Journal journal(fs::path(spec.report_dir) / "partial.jsonl", plan);
  if (journal.resumed() && env.notice)
    env.notice("check: resuming from " + journal.path().string() + ": " + std::to_string(journal.resumed()) + " units already done");

  // ---- work, in tokens through the model (the progress measure)
  int64_t total_work = 0, done_work = 0;
  for (size_t s = 0; s < settings.size(); ++s) {
    total_work += windows * 3 * N;  // long window + short windows (stride S/2: ~2N)
    for (int64_t L : pk_lengths[s]) total_work += L * int64_t(depths.size()) * trials;
  }
  auto progress = [&](const std::string& what) {
    if (env.progress) env.progress(done_work, total_work, what);
  };
  Scorer* scorer = nullptr;
  int64_t computed = 0;
  auto get_scorer = [&]() -> Scorer& {
    if (!scorer) scorer = &env.scorer();
    return *scorer;
  };
  // The scorer's counters may start above zero (a Python model scored before): report this run's.
  double model_s0 = 0;
  int64_t model_tokens0 = 0;
  bool counted = false;
  auto start_count = [&] {
    if (!counted && scorer) model_s0 = scorer->model_seconds(), model_tokens0 = scorer->model_tokens(), counted = true;
  };

  ojson results = ojson::array();
  std::vector<std::vector<std::vector<double>>> long_nll(settings.size()), short_nll(settings.size());
  for (size_t s = 0; s < settings.size(); ++s) {
    ck.config().rope = released;
    apply_rope_override(ck.config().rope, settings[s].base, settings[s].scaling ? &*settings[s].scaling : nullptr);
    for (int64_t w = 0; w < windows; ++w) {
      const std::span<const int32_t> window(tokens.data() + w * N, size_t(N));
      for (const char* kind : {"long", "short"}) {
        const std::string key = std::string(kind) + "/" + std::to_string(s) + "/" + std::to_string(w);
        std::vector<double> v;
        if (const auto* j = journal.find(key)) {
          v = j->get<std::vector<double>>();
        } else {
          auto& sc = get_scorer();
          start_count();
          v = kind[0] == 'l' ? long_window_nll(sc, window) : short_windows_nll(sc, window, S);
          journal.add(key, v);
          ++computed;
        }
        (kind[0] == 'l' ? long_nll : short_nll)[s].push_back(std::move(v));
        done_work += kind[0] == 'l' ? N : 2 * N;
        progress(settings[s].label + ": " + kind + " window " + std::to_string(w + 1));
      }
    }
    // passkey
    std::vector<PasskeyTrial> pts;
    for (int64_t L : pk_lengths[s])
      for (double d : depths) {
        std::optional<int64_t> chars;
        for (int t = 0; t < trials; ++t) {
          const std::string key = "passkey/" + std::to_string(s) + "/" + std::to_string(L) + "/" + report::num(d, "%.6g") + "/" + std::to_string(t);
          PasskeyTrial pt;
          if (const auto* j = journal.find(key)) {
            pt.length = L, pt.depth = d, pt.trial = t;
            pt.key = (*j)["key"], pt.tokens = (*j)["tokens"], pt.needle_token = (*j)["needle_token"];
            pt.correct = (*j)["correct"], pt.answer = (*j)["answer"], pt.answer_nll = (*j)["answer_nll"];
            pt.answer_tokens = (*j)["answer_tokens"];
          } else {
            if (!chars) chars = passkey_filler_chars(codec.codec, L, d);
            auto& sc = get_scorer();
            start_count();
            pt = passkey_trial(sc, codec.codec, L, d, t, seed, *chars);
            journal.add(key, {{"key", pt.key}, {"tokens", pt.tokens}, {"needle_token", pt.needle_token}, {"correct", pt.correct},
                              {"answer", pt.answer}, {"answer_nll", pt.answer_nll}, {"answer_tokens", pt.answer_tokens}});
            ++computed;
          }
          pts.push_back(pt);
          done_work += L;
          progress(settings[s].label + ": passkey " + std::to_string(L) + " depth " + report::num(d, "%.3g"));
        }
      }
    // ---- this setting's measurements
    std::vector<double> ls(size_t(N - 1), 0.0), ss(size_t(N - 1), 0.0);
    std::vector<int64_t> cnt(size_t(N - 1), 0);
    for (int64_t w = 0; w < windows; ++w)
      for (int64_t p = 0; p < N - 1; ++p)
        ls[size_t(p)] += long_nll[s][size_t(w)][size_t(p)], ss[size_t(p)] += short_nll[s][size_t(w)][size_t(p)], cnt[size_t(p)] += 1;
    ojson rule = ojson::object();
    for (double margin : {0.5, 0.25, 1.0}) {
      const auto rr = position_rise(ls, ss, cnt, {S, margin});
      ojson bins = ojson::array();
      if (margin == 0.5)
        for (const auto& b : rr.bins)
          bins.push_back({{"begin", b.begin}, {"end", b.end}, {"count", b.count}, {"mean_long", b.mean_long},
                          {"mean_short", b.mean_short}, {"mean_diff", b.mean_diff}});
      rule[report::num(margin, "margin_%.2f")] = {{"measured_limit", rr.limit ? ojson(*rr.limit) : ojson(nullptr)},
                                                  {"censored", !rr.limit}};
      if (margin == 0.5) rule["bins"] = bins;
    }
    // log-spaced curve for the figure: bins [2^(k/4), 2^((k+1)/4))
    ojson curve = ojson::array();
    for (double lo = 1; lo < double(N - 1); lo *= std::pow(2.0, 0.25)) {
      const int64_t a = int64_t(lo), b = std::min<int64_t>(N - 1, std::max<int64_t>(a + 1, int64_t(lo * std::pow(2.0, 0.25))));
      double sl = 0, sh = 0;
      int64_t c = 0;
      for (int64_t p = a; p < b; ++p) sl += ls[size_t(p)], sh += ss[size_t(p)], c += cnt[size_t(p)];
      if (c) curve.push_back({{"begin", a}, {"end", b}, {"mean_long", sl / double(c)}, {"mean_short", sh / double(c)}});
      while (lo * std::pow(2.0, 0.25) < double(b)) lo *= std::pow(2.0, 0.25);
    }
    const auto cells = passkey_cells(pts);
    ojson cj = ojson::array();
    std::vector<std::pair<int64_t, double>> by_len;
    for (int64_t L : pk_lengths[s]) {
      double acc = 0;
      int n = 0;
      for (const auto& c : cells)
        if (c.length == L) acc += c.accuracy, ++n;
      if (n) by_len.push_back({L, acc / n});
    }
    for (const auto& c : cells)
      cj.push_back({{"length", c.length}, {"depth", c.depth}, {"trials", c.trials}, {"correct", c.correct},
                    {"accuracy", c.accuracy}, {"answer_nll", c.answer_nll}, {"mean_tokens", c.mean_tokens}});
    ojson pj = ojson::array();
    for (const auto& p : preds[s])
      pj.push_back({{"theory", p.theory}, {"source", p.source}, {"context", p.context ? ojson(*p.context) : ojson(nullptr)},
                    {"context_limit", p.context_limit}, {"note", p.note}});
    const auto& rope = ck.config().rope;
    results.push_back({{"label", settings[s].label},
                       {"rope_base", rope.base},
                       {"rope_type", to_string(rope.type)},
                       {"factor", rope.factor},
                       {"predictions_apply", !settings[s].scaling.has_value()},
                       {"predictions", pj},
                       {"rise", rule},
                       {"curve", curve},
                       {"passkey", {{"lengths", pk_lengths[s]}, {"cells", cj},
                                    {"passkey_limit", by_len.empty() ? ojson(nullptr) : ojson(passkey_limit(by_len))}}}});
  }
  ck.config().rope = released;

  // ---- per-token file (full precision) and the binned curve
  {
    std::FILE* f = std::fopen((fs::path(spec.report_dir) / "per_token.csv").c_str(), "wb");
    if (!f) throw make_error(spec.report_dir, "per_token.csv", "cannot open for writing");
    std::fprintf(f, "setting,window,position,target_token,nll_long,nll_short\n");
    for (size_t s = 0; s < settings.size(); ++s)
      for (int64_t w = 0; w < windows; ++w)
        for (int64_t p = 0; p < N - 1; ++p)
          std::fprintf(f, "%zu,%lld,%lld,%d,%.17g,%.17g\n", s, (long long)w, (long long)p, tokens[size_t(w * N + p + 1)],
                       long_nll[s][size_t(w)][size_t(p)], short_nll[s][size_t(w)][size_t(p)]);
    if (std::fclose(f) != 0) throw make_error(spec.report_dir, "per_token.csv", "write failed");
    std::ofstream c(fs::path(spec.report_dir) / "curve.csv");
    c << "setting,begin,end,count,mean_nll_long,mean_nll_short,mean_diff\n";
    c.precision(17);
    for (size_t s = 0; s < results.size(); ++s)
      for (const auto& b : results[s]["rise"]["bins"])
        c << s << "," << b["begin"] << "," << b["end"] << "," << b["count"] << "," << b["mean_long"].get<double>() << ","
          << b["mean_short"].get<double>() << "," << b["mean_diff"].get<double>() << "\n";
    if (!c) throw make_error(spec.report_dir, "curve.csv", "write failed");
  }

  ojson out;
  out["tool"] = "ropex check";
  out["inputs"] = inputs;
  out["rule"] = {{"text", "docs/validation.md section 6"},
                 {"comparison", "NLL of the same tokens in one long window minus in short windows (stride S/2)"},
                 {"bin_width", RiseRule{S}.bin_width()},
                 {"first_bin_begin", RiseRule{S}.first_bin_begin()},
                 {"margin", 0.5}};
  out["settings"] = results;
  const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
  const double model_s = scorer ? scorer->model_seconds() - model_s0 : 0.0;
  out["time"] = {{"total_seconds", total},
                 {"model_seconds", model_s},
                 {"model_fraction", total > 0 ? model_s / total : 0.0},
                 {"model_tokens", scorer ? scorer->model_tokens() - model_tokens0 : 0},
                 {"units_computed", computed},
                 {"units_resumed", journal.resumed()},
                 {"note", "model = forward + lm_head inside the scorer; the rest is loading, tokenizing, theories and files"}};
  report::write_check_report(spec.report_dir, out);
  return out;
}

}  // namespace ropex::eval
