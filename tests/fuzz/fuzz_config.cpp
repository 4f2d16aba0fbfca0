// Fuzz config.json handling: any JSON -> LlamaConfig or ropex::Error. A config that parses must
// give usable RoPE frequencies and a finite list of expected tensors.
#include <ropex/model/checkpoint.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    // As Checkpoint::open reads config.json: strict (depth-limited, no NUL, no duplicate keys).
    const auto j = ropex::parse_json_strict(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    const auto c = ropex::model::LlamaConfig::from_json(j, "config.json");
    if (c.num_hidden_layers * c.num_attention_heads < 4096) (void)ropex::model::expected_tensors(c);
    const int d = c.rotary_dim();
    if (d < 2 || d > c.head_dim || d % 2) std::abort();  // from_json promised this
    const auto inv = c.rope.inv_freq(d, std::min<int64_t>(c.max_position_embeddings, 1 << 20));
    if (inv.size() != size_t(d / 2)) std::abort();
    for (double f : inv)
      if (!std::isfinite(f) || f < 0) std::abort();  // a frequency the model could not use
    if (!std::isfinite(c.rope.attention_factor(c.max_position_embeddings))) std::abort();
  } catch (const ropex::Error&) {
  }
  return 0;
}
