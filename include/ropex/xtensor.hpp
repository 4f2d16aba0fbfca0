// ropex's arrays as xtensor expressions, and .npy files into and out of xt containers (CMake
// target ropex::xtensor; needs xtensor, which nothing else in ropex does).
//
// Views share memory with the ropex object they look at (no copy): keep it alive while the view
// is in use. .npy files go through ropex's reader (io/npy.hpp: header syntax, dtype, and the data
// size against the shape are checked, and errors name the file and field), not xtensor's
// xt::load_npy, which allocates whatever the header's shape asks and does not check that the
// data was all there (a truncated file gives uninitialised elements, silently).
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/npy.hpp>
#include <ropex/rope/apply.hpp>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

namespace ropex {

/// A dense matrix with data(), rows(), cols() and IsRowMajor: an Eigen matrix, such as the
/// [n, vocab] logits of model::Llama::logits.
template <class M>
concept DenseMatrix = requires(M& m) {
  { m.data() } -> std::convertible_to<const void*>;
  { m.rows() } -> std::convertible_to<std::int64_t>;
  { m.cols() } -> std::convertible_to<std::int64_t>;
  { M::IsRowMajor } -> std::convertible_to<bool>;
};

/// The matrix as an xtensor view of shape [rows, cols] in its own storage order (row- or
/// column-major); writable when the matrix is.
template <DenseMatrix M>
auto as_xtensor(M& m) {
  const std::array<std::size_t, 2> shape{static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols())};
  constexpr auto layout = M::IsRowMajor ? xt::layout_type::row_major : xt::layout_type::column_major;
  return xt::adapt<layout>(m.data(), shape);
}

/// cos of a RoPE table as an xtensor view [n_tokens, rotary_dim/2]: element (t, i) is
/// attention_factor * cos(positions[t] * inv_freq[i]).
template <class Real>
auto rope_cos(const BasicRopeTable<Real>& table) {
  return xt::adapt(table.cos.data(), std::array<std::size_t, 2>{static_cast<std::size_t>(table.n_tokens),
                                                                static_cast<std::size_t>(table.half)});
}

/// sin of a RoPE table as an xtensor view [n_tokens, rotary_dim/2] (see rope_cos).
template <class Real>
auto rope_sin(const BasicRopeTable<Real>& table) {
  return xt::adapt(table.sin.data(), std::array<std::size_t, 2>{static_cast<std::size_t>(table.n_tokens),
                                                                static_cast<std::size_t>(table.half)});
}

/// Rotates q or k held as an xtensor [n_tokens, n_heads, head_dim] in place (apply_rope on its
/// row-major storage).
template <class T, class Real>
void apply_rope(xt::xtensor<T, 3, xt::layout_type::row_major>& x, const BasicRopeTable<Real>& table,
                RopeLayout layout) {
  const auto& s = x.shape();
  apply_rope(x.data(), std::int64_t(s[0]), std::int64_t(s[1]), std::int64_t(s[2]), table, layout);
}

/// The loss curve of a perplexity run: mean NLL of the targets at each position inside the
/// window, for positions 0 .. P-1, the positions that scored any target (the last position of a
/// window predicts nothing, and a text shorter than the context leaves its tail unscored).
/// Refuses a result whose scored positions are not such a prefix (a hand-made or corrupted one).
inline xt::xtensor<double, 1> position_mean_nll(const eval::PerplexityResult& r) {
  const std::size_t n = r.position_nll_sum.size();
  if (r.position_count.size() != n)
    throw make_error("PerplexityResult", "position_count",
                     std::to_string(r.position_count.size()) + " counts for " + std::to_string(n) + " positions");
  std::size_t scored = 0;
  while (scored < n && r.position_count[scored] > 0) ++scored;
  for (std::size_t p = scored; p < n; ++p)
    if (r.position_count[p] != 0)
      throw make_error("PerplexityResult", "position_count",
                       "position " + std::to_string(p) + " has targets after unscored position " + std::to_string(scored));
  xt::xtensor<double, 1> mean = xt::empty<double>(std::array<std::size_t, 1>{scored});
  for (std::size_t p = 0; p < scored; ++p) mean(p) = r.position_nll_sum[p] / double(r.position_count[p]);
  return mean;
}

}  // namespace ropex

namespace ropex::io {

/// Reads a float32 or float64 (rounded to float) C-order .npy into an xarray of its shape.
inline xt::xarray<float> read_npy_xarray(const std::filesystem::path& path) {
  NpyF32 a = read_npy_f32(path);
  return xt::adapt(a.data, a.shape);
}

/// As read_npy_xarray, for an array of known rank: a file of another rank is refused naming its shape.
template <std::size_t Rank>
xt::xtensor<float, Rank> read_npy_xtensor(const std::filesystem::path& path) {
  NpyF32 a = read_npy_f32(path);
  if (a.shape.size() != Rank) {
    std::string dims;
    for (std::size_t d : a.shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    throw make_error(path.string(), "shape",
                     "(" + dims + ") has rank " + std::to_string(a.shape.size()) + ", expected rank " + std::to_string(Rank));
  }
  std::array<std::size_t, Rank> shape{};
  for (std::size_t k = 0; k < Rank; ++k) shape[k] = a.shape[k];
  return xt::adapt(a.data, shape);
}

/// Writes a float expression (any layout or view; evaluated in C order) as a float32 .npy.
/// Only float: a double array is cast by the caller (xt::cast<float>), never narrowed here.
template <class E>
  requires std::same_as<typename E::value_type, float>
void write_npy_f32(const std::filesystem::path& path, const xt::xexpression<E>& e) {
  const xt::xarray<float, xt::layout_type::row_major> a = e.derived_cast();
  const std::vector<std::size_t> shape(a.shape().begin(), a.shape().end());
  write_npy_f32(path, a.data(), shape);
}

}  // namespace ropex::io
