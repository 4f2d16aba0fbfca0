// The README's library example, compiled with the project so it cannot rot.
#include <ropex/ropex.hpp>
#include <cstdio>

int main() {
  // LLaMA-2 7B: d = 128, T_train = 4096. Which base reaches 128K tokens, and what does 1e6 give?
  const int d_extra = ropex::critical_dimension(128, 4096);                     // 92 (eq. 13)
  const auto base = ropex::base_for_context(131072, 128, 4096);                  // exact inverse of 16b
  const auto lim = ropex::extrapolation_limit(128, 4096, 1e6);                   // Theorem 3
  std::printf("d_extra=%d base=%.0f limit=%.0f tokens (%s)\n", d_extra, base.base, lim.limit,
              ropex::regime_name(lim.regime));

  // A checkpoint's RoPE settings, straight from its config.json (either HF format):
  auto cfg = nlohmann::json::parse(R"({"max_position_embeddings": 131072, "rope_theta": 500000,
      "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
                       "high_freq_factor": 4, "original_max_position_embeddings": 8192}})");
  const ropex::RopeScaling rope = ropex::rope_scaling_from_config(cfg);
  const auto inv_freq = rope.inv_freq(128, /*seq_len=*/131072);
  std::vector<float> q(4 * 8 * 128, 1.0f);                                        // [tokens, heads, head_dim]
  const auto table = ropex::rope_table(inv_freq, ropex::iota_positions(4, 100000), rope.attention_factor());
  ropex::apply_rope(q.data(), 4, 8, 128, table, ropex::RopeLayout::half);        // HF / NeoX pairing
  std::printf("q[0] after rotation at position 100000: %.6f\n", q[0]);
}
