// The residual stream of the calibration sequences (each tokens x dim
// floats) that sequential quantization carries from layer to layer, in one
// span of floats: in memory by default, or in a scratch file
// (io::ScratchFile) whose pages the kernel writes back and reclaims, for a
// stream that should not count as anonymous memory (8.6 GB at 70B on 128 x
// 2048 tokens). The floats are the same either way, so are the results.
//
//   ResidualStream states = embed_stream(m, sequences, {"/big/disk"});
//   MatrixF x = states.read(0);  // run a layer over x ...
//   states.write(0, x);
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/scratch_file.hpp"
#include "lowbit/model/forward.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/model/sequences.hpp"

namespace lowbit::model {

struct StreamStorage {
  // A directory for the scratch file; empty: anonymous memory.
  std::string scratch_dir;
};

class ResidualStream {
 public:
  // Zeros for sequences of `lengths` tokens of `dim` floats each.
  ResidualStream(const std::vector<Index>& lengths, Index dim, const StreamStorage& storage = {})
      : dim_(dim) {
    lowbit::detail::require(dim >= 0, "ResidualStream: dim must be >= 0, got ", dim);
    offsets_.push_back(0);
    for (Index n : lengths) {
      lowbit::detail::require(n > 0, "ResidualStream: every sequence needs tokens, got ", n);
      offsets_.push_back(offsets_.back() + n);
    }
    const std::size_t floats = static_cast<std::size_t>(tokens() * dim);
    if (floats == 0) return;
    if (storage.scratch_dir.empty()) {
      memory_ = std::make_unique<float[]>(floats);
      data_ = memory_.get();
      return;
    }
    try {
      file_ = std::make_unique<io::ScratchFile>(storage.scratch_dir, floats * sizeof(float));
    } catch (const Error& e) {
      throw Error("the residual stream of the calibration sequences (" + std::to_string(tokens()) +
                  " tokens x " + std::to_string(dim) + " floats): " + e.what());
    }
    data_ = reinterpret_cast<float*>(file_->data());
  }
  // A copy of `states` (in memory unless `storage` names a directory).
  explicit ResidualStream(const std::vector<MatrixF>& states, const StreamStorage& storage = {})
      : ResidualStream(lengths_of(states), states.empty() ? 0 : states[0].cols(), storage) {
    for (std::size_t s = 0; s < states.size(); ++s) write(s, states[s]);
  }

  std::size_t sequences() const { return offsets_.size() - 1; }
  Index tokens() const { return offsets_.back(); }
  Index dim() const { return dim_; }

  // Sequence s's states (tokens x dim), copied out of the span. A scratch
  // file's pages go back to the kernel after each read and write: one
  // sequence of the stream is resident at a time, not all of them.
  MatrixF read(std::size_t s) const {
    check(s);
    MatrixF states = Eigen::Map<const MatrixF>(data_ + offsets_[s] * dim_, length(s), dim_);
    release(s);
    return states;
  }
  // Replaces sequence s's states.
  void write(std::size_t s, const MatrixF& states) {
    check(s);
    lowbit::detail::require(states.rows() == length(s) && states.cols() == dim_,
                            "ResidualStream: sequence ", s, " is ", length(s), " x ", dim_,
                            ", got ", states.rows(), " x ", states.cols());
    Eigen::Map<MatrixF>(data_ + offsets_[s] * dim_, length(s), dim_) = states;
    release(s);
  }

 private:
  static std::vector<Index> lengths_of(const std::vector<MatrixF>& states) {
    std::vector<Index> lengths;
    for (const MatrixF& x : states) {
      lowbit::detail::require(x.cols() == states[0].cols(),
                              "ResidualStream: sequences of different widths");
      lengths.push_back(x.rows());
    }
    return lengths;
  }
  Index length(std::size_t s) const { return offsets_[s + 1] - offsets_[s]; }
  void check(std::size_t s) const {
    lowbit::detail::require(s < sequences(), "ResidualStream: sequence ", s, " of ", sequences());
  }
  void release(std::size_t s) const {
    if (file_)
      file_->release(static_cast<std::size_t>(offsets_[s] * dim_) * sizeof(float),
                     static_cast<std::size_t>(offsets_[s + 1] * dim_) * sizeof(float));
  }

  Index dim_;
  std::vector<Index> offsets_;  // sequence s is rows offsets_[s] .. offsets_[s + 1]
  std::unique_ptr<float[]> memory_;
  std::unique_ptr<io::ScratchFile> file_;
  float* data_ = nullptr;  // memory_'s or file_'s floats
};

// Layer 0's states of `sequences` (embed_sequences), embedded one sequence
// at a time into a stream kept as `storage` says.
inline ResidualStream embed_stream(const Model& m, const std::vector<Sequence>& sequences,
                                   const StreamStorage& storage = {}) {
  std::vector<Index> lengths;
  for (const Sequence& s : sequences) lengths.push_back(static_cast<Index>(s.size()));
  ResidualStream stream(lengths, m.config.dim, storage);
  for (std::size_t s = 0; s < sequences.size(); ++s) stream.write(s, embed(m, sequences[s]));
  return stream;
}

}  // namespace lowbit::model
