// Loads a llama2.c "version 0" checkpoint (format: shared/models/README.md):
// seven int32 header fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len), then float32 arrays: token embedding, each kind of
// per-layer weight for all layers in turn, the final norm, RoPE tables (not
// needed: recomputed), and, when vocab_size is negative, a separate classifier.
// open_llama2c reads a layer only when asked for it (ModelSource), the
// embeddings and classifier by rows when needed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/file_bytes.hpp"
#include "lowbit/model/llama.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llama2.c checkpoints are little-endian; this loader reads them in place"
#endif

namespace lowbit::model {

namespace detail {

// Per-layer weights in file order: llama2.c stores each kind for all layers
// before the next kind. Norms are 1 x dim.
struct Llama2cSection {
  const char* name;
  LinearKind kind;       // unused for norms
  VectorF Layer::*norm;  // nullptr: a linear
  Index rows, cols;
};

inline std::vector<Llama2cSection> llama2c_sections(const Config& c) {
  const Index dim = c.dim, kv = c.kv_dim(), hidden = c.hidden_dim;
  return {{"rms_att", LinearKind::wq, &Layer::attention_norm, 1, dim},
          {"wq", LinearKind::wq, nullptr, dim, dim},
          {"wk", LinearKind::wk, nullptr, kv, dim},
          {"wv", LinearKind::wv, nullptr, kv, dim},
          {"wo", LinearKind::wo, nullptr, dim, dim},
          {"rms_ffn", LinearKind::wq, &Layer::ffn_norm, 1, dim},
          {"w1", LinearKind::w1, nullptr, hidden, dim},
          {"w2", LinearKind::w2, nullptr, dim, hidden},
          {"w3", LinearKind::w3, nullptr, hidden, dim}};
}

// rows x cols floats at float index `offset` of the data after the header, checked finite.
inline MatrixF llama2c_matrix(const io::MappedBytes& file, const std::string& path,
                              std::int64_t offset, Index rows, Index cols,
                              const std::string& what) {
  MatrixF out(rows, cols);
  std::memcpy(out.data(), file.data() + 28 + 4 * offset, 4 * std::size_t(rows * cols));
  lowbit::detail::require(out.allFinite(), path, ": ", what, " has non-finite values");
  return out;
}

// rows x cols floats at float index `offset` left in the mapped file, read by
// rows (released after each read); checked finite now, a block at a time.
inline MappedRows llama2c_mapped_rows(const io::MappedBytes& file, const std::string& path,
                                      std::int64_t offset, Index rows, Index cols,
                                      const std::string& what) {
  MappedRows mapped{rows, cols, [file, offset, cols](Index first, Index count) {
                      MatrixF out(count, cols);
                      const std::size_t begin = 28 + 4 * std::size_t(offset + first * cols),
                                        size = 4 * std::size_t(count * cols);
                      std::memcpy(out.data(), file.data() + begin, size);
                      file.release(begin, begin + size);
                      return out;
                    }};
  for (Index first = 0; first < rows; first += kMappedRowsPerBlock)
    lowbit::detail::require(
        mapped.read(first, std::min(kMappedRowsPerBlock, rows - first)).allFinite(), path, ": ",
        what, " has non-finite values");
  return mapped;
}

}  // namespace detail

// Opens a checkpoint (memory-mapped) to read one layer at a time. The file
// must be exactly as long as its header implies and every weight finite;
// anything else throws lowbit::Error naming the file and the problem (a
// layer's weights are checked when it is read).
inline ModelSource open_llama2c(const std::string& path) {
  using lowbit::detail::require;
  std::error_code ec;
  require(!std::filesystem::exists(path, ec) || std::filesystem::is_regular_file(path, ec), path,
          ": not a regular file (a llama2.c checkpoint was expected)");
  const io::MappedBytes file = io::MappedBytes::map(path);
  const std::int64_t size = static_cast<std::int64_t>(file.size());
  require(size >= 28, path, ": truncated (", size, " bytes; the header alone is 28)");
  std::int32_t header[7];
  std::memcpy(header, file.data(), sizeof header);
  ModelSource source;
  Model& m = source.globals;
  Config& c = m.config;
  // A negative vocabulary size marks a classifier stored apart from the embedding.
  const bool tied = header[5] >= 0;
  const std::int32_t vocab = header[5] == INT32_MIN ? 0 : std::abs(header[5]);
  c = Config{header[0], header[1], header[2], header[3], header[4], vocab, header[6]};
  validate_config(c, path);

  const std::int64_t dim = c.dim, layers = c.n_layers;
  std::int64_t per_layer = 0;
  for (const detail::Llama2cSection& s : detail::llama2c_sections(c)) per_layer += s.rows * s.cols;
  const std::int64_t embedding = std::int64_t(c.vocab_size) * dim;
  const std::int64_t floats = embedding + layers * per_layer + dim +
                              std::int64_t(c.seq_len) * c.head_size() + (tied ? 0 : embedding);
  require(size == 28 + 4 * floats, path, ": expected ", 28 + 4 * floats, " bytes for dim=", c.dim,
          " hidden_dim=", c.hidden_dim, " n_layers=", c.n_layers, " n_heads=", c.n_heads,
          " n_kv_heads=", c.n_kv_heads, " vocab_size=", header[5], " seq_len=", c.seq_len,
          ", the file has ", size, size < 28 + 4 * floats ? " (truncated)" : " (trailing data)");

  const std::int64_t final_norm = embedding + layers * per_layer;
  m.mapped_embedding =
      detail::llama2c_mapped_rows(file, path, 0, c.vocab_size, dim, "token_embedding");
  m.final_norm =
      detail::llama2c_matrix(file, path, final_norm, 1, dim, "rms_final").row(0).transpose();
  const std::int64_t classifier = final_norm + dim + std::int64_t(c.seq_len) * c.head_size();
  if (!tied)
    m.mapped_classifier =
        detail::llama2c_mapped_rows(file, path, classifier, c.vocab_size, dim, "classifier");
  m.rope = rope_tables(c);  // the file's own tables are not needed

  source.layer = [file, path, c, embedding](int l) {
    Layer layer;
    std::int64_t section = embedding;  // where the current kind's layer 0 starts
    for (const detail::Llama2cSection& s : detail::llama2c_sections(c)) {
      const std::string what = std::string(s.name) + " of layer " + std::to_string(l);
      MatrixF w =
          detail::llama2c_matrix(file, path, section + l * s.rows * s.cols, s.rows, s.cols, what);
      if (s.norm)
        layer.*s.norm = w.row(0).transpose();
      else
        layer.linears[index(s.kind)] = std::make_shared<FloatLinear>(std::move(w));
      section += std::int64_t(c.n_layers) * s.rows * s.cols;
    }
    return layer;
  };
  return source;
}

// The whole checkpoint in memory; errors as open_llama2c's.
inline Model load_llama2c(const std::string& path) { return load_all(open_llama2c(path)); }

}  // namespace lowbit::model
