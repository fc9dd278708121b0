// Slices of a checkpoint (quantize-model --layers A:B) and `lowbit merge`,
// which joins them into the checkpoint one quantize-model run writes, byte
// for byte. A slice records what it is: its layers, the model's layer count
// and a fingerprint of everything the slices of one checkpoint must share
// (model, method, format, grid, calibration): a directory slice in
// lowbit-slice.json beside its shards, with the order and grouping of its
// tensors (what the shard boundaries depend on); a GGUF slice in the keys
// lowbit.slice.*. The slice with layer 0 holds the tensors outside the
// layers, which come first in both formats, so merging concatenates the
// slices' tensors in layer order through the writers a single run uses.
#pragma once

#include <lowbit/io/gguf.hpp>
#include <lowbit/model/llama.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "options.hpp"

namespace lowbit::cli {

struct SliceRecord {
  model::LayerRange layers;
  int n_layers = 0;
  nlohmann::json fingerprint;  // an object; equal in every slice of one checkpoint
};

// A directory slice's record, naming its tensors in the groups they were
// written in (model::HfShardWriter::groups()).
constexpr const char* kSliceFile = "lowbit-slice.json";
std::vector<unsigned char> slice_file_bytes(const SliceRecord& record,
                                            const std::vector<std::vector<std::string>>& groups);

// A GGUF slice's record, as metadata keys.
void set_gguf_slice_keys(io::GgufWriter& out, const SliceRecord& record);

Command merge_command();

}  // namespace lowbit::cli
