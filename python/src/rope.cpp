// RoPE (include/ropex/rope/{scaling,frequencies,apply}.hpp): RopeScaling from a config, its
// frequencies and attention factor, cos/sin tables, and rotation of a numpy array in place.
#include "common.hpp"

#include <ropex/io/json_file.hpp>
#include <ropex/rope/apply.hpp>
#include <ropex/rope/scaling.hpp>

#include <Eigen/Core>  // Eigen::half, Eigen::bfloat16: the 16-bit element types apply_rope takes
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

namespace ropex_py {
namespace {

using ropex::RopeScaling;

// A dict (serialized by Python's json) or a path to a config.json; errors name the source.
nlohmann::json config_json(nb::handle cfg, const char* what, std::string& source) {
  if (nb::isinstance<nb::dict>(cfg)) {
    const std::string text = nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(cfg));
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw ropex::make_error(source, "", "not representable as JSON (NaN or infinity?)");
    return j;
  }
  if (nb::isinstance<nb::str>(cfg) || nb::hasattr(cfg, "__fspath__")) {
    source = nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(cfg));
    return ropex::read_json_file(source);
  }
  throw ropex::make_error(what, "config", "expected a dict or a path to a config.json, got " +
                                              nb::cast<std::string>(nb::type_name(cfg.type())));
}

ropex::RopeLayout layout_from(const std::string& s) {
  if (s == "half") return ropex::RopeLayout::half;
  if (s == "interleaved") return ropex::RopeLayout::interleaved;
  throw ropex::make_error("apply_rope", "layout", "must be \"half\" or \"interleaved\", got \"" + s + "\"");
}

template <class T>
void apply_typed(T* p, const std::vector<int64_t>& shape, const std::vector<int64_t>& st,
                 const ropex::RopeTable& table, ropex::RopeLayout layout) {
  if (shape.size() == 3) {
    ropex::apply_rope(p, shape[0], shape[1], shape[2], st[0], st[1], table, layout);
    return;
  }
  const int64_t batch = shape[0], n = shape[1];
  if (table.n_tokens == n) {  // positions shared by every sequence of the batch
    for (int64_t b = 0; b < batch; ++b) ropex::apply_rope(p + b * st[0], n, shape[2], shape[3], st[1], st[2], table, layout);
  } else if (table.n_tokens == batch * n) {  // positions [batch, tokens]: rows b*n .. b*n+n-1
    ropex::RopeTable sub;
    sub.n_tokens = n, sub.half = table.half;
    const size_t rows = size_t(n) * size_t(table.half);
    for (int64_t b = 0; b < batch; ++b) {
      sub.cos.assign(table.cos.begin() + b * rows, table.cos.begin() + (b + 1) * rows);
      sub.sin.assign(table.sin.begin() + b * rows, table.sin.begin() + (b + 1) * rows);
      ropex::apply_rope(p + b * st[0], n, shape[2], shape[3], st[1], st[2], sub, layout);
    }
  } else {
    throw ropex::make_error("apply_rope", "positions",
                            "the table has " + std::to_string(table.n_tokens) + " rows for x of shape [batch=" +
                                std::to_string(batch) + ", tokens=" + std::to_string(n) +
                                ", ...]: give positions of shape [tokens] or [batch, tokens]");
  }
}

// x: [tokens, heads, head_dim] or [batch, tokens, heads, head_dim], any strides but a unit stride
// on head_dim; float32, float64, or 16-bit storage (uint16 viewed as float16 / bfloat16 by `elem`).
void apply(nb::ndarray<nb::device::cpu> x, const ropex::RopeTable& table, const std::string& layout_name,
           const std::string& elem) {
  const auto layout = layout_from(layout_name);
  const size_t nd = x.ndim();
  if (nd != 3 && nd != 4)
    throw ropex::make_error("apply_rope", "x", "expected shape [tokens, heads, head_dim] or [batch, tokens, heads, "
                                               "head_dim], got " + std::to_string(nd) + " dimensions");
  std::vector<int64_t> shape(nd), st(nd);
  for (size_t i = 0; i < nd; ++i) shape[i] = int64_t(x.shape(i)), st[i] = x.stride(i);
  if (shape[nd - 1] > 1 && st[nd - 1] != 1)
    throw ropex::make_error("apply_rope", "x", "the head_dim axis must have unit stride (got a stride of " +
                                                   std::to_string(st[nd - 1]) + " elements); pass a copy or use out=");
  const auto dt = x.dtype();
  nb::gil_scoped_release nogil;
  if (dt == nb::dtype<float>() && elem.empty()) return apply_typed(static_cast<float*>(x.data()), shape, st, table, layout);
  if (dt == nb::dtype<double>() && elem.empty()) return apply_typed(static_cast<double*>(x.data()), shape, st, table, layout);
  if (dt == nb::dtype<uint16_t>() && elem == "float16")
    return apply_typed(static_cast<Eigen::half*>(x.data()), shape, st, table, layout);
  if (dt == nb::dtype<uint16_t>() && elem == "bfloat16")
    return apply_typed(static_cast<Eigen::bfloat16*>(x.data()), shape, st, table, layout);
  throw ropex::make_error("apply_rope", "x", "dtype must be float32, float64, float16 or bfloat16");
}

}  // namespace

