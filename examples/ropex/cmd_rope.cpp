// `ropex rope`: what a checkpoint's RoPE settings compute to — variant, inv_freq, periods and the
// attention factor at a given sequence length. For debugging a config.json before running a model.
#include "cli.hpp"

#include <ropex/io/json_file.hpp>
#include <ropex/io/memory_budget.hpp>
#include <ropex/rope/rotary_config.hpp>
#include "gguf_config.hpp"
#include "vocab.hpp"
#include <ropex/rope/scaling.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace {

struct RopeOptions {
  std::string config, model, rope_scaling;
  CLI::Option *o_config = nullptr, *o_model = nullptr, *o_positions = nullptr;
  std::int64_t positions = 0;
  int head_dim = 0;
  std::optional<double> base;
  bool json = false;
};

void run_rope(const RopeOptions& o) {
  namespace fs = std::filesystem;
  if (bool(*o.o_config) == bool(*o.o_model)) throw ropex::cli::UsageError("rope: give exactly one of --config or --model");
  std::string path = o.config;
  if (*o.o_model) {
    const auto m = ropex::cli::resolve_model_arg(o.model);
    if (!m.is_path())
      throw ropex::cli::UsageError("--model: " + o.model + " is a built-in preset, which records no RoPE config; give "
                                   "--config (a config.json, GGUF file or model directory) or a model path");
    path = o.model;
  }
  std::error_code ec;  // the throwing overloads report a symlink loop as a bare "filesystem error"
  const auto st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) throw ropex::make_error(path, "", ec.message());
  if (fs::is_directory(st)) {
    path = (fs::path(path) / "config.json").string();
    if (!fs::exists(fs::status(path, ec))) throw ropex::make_error(*o.o_model ? o.model : o.config, "", "directory has no config.json");
  }
  const bool from_file = ropex::cli::is_gguf_file(path) || fs::path(path).extension() == ".bin";  // GGUF / llama2.c
  nlohmann::json cfg = from_file ? nlohmann::json() : ropex::read_json_file(path);
  if (o.head_dim > 0) {  // --head-dim replaces the file's head; a partial-rotary key still applies to it
    if (o.head_dim % 2 != 0) throw ropex::cli::UsageError("--head-dim: must be even, got " + std::to_string(o.head_dim));
    if (from_file) throw ropex::cli::UsageError("--head-dim: not with a GGUF or llama2.c file (its head is the model's)");
    if (cfg.is_object()) cfg["head_dim"] = o.head_dim;
  }
  // Head dim, rotary dim and base from whichever keys the file uses (rotary_config.hpp; a GGUF file's
  // {arch}.* keys, gguf_config.hpp), each with its key.
  const ropex::RotaryConfig rc = from_file ? ropex::cli::read_rotary_source(path).rc : ropex::rotary_config_from_json(cfg, path);
  ropex::RopeScaling rs = rc.rope;
  std::optional<nlohmann::json> over;
  if (!o.rope_scaling.empty()) over = ropex::parse_json_arg(o.rope_scaling, "--rope-scaling");
  if (over || o.base) ropex::apply_rope_override(rs, o.base, over ? &*over : nullptr);
  const int head_dim = rc.head_dim;
  const std::string head_key = o.head_dim > 0 ? "flag --head-dim" : rc.head_dim_key;
  const int rotary = rc.rotary_dim;
  const std::string rotary_key = rc.partial ? rc.rotary_dim_key : head_key;
  const std::string base_key = o.base ? "flag --rope-base" : rc.base_key;
  if (rotary <= 0 || rotary % 2)
    throw ropex::make_error(path, rotary_key, "rotary dim " + std::to_string(rotary) + " must be even and > 0");
  if (o.positions < 0) throw ropex::cli::UsageError("--positions: must be >= 0");
  const std::int64_t seq_len = o.positions;
  ropex::io::require_memory(rotary_key, double(rotary) / 2 * 300.0, "the per-pair table and its output");
  const auto inv = rs.inv_freq(rotary, seq_len);
  const double att = rs.attention_factor(seq_len);
  if (o.json) {
    nlohmann::ordered_json j;
    j["config"] = path;
    j["rope_type"] = ropex::to_string(rs.type);
    j["base"] = rs.base;
    j["factor"] = rs.factor;
    j["head_dim"] = head_dim;
    j["head_dim_source"] = head_key;
    j["rotary_dim"] = rotary;
    j["rotary_dim_source"] = rotary_key;
    j["base_source"] = base_key;
    j["max_position_embeddings"] = rs.max_position_embeddings;
    j["original_max_position_embeddings"] = rs.original_length();
    j["seq_len"] = seq_len;
    j["attention_factor"] = att;
    j["inv_freq"] = inv;
    std::vector<double> periods;
    for (double f : inv) periods.push_back(ropex::period(f));
    j["period"] = periods;
    const auto none = ropex::cli::input_json(nullptr, "not given");
    // "file:key", as the other subcommands name an input read from a file
    const auto in_file = [&](const std::string& key) {
      return key.rfind("flag ", 0) == 0 || key.rfind("the ", 0) == 0 ? key : path + ":" + key;
    };
    j["inputs"] = {
        {"config", ropex::cli::input_json(path, *o.o_config ? "flag --config" : "flag --model")},  // the file read
        {"model", *o.o_model ? nlohmann::ordered_json{{"value", o.model}, {"origin", "flag --model"},
                                                      {"resolved", ropex::cli::resolve_model_arg(o.model).kind_name()}}
                             : none},
        {"positions", ropex::cli::input_json(seq_len, ropex::cli::flag_origin(o.o_positions, "default 0"))},
        {"head_dim", ropex::cli::input_json(head_dim, in_file(head_key))},
        {"rotary_dim", ropex::cli::input_json(rotary, in_file(rotary_key))},
        {"rope_base", ropex::cli::input_json(rs.base, in_file(base_key))},
        {"rope_scaling", o.rope_scaling.empty() ? ropex::cli::input_json(nullptr, "not given (the file's)")
                                                : ropex::cli::input_json(nlohmann::ordered_json::parse(o.rope_scaling), "flag --rope-scaling")}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("%s: rope_type %s, base %.10g, factor %g, rotary_dim %d of head_dim %d\n", path.c_str(),
              ropex::to_string(rs.type), rs.base, rs.factor, rotary, head_dim);
  std::printf("sources: rotary_dim <- %s, head_dim <- %s, base <- %s\n", rotary_key.c_str(), head_key.c_str(),
              base_key.c_str());
  std::printf("sequence length %lld: attention_factor %.6f\n", static_cast<long long>(seq_len), att);
  std::printf("%5s %16s %16s %16s\n", "pair", "inv_freq", "default", "period");
  const auto def = [&] { ropex::RopeScaling d; d.base = rs.base; return d.inv_freq(rotary); }();
  for (size_t i = 0; i < inv.size(); ++i)
    std::printf("%5zu %16.9e %16.9e %16.2f\n", i, inv[i], def[i], ropex::period(inv[i]));
}

}  // namespace

