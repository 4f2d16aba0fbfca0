// The published theories of RoPE context (include/ropex/theories.hpp) over numpy columns: Men et
// al.'s discrimination sum, the context a base supports and the base a target needs, the cut-points
// of YaRN / Llama 3 / HoPE / p-RoPE / Liu, numeric bounds of bf16 / fp16 / fp32, and the slowest
// pair's period. Each binding takes 1-D columns of one length (stride 0 for a broadcast scalar),
// calls the checked ropex:: function once per element and returns one array per result field.
// The Men scans take up to seconds an element: between elements they check for Ctrl-C.
#include "common.hpp"

#include <ropex/theories.hpp>

#include <nanobind/stl/string.h>

#include <string>

namespace ropex_py {
namespace {

ropex::Dtype dtype_of(const std::string& name) {
  for (auto t : {ropex::Dtype::bf16, ropex::Dtype::fp16, ropex::Dtype::fp32})
    if (name == ropex::dtype_name(t)) return t;
  throw ropex::make_error("", "dtype", "must be bf16, fp16 or fp32, got \"" + name + "\"");
}

// out[i] = f(head_dim[i], x[i]) for a checked (int, double) -> double function.
NumpyArray<double> per_head_dim(const I64& d, const F64& x, double (*f)(int, double)) {
  const size_t n = common_length({d.shape(0), x.shape(0)});
  OwnedArray<double> out({n});
  const auto d_in = column(d);
  const auto x_in = column(x);
  {
    nb::gil_scoped_release nogil;
    for (size_t i = 0; i < n; ++i) out.data[i] = f(int_arg(d_in[i], "head_dim"), x_in[i]);
  }
  return out.array;
}

}  // namespace

void bind_theories(nb::module_& m) {
  m.def(
      "men_sum_v",
      [](const I64& d, const F64& b, const I64& dist, const I64& sp) {
        const size_t n = common_length({d.shape(0), b.shape(0), dist.shape(0), sp.shape(0)});
        OwnedArray<double> out({n});
        const auto d_in = column(d), m_in = column(dist), sp_in = column(sp);
        const auto b_in = column(b);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i)
            out.data[i] = ropex::men_sum(int_arg(d_in[i], "head_dim"), b_in[i], m_in[i], int_arg(sp_in[i], "static_pairs"));
        }
        return out.array;
      },
      nb::arg("head_dim"), nb::arg("base"), nb::arg("m"), nb::arg("static_pairs"));

  using L = ropex::MenLength;
  m.def(
      "men_context_length_v",
      [](const I64& d, const F64& b, const I64& cap, const I64& sp) {
        const size_t n = common_length({d.shape(0), b.shape(0), cap.shape(0), sp.shape(0)});
        const auto d_in = column(d), cap_in = column(cap), sp_in = column(sp);
        const auto b_in = column(b);
        return struct_columns<L>(
            n,
            [&](size_t i) {
              if (i > 0) check_signals();
              return ropex::men_context_length(int_arg(d_in[i], "head_dim"), b_in[i], cap_in[i],
                                                int_arg(sp_in[i], "static_pairs"));
            },
            &L::bounded, &L::length, &L::cap, &L::value_at_length);
      },
      nb::arg("head_dim"), nb::arg("base"), nb::arg("cap"), nb::arg("static_pairs"));

  using B = ropex::MenBase;
  m.def(
      "men_base_for_context_v",
      [](const I64& d, const I64& target, const I64& sp, double grid_step, double fine_step, double base_min,
         double base_max, double fine_span, double rel_tol, int refine_points) {
        const size_t n = common_length({d.shape(0), target.shape(0), sp.shape(0)});
        ropex::MenSolverOptions o;
        o.grid_step = grid_step, o.fine_step = fine_step, o.base_min = base_min, o.base_max = base_max;
        o.fine_span = fine_span, o.rel_tol = rel_tol, o.refine_points = refine_points;
        const auto d_in = column(d), t_in = column(target), sp_in = column(sp);
        return struct_columns<B>(
            n,
            [&](size_t i) {
              if (i > 0) check_signals();
              return ropex::men_base_for_context(int_arg(d_in[i], "head_dim"), t_in[i], int_arg(sp_in[i], "static_pairs"), o);
            },
            &B::target, &B::base, &B::infeasible_below, &B::witness, &B::grid_step, &B::bases_tried, &B::full_scans);
      },
      nb::arg("head_dim"), nb::arg("target"), nb::arg("static_pairs"), nb::arg("grid_step"), nb::arg("fine_step"),
      nb::arg("base_min"), nb::arg("base_max"), nb::arg("fine_span"), nb::arg("rel_tol"), nb::arg("refine_points"));

  using C = ropex::CutPoints;
  m.def(
      "cut_points_v",
      [](const I64& d, const F64& base, const F64& l0, const F64& T, const F64& pb, const F64& bf, const F64& bs,
         const F64& lf, const F64& hf, const F64& p) {
        const size_t n = common_length({d.shape(0), base.shape(0), l0.shape(0), T.shape(0), pb.shape(0), bf.shape(0),
                                        bs.shape(0), lf.shape(0), hf.shape(0), p.shape(0)});
        const auto d_in = column(d);
        const auto base_in = column(base), l0_in = column(l0), T_in = column(T), pb_in = column(pb),
                   bf_in = column(bf), bs_in = column(bs), lf_in = column(lf), hf_in = column(hf), p_in = column(p);
        return struct_columns<C>(
            n,
            [&](size_t i) {
              ropex::CutPointInputs in;
              in.head_dim = int_arg(d_in[i], "head_dim");
              in.base = base_in[i], in.original_context = l0_in[i], in.train_len = T_in[i];
              in.pretrain_base = pb_in[i], in.beta_fast = bf_in[i], in.beta_slow = bs_in[i];
              in.low_freq_factor = lf_in[i], in.high_freq_factor = hf_in[i], in.p = p_in[i];
              return ropex::cut_points(in);
            },
            &C::yarn_low_fractional, &C::yarn_high_fractional, &C::yarn_low, &C::yarn_high, &C::yarn_fast_period,
            &C::yarn_slow_period, &C::llama3_high_freq_wavelen, &C::llama3_low_freq_wavelen, &C::llama3_pairs_kept,
            &C::llama3_pairs_scaled, &C::hope_pairs_kept, &C::p_rope_p, &C::p_rope_pairs_kept, &C::liu_critical_pairs);
      },
      nb::arg("head_dim"), nb::arg("base"), nb::arg("original_context"), nb::arg("train_len"), nb::arg("pretrain_base"),
      nb::arg("beta_fast"), nb::arg("beta_slow"), nb::arg("low_freq_factor"), nb::arg("high_freq_factor"), nb::arg("p"));

  using N = ropex::NumericBounds;
  m.def(
      "numeric_bounds_v",
      [](const std::string& dtype, const F64& tol) {
        const ropex::Dtype t = dtype_of(dtype);
        const auto tol_in = column(tol);
        return struct_columns<N>(
            tol.shape(0), [&](size_t i) { return ropex::numeric_bounds(t, tol_in[i]); }, &N::precision,
            &N::exact_positions, &N::angle_error_position, &N::tolerance);
      },
      nb::arg("dtype"), nb::arg("tolerance"));

  m.def(
      "slowest_period_v",
      [](const I64& d, const F64& b) { return per_head_dim(d, b, &ropex::slowest_period); },
      nb::arg("head_dim"), nb::arg("base"));
  m.def(
      "base_for_slowest_period_v",
      [](const I64& d, const F64& t) { return per_head_dim(d, t, &ropex::base_for_slowest_period); },
      nb::arg("head_dim"), nb::arg("target"));
}

}  // namespace ropex_py
