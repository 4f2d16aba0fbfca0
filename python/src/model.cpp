// ropex.Model: a checkpoint ropex loads (HF directory, GGUF file, llama2.c .bin) and the Llama
// forward over it (include/ropex/model/{checkpoint,llama}.hpp, eval/perplexity.hpp) on the CPU, or
// on the GPU when the module is built with ROPEX_CUDA=ON (runner.hpp, model_cuda.cu).
// Long calls release the GIL; after every layer (and every perplexity window, generated token)
// they take it back briefly to call PyErr_CheckSignals (Ctrl-C raises KeyboardInterrupt there) and
// the progress callback.
#include "common.hpp"
#include "runner.hpp"

#include <ropex/backends/eigen/threads.hpp>
#include <ropex/config.hpp>
#include <ropex/error.hpp>
#include <ropex/eval/check_run.hpp>
#include <ropex/eval/model_codec.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/model/sampling.hpp>
#include <ropex/tokenizer/tokenizer.hpp>

#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace ropex_py {
namespace {

using ropex::model::Checkpoint;
using Ids = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Progress = std::optional<nb::callable>;

using ropex::backends::set_cpu_threads;  // --threads: OpenMP, Eigen and OpenBLAS pools

// Called with the GIL released: takes it, raises KeyboardInterrupt (as a C++ exception that
// unwinds the forward) on Ctrl-C, else reports progress.
void check_in(const Progress& progress, int64_t done, int64_t total) {
  nb::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw nb::python_error();
  if (progress) (*progress)(done, total);
}

class Model {
 public:
  Model(nb::handle path, const std::string& device, std::optional<std::string> dtype, std::optional<double> rope_base,
        nb::handle rope_scaling, int threads)
      : device_(device) {
    if (device != "cpu" && device != "cuda")
      throw ropex::make_error("Model", "device", "must be \"cpu\" or \"cuda\", got \"" + device + "\"");
#if !ROPEX_HAS_CUDA
    if (device == "cuda")
      throw ropex::make_error("Model", "device",
                              "cuda: this ropex module was built without CUDA (pip install . -C "
                              "cmake.define.ROPEX_CUDA=ON on a machine with nvcc)");
#endif
    dtype_ = dtype.value_or(device == "cuda" ? "bf16" : "f32");
    if (device == "cpu" && dtype_ != "f32")
      throw ropex::make_error("Model", "dtype", "the CPU forward runs in \"f32\" only, got \"" + dtype_ + "\"");
    const std::string p = nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(path));
    set_cpu_threads(threads);
    std::optional<nlohmann::json> scaling;
    if (!rope_scaling.is_none()) {
      if (nb::isinstance<nb::dict>(rope_scaling)) {
        const std::string text = nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(rope_scaling));
        scaling = nlohmann::json::parse(text, nullptr, false);
      } else if (nb::isinstance<nb::str>(rope_scaling)) {
        scaling = ropex::parse_json_arg(nb::cast<std::string>(rope_scaling), "rope_scaling");
      } else {
        throw ropex::make_error("Model", "rope_scaling", "expected a dict or a JSON string");
      }
      if (scaling->is_discarded()) throw ropex::make_error("rope_scaling", "", "not representable as JSON");
    }
    {
      nb::gil_scoped_release nogil;
      ck_ = std::make_unique<Checkpoint>(Checkpoint::open(p));
      if (rope_base) rope_origin_ = "Model(rope_base=...)";
      if (scaling) rope_origin_ += std::string(rope_origin_.empty() ? "" : ", ") + "Model(rope_scaling=...)";
      if (rope_base || scaling)
        ropex::apply_rope_override(ck_->config().rope, rope_base, scaling ? &*scaling : nullptr, "rope_scaling");
#if ROPEX_HAS_CUDA
      if (device == "cuda") runner_ = make_cuda_runner(*ck_, dtype_);
#endif
      if (!runner_) runner_ = std::make_unique<LlamaRunner<ropex::backends::cpu>>(*ck_, 512, 64);
    }
  }

  const ropex::model::LlamaConfig& config() const { return ck_->config(); }

  nb::dict config_dict() const {
    const auto& c = config();
    nb::dict d;
    d["model_type"] = c.model_type;
    d["vocab_size"] = c.vocab_size;
    d["hidden_size"] = c.hidden_size;
    d["intermediate_size"] = c.intermediate_size;
    d["num_hidden_layers"] = c.num_hidden_layers;
    d["num_attention_heads"] = c.num_attention_heads;
    d["num_key_value_heads"] = c.num_key_value_heads;
    d["head_dim"] = c.head_dim;
    d["rotary_dim"] = c.rotary_dim();
    d["max_position_embeddings"] = c.max_position_embeddings;
    d["rms_norm_eps"] = c.rms_norm_eps;
    d["tie_word_embeddings"] = c.tie_word_embeddings;
    d["bos_token_id"] = c.bos_token_id;
    d["eos_token_ids"] = c.eos_token_ids;
    d["rope_layout"] = std::string(ropex::to_string(c.rope_layout));
    d["layer_window"] = c.layer_window;
    return d;
  }

  // int64 ids -> int32, each in [0, vocab) (the forward's own message).
  std::vector<int32_t> ids_of(const Ids& ids, const char* field = "ids") const {
    const int64_t vocab = config().vocab_size;
    std::vector<int32_t> out(ids.shape(0));
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t v = ids.data()[i];
      if (v < 0 || v >= vocab)
        throw ropex::make_error(field, "[" + std::to_string(i) + "]",
                                "id " + std::to_string(v) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      out[i] = int32_t(v);
    }
    return out;
  }

  // Runs f with the GIL released (the hooks take it back).
  template <class F>
  static void without_gil(F&& f) {
    nb::gil_scoped_release nogil;
    f();
  }
  // `progress` must outlive the call the hook serves (the hook copies no Python object: it runs
  // without the GIL until it takes it).
  static Hook hook(const Progress& progress) {
    return [&progress](int64_t done, int64_t total) { check_in(progress, done, total); };
  }
  static Hook signals_only() {
    static const Progress none;
    return hook(none);
  }

  NumpyArray<float> logits(const Ids& ids_in, const Progress& progress) {
    const auto ids = ids_of(ids_in);
    if (ids.empty()) throw ropex::make_error("ids", "", "no token ids");
    OwnedArray<float> out({ids.size(), size_t(config().vocab_size)});
    without_gil([&] { runner_->logits(ids, out.data, hook(progress)); });
    return out.array;
  }

  // -log p(ids[i+1] | ids[0..i]) for i = 0 .. n-2, from one forward over ids.
  NumpyArray<double> nll(const Ids& ids_in, const Progress& progress) {
    const auto ids = ids_of(ids_in);
    if (ids.size() < 2) throw ropex::make_error("ids", "", "need at least 2 token ids, got " + std::to_string(ids.size()));
    OwnedArray<double> out({ids.size() - 1});
    without_gil([&] { runner_->nll(ids, out.data, hook(progress)); });
    return out.array;
  }

  ropex::eval::PerplexityResult perplexity(const Ids& ids_in, int64_t context, int64_t stride, int64_t bins,
                                           bool bos_windows, const Progress& progress) {
    const auto ids = ids_of(ids_in);
    ropex::eval::PerplexityOptions po;
    po.context = context, po.stride = stride, po.bins = bins;
    if (bins < 1) throw ropex::make_error("perplexity", "bins", "must be >= 1, got " + std::to_string(bins));
    if (stride < 0) throw ropex::make_error("perplexity", "stride", "must be >= 0, got " + std::to_string(stride));
    if (bos_windows) po.window_bos = int32_t(config().bos_token_id);
    po.progress = hook(progress);
    ropex::eval::PerplexityResult r;
    without_gil([&] { r = runner_->perplexity(ids, po, signals_only()); });
    return r;
  }

  // Prefill `prompt` (default: BOS), then `steps` tokens: greedy at temperature 0, else a draw
  // from softmax(logits / T) (the CLI's rule, same seed -> same tokens).
  std::vector<int32_t> generate(std::optional<Ids> prompt_in, int64_t steps, double temperature, uint64_t seed,
                                bool stop_at_eos, const Progress& progress) {
    if (steps < 1) throw ropex::make_error("generate", "steps", "must be >= 1, got " + std::to_string(steps));
    if (!(temperature >= 0) || !std::isfinite(temperature))
      throw ropex::make_error("generate", "temperature", "must be a finite number >= 0");
    std::vector<int32_t> prompt;
    if (prompt_in) prompt = ids_of(*prompt_in, "prompt");
    if (prompt.empty() && config().bos_token_id >= 0) prompt.push_back(int32_t(config().bos_token_id));
    if (prompt.empty()) throw ropex::make_error("generate", "prompt", "the model has no bos_token_id; give a prompt");
    const auto& eos = config().eos_token_ids;
    const int64_t vocab = config().vocab_size;
    std::mt19937_64 rng(seed);
    std::vector<int32_t> out;
    without_gil([&] {
      out = runner_->generate(
          prompt, steps, [&](const float* logits) { return ropex::model::pick_token(logits, vocab, temperature, rng); },
          [&](int32_t t) { return stop_at_eos && std::find(eos.begin(), eos.end(), int64_t(t)) != eos.end(); },
          signals_only(), hook(progress));
    });
    return out;
  }

  // Passkey retrieval (eval/passkey.hpp) over lengths x depths x trials, greedy; the CLI's
  // `ropex passkey`. Returns (cells, trials, seconds, model_seconds, model_tokens).
  nb::tuple passkey(const std::vector<int64_t>& lengths, const std::vector<double>& depths, int trials, uint64_t seed,
                    const Progress& progress) {
    ropex::eval::check_passkey_grid(lengths, depths, trials, "");
    const auto& mc = codec();
    auto& sc = runner_->scorer();
    const double s0 = sc.model_seconds();
    const int64_t tok0 = sc.model_tokens();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<ropex::eval::PasskeyTrial> out;
    const int64_t total = int64_t(lengths.size() * depths.size()) * trials;
    without_gil([&] {
      const LayerHook scope(*runner_, signals_only());
      out = ropex::eval::passkey_grid(sc, mc.codec, lengths, depths, trials, seed,
                                      [&](const ropex::eval::PasskeyTrial&, size_t done) { check_in(progress, int64_t(done), total); });
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nb::list cells, trial_list;
    for (const auto& c : ropex::eval::passkey_cells(out))
      cells.append(nb::make_tuple(c.length, c.depth, c.trials, c.correct, c.accuracy, c.answer_nll, c.mean_tokens));
    for (const auto& t : out)
      trial_list.append(nb::make_tuple(t.length, t.depth, t.trial, t.key, t.tokens, t.needle_token, t.correct, t.answer,
                                       t.answer_tokens, t.answer_nll));
    return nb::make_tuple(cells, trial_list, secs, sc.model_seconds() - s0, sc.model_tokens() - tok0);
  }

  // `ropex check` (eval/check_run.hpp) on this model; returns report.json's text.
  std::string check(nb::handle text, nb::handle report, std::optional<int64_t> max_len, std::optional<int64_t> windows,
                    std::optional<int64_t> short_window, std::optional<double> train_len, std::optional<double> tune_len,
                    std::optional<double> pretrain_base, const std::vector<std::string>& rope_scaling,
                    const std::vector<double>& rope_base, std::optional<std::vector<double>> depths,
                    std::optional<int> trials, std::optional<uint64_t> seed, const Progress& progress) {
    auto fspath = nb::module_::import_("os").attr("fspath");
    ropex::eval::CheckSpec spec;
    spec.text = nb::cast<std::string>(fspath(text));
    spec.report_dir = nb::cast<std::string>(fspath(report));
    spec.max_len = max_len, spec.windows = windows, spec.short_window = short_window;
    spec.train_len = train_len, spec.tune_len = tune_len, spec.pretrain_base = pretrain_base;
    for (size_t i = 0; i < rope_scaling.size(); ++i)
      spec.rope_scaling.push_back(ropex::parse_json_arg(rope_scaling[i], "rope_scaling[" + std::to_string(i) + "]"));
    spec.rope_base = rope_base, spec.depths = depths, spec.trials = trials, spec.seed = seed;
    ropex::eval::CheckEnv env;
    env.name = [](std::string_view f) {
      if (f == "depths" || f == "trials") return "passkey_" + std::string(f);
      if (f == "report_dir") return std::string("report");
      return std::string(f);
    };
    env.given_by = "argument";
    env.model = ck_->path().string(), env.model_origin = "ropex.Model";
    env.rope_origin = rope_origin_;
    env.extra_inputs["device"] = {{"value", device_}, {"origin", "the ropex.Model's device"}};
    env.extra_inputs["dtype"] = {{"value", dtype_}, {"origin", "the ropex.Model's dtype"}};
    env.scorer = [this]() -> ropex::eval::Scorer& { return runner_->scorer(); };
    env.progress = [&progress](int64_t done, int64_t total, const std::string&) { check_in(progress, done, total); };
    const auto& mc = codec();
    std::string out;
    without_gil([&] {
      const LayerHook scope(*runner_, signals_only());
      out = ropex::eval::run_check(*ck_, mc, spec, env).dump();
    });
    return out;
  }

  const ropex::eval::ModelCodec& codec() {
    if (!codec_) codec_ = ropex::eval::model_codec(*ck_);
    return *codec_;
  }

  const ropex::tokenizer::Tokenizer& tokenizer() {
    if (!tok_) tok_ = ropex::tokenizer::Tokenizer::from_model_dir(ck_->path());
    return *tok_;
  }

  std::unique_ptr<Checkpoint> ck_;
  std::unique_ptr<Runner> runner_;
  std::optional<ropex::tokenizer::Tokenizer> tok_;
  std::optional<ropex::eval::ModelCodec> codec_;
  std::string device_, dtype_, rope_origin_;

 private:
  // The per-layer hook for one call (Ctrl-C between layers), removed on any exit.
  struct LayerHook {
    Runner& r;
    LayerHook(Runner& runner, const Hook& h) : r(runner) { r.on_layer(h); }
    ~LayerHook() { r.on_layer(nullptr); }
  };
};

}  // namespace