void bind_rope(nb::module_& m) {
  nb::class_<RopeScaling>(m, "RopeScaling")
      .def_static(
          "from_config",
          [](nb::handle cfg, std::optional<std::string> source) {
            std::string src = source.value_or("config");
            const auto j = config_json(cfg, "RopeScaling.from_config", src);
            return ropex::rope_scaling_from_config(j, source.value_or(src));
          },
          nb::arg("config"), nb::arg("source") = nb::none())
      .def(
          "with_overrides",
          [](const RopeScaling& r, std::optional<double> base, nb::handle rope_scaling) {
            RopeScaling out = r;
            std::optional<nlohmann::json> over;
            std::string src = "rope_scaling";
            if (!rope_scaling.is_none()) over = config_json(rope_scaling, "with_overrides", src);
            ropex::apply_rope_override(out, base, over ? &*over : nullptr, src);
            return out;
          },
          nb::arg("base") = nb::none(), nb::arg("rope_scaling") = nb::none())
      .def_prop_ro("type", [](const RopeScaling& r) { return std::string(ropex::to_string(r.type)); })
      .def_ro("base", &RopeScaling::base)
      .def_ro("factor", &RopeScaling::factor)
      .def_ro("partial_rotary_factor", &RopeScaling::partial_rotary_factor)
      .def_ro("max_position_embeddings", &RopeScaling::max_position_embeddings)
      .def_ro("original_max_position_embeddings", &RopeScaling::original_max_position_embeddings)
      .def_ro("beta_fast", &RopeScaling::beta_fast)
      .def_ro("beta_slow", &RopeScaling::beta_slow)
      .def_ro("mscale", &RopeScaling::mscale)
      .def_ro("mscale_all_dim", &RopeScaling::mscale_all_dim)
      .def_ro("truncate", &RopeScaling::truncate)
      .def_ro("attention_factor_override", &RopeScaling::attention_factor_override)
      .def_ro("low_freq_factor", &RopeScaling::low_freq_factor)
      .def_ro("high_freq_factor", &RopeScaling::high_freq_factor)
      .def_ro("short_factor", &RopeScaling::short_factor)
      .def_ro("long_factor", &RopeScaling::long_factor)
      .def("original_length", &RopeScaling::original_length)
      .def("rotary_dim", &RopeScaling::rotary_dim, nb::arg("head_dim"))
      .def(
          "inv_freq",
          [](const RopeScaling& r, int rotary_dim, int64_t seq_len) { return to_numpy(r.inv_freq(rotary_dim, seq_len)); },
          nb::arg("rotary_dim"), nb::arg("seq_len") = 0)
      .def("attention_factor", &RopeScaling::attention_factor, nb::arg("seq_len") = 0)
      .def("__repr__", [](const RopeScaling& r) {
        return std::string("RopeScaling(type='") + ropex::to_string(r.type) + "', base=" + RopeScaling::fmt(r.base) +
               ", factor=" + RopeScaling::fmt(r.factor) + ")";
      });

  nb::class_<ropex::RopeTable>(m, "RopeTable")
      .def_ro("n_tokens", &ropex::RopeTable::n_tokens)
      .def_ro("half", &ropex::RopeTable::half)
      .def_prop_ro(
          "cos",
          [](const ropex::RopeTable& t) {
            const size_t shape[2] = {size_t(t.n_tokens), size_t(t.half)};
            return nb::ndarray<nb::numpy, const float, nb::ndim<2>>(t.cos.data(), 2, shape, nb::handle());
          },
          nb::rv_policy::reference_internal)
      .def_prop_ro(
          "sin",
          [](const ropex::RopeTable& t) {
            const size_t shape[2] = {size_t(t.n_tokens), size_t(t.half)};
            return nb::ndarray<nb::numpy, const float, nb::ndim<2>>(t.sin.data(), 2, shape, nb::handle());
          },
          nb::rv_policy::reference_internal);

  m.def(
      "rope_table",
      [](nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu> inv_freq,
         nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> positions, double attention_factor) {
        const std::span<const double> f(inv_freq.data(), inv_freq.shape(0));
        const std::span<const int64_t> p(positions.data(), positions.shape(0));
        nb::gil_scoped_release nogil;
        return ropex::rope_table<float>(f, p, attention_factor);
      },
      nb::arg("inv_freq"), nb::arg("positions"), nb::arg("attention_factor") = 1.0);
  m.def("apply_rope", &apply, nb::arg("x").noconvert(), nb::arg("table"), nb::arg("layout") = "half",
        nb::arg("elem") = "");
}

}  // namespace ropex_py
