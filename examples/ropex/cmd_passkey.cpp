// ropex passkey: passkey retrieval (Landmark Attention's protocol, include/ropex/eval/passkey.hpp)
// over a grid of lengths x depths x trials, greedy decoding, accuracy and answer-token loss per cell.
#include "cli.hpp"
#include "eval_setup.hpp"

#include <ropex/error.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/io/progress.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

struct PasskeyCliOptions {
  ropex::cli::EvalModelOptions m;
  std::vector<int64_t> lengths{1024, 2048, 4096};
  std::vector<double> depths{0, 0.25, 0.5, 0.75, 1};
  int trials = 5;
  uint64_t seed = 0;
  std::optional<double> rope_base;
  std::string rope_scaling;
  bool json = false, csv = false;
  CLI::Option *o_lengths = nullptr, *o_depths = nullptr, *o_trials = nullptr, *o_seed = nullptr;
};

using ojson = nlohmann::ordered_json;

std::string g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

void run_passkey(const PasskeyCliOptions& o) {
  ropex::eval::check_passkey_grid(o.lengths, o.depths, o.trials);
  ropex::model::Checkpoint ck = ropex::model::Checkpoint::open(o.m.model);
  std::optional<nlohmann::json> scaling;
  if (!o.rope_scaling.empty()) scaling = ropex::cli::parse_rope_scaling(o.rope_scaling);
  if (o.rope_base || scaling) ropex::apply_rope_override(ck.config().rope, o.rope_base, scaling ? &*scaling : nullptr);
  const auto codec = ropex::cli::model_codec(ck, o.m.tokenizer);
  auto scorer = ropex::cli::make_scorer(ck, o.m);

  const auto t0 = std::chrono::steady_clock::now();
  ropex::io::Progress progress("passkey", int64_t(o.lengths.size() * o.depths.size()) * o.trials, "trials", !o.m.quiet);
  const auto trials = ropex::eval::passkey_grid(
      *scorer, codec.codec, o.lengths, o.depths, o.trials, o.seed, [&](const ropex::eval::PasskeyTrial& t, size_t done) {
        progress.update(int64_t(done), "length " + std::to_string(t.length) + ", depth " + g(t.depth) + ", " +
                                           g(double(scorer->model_tokens()) / scorer->model_seconds()) + " tokens/s");
      });
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto cells = ropex::eval::passkey_cells(trials);

  if (o.csv) {
    std::printf("length,depth,trials,correct,accuracy,answer_nll,mean_tokens\n");
    for (const auto& c : cells)
      std::printf("%lld,%.17g,%d,%d,%.17g,%.17g,%.17g\n", (long long)c.length, c.depth, c.trials, c.correct, c.accuracy,
                  c.answer_nll, c.mean_tokens);
    return;
  }
  if (o.json) {
    auto input = [](const auto& v, const std::string& origin) { return ojson{{"value", v}, {"origin", origin}}; };
    auto origin = [](CLI::Option* opt, const char* def) { return *opt ? "flag " + opt->get_name() : std::string(def); };
    ojson j;
    j["inputs"] = {{"model", input(o.m.model, "flag --model")},
                   {"tokenizer", input(codec.file, o.m.tokenizer.empty() ? "the model's own" : "flag --tokenizer")},
                   {"lengths", input(o.lengths, origin(o.o_lengths, "default"))},
                   {"depths", input(o.depths, origin(o.o_depths, "default"))},
                   {"trials", input(o.trials, origin(o.o_trials, "default"))},
                   {"seed", input(o.seed, origin(o.o_seed, "default"))},
                   {"rope_base", input(ck.config().rope.base, o.rope_base ? "flag --rope-base" : "the checkpoint")},
                   {"rope_scaling", input(o.rope_scaling.empty() ? ojson(nullptr) : ojson::parse(o.rope_scaling),
                                          o.rope_scaling.empty() ? "the checkpoint" : "flag --rope-scaling")},
                   {"device", input(o.m.device, "flag --device or default cpu")}};
    j["protocol"] = {{"task", ropex::eval::passkey_task}, {"filler", ropex::eval::passkey_filler},
                     {"needle", "The pass key is N. Remember it. N is the pass key."}, {"question", ropex::eval::passkey_question},
                     {"key_range", {1, ropex::eval::passkey_max_key}}, {"decoding", "greedy"}};
    ojson cj = ojson::array();
    for (const auto& c : cells)
      cj.push_back({{"length", c.length}, {"depth", c.depth}, {"trials", c.trials}, {"correct", c.correct},
                    {"accuracy", c.accuracy}, {"answer_nll", c.answer_nll}, {"mean_tokens", c.mean_tokens}});
    j["cells"] = cj;
    ojson tj = ojson::array();
    for (const auto& t : trials)
      tj.push_back({{"length", t.length}, {"depth", t.depth}, {"trial", t.trial}, {"key", t.key}, {"tokens", t.tokens},
                    {"needle_token", t.needle_token}, {"correct", t.correct}, {"answer", t.answer},
                    {"answer_tokens", t.answer_tokens}, {"answer_nll", t.answer_nll}});
    j["trials"] = tj;
    j["time"] = {{"seconds", secs}, {"model_seconds", scorer->model_seconds()}, {"model_tokens", scorer->model_tokens()},
                 {"tokens_per_second", scorer->model_tokens() / scorer->model_seconds()},
                 {"sequences_per_forward", 1}};
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::printf("passkey retrieval: %s (%s), seed %llu, %d trials per cell, greedy\n", o.m.model.c_str(), codec.file.c_str(),
              (unsigned long long)o.seed, o.trials);
  std::printf("%8s %6s %8s %10s %12s %10s\n", "length", "depth", "correct", "accuracy", "answer_nll", "tokens");
  for (const auto& c : cells)
    std::printf("%8lld %6.3g %5d/%-2d %10.3f %12.4f %10.1f\n", (long long)c.length, c.depth, c.correct, c.trials, c.accuracy,
                c.answer_nll, c.mean_tokens);
  std::printf("%.1f s, %.0f tokens/s in the model (one sequence per forward)\n", secs,
              scorer->model_tokens() / scorer->model_seconds());
}

}  // namespace

