// ropex check: one model against every published theory of its context (eval/check_run.hpp: the
// predictions, the position-driven loss rise, passkey around each prediction, the report). This file
// is the command line around it: flags, the scorer on the chosen device, progress, the summary.
#include "cli.hpp"
#include "eval_setup.hpp"

#include <ropex/error.hpp>
#include <ropex/eval/check_run.hpp>
#include <ropex/io/progress.hpp>
#include <ropex/report/check_report.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

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

template <class T>
std::optional<T> given(CLI::Option* o, const T& v) {
  return *o ? std::optional<T>(v) : std::nullopt;
}

// CheckSpec's field names as this command's flags.
std::string flag_name(std::string_view field) {
  if (field == "depths") return "--passkey-depths";
  if (field == "trials") return "--passkey-trials";
  if (field == "report_dir") return "--report";
  std::string f = "--" + std::string(field);
  for (char& c : f)
    if (c == '_') c = '-';
  return f;
}

void run_check(const CheckOptions& o) {
  ropex::eval::CheckSpec spec;
  spec.text = o.text;
  spec.report_dir = o.report_dir;
  spec.max_len = given(o.o_max_len, o.max_len);
  spec.windows = given(o.o_windows, o.windows);
  spec.short_window = given(o.o_short, o.short_window);
  spec.train_len = given(o.o_train_len, o.train_len);
  spec.tune_len = given(o.o_tune_len, o.tune_len);
  spec.pretrain_base = given(o.o_pretrain_base, o.pretrain_base);
  for (const auto& s : o.rope_scaling) spec.rope_scaling.push_back(ropex::cli::parse_rope_scaling(s));
  spec.rope_base = o.rope_base;
  spec.depths = given(o.o_depths, o.depths);
  spec.trials = given(o.o_trials, o.trials);
  spec.seed = given(o.o_seed, o.seed);

  ropex::model::Checkpoint ck = ropex::model::Checkpoint::open(o.m.model);
  const auto codec = ropex::cli::model_codec(ck, o.m.tokenizer);
  std::unique_ptr<ropex::eval::Scorer> scorer;
  ropex::io::Progress progress("check", 0, "tokens", !o.m.quiet);
  ropex::eval::CheckEnv env;
  env.name = flag_name;
  env.given_by = "flag";
  env.model = o.m.model, env.model_origin = "flag --model";
  env.tokenizer_origin = o.m.tokenizer.empty() ? "the model's own" : "flag --tokenizer";
  env.extra_inputs["device"] = {{"value", o.m.device}, {"origin", o.m.device == "cpu" ? "default cpu (--device)" : "flag --device"}};
  if (o.m.device == "cuda") env.extra_inputs["dtype"] = {{"value", o.m.cuda.dtype}, {"origin", "--dtype"}};
  env.scorer = [&]() -> ropex::eval::Scorer& {
    if (!scorer) scorer = ropex::cli::make_scorer(ck, o.m);
    return *scorer;
  };
  env.progress = [&](int64_t done, int64_t total, const std::string& what) {
    progress.set_total(total);
    progress.update(done, what);
  };
  if (!o.m.quiet) env.notice = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  const auto report = ropex::eval::run_check(ck, codec, spec, env);
  progress.finish();

  if (o.json) std::cout << report.dump(2) << "\n";
  else std::printf("%s\n", ropex::report::check_summary(report).c_str());
  if (!o.m.quiet) {
    const auto& t = report["time"];
    std::fprintf(stderr, "check: %.1f s, %.1f%% in the model forward (%lld units computed, %lld resumed); report in %s\n",
                 t["total_seconds"].get<double>(), 100.0 * t["model_fraction"].get<double>(),
                 (long long)t["units_computed"].get<int64_t>(), (long long)t["units_resumed"].get<int64_t>(), o.report_dir.c_str());
  }
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
