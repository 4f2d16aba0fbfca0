// ropex check: one model against every published theory of its context. Predicts (theories.hpp),
// measures where the loss rises because of position (the same tokens in one long window and in
// short windows, eval/position_rise.hpp, the rule of docs/validation.md section 6), runs passkey
// retrieval at lengths around each prediction, for the model as released and for each training-free
// variant asked for, and writes report.md / report.json / report.html with SVG figures. Resumable:
// finished units are kept in DIR/partial.jsonl and not redone.
#include "cli.hpp"
#include "eval_setup.hpp"

#include <ropex/error.hpp>
#include <ropex/eval/check.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/eval/position_rise.hpp>
#include <ropex/io/journal.hpp>
#include <ropex/io/progress.hpp>
#include <ropex/report/check_report.hpp>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

struct CheckOptions {
  ropex::cli::EvalModelOptions m;
  std::string text, report_dir = "ropex-check";
  int64_t max_len = 0, windows = 1, short_window = 0;
  double train_len = 0, tune_len = 0, pretrain_base = 0;
  std::vector<std::string> rope_scaling;
  std::vector<double> rope_base;
  std::vector<double> depths{0, 0.5, 1};
  int trials = 4;
  uint64_t seed = 0;
  bool json = false;
  CLI::Option *o_max_len = nullptr, *o_short = nullptr, *o_train_len = nullptr, *o_tune_len = nullptr,
              *o_pretrain_base = nullptr, *o_depths = nullptr, *o_trials = nullptr, *o_seed = nullptr, *o_windows = nullptr;
};

ojson input(const ojson& v, const std::string& origin) { return {{"value", v}, {"origin", origin}}; }

// One model setting: the checkpoint's rope, or an override of it.
struct Setting {
  std::string label;
  std::optional<double> base;
  std::optional<nlohmann::json> scaling;
};

// Reads the text's first tokens: only as many bytes as `want` tokens need (doubling until enough),
// cut at a line end, so a large book costs what the run uses.
std::vector<int32_t> read_text_tokens(const std::string& path, int64_t want, const ropex::eval::TextCodec& codec) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ropex::make_error("--text", path, "cannot open");
  const auto size = int64_t(fs::file_size(path));
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

std::string setting_label(const Setting& s) {
  if (s.base) return "base " + ropex::report::short_number(*s.base);
  if (s.scaling) {
    const auto& j = *s.scaling;
    const std::string type = j.value("rope_type", j.value("type", std::string("?")));
    return type + (j.contains("factor") ? " x" + j["factor"].dump() : "");
  }
  return "as released";
}

