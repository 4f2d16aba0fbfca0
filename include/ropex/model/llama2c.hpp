// llama2.c checkpoints (.bin): Karpathy's legacy format ("version 0") and the versioned fp32
// format (magic "ak42", version 1), exposed under Hugging Face tensor names.
//
// Legacy (v0), all little-endian:
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len   (28 bytes;
//         vocab_size < 0 means the classifier is stored separately, > 0 shares the embedding)
//   fp32  tok_embeddings (vocab, dim) | attention_norm (L, dim) | wq (L, dim, dim) |
//         wk (L, kv_dim, dim) | wv (L, kv_dim, dim) | wo (L, dim, dim) | ffn_norm (L, dim) |
//         w1 (L, hidden, dim) | w2 (L, dim, hidden) | w3 (L, hidden, dim) | norm (dim) |
//         freq_cis_real, freq_cis_imag (seq_len * head_size/2 each, unused) | [wcls (vocab, dim)]
// Version 1 (llama2.c export.py version1_export):
//   uint32 magic 0x616b3432 | int32 version = 1 | the 7 int32 above (vocab_size > 0) |
//   uint8 shared_classifier | zero padding to 256 bytes
//   fp32  attention_norm (L, dim) | ffn_norm (L, dim) | norm (dim) | tok_embeddings | wq | wk |
//         wv | wo | w1 | w2 | w3 (each (L, ...) as above) | [wcls]   (no freq tables)
// Names map to HF: tok_embeddings -> model.embed_tokens, w1 -> gate_proj, w3 -> up_proj,
// w2 -> down_proj, wcls -> lm_head. The q/k weights keep Meta's interleaved RoPE pairs, so the
// config says rope_layout = interleaved. RoPE base 10000, RMSNorm eps 1e-5, BOS 1 (fixed by llama2.c).
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/model/config.hpp>
#include <ropex/model/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::model {

inline constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42" read as a little-endian uint32

/// The hyper-parameters stored in a llama2.c header.
struct Llama2cHeader {
  int version = 0;  ///< 0 = legacy, 1 = "ak42" fp32
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  uint64_t header_bytes = 0;  ///< where the weights begin
};

/// A parsed llama2.c file: config and HF-named views into `file`.
struct Llama2cModel {
  LlamaConfig config;
  std::vector<TensorView> tensors;
};

/// Parses a llama2.c checkpoint held in `file` (its whole bytes). Validates the header (positive
/// dims, heads divide dim, kv heads divide heads, even head size) and that the file size is
/// exactly what the header implies; errors name `source` and the header field or sizes.
inline Llama2cModel parse_llama2c(std::span<const std::byte> file, std::string_view source) {
  const std::string src(source);
  auto read_i32 = [&](size_t off) {
    int32_t v;
    std::memcpy(&v, file.data() + off, 4);
    return v;
  };
  Llama2cHeader h;
  if (file.size() >= 8 && uint32_t(read_i32(0)) == kLlama2cMagic) {
    h.version = read_i32(4);
    if (h.version != 1)
      throw make_error(src, "header.version",
                       "llama2.c format version " + std::to_string(h.version) +
                           " is not supported (ropex reads the legacy format and fp32 version 1; version 2 is int8)");
    if (file.size() < 256)
      throw make_error(src, "header", "file is " + std::to_string(file.size()) + " bytes, shorter than the 256-byte version-1 header");
    h.header_bytes = 256;
  } else {
    if (file.size() < 28)
      throw make_error(src, "header", "file is " + std::to_string(file.size()) + " bytes, shorter than the 28-byte llama2.c header");
    h.header_bytes = 28;
  }
  const size_t p = h.version == 1 ? 8 : 0;
  h.dim = read_i32(p + 0);
  h.hidden_dim = read_i32(p + 4);
  h.n_layers = read_i32(p + 8);
  h.n_heads = read_i32(p + 12);
  h.n_kv_heads = read_i32(p + 16);
  int64_t vocab = read_i32(p + 20);  // int64: negating INT32_MIN must not overflow
  h.seq_len = read_i32(p + 24);
  if (h.version == 1) {
    uint8_t flag = static_cast<uint8_t>(file[36]);
    if (flag > 1) throw make_error(src, "header.shared_classifier", "must be 0 or 1, got " + std::to_string(flag));
    h.shared_classifier = flag == 1;
    if (vocab <= 0) throw make_error(src, "header.vocab_size", "must be positive, got " + std::to_string(vocab));
  } else {
    h.shared_classifier = vocab > 0;
    if (vocab < 0) vocab = -vocab;
  }

  auto check = [&](const char* field, int64_t v, int64_t hi) {
    if (v < 1 || v > hi)
      throw make_error(src, std::string("header.") + field,
                       "must be in [1, " + std::to_string(hi) + "], got " + std::to_string(v) +
                           " (is this a llama2.c checkpoint?)");
  };
  check("dim", h.dim, 1 << 20);
  check("hidden_dim", h.hidden_dim, 1 << 20);
  check("n_layers", h.n_layers, 4096);
  check("n_heads", h.n_heads, std::min<int64_t>(h.dim, 4096));
  check("n_kv_heads", h.n_kv_heads, h.n_heads);
  check("vocab_size", vocab, INT32_MAX);
  check("seq_len", h.seq_len, 1 << 30);
  h.vocab_size = int32_t(vocab);
  if (h.dim % h.n_heads != 0)
    throw make_error(src, "header.n_heads", std::to_string(h.n_heads) + " does not divide dim " + std::to_string(h.dim));
  if (h.n_heads % h.n_kv_heads != 0)
    throw make_error(src, "header.n_kv_heads",
                     std::to_string(h.n_kv_heads) + " does not divide n_heads " + std::to_string(h.n_heads));
  const int64_t head_size = h.dim / h.n_heads;
  if (head_size % 2 != 0)
    throw make_error(src, "header.n_heads", "head size dim/n_heads = " + std::to_string(head_size) + " must be even for RoPE");

  const uint64_t L = uint64_t(h.n_layers);
  const uint64_t kv_dim = uint64_t(h.n_kv_heads) * uint64_t(head_size);
  // Every count below is < 2^53 given the caps above (2^12 layers * 2^20 * 2^20), so the byte
  // arithmetic cannot overflow uint64.
  struct Block {
    const char* hf;  // HF name, "{}" = layer index
    uint64_t layers;  // 0 = not per-layer
    std::vector<int64_t> shape;  // per layer
  };
  const int64_t d = h.dim, hd = h.hidden_dim, kvd = int64_t(kv_dim), v = vocab;
  const Block emb{"model.embed_tokens.weight", 0, {v, d}};
  const Block att_norm{"model.layers.{}.input_layernorm.weight", L, {d}};
  const Block ffn_norm{"model.layers.{}.post_attention_layernorm.weight", L, {d}};
  const Block wq{"model.layers.{}.self_attn.q_proj.weight", L, {d, d}};
  const Block wk{"model.layers.{}.self_attn.k_proj.weight", L, {kvd, d}};
  const Block wv{"model.layers.{}.self_attn.v_proj.weight", L, {kvd, d}};
  const Block wo{"model.layers.{}.self_attn.o_proj.weight", L, {d, d}};
  const Block w1{"model.layers.{}.mlp.gate_proj.weight", L, {hd, d}};
  const Block w2{"model.layers.{}.mlp.down_proj.weight", L, {d, hd}};
  const Block w3{"model.layers.{}.mlp.up_proj.weight", L, {hd, d}};
  const Block norm{"model.norm.weight", 0, {d}};
  const Block freqs{nullptr, 0, {int64_t(uint64_t(h.seq_len) * uint64_t(head_size) / 2) * 2}};  // cos + sin tables
  const Block wcls{"lm_head.weight", 0, {v, d}};

  std::vector<const Block*> order;
  if (h.version == 0)
    order = {&emb, &att_norm, &wq, &wk, &wv, &wo, &ffn_norm, &w1, &w2, &w3, &norm, &freqs};
  else
    order = {&att_norm, &ffn_norm, &norm, &emb, &wq, &wk, &wv, &wo, &w1, &w2, &w3};
  if (!h.shared_classifier) order.push_back(&wcls);

  auto numel = [](const std::vector<int64_t>& s) {
    uint64_t n = 1;
    for (int64_t x : s) n *= uint64_t(x);
    return n;
  };
  uint64_t expected = h.header_bytes;
  for (const Block* b : order) expected += 4 * numel(b->shape) * (b->layers ? b->layers : 1);
  if (expected != file.size())
    throw make_error(src, "file size",
                     "header (dim " + std::to_string(h.dim) + ", hidden_dim " + std::to_string(h.hidden_dim) +
                         ", n_layers " + std::to_string(h.n_layers) + ", n_heads " + std::to_string(h.n_heads) +
                         ", n_kv_heads " + std::to_string(h.n_kv_heads) + ", vocab_size " + std::to_string(vocab) +
                         (h.shared_classifier ? " shared" : " separate") + " classifier, seq_len " +
                         std::to_string(h.seq_len) + ") implies " + std::to_string(expected) + " bytes, file has " +
                         std::to_string(file.size()) + (expected > file.size() ? " (truncated?)" : ""));

  Llama2cModel m;
  uint64_t off = h.header_bytes;
  for (const Block* b : order) {
    const uint64_t bytes = 4 * numel(b->shape);
    const uint64_t reps = b->layers ? b->layers : 1;
    for (uint64_t l = 0; l < reps; ++l, off += bytes) {
      if (!b->hf) continue;  // legacy RoPE tables: skipped, ropex computes its own
      std::string name = b->hf;
      if (auto pos = name.find("{}"); pos != std::string::npos) name.replace(pos, 2, std::to_string(l));
      m.tensors.push_back(TensorView{std::move(name), DType::f32, b->shape, file.data() + off, size_t(bytes), src});
    }
  }

  nlohmann::json cj = {{"model_type", "llama"},
                       {"vocab_size", vocab},
                       {"hidden_size", h.dim},
                       {"intermediate_size", h.hidden_dim},
                       {"num_hidden_layers", h.n_layers},
                       {"num_attention_heads", h.n_heads},
                       {"num_key_value_heads", h.n_kv_heads},
                       {"max_position_embeddings", h.seq_len},
                       {"rms_norm_eps", 1e-5},
                       {"rope_theta", 10000.0},
                       {"tie_word_embeddings", h.shared_classifier},
                       {"bos_token_id", vocab > 1 ? 1 : 0},
                       {"eos_token_id", vocab > 2 ? 2 : 0}};
  m.config = LlamaConfig::from_json(cj, src);
  m.config.rope_layout = RopeLayout::interleaved;
  return m;
}

/// A llama2.c checkpoint mapped from disk.
struct Llama2cFile {
  io::MappedFile file;
  Llama2cModel model;
};

/// Maps and parses a llama2.c .bin (errors name the path).
inline Llama2cFile load_llama2c(const std::filesystem::path& path) {
  Llama2cFile f;
  f.file = io::MappedFile::open(path);
  f.model = parse_llama2c(f.file.bytes(), path.string());
  return f;
}

}  // namespace ropex::model
