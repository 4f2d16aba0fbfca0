// Context parallelism: how a window of T tokens is split over N ranks and which attention blocks a
// ring of K/V passes computes. Host-only, no CUDA: the CPU reference and the CUDA ring share it.
//
// Zigzag split (ring-flash-attention; Meta's context-parallel Llama 3 training): the window is cut
// into 2N chunks and rank r holds chunks r and 2N-1-r, so under a causal mask every rank gets the
// same number of (query, key) pairs. The K/V chunks then travel around the ring: at step s rank r
// holds the K/V of rank (r - s) mod N and attends its two query chunks to those two key chunks.
// Each (query chunk, key chunk) block is skipped, attended in full, or attended with the causal
// (and sliding-window) mask at a query offset — decided by positions alone.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/error.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ropex::parallel {

/// Token range [begin, end) of the window.
struct Span {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

/// The window's 2N chunks: chunk c = [c*T/(2N), (c+1)*T/(2N)), sizes differing by at most one.
struct Zigzag {
  int64_t tokens = 0;
  int ranks = 0;

  Zigzag(int64_t tokens_, int ranks_) : tokens(tokens_), ranks(ranks_) {
    if (ranks < 1) throw make_error("context parallel", "ranks", "must be >= 1, got " + std::to_string(ranks));
    if (tokens < 2 * static_cast<int64_t>(ranks))
      throw make_error("context parallel", "tokens",
                       "a window of " + std::to_string(tokens) + " tokens cannot be split into " +
                           std::to_string(2 * ranks) + " chunks (2 per rank)");
  }
  int chunks() const { return 2 * ranks; }
  Span chunk(int c) const { return {c * tokens / chunks(), (c + 1) * tokens / chunks()}; }
  /// The two chunks rank r holds, in the order they sit in its local buffers.
  std::array<int, 2> chunks_of(int r) const { return {r, chunks() - 1 - r}; }
  /// Tokens rank r holds (its local buffers' rows).
  int64_t local_tokens(int r) const { return chunk(r).size() + chunk(chunks() - 1 - r).size(); }
  /// Row of chunk `which` (0 or 1) of rank r inside r's local buffers.
  int64_t local_row(int r, int which) const { return which == 0 ? 0 : chunk(r).size(); }
  /// Whose K/V rank r holds at ring step s.
  int kv_source(int r, int step) const { return ((r - step) % ranks + ranks) % ranks; }
  /// The window position of every local row of rank r (for RoPE and the loss).
  std::vector<int64_t> positions_of(int r) const {
    std::vector<int64_t> p;
    p.reserve(static_cast<size_t>(local_tokens(r)));
    for (int c : chunks_of(r))
      for (int64_t t = chunk(c).begin; t < chunk(c).end; ++t) p.push_back(t);
    return p;
  }
};

/// What one (query chunk, key chunk) block needs.
enum class BlockKind { skip, full, masked };

struct Block {
  BlockKind kind = BlockKind::skip;
  /// For `masked`: the shape's query_offset, i.e. query row i sits at key index query_offset + i of
  /// the key chunk (q.begin - k.begin; never negative for a block that is not skipped).
  int64_t query_offset = 0;
};

/// Classifies the block of queries at positions q against keys at positions k, for causal
/// attention with an optional sliding window (query p sees keys (p - window, p]; 0 = none).
inline Block classify(Span q, Span k, bool causal, int64_t window) {
  if (q.size() == 0 || k.size() == 0) return {};
  if (!causal) return {BlockKind::full, 0};
  if (k.begin > q.end - 1) return {};                              // every key after every query
  if (window > 0 && k.end - 1 < q.begin - window + 1) return {};   // every key left every window
  const bool all_before = k.end - 1 <= q.begin;                    // causal mask is all-true
  const bool all_inside = window == 0 || k.begin >= q.end - window; // window mask is all-true
  if (all_before && all_inside) return {BlockKind::full, 0};
  if (q.begin < k.begin)  // a key chunk starting inside the query chunk: not a zigzag block
    throw make_error("context parallel", "block", "key chunk starts after the query chunk's first position");
  return {BlockKind::masked, q.begin - k.begin};
}

/// One block a rank computes at one ring step: its query chunk (0 or 1 of chunks_of(rank)), the
/// held key chunk (0 or 1 of chunks_of(kv_source)), their window positions and what the block needs.
struct RingBlock {
  int q_which = 0, k_which = 0;
  Span q, k;
  Block block;
};

/// The non-skipped blocks rank r computes at ring step s (at most 4; 2 after step 0 under a causal
/// mask, which is what balances the ranks).
inline std::vector<RingBlock> ring_blocks(const Zigzag& z, int r, int step, bool causal, int64_t window) {
  std::vector<RingBlock> out;
  const auto qc = z.chunks_of(r), kc = z.chunks_of(z.kv_source(r, step));
  for (int qi = 0; qi < 2; ++qi)
    for (int ki = 0; ki < 2; ++ki) {
      RingBlock b{qi, ki, z.chunk(qc[qi]), z.chunk(kc[ki]), {}};
      b.block = classify(b.q, b.k, causal, window);
      if (b.block.kind != BlockKind::skip) out.push_back(b);
    }
  return out;
}

/// The AttentionShape of one block: `full` runs without a mask, `masked` with the causal (and
/// window) mask at the block's query offset.
inline attention::AttentionShape block_shape(const attention::AttentionShape& whole, Span q, Span k, const Block& b) {
  attention::AttentionShape s = whole;
  s.n_queries = q.size();
  s.n_keys = k.size();
  s.causal = b.kind == BlockKind::masked;
  s.window = b.kind == BlockKind::masked ? whole.window : 0;
  s.query_offset = b.kind == BlockKind::masked ? b.query_offset : 0;
  return s;
}

}  // namespace ropex::parallel