void run_check(const CheckOptions& o) {
  const auto t_start = Clock::now();
  if (o.windows < 1) throw ropex::cli::UsageError("--windows: must be >= 1");
  ropex::model::Checkpoint ck = ropex::model::Checkpoint::open(o.m.model);
  const ropex::RopeScaling released = ck.config().rope;
  const auto& cfg = ck.config();
  const std::string ckfile = ck.path().string();

  // ---- RoPE facts, each with its origin
  ropex::eval::TheoryInputs facts;
  ojson inputs;
  inputs["model"] = input(o.m.model, "flag --model");
  facts.head_dim = cfg.rotary_dim();
  facts.static_pairs = int((cfg.head_dim - cfg.rotary_dim()) / 2);
  facts.base = released.base;
  inputs["head_dim"] = input(facts.head_dim, ckfile + ": head_dim x partial_rotary_factor (" + ck.format() + ")");
  inputs["static_pairs"] = input(facts.static_pairs, ckfile + ": (head_dim - rotary dims) / 2");
  inputs["base"] = input(facts.base, ckfile + ": rope_theta (" + ck.format() + ")");
  if (*o.o_tune_len) {
    facts.tune_len = o.tune_len;
    inputs["tune_len"] = input(o.tune_len, "flag --tune-len");
  } else {
    facts.tune_len = double(released.original_length() > 0 ? released.original_length() : cfg.max_position_embeddings);
    if (!(facts.tune_len > 0))
      throw ropex::make_error(ckfile, "max_position_embeddings", "is absent: give --tune-len (the context the model was trained at)");
    inputs["tune_len"] = input(facts.tune_len, ckfile + ": " + std::string(released.original_max_position_embeddings > 0
                                                                              ? "original_max_position_embeddings"
                                                                              : "max_position_embeddings") +
                                                   " (" + ck.format() + ")");
  }
  if (*o.o_train_len) {
    facts.train_len = o.train_len;
    inputs["train_len"] = input(o.train_len, "flag --train-len");
  } else {
    facts.train_len = facts.tune_len;
    inputs["train_len"] = input(facts.train_len, "= tune_len (no continued training assumed; --train-len)");
  }
  if (*o.o_pretrain_base) {
    facts.pretrain_base = o.pretrain_base;
    inputs["pretrain_base"] = input(o.pretrain_base, "flag --pretrain-base");
  } else {
    facts.pretrain_base = facts.base;
    inputs["pretrain_base"] = input(facts.base, "= base (no continued training assumed; --pretrain-base)");
  }
  if (facts.tune_len < facts.train_len) throw ropex::cli::UsageError("--tune-len: must be >= --train-len");
  const int64_t S = *o.o_short ? o.short_window : int64_t(facts.tune_len);
  inputs["short_window"] = input(S, *o.o_short ? "flag --short-window" : "= tune_len");
  if (S < 8) throw ropex::cli::UsageError("--short-window: must be >= 8 tokens, got " + std::to_string(S));

  // ---- settings and their predictions
  std::vector<Setting> settings{{"", std::nullopt, std::nullopt}};
  for (double b : o.rope_base) settings.push_back({"", b, std::nullopt});
  for (const auto& s : o.rope_scaling) settings.push_back({"", std::nullopt, ropex::cli::parse_rope_scaling(s)});
  std::vector<std::vector<ropex::eval::TheoryPrediction>> preds;
  double largest = 0;
  for (auto& s : settings) {
    s.label = setting_label(s);
    ck.config().rope = released;
    ropex::apply_rope_override(ck.config().rope, s.base, s.scaling ? &*s.scaling : nullptr);  // validates now
    auto f = facts;
    if (s.base) f.base = *s.base;
    preds.push_back(ropex::eval::theory_predictions(f));
    for (const auto& p : preds.back())
      if (p.context_limit && p.context) largest = std::max(largest, *p.context);
  }
  ck.config().rope = released;

  // ---- lengths
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  const int64_t mem_cap = ropex::eval::memory_cap_tokens(cfg, 0.5 * double(pages) * double(page));
  int64_t N = 0;
  const auto codec = ropex::cli::model_codec(ck, o.m.tokenizer);
  inputs["tokenizer"] = input(codec.file, o.m.tokenizer.empty() ? "the model's own" : "flag --tokenizer");
  if (*o.o_max_len) {
    N = o.max_len;
    inputs["max_len"] = input(N, "flag --max-len");
  } else {
    N = std::max<int64_t>(2 * S, int64_t(4 * largest));
    std::string origin = "4 x the largest finite prediction (" + ropex::report::short_number(largest) + "), at least 2 x short_window";
    if (N > mem_cap) N = mem_cap, origin += ", capped by memory (half the RAM)";
    inputs["max_len"] = input(N, origin);
  }
  if (N < 2 * S / 2 + 2) throw ropex::cli::UsageError("--max-len: must exceed the short window's half (" + std::to_string(S / 2) + ")");
  const auto tokens = read_text_tokens(o.text, N * o.windows, codec.codec);
  if (int64_t(tokens.size()) < N * o.windows) {
    if (*o.o_max_len || *o.o_windows)
      throw ropex::make_error("--text", o.text, "has " + std::to_string(tokens.size()) + " tokens, fewer than --max-len x --windows = " +
                                                  std::to_string(N * o.windows));
    N = int64_t(tokens.size());
    inputs["max_len"] = input(N, inputs["max_len"]["origin"].get<std::string>() + ", capped by the text's tokens");
  }
  inputs["text"] = input(o.text, "flag --text");
  inputs["windows"] = input(o.windows, *o.o_windows ? "flag --windows" : "default 1");
  inputs["passkey_depths"] = input(o.depths, *o.o_depths ? "flag --passkey-depths" : "default");
  inputs["passkey_trials"] = input(o.trials, *o.o_trials ? "flag --passkey-trials" : "default");
  inputs["seed"] = input(o.seed, *o.o_seed ? "flag --seed" : "default 0");
  inputs["device"] = input(o.m.device, o.m.device == "cpu" ? "default cpu (--device)" : "flag --device");
  if (o.m.device == "cuda") inputs["dtype"] = input(o.m.cuda.dtype, "--dtype");
  ojson set_json = ojson::array();
  for (const auto& s : settings)
    set_json.push_back({{"label", s.label}, {"rope_base", s.base ? ojson(*s.base) : ojson(nullptr)},
                        {"rope_scaling", s.scaling ? ojson::parse(s.scaling->dump()) : ojson(nullptr)}});
  inputs["settings"] = input(set_json, "the checkpoint, then each --rope-base, then each --rope-scaling");

  // ---- passkey grid per setting
  const int64_t min_prompt = int64_t(ropex::eval::passkey_tokens(codec.codec, ropex::eval::passkey_max_key, 0, 0).tokens.size());
  std::vector<std::vector<int64_t>> pk_lengths;
  for (const auto& p : preds) {
    std::vector<int64_t> L;
    if (o.trials > 0)
      for (int64_t l : ropex::eval::passkey_lengths(p, S, N))
        if (l >= min_prompt + 16) L.push_back(l);
    pk_lengths.push_back(L);
  }

  // ---- the journal (resume)
  fs::create_directories(o.report_dir);
  nlohmann::json plan = nlohmann::json::parse(ojson(inputs).dump());
  plan["model_bytes"] = fs::is_regular_file(o.m.model) ? fs::file_size(o.m.model) : 0;
  plan["text_bytes"] = fs::file_size(o.text);
  plan["max_len"] = N;
  plan["short_window"] = S;
  plan["passkey_lengths"] = pk_lengths;
  for (auto& [k, v] : plan.items())
    if (v.is_object() && v.contains("origin")) v.erase("origin");  // the plan is values, not where they came from
  ropex::io::Journal journal(fs::path(o.report_dir) / "partial.jsonl", plan);
  if (journal.resumed() && !o.m.quiet)
    std::fprintf(stderr, "check: resuming from %s: %zu units already done\n", journal.path().c_str(), journal.resumed());

  // ---- work, in tokens through the model (the progress measure)
  int64_t total_work = 0, done_work = 0;
  for (size_t s = 0; s < settings.size(); ++s) {
    total_work += o.windows * 3 * N;  // long window + short windows (stride S/2: ~2N)
    for (int64_t L : pk_lengths[s]) total_work += L * int64_t(o.depths.size()) * o.trials;
  }
  ropex::io::Progress progress("check", total_work, "tokens", !o.m.quiet);
  std::unique_ptr<ropex::eval::Scorer> scorer;
  int64_t computed = 0;
  auto get_scorer = [&]() -> ropex::eval::Scorer& {
    if (!scorer) scorer = ropex::cli::make_scorer(ck, o.m);
    return *scorer;
  };

  ojson results = ojson::array();
  std::vector<std::vector<std::vector<double>>> long_nll(settings.size()), short_nll(settings.size());
  for (size_t s = 0; s < settings.size(); ++s) {
    ck.config().rope = released;
    ropex::apply_rope_override(ck.config().rope, settings[s].base, settings[s].scaling ? &*settings[s].scaling : nullptr);
    for (int64_t w = 0; w < o.windows; ++w) {
      const std::span<const int32_t> window(tokens.data() + w * N, size_t(N));
      for (const char* kind : {"long", "short"}) {
        const std::string key = std::string(kind) + "/" + std::to_string(s) + "/" + std::to_string(w);
        std::vector<double> v;
        if (const auto* j = journal.find(key)) {
          v = j->get<std::vector<double>>();
        } else {
          v = kind[0] == 'l' ? ropex::eval::long_window_nll(get_scorer(), window)
                             : ropex::eval::short_windows_nll(get_scorer(), window, S);
          journal.add(key, v);
          ++computed;
        }
        (kind[0] == 'l' ? long_nll : short_nll)[s].push_back(std::move(v));
        done_work += kind[0] == 'l' ? N : 2 * N;
        progress.update(done_work, settings[s].label + ": " + kind + " window " + std::to_string(w + 1));
      }
    }
    // passkey
    ojson trials = ojson::array();
    std::vector<ropex::eval::PasskeyTrial> pts;
    for (int64_t L : pk_lengths[s])
      for (double d : o.depths) {
        std::optional<int64_t> chars;
        for (int t = 0; t < o.trials; ++t) {
          const std::string key = "passkey/" + std::to_string(s) + "/" + std::to_string(L) + "/" + ropex::report::num(d, "%.6g") + "/" + std::to_string(t);
          ropex::eval::PasskeyTrial pt;
          if (const auto* j = journal.find(key)) {
            pt.length = L, pt.depth = d, pt.trial = t;
            pt.key = (*j)["key"], pt.tokens = (*j)["tokens"], pt.needle_token = (*j)["needle_token"];
            pt.correct = (*j)["correct"], pt.answer = (*j)["answer"], pt.answer_nll = (*j)["answer_nll"];
            pt.answer_tokens = (*j)["answer_tokens"];
          } else {
            if (!chars) chars = ropex::eval::passkey_filler_chars(codec.codec, L, d);
            pt = ropex::eval::passkey_trial(get_scorer(), codec.codec, L, d, t, o.seed, *chars);
            journal.add(key, {{"key", pt.key}, {"tokens", pt.tokens}, {"needle_token", pt.needle_token}, {"correct", pt.correct},
                              {"answer", pt.answer}, {"answer_nll", pt.answer_nll}, {"answer_tokens", pt.answer_tokens}});
            ++computed;
          }
          pts.push_back(pt);
          done_work += L;
          progress.update(done_work, settings[s].label + ": passkey " + std::to_string(L) + " depth " + ropex::report::num(d, "%.3g"));
        }
      }
    // ---- this setting's measurements
    std::vector<double> ls(size_t(N - 1), 0.0), ss(size_t(N - 1), 0.0);
    std::vector<int64_t> cnt(size_t(N - 1), 0);
    for (int64_t w = 0; w < o.windows; ++w)
      for (int64_t p = 0; p < N - 1; ++p)
        ls[size_t(p)] += long_nll[s][size_t(w)][size_t(p)], ss[size_t(p)] += short_nll[s][size_t(w)][size_t(p)], cnt[size_t(p)] += 1;
    ojson rule = ojson::object();
    for (double margin : {0.5, 0.25, 1.0}) {
      const auto rr = ropex::eval::position_rise(ls, ss, cnt, {S, margin});
      ojson bins = ojson::array();
      if (margin == 0.5)
        for (const auto& b : rr.bins)
          bins.push_back({{"begin", b.begin}, {"end", b.end}, {"count", b.count}, {"mean_long", b.mean_long},
                          {"mean_short", b.mean_short}, {"mean_diff", b.mean_diff}});
      rule[ropex::report::num(margin, "margin_%.2f")] = {{"measured_limit", rr.limit ? ojson(*rr.limit) : ojson(nullptr)},
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
    const auto cells = ropex::eval::passkey_cells(pts);
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
                       {"rope_type", ropex::to_string(rope.type)},
                       {"factor", rope.factor},
                       {"predictions_apply", !settings[s].scaling.has_value()},
                       {"predictions", pj},
                       {"rise", rule},
                       {"curve", curve},
                       {"passkey", {{"lengths", pk_lengths[s]}, {"cells", cj},
                                    {"passkey_limit", by_len.empty() ? ojson(nullptr) : ojson(ropex::eval::passkey_limit(by_len))}}}});
  }
  progress.finish();
  ck.config().rope = released;

  // ---- per-token file (full precision) and the binned curve
  {
    std::FILE* f = std::fopen((fs::path(o.report_dir) / "per_token.csv").c_str(), "wb");
    if (!f) throw ropex::make_error(o.report_dir, "per_token.csv", "cannot open for writing");
    std::fprintf(f, "setting,window,position,target_token,nll_long,nll_short\n");
    for (size_t s = 0; s < settings.size(); ++s)
      for (int64_t w = 0; w < o.windows; ++w)
        for (int64_t p = 0; p < N - 1; ++p)
          std::fprintf(f, "%zu,%lld,%lld,%d,%.17g,%.17g\n", s, (long long)w, (long long)p, tokens[size_t(w * N + p + 1)],
                       long_nll[s][size_t(w)][size_t(p)], short_nll[s][size_t(w)][size_t(p)]);
    if (std::fclose(f) != 0) throw ropex::make_error(o.report_dir, "per_token.csv", "write failed");
    std::ofstream c(fs::path(o.report_dir) / "curve.csv");
    c << "setting,begin,end,count,mean_nll_long,mean_nll_short,mean_diff\n";
    c.precision(17);
    for (size_t s = 0; s < results.size(); ++s)
      for (const auto& b : results[s]["rise"]["bins"])
        c << s << "," << b["begin"] << "," << b["end"] << "," << b["count"] << "," << b["mean_long"].get<double>() << ","
          << b["mean_short"].get<double>() << "," << b["mean_diff"].get<double>() << "\n";
    if (!c) throw ropex::make_error(o.report_dir, "curve.csv", "write failed");
  }

  ojson report;
  report["tool"] = "ropex check";
  report["inputs"] = inputs;
  report["rule"] = {{"text", "docs/validation.md section 6"},
                    {"comparison", "NLL of the same tokens in one long window minus in short windows (stride S/2)"},
                    {"bin_width", ropex::eval::RiseRule{S}.bin_width()},
                    {"first_bin_begin", ropex::eval::RiseRule{S}.first_bin_begin()},
                    {"margin", 0.5}};
  report["settings"] = results;
  const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
  const double model_s = scorer ? scorer->model_seconds() : 0.0;
  report["time"] = {{"total_seconds", total},
                    {"model_seconds", model_s},
                    {"model_fraction", total > 0 ? model_s / total : 0.0},
                    {"model_tokens", scorer ? scorer->model_tokens() : 0},
                    {"units_computed", computed},
                    {"units_resumed", journal.resumed()},
                    {"note", "model = forward + lm_head inside the scorer; the rest is loading, tokenizing, theories and files"}};
  ropex::report::write_check_report(o.report_dir, report);
  if (o.json) std::cout << report.dump(2) << "\n";
  else std::printf("%s\n", ropex::report::check_summary(report).c_str());
  if (!o.m.quiet)
    std::fprintf(stderr, "check: %.1f s, %.1f%% in the model forward (%lld units computed, %zu resumed); report in %s\n", total,
                 100.0 * (total > 0 ? model_s / total : 0.0), (long long)computed, journal.resumed(), o.report_dir.c_str());
}

}  // namespace