ROPEX_SUBCOMMAND(40, [](CLI::App& app) {
  auto o = std::make_shared<RopeOptions>();
  auto* s = app.add_subcommand("rope", "Show the inv_freq / attention factor a config.json's (or GGUF / llama2.c file's) RoPE settings give");
  o->o_config = s->add_option("--config", o->config, "config.json, GGUF file or a directory holding config.json");
  o->o_model = s->add_option("--model", o->model, "a model path (directory, GGUF file or llama2.c .bin), read as --config");
  o->o_model->excludes(o->o_config);
  o->o_positions = s->add_option("--positions", o->positions,
                "sequence length (max position + 1) to evaluate at; matters for dynamic / longrope")
      ->default_val(0);
  s->add_option("--head-dim", o->head_dim, "override head_dim (default: from the config)")
      ->check(CLI::Range(2, 1 << 20));  // 0 or a negative value would be ignored, not applied
  s->add_option("--rope-base", o->base, "override rope_theta");
  s->add_option("--rope-scaling", o->rope_scaling, "override rope_scaling, as HF JSON");
  s->add_flag("--json", o->json, "print JSON (keys: rope_type, base, inv_freq, period, attention_factor, ...)");
  s->footer("Example:\n  ropex rope --config tests/fixtures/configs/Llama-3.1-8B --positions 131072 --json");
  s->callback([o] { run_rope(*o); });
});