ROPEX_SUBCOMMAND(53, [](CLI::App& app) {
  auto o = std::make_shared<PasskeyCliOptions>();
  auto* s = app.add_subcommand("passkey",
                               "passkey retrieval (Landmark Attention / PI / YaRN protocol): accuracy and answer-token "
                               "loss over lengths x depths x trials");
  s->footer("Example:\n  ropex passkey --model SmolLM2-135M-Instruct.Q4_1.gguf --lengths 1024,4096 --depths 0,0.5,1 --trials 4 --json");
  ropex::cli::add_eval_model_options(s, o->m);
  o->o_lengths = s->add_option("--lengths", o->lengths, "prompt lengths in tokens, prompt + answer (default 1024,2048,4096)")
                     ->delimiter(',');
  o->o_depths = s->add_option("--depths", o->depths, "needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)")->delimiter(',');
  o->o_trials = s->add_option("--trials", o->trials, "trials per cell, each with its own key (default 5)");
  o->o_seed = s->add_option("--seed", o->seed, "seed of the keys (default 0)");
  s->add_option("--rope-base", o->rope_base, "override the checkpoint's rope_theta");
  s->add_option("--rope-scaling", o->rope_scaling, "override its rope scaling, HF JSON, e.g. '{\"rope_type\":\"yarn\",\"factor\":4}'");
  auto* js = s->add_flag("--json", o->json, "print JSON: inputs, cells, every trial, time");
  s->add_flag("--csv", o->csv, "print the cells as CSV")->excludes(js);
  s->callback([o] { run_passkey(*o); });
});