ROPEX_SUBCOMMAND(54, [](CLI::App& app) {
  auto o = std::make_shared<CheckOptions>();
  auto* s = app.add_subcommand("check",
                               "predict a model's context under every theory, measure it (position-driven loss rise, "
                               "passkey) and write a report with figures");
  s->footer("Example:\n  ropex check --model SmolLM2-135M-Instruct.Q4_1.gguf --text emma.txt --max-len 32768 --report out/\n"
            "  ropex check --model M --text T --rope-scaling '{\"rope_type\":\"yarn\",\"factor\":4}' --rope-base 1e6");
  ropex::cli::add_eval_model_options(s, o->m);
  s->add_option("--text", o->text, "text file scored by the model (tokenized with its tokenizer)")->required();
  o->o_max_len = s->add_option("--max-len", o->max_len, "long window N, tokens (default 4 x the largest finite prediction, capped by memory and the text)")
                     ->check(CLI::Range(int64_t(16), int64_t(1) << 26));
  o->o_windows = s->add_option("--windows", o->windows, "long windows from the text (default 1)")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  o->o_short = s->add_option("--short-window", o->short_window, "short window S (default: the model's context T_tune)");
  o->o_train_len = s->add_option("--train-len", o->train_len, "pre-training context (default = tune_len)");
  o->o_tune_len = s->add_option("--tune-len", o->tune_len, "context the released model was trained at (default: its max_position_embeddings)");
  o->o_pretrain_base = s->add_option("--pretrain-base", o->pretrain_base, "base of pre-training (default: the checkpoint's base)");
  s->add_option("--rope-scaling", o->rope_scaling, "training-free variant to measure too, HF JSON; repeat for several")->take_all();
  s->add_option("--rope-base", o->rope_base, "other bases to measure, comma-separated")->delimiter(',');
  o->o_depths = s->add_option("--passkey-depths", o->depths, "passkey needle depths (default 0,0.5,1)")->delimiter(',');
  o->o_trials = s->add_option("--passkey-trials", o->trials, "passkey trials per cell (default 4; 0: no passkey)")->check(CLI::Range(0, 1000));
  o->o_seed = s->add_option("--seed", o->seed, "passkey seed (default 0)");
  s->add_option("--report", o->report_dir, "report directory (default ./ropex-check); its partial.jsonl resumes a run");
  s->add_flag("--json", o->json, "print report.json to stdout");
  s->callback([o] { run_check(*o); });
});
