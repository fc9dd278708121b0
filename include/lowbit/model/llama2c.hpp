// Loads a llama2.c "version 0" checkpoint (format: shared/models/README.md):
// seven int32 header fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len), then float32 arrays: token embedding, each kind of
// per-layer weight for all layers in turn, the final norm, RoPE tables (not
// needed: recomputed), and, when vocab_size is negative, a separate classifier.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/model/llama.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llama2.c checkpoints are little-endian; this loader reads them in place"
#endif

namespace lowbit::model {

namespace detail {

// Per-layer weights in file order: llama2.c stores each kind for all layers
// before the next kind.
inline void read_llama2c_layers(
    Model& m, const std::function<MatrixF(Index, Index, const std::string&)>& take) {
  const Config& c = m.config;
  m.layers.resize(static_cast<std::size_t>(c.n_layers));
  auto norms = [&](VectorF Layer::*norm, const char* what) {
    for (int l = 0; l < c.n_layers; ++l)
      m.layers[static_cast<std::size_t>(l)].*norm =
          take(1, c.dim, std::string(what) + " of layer " + std::to_string(l)).row(0).transpose();
  };
  auto linears = [&](LinearKind kind, Index out, Index in) {
    for (int l = 0; l < c.n_layers; ++l)
      m.layers[static_cast<std::size_t>(l)].linears[index(kind)] = std::make_shared<FloatLinear>(
          take(out, in, std::string(name(kind)) + " of layer " + std::to_string(l)));
  };
  norms(&Layer::attention_norm, "rms_att");
  linears(LinearKind::wq, c.dim, c.dim);
  linears(LinearKind::wk, c.kv_dim(), c.dim);
  linears(LinearKind::wv, c.kv_dim(), c.dim);
  linears(LinearKind::wo, c.dim, c.dim);
  norms(&Layer::ffn_norm, "rms_ffn");
  linears(LinearKind::w1, c.hidden_dim, c.dim);
  linears(LinearKind::w2, c.dim, c.hidden_dim);
  linears(LinearKind::w3, c.hidden_dim, c.dim);
}

}  // namespace detail

// The file must be exactly as long as its header implies and every weight
// finite; anything else throws lowbit::Error naming the file and the problem.
inline Model load_llama2c(const std::string& path) {
  using lowbit::detail::require;
  std::error_code ec;
  // A directory opens as a stream whose tellg() is garbage: check the kind first.
  require(!std::filesystem::exists(path, ec) || std::filesystem::is_regular_file(path, ec), path,
          ": not a regular file (a llama2.c checkpoint was expected)");
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  require(static_cast<bool>(file), path, ": cannot open");
  const std::int64_t size = static_cast<std::int64_t>(file.tellg());
  require(size >= 28, path, ": truncated (", size, " bytes; the header alone is 28)");
  file.seekg(0);
  std::int32_t header[7];
  file.read(reinterpret_cast<char*>(header), sizeof header);
  require(static_cast<bool>(file), path, ": cannot read the 28-byte header");
  Model m;
  Config& c = m.config;
  // A negative vocabulary size marks a classifier stored apart from the embedding.
  const bool tied = header[5] >= 0;
  const std::int32_t vocab = header[5] == INT32_MIN ? 0 : std::abs(header[5]);
  c = Config{header[0], header[1], header[2], header[3], header[4], vocab, header[6]};
  validate_config(c, path);

  const std::int64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, kv = c.kv_dim();
  const std::int64_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim;
  const std::int64_t embedding = std::int64_t(c.vocab_size) * dim;
  const std::int64_t floats = embedding + layers * per_layer + dim +
                              std::int64_t(c.seq_len) * c.head_size() + (tied ? 0 : embedding);
  require(size == 28 + 4 * floats, path, ": expected ", 28 + 4 * floats, " bytes for dim=", c.dim,
          " hidden_dim=", c.hidden_dim, " n_layers=", c.n_layers, " n_heads=", c.n_heads,
          " n_kv_heads=", c.n_kv_heads, " vocab_size=", header[5], " seq_len=", c.seq_len,
          ", the file has ", size, size < 28 + 4 * floats ? " (truncated)" : " (trailing data)");
  std::vector<float> data(static_cast<std::size_t>(floats));
  file.read(reinterpret_cast<char*>(data.data()), 4 * floats);
  require(static_cast<bool>(file), path, ": read failed");

  std::size_t offset = 0;  // takes the next rows x cols floats as a checked matrix
  auto take = [&](Index rows, Index cols, const std::string& what) {
    MatrixF out = Eigen::Map<const MatrixF>(data.data() + offset, rows, cols);
    offset += static_cast<std::size_t>(rows * cols);
    require(out.allFinite(), path, ": ", what, " has non-finite values");
    return out;
  };
  m.token_embedding = take(c.vocab_size, dim, "token_embedding");
  detail::read_llama2c_layers(m, take);
  m.final_norm = take(1, dim, "rms_final").row(0).transpose();
  offset += static_cast<std::size_t>(std::int64_t(c.seq_len) * c.head_size());  // RoPE tables
  if (!tied) m.classifier = take(c.vocab_size, dim, "classifier");
  m.rope = rope_tables(c);
  return m;
}

}  // namespace lowbit::model
