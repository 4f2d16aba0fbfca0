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
template std::vector<double> ropex::attention::attention_reference(ropex::attention::HeadsView<const float>,
                                                                   ropex::attention::HeadsView<const float>,
                                                                   ropex::attention::HeadsView<const float>,
                                                                   const ropex::attention::AttentionShape&);
template float ropex::attention::softmax_rescale(ropex::attention::SoftmaxState<float>&, float);
template float ropex::attention::softmax_weight(const ropex::attention::SoftmaxState<float>&, float);
template ropex::attention::SoftmaxMerge<float> ropex::attention::softmax_merge(
    const ropex::attention::SoftmaxState<float>&, const ropex::attention::SoftmaxState<float>&);
template float ropex::attention::softmax_finalize(const ropex::attention::SoftmaxState<float>&);
template ropex::BasicRopeTable<float> ropex::rope_table(std::span<const double>, std::span<const std::int64_t>, double);
template ropex::BasicRopeTable<double> ropex::rope_table(std::span<const double>, std::span<const std::int64_t>, double);
template void ropex::apply_rope(float*, std::int64_t, std::int64_t, std::int64_t, const ropex::BasicRopeTable<float>&,
                                ropex::RopeLayout);
template void ropex::apply_rope(double*, std::int64_t, std::int64_t, std::int64_t,
                                const ropex::BasicRopeTable<double>&, ropex::RopeLayout);

#if __has_include(<xtensor/xtensor.hpp>)
template void ropex::apply_rope(xt::xtensor<float, 3>&, const ropex::BasicRopeTable<float>&, ropex::RopeLayout);
template xt::xtensor<float, 2> ropex::io::read_npy_xtensor<2>(const std::filesystem::path&);
template void ropex::io::write_npy_f32(const std::filesystem::path&, const xt::xexpression<xt::xtensor<float, 2>>&);
inline void ropex_check_xtensor_views(ropex::backends::eigen_detail::RowMatrix& m, const ropex::RopeTable& t) {
  auto v = ropex::as_xtensor(m);
  auto c = ropex::rope_cos(t);
  auto s = ropex::rope_sin(t);
  v(0, 0) = c(0, 0) + s(0, 0);
}
#endif
