// Fuzz the tokenizer.json loader and the BPE encoder: the input's first line is text to encode,
// the rest a tokenizer.json. Any bytes -> ids or ropex::Error; every id encode returns must decode.
#include <ropex/tokenizer/bpe.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  if (nl == std::string_view::npos) return 0;
  const std::string_view text = in.substr(0, nl), json = in.substr(nl + 1);
  std::vector<int32_t> ids;
  std::optional<ropex::tokenizer::BpeTokenizer> tok;
  try {
    tok.emplace(ropex::tokenizer::BpeTokenizer::from_json_text(json, "fuzz/tokenizer.json"));
    ids = tok->encode(text, true);
  } catch (const ropex::Error&) {
    return 0;
  }
  try {
    (void)tok->decode(ids);
  } catch (const ropex::Error&) {
    std::abort();  // encode produced an id that decode does not know
  }
  return 0;
}
