// Numbers on ropex's command line are decimal. CLI11 reads integers with strtoll(..., base 0), so
// "0x10" is 16 and "010" is 8, clamps out-of-range values to the type's limit, and wraps "-1" in
// an unsigned option to 2^64-1; doubles go through strtod, which takes hex floats ("0x1p4").
// restrict_to_decimal() puts a transform on every numeric option of an app that refuses all of
// these with an error naming the flag, and strips leading zeros so "010" means ten.
#pragma once
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace ropex::cli {

namespace detail {

// "" when `s` is a decimal integer that fits (int64, or uint64 when is_unsigned), else why not.
// Leading zeros are removed from `s` so CLI11's base-0 parse reads it as decimal.
inline std::string decimal_integer(std::string& s, bool is_unsigned) {
  std::string_view v = s;
  const bool neg = !v.empty() && v[0] == '-';
  if (!v.empty() && (v[0] == '-' || v[0] == '+')) v.remove_prefix(1);
  if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos)
    return "expected a decimal integer, got '" + s + "'";
  if (neg && is_unsigned) return "must be >= 0, got '" + s + "'";
  const size_t nz = v.find_first_not_of('0');
  const std::string digits(nz == std::string_view::npos ? std::string_view("0") : v.substr(nz));
  const std::string canonical = (neg ? "-" : "") + digits;
  std::from_chars_result r{};
  if (is_unsigned) {
    std::uint64_t x = 0;
    r = std::from_chars(digits.data(), digits.data() + digits.size(), x);
  } else {
    std::int64_t x = 0;
    r = std::from_chars(canonical.data(), canonical.data() + canonical.size(), x);
  }
  if (r.ec == std::errc::result_out_of_range) return "'" + s + "' is out of range";
  s = canonical;
  return "";
}

// "" when `s` is a decimal floating-point number (or nan / inf, which the commands refuse by
// field), else why not.
inline std::string decimal_real(const std::string& s) {
  std::string_view v = s;
  if (!v.empty() && (v[0] == '-' || v[0] == '+')) v.remove_prefix(1);
  double x = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), x, std::chars_format::general);
  if (v.empty() || r.ptr != v.data() + v.size() || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    return "expected a decimal number, got '" + s + "'";
  return "";
}

}  // namespace detail

/// Adds the decimal-only transform to every INT, UINT and FLOAT option of `app` and its subcommands.
inline void restrict_to_decimal(CLI::App& app) {
  for (CLI::Option* opt : app.get_options({})) {
    const std::string type = opt->get_type_name();
    const bool is_uint = type.rfind("UINT", 0) == 0, is_int = type.rfind("INT", 0) == 0,
               is_real = type.rfind("FLOAT", 0) == 0;
    if (!is_uint && !is_int && !is_real) continue;
    opt->transform(CLI::Validator(
        [is_uint, is_real](std::string& s) {
          return is_real ? detail::decimal_real(s) : detail::decimal_integer(s, is_uint);
        },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands({})) restrict_to_decimal(*sub);
}

}  // namespace ropex::cli