void bind_model(nb::module_& m) {
  using R = ropex::eval::PerplexityResult;
  nb::class_<R>(m, "PerplexityResult")
      .def_ro("perplexity", &R::perplexity)
      .def_ro("mean_nll", &R::mean_nll)
      .def_ro("tokens", &R::tokens)
      .def_ro("context", &R::context)
      .def_ro("stride", &R::stride)
      .def_ro("windows", &R::windows)
      .def_prop_ro("position_nll_sum", [](const R& r) { return to_numpy(std::vector<double>(r.position_nll_sum)); },
                   nb::rv_policy::move)
      .def_prop_ro("position_count", [](const R& r) { return to_numpy(std::vector<int64_t>(r.position_count)); },
                   nb::rv_policy::move)
      .def_prop_ro("curve", [](const R& r) {
        nb::list out;
        for (const auto& b : r.curve) out.append(nb::make_tuple(b.begin, b.end, b.count, b.mean_nll));
        return out;
      });

  nb::class_<Model>(m, "Model")
      .def(nb::init<nb::handle, const std::string&, std::optional<std::string>, std::optional<double>, nb::handle, int>(),
           nb::arg("path"), nb::arg("device") = "cpu", nb::arg("dtype") = nb::none(), nb::arg("rope_base") = nb::none(),
           nb::arg("rope_scaling") = nb::none(), nb::arg("threads") = 0)
      .def_prop_ro("config", &Model::config_dict)
      .def_prop_ro("rope", [](const Model& m) { return m.config().rope; })
      .def_prop_ro("format", [](const Model& m) { return m.ck_->format(); })
      .def_prop_ro("path", [](const Model& m) { return m.ck_->path().string(); })
      .def_prop_ro("device", [](const Model& m) { return m.device_; })
      .def_prop_ro("dtype", [](const Model& m) { return m.dtype_; })
      .def("logits", &Model::logits, nb::arg("ids"), nb::arg("progress") = nb::none())
      .def("nll", &Model::nll, nb::arg("ids"), nb::arg("progress") = nb::none())
      .def("perplexity", &Model::perplexity, nb::arg("ids"), nb::arg("context"), nb::arg("stride") = 0,
           nb::arg("bins") = 32, nb::arg("bos_windows") = false, nb::arg("progress") = nb::none())
      .def("generate", &Model::generate, nb::arg("prompt") = nb::none(), nb::arg("steps") = 16,
           nb::arg("temperature") = 0.0, nb::arg("seed") = 0, nb::arg("stop_at_eos") = false,
           nb::arg("progress") = nb::none())
      .def("passkey", &Model::passkey, nb::arg("lengths"), nb::arg("depths"), nb::arg("trials"), nb::arg("seed"),
           nb::arg("progress") = nb::none())
      .def("check", &Model::check, nb::arg("text"), nb::arg("report"), nb::arg("max_len") = nb::none(),
           nb::arg("windows") = nb::none(), nb::arg("short_window") = nb::none(), nb::arg("train_len") = nb::none(),
           nb::arg("tune_len") = nb::none(), nb::arg("pretrain_base") = nb::none(),
           nb::arg("rope_scaling") = std::vector<std::string>{}, nb::arg("rope_base") = std::vector<double>{},
           nb::arg("passkey_depths") = nb::none(), nb::arg("passkey_trials") = nb::none(), nb::arg("seed") = nb::none(),
           nb::arg("progress") = nb::none())
      .def(
          "tokenize",
          [](Model& m, const std::string& text, bool add_special_tokens) {
            return m.tokenizer().encode(text, add_special_tokens);
          },
          nb::arg("text"), nb::arg("add_special_tokens") = false)
      .def(
          "detokenize",
          [](Model& m, const std::vector<int32_t>& ids, bool skip_special) {
            return m.tokenizer().decode(ids, skip_special);
          },
          nb::arg("ids"), nb::arg("skip_special") = false);
}

}  // namespace ropex_py
