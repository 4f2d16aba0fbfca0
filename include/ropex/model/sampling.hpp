// Choosing the next token from a row of logits: greedy, or a draw from softmax(logits / T).
// One definition shared by the CLI's `generate` and the Python module, so a seed gives the same
// tokens in both.
#pragma once
#include <ropex/error.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ropex::model {

/// Greedy (argmax, the first of ties) when temperature <= 0, else a draw from softmax(logits / T)
/// computed in double. Throws for a temperature that is NaN or infinite.
inline int32_t pick_token(const float* logits, int64_t vocab, double temperature, std::mt19937_64& rng) {
  if (!std::isfinite(temperature)) throw make_error("temperature", "", "must be a finite number, got " + std::to_string(temperature));
  int64_t best = 0;
  for (int64_t v = 1; v < vocab; ++v)
    if (logits[v] > logits[best]) best = v;
  if (temperature <= 0) return int32_t(best);
  std::vector<double> p(static_cast<size_t>(vocab));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += (p[size_t(v)] = std::exp((double(logits[v]) - logits[best]) / temperature));
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (int64_t v = 0; v < vocab; ++v)
    if ((u -= p[size_t(v)]) <= 0) return int32_t(v);
  return int32_t(vocab - 1);
}

}  // namespace ropex::model
