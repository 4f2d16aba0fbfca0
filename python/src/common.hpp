// Shared pieces of the nanobind module ropex._core: numpy arrays that own a C++ buffer, and the
// per-file binders module.cpp calls.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace nb = nanobind;

namespace ropex_py {

void bind_laws(nb::module_& m);
void bind_rope(nb::module_& m);
void bind_model(nb::module_& m);

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

}  // namespace ropex_py
