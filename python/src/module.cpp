// ropex._core: the C++ library's laws, RoPE and models for Python. The package ropex (python/ropex)
// adds the numpy broadcasting and result types around it; every number comes from here.
#include "common.hpp"

#include <ropex/config.hpp>
#include <ropex/error.hpp>

NB_MODULE(_core, m) {
  m.doc() = "ropex C++ core (nanobind); use the package `ropex`.";
  // ropex::Error -> ropex.Error (a ValueError), what() unchanged: "<source>: <field>: <problem>".
  nb::exception<ropex::Error>(m, "Error", PyExc_ValueError);
#if ROPEX_HAS_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  m.attr("__version__") = ROPEX_VERSION_STRING;
  ropex_py::bind_laws(m);
  ropex_py::bind_rope(m);
  ropex_py::bind_model(m);
  ropex_py::bind_theories(m);
}
