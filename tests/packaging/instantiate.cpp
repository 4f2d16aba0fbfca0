// The public templates, instantiated the way a user's program does, so the header check sees the
// warnings that only instantiated code raises (compiled after every header by check_headers.sh).
#include <ropex/attention/online_softmax.hpp>
#include <ropex/attention/reference.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/model/llama.hpp>
#include <ropex/rope/apply.hpp>
#if __has_include(<xtensor/xtensor.hpp>)
#include <ropex/xtensor.hpp>
#endif

#include <cstdint>
#include <span>
#include <vector>

// Every member of Llama<cpu> a program calls (not an explicit instantiation of the class: clang 14
// would also instantiate nll(), whose constraint the CPU backend does not meet).
inline void ropex_check_llama(const ropex::model::Checkpoint& ck, std::span<const std::int32_t> tokens) {
  ropex::model::Llama<> model(ck);
  model.on_layer([](std::int64_t, std::int64_t) {});
  auto cache = model.make_cache(16);
  const auto logits = model.logits(tokens, cache);
  (void)logits;
  ropex::eval::PerplexityOptions opts;
  opts.context = 8;
  (void)ropex::eval::perplexity(model, tokens, opts);
}

// The function templates, called as a program calls them (calls, not explicit instantiations,
// so a parameter added with a default does not break the check).
inline void ropex_check_functions(ropex::attention::HeadsView<const float> q, const ropex::attention::AttentionShape& s,
                                  std::span<const double> inv_freq, std::span<const std::int64_t> pos, float* xf,
                                  double* xd) {
  (void)ropex::attention::attention_reference(q, q, q, s);
  ropex::attention::SoftmaxState<float> a{}, b{};
  (void)ropex::attention::softmax_rescale(a, 1.0f);
  (void)ropex::attention::softmax_weight(a, 1.0f);
  (void)ropex::attention::softmax_merge(a, b);
  (void)ropex::attention::softmax_finalize(a);
  const auto tf = ropex::rope_table<float>(inv_freq, pos);
  const auto td = ropex::rope_table<double>(inv_freq, pos);
  ropex::apply_rope(xf, 1, 1, 8, tf, ropex::RopeLayout::half);
  ropex::apply_rope(xd, 1, 1, 8, td, ropex::RopeLayout::interleaved);
}

#if __has_include(<xtensor/xtensor.hpp>)
inline void ropex_check_xtensor(ropex::backends::eigen_detail::RowMatrix& m, const ropex::RopeTable& t,
                                const ropex::eval::PerplexityResult& r, xt::xtensor<float, 3>& x) {
  auto v = ropex::as_xtensor(m);
  v(0, 0) = ropex::rope_cos(t)(0, 0) + ropex::rope_sin(t)(0, 0) + float(ropex::position_mean_nll(r)(0));
  ropex::apply_rope(x, t, ropex::RopeLayout::half);
  ropex::io::write_npy_f32("x.npy", ropex::io::read_npy_xtensor<2>("x.npy"));
  ropex::io::write_npy_f32("y.npy", ropex::io::read_npy_xarray("x.npy"));
}
#endif
