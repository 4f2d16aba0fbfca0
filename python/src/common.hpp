// Shared pieces of the nanobind module ropex._core: numpy arrays that own a C++ buffer, and the
// per-file binders module.cpp calls.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ropex/error.hpp>

namespace nb = nanobind;

namespace ropex_py {

void bind_laws(nb::module_& m);
void bind_rope(nb::module_& m);
void bind_model(nb::module_& m);
void bind_theories(nb::module_& m);

template <class T>
using NumpyArray = nb::ndarray<nb::numpy, T>;

/// A numpy array of `shape` that owns a fresh C++ buffer (freed with the array).
template <class T>
struct OwnedArray {
  T* data = nullptr;
  NumpyArray<T> array;
  explicit OwnedArray(std::initializer_list<size_t> shape) : OwnedArray(std::vector<size_t>(shape)) {}
  explicit OwnedArray(const std::vector<size_t>& shape) {
    size_t n = 1;
    for (size_t s : shape) n *= s;
    data = new T[n > 0 ? n : 1];  // every element is written by the caller
    nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
    array = NumpyArray<T>(data, shape.size(), shape.data(), owner);
  }
};

/// A numpy array that takes over a std::vector (no copy of its elements).
template <class T>
NumpyArray<T> to_numpy(std::vector<T>&& v, std::vector<size_t> shape = {}) {
  auto* owned = new std::vector<T>(std::move(v));
  if (shape.empty()) shape = {owned->size()};
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return NumpyArray<T>(owned->data(), shape.size(), shape.data(), owner);
}

/// A strided 1-D read-only view (broadcast inputs have stride 0).
template <class T>
struct Column {
  const T* p;
  int64_t stride;
  T operator[](size_t i) const { return p[int64_t(i) * stride]; }
};
template <class T>
Column<T> column(const nb::ndarray<const T, nb::ndim<1>, nb::device::cpu>& a) {
  return {a.data(), a.stride(0)};
}

using F64 = nb::ndarray<const double, nb::ndim<1>, nb::device::cpu>;
using I64 = nb::ndarray<const int64_t, nb::ndim<1>, nb::device::cpu>;

/// The length all columns share (the package broadcasts them before the call).
inline size_t common_length(std::initializer_list<size_t> sizes) {
  const size_t n = *sizes.begin();
  for (size_t s : sizes)
    if (s != n) throw ropex::make_error("", "arguments", "columns of different lengths (broadcast them first)");
  return n;
}

/// An int argument that arrived as int64: out-of-range values are refused naming the field.
inline int int_arg(int64_t v, const char* field) {
  if (v < -2147483648LL || v > 2147483647LL)
    throw ropex::make_error("", field, "must fit in a 32-bit int, got " + std::to_string(v));
  return int(v);
}

/// Called with the GIL released between expensive elements: Ctrl-C raises KeyboardInterrupt.
inline void check_signals() {
  nb::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw nb::python_error();
}

/// Runs row(i) -> S for i < n with the GIL released and returns one numpy array per listed field
/// of S (struct of arrays, each written once). Field types: numeric or bool.
template <class S, class F, class... M>
nb::tuple struct_columns(size_t n, F&& row, M S::*... fields) {
  std::tuple<OwnedArray<M>...> out{OwnedArray<M>({n})...};
  [&]<size_t... I>(std::index_sequence<I...>) {
    nb::gil_scoped_release nogil;
    for (size_t i = 0; i < n; ++i) {
      const S s = row(i);
      ((std::get<I>(out).data[i] = s.*fields), ...);
    }
  }(std::index_sequence_for<M...>{});
  return std::apply([](auto&... a) { return nb::make_tuple(a.array...); }, out);
}

}  // namespace ropex_py
