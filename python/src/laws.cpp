// The scaling laws (include/ropex/scaling_law.hpp), one element or a numpy column at a time.
// Vectorized forms take 1-D float64/int64 columns of one length (stride 0 for a broadcast scalar)
// and return one array per result field; the loop calls the same checked ropex:: function as a
// scalar call, so an invalid element raises ropex.Error with the C++ message.
#include "common.hpp"

#include <ropex/scaling_law.hpp>

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <climits>
#include <string>

namespace ropex_py {
namespace {

// head_dim comes from an int64 array: out-of-range values get the C++ check's message.
int head_dim_of(int64_t d) {
  if (d < INT_MIN || d > INT_MAX)
    throw ropex::make_error("", "head_dim", "must be a positive even number, got " + std::to_string(d));
  return int(d);
}

nb::tuple limit_tuple(const ropex::ExtrapolationLimit& r) {
  return nb::make_tuple(int(r.regime), r.limit, r.hard_bound, r.critical_dimension, r.updated_applies,
                        r.updated_critical_dimension, r.critical_base, r.larger_base_limit, r.thresholds.beta_1,
                        r.thresholds.beta_2, r.thresholds.beta_3);
}

// One model over many bases (every column but the base broadcast, stride 0): the model's terms
// (critical dimension, critical base, thresholds) are one value each, returned as 1-element arrays
// the package broadcasts (read-only views) instead of a million copies.
nb::tuple limit_columns(const I64& d, const F64& T, const F64& b, const F64& tt, const F64& pb) {
  const size_t n = common_length({d.shape(0), T.shape(0), b.shape(0), tt.shape(0), pb.shape(0)});
  const bool one_model = d.stride(0) == 0 && T.stride(0) == 0 && tt.stride(0) == 0 && pb.stride(0) == 0;
  const size_t nm = one_model ? std::min<size_t>(n, 1) : n;  // length of the model-term columns
  OwnedArray<int8_t> regime({n});
  OwnedArray<double> limit({n}), lbl({n}), cb({nm}), b1({nm}), b2({nm}), b3({nm});
  OwnedArray<bool> hard({n}), upd({n});
  OwnedArray<int32_t> cd({nm}), ucd({n});
  const auto d_in = column(d);
  const auto T_in = column(T), b_in = column(b), tt_in = column(tt), pb_in = column(pb);
  {
    nb::gil_scoped_release nogil;
    // The base-independent terms are computed again only where (d, T_train, T_tune, beta_pt)
    // change: once for a sweep over bases, as a C++ caller would hoist them.
    int64_t last_d = 0;
    double last_T = 0, last_tt = 0, last_pb = 0;
    ropex::law::ModelTerms terms{};
    for (size_t i = 0; i < n; ++i) {
      if (i == 0 || d_in[i] != last_d || T_in[i] != last_T || tt_in[i] != last_tt || pb_in[i] != last_pb) {
        last_d = d_in[i], last_T = T_in[i], last_tt = tt_in[i], last_pb = pb_in[i];
        terms = ropex::model_terms(head_dim_of(last_d), last_T, last_tt, last_pb);
      }
      const ropex::ExtrapolationLimit r = ropex::extrapolation_limit(terms, b_in[i]);
      regime.data[i] = int8_t(r.regime);
      limit.data[i] = r.limit;
      hard.data[i] = r.hard_bound;
      upd.data[i] = r.updated_applies;
      ucd.data[i] = r.updated_critical_dimension;
      lbl.data[i] = r.larger_base_limit;
      if (i < nm) {
        cd.data[i] = r.critical_dimension;
        cb.data[i] = r.critical_base;
        b1.data[i] = r.thresholds.beta_1;
        b2.data[i] = r.thresholds.beta_2;
        b3.data[i] = r.thresholds.beta_3;
      }
    }
  }
  return nb::make_tuple(regime.array, limit.array, hard.array, cd.array, upd.array, ucd.array, cb.array,
                        lbl.array, b1.array, b2.array, b3.array);
}

}  // namespace

void bind_laws(nb::module_& m) {
  std::vector<std::string> names, equations;
  for (auto r : {ropex::Regime::larger_base, ropex::Regime::tune_length, ropex::Regime::small_base_quarter,
                 ropex::Regime::small_base_half, ropex::Regime::small_base_full}) {
    names.push_back(ropex::regime_name(r));
    equations.push_back(ropex::regime_equation(r));
  }
  m.attr("regime_names") = nb::cast(names);
  m.attr("regime_equations") = nb::cast(equations);

  m.def("critical_dimension", &ropex::critical_dimension, nb::arg("head_dim"), nb::arg("train_len"),
        nb::arg("pretrain_base") = 10000.0);
  m.def("critical_base", &ropex::critical_base, nb::arg("train_len"), nb::arg("tune_len") = 0.0,
        nb::arg("pretrain_base") = 10000.0);
  m.def(
      "extrapolation_limit",
      [](int d, double T, double b, double tt, double pb) { return limit_tuple(ropex::extrapolation_limit(d, T, b, tt, pb)); },
      nb::arg("head_dim"), nb::arg("train_len"), nb::arg("base"), nb::arg("tune_len") = 0.0,
      nb::arg("pretrain_base") = 10000.0);
  m.def(
      "base_for_context",
      [](double target, int d, double T, double pb) {
        const auto r = ropex::base_for_context(target, d, T, pb);
        return nb::make_tuple(r.target, r.critical_dimension, r.base, r.base_ceiling_free);
      },
      nb::arg("target"), nb::arg("head_dim"), nb::arg("train_len"), nb::arg("pretrain_base") = 10000.0);

  m.def(
      "critical_dimension_v",
      [](const I64& d, const F64& T, const F64& pb) {
        const size_t n = common_length({d.shape(0), T.shape(0), pb.shape(0)});
        OwnedArray<int32_t> out({n});
        const auto d_in = column(d);
        const auto T_in = column(T), pb_in = column(pb);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i) out.data[i] = ropex::critical_dimension(head_dim_of(d_in[i]), T_in[i], pb_in[i]);
        }
        return out.array;
      },
      nb::arg("head_dim"), nb::arg("train_len"), nb::arg("pretrain_base"));
  m.def(
      "critical_base_v",
      [](const F64& T, const F64& tt, const F64& pb) {
        const size_t n = common_length({T.shape(0), tt.shape(0), pb.shape(0)});
        OwnedArray<double> out({n});
        const auto T_in = column(T), tt_in = column(tt), pb_in = column(pb);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i) out.data[i] = ropex::critical_base(T_in[i], tt_in[i], pb_in[i]);
        }
        return out.array;
      },
      nb::arg("train_len"), nb::arg("tune_len"), nb::arg("pretrain_base"));
  m.def("extrapolation_limit_v", &limit_columns, nb::arg("head_dim"), nb::arg("train_len"), nb::arg("base"),
        nb::arg("tune_len"), nb::arg("pretrain_base"));
  m.def(
      "base_for_context_v",
      [](const F64& target, const I64& d, const F64& T, const F64& pb) {
        const size_t n = common_length({target.shape(0), d.shape(0), T.shape(0), pb.shape(0)});
        OwnedArray<double> tg({n}), base({n}), free({n});
        OwnedArray<int32_t> cd({n});
        const auto tg_in = column(target), T_in = column(T), pb_in = column(pb);
        const auto d_in = column(d);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i) {
            const auto r = ropex::base_for_context(tg_in[i], head_dim_of(d_in[i]), T_in[i], pb_in[i]);
            tg.data[i] = r.target, cd.data[i] = r.critical_dimension, base.data[i] = r.base;
            free.data[i] = r.base_ceiling_free;
          }
        }
        return nb::make_tuple(tg.array, cd.array, base.array, free.array);
      },
      nb::arg("target"), nb::arg("head_dim"), nb::arg("train_len"), nb::arg("pretrain_base"));
  // Rows [n, head_dim/2] of the per-pair table for each (base, train_len, tune_len).
  m.def(
      "period_table_v",
      [](int d, const F64& b, const F64& T, const F64& tt) {
        const size_t n = common_length({b.shape(0), T.shape(0), tt.shape(0)});
        ropex::detail::check_head_dim(d);
        const size_t h = size_t(d / 2);
        OwnedArray<int32_t> pair({n, h});
        OwnedArray<double> theta({n, h}), period({n, h});
        OwnedArray<bool> in_train({n, h}), in_tune({n, h});
        const auto b_in = column(b), T_in = column(T), tt_in = column(tt);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i) {
            const auto rows = ropex::period_table(d, b_in[i], T_in[i], tt_in[i]);
            for (size_t k = 0; k < h; ++k) {
              const auto& r = rows[k];
              pair.data[i * h + k] = r.pair, theta.data[i * h + k] = r.theta, period.data[i * h + k] = r.period;
              in_train.data[i * h + k] = r.full_period_in_train, in_tune.data[i * h + k] = r.full_period_in_tune;
            }
          }
        }
        return nb::make_tuple(pair.array, theta.array, period.array, in_train.array, in_tune.array);
      },
      nb::arg("head_dim"), nb::arg("base"), nb::arg("train_len"), nb::arg("tune_len"));
}

}  // namespace ropex_py
