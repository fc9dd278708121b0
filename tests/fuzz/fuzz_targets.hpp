// What the library fuzzers run on one input, shared with the unit tests that
// replay their corpora (tests/data/<fuzzer>_hostile): each function reads the
// bytes the way a user's file would be read and may throw lowbit::Error, and
// nothing else. Inputs a reader accepts but that would only cost time (huge
// yet valid tables) are skipped here, as the safetensors fuzzer skips big tensors.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <lowbit/io/awq_format.hpp>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/checkpoint.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/io/layer_file.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/llama2c.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace lowbit::fuzz {

inline void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) throw std::runtime_error(path + ": cannot write the fuzz input");
}

// A directory of the fuzzer's own under the temporary directory, removed at
// exit (libFuzzer exits normally after -max_total_time or -runs).
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& name)
      : path_(std::filesystem::temp_directory_path().string() + "/" + name + "." +
              std::to_string(::getpid())) {
    std::filesystem::create_directories(path_);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `read`, letting lowbit::Error (a clean refusal) end only this attempt.
template <class Read>
void attempt(Read&& read) {
  try {
    (void)read();
  } catch (const Error&) {
  }
}

// A llama2.c checkpoint: the bytes as the file, opened and its first layers read.
inline void read_llama2c(const std::uint8_t* data, std::size_t size, const std::string& dir) {
  const std::string path = dir + "/checkpoint.bin";
  write_file(path, data, size);
  const model::ModelSource source = model::open_llama2c(path);
  for (int l = 0; l < std::min(source.globals.config.n_layers, 4); ++l) (void)source.layer(l);
}

// The weights of a tiny Llama (hidden 8, intermediate 16, one layer, 2 heads of
// 4, one KV head, vocabulary 8, separate lm_head; q/k/v biases for Qwen2), as
// model.safetensors beside the fuzzed config.json
// (tests/data/hf_config_hostile/valid_*.json describe it).
inline io::SafetensorsWriter tiny_hf_weights() {
  io::SafetensorsWriter out;
  const std::string layer = "model.layers.0.";
  const std::pair<std::string, std::pair<Index, Index>> matrices[] = {
      {"model.embed_tokens.weight", {8, 8}},       {"lm_head.weight", {8, 8}},
      {layer + "self_attn.q_proj.weight", {8, 8}}, {layer + "self_attn.k_proj.weight", {4, 8}},
      {layer + "self_attn.v_proj.weight", {4, 8}}, {layer + "self_attn.o_proj.weight", {8, 8}},
      {layer + "mlp.gate_proj.weight", {16, 8}},   {layer + "mlp.down_proj.weight", {8, 16}},
      {layer + "mlp.up_proj.weight", {16, 8}}};
  for (const auto& [name, shape] : matrices)
    out.add_matrix(name, MatrixF::Constant(shape.first, shape.second, 0.125f));
  const std::pair<std::string, int> vectors[] = {{"model.norm.weight", 8},
                                                 {layer + "input_layernorm.weight", 8},
                                                 {layer + "post_attention_layernorm.weight", 8},
                                                 {layer + "self_attn.q_proj.bias", 8},
                                                 {layer + "self_attn.k_proj.bias", 4},
                                                 {layer + "self_attn.v_proj.bias", 4}};
  for (const auto& [name, size] : vectors)
    out.add_vector(name, std::vector<float>(std::size_t(size), 1.0f), io::Dtype::F32);
  return out;
}

// A Hugging Face directory: config.json holds the bytes up to the first NUL,
// model.safetensors.index.json the bytes after it (no index without a NUL);
// `weights` (a model.safetensors already in `dir`) is what the index may name.
// The directory is opened and its first layers read.
inline void read_hf_directory(const std::uint8_t* data, std::size_t size, const std::string& dir) {
  const std::uint8_t* nul = std::find(data, data + size, std::uint8_t{0});
  write_file(dir + "/config.json", data, static_cast<std::size_t>(nul - data));
  const std::string index = dir + "/model.safetensors.index.json";
  std::remove(index.c_str());
  if (nul != data + size)
    write_file(index, nul + 1, static_cast<std::size_t>(data + size - nul - 1));
  const model::Config c = model::detail::read_hf_config(dir + "/config.json").config;
  // Valid but slow: RoPE tables beyond 2^22 entries (llama3-8B's are 2^24).
  if (std::int64_t(c.seq_len) * c.head_size() > (1 << 22)) return;
  const model::ModelSource source = model::open_hf(dir);
  for (int l = 0; l < std::min(source.globals.config.n_layers, 2); ++l) (void)source.layer(l);
}

namespace detail {

// The tensor names the layer and checkpoint readers look for; "l" is a
// checkpoint linear.
inline const std::vector<std::string>& layer_tensor_names() {
  // clang-format off
  static const std::vector<std::string> names{
      "W", "W2", "W3", "X", "H", "G", "ln_weight", "ln_bias",
      "Q", "qint", "scale", "zero", "g_idx", "perm", "B", "c", "B_packed",
      "mask", "outlier_rowptr", "outlier_col", "outlier_val",
      "scales", "W8", "w8_scale", "gguf_blocks",
      "l.qweight", "l.qzeros", "l.scales", "l.g_idx", "l.bias", "l.B", "l.c"};
  // clang-format on
  return names;
}

// Reads bytes from the front of the input; 0 once it is used up.
struct ByteStream {
  const std::uint8_t* at;
  const std::uint8_t* end;
  std::uint8_t next() { return at < end ? *at++ : 0; }
  int next16() { return next() | next() << 8; }
};

// Stores the small number `v` as dtype at `out`.
inline void store_value(io::Dtype dtype, std::int64_t v, unsigned char* out) {
  switch (dtype) {
    case io::Dtype::F64: {
      const double d = double(v);
      std::memcpy(out, &d, 8);
      return;
    }
    case io::Dtype::F32: {
      const float f = float(v);
      std::memcpy(out, &f, 4);
      return;
    }
    case io::Dtype::F16:
    case io::Dtype::BF16: {
      const std::uint16_t h =
          dtype == io::Dtype::F16 ? float_to_half(float(v)) : float_to_bf16(float(v));
      std::memcpy(out, &h, 2);
      return;
    }
    default:  // integers, little-endian, truncated to the width
      for (std::size_t b = 0; b < io::dtype_size(dtype); ++b)
        out[b] = (std::uint64_t(v) >> 8 * b) & 255;
  }
}

}  // namespace detail

// A safetensors file of layer tensors from a description, so that the readers
// get past the container and reach their shape and value checks:
//   byte 0: metadata 'method' (low nibble) and 'gguf_type' (high nibble) from short lists
//   then per tensor, until a name byte of 255 or the end: name (index into
//   layer_tensor_names), dtype, rank (0..3), two bytes per dimension (up to 4096),
//   and a fill byte f: f % 4 = 0 the value pool, 1 i % (f/4+1), 2 i / (f/4+1), 3 f/4
//   the rest: the value pool, raw bytes repeated over each tensor filled from it.
inline io::SafetensorsReader layer_file_from_description(const std::uint8_t* data,
                                                         std::size_t size) {
  static const char* const methods[] = {"",     "rtn",  "absmax",      "gptq",   "awq",
                                        "tacq", "bpdq", "smoothquant", "unknown"};
  static const char* const gguf_types[] = {"",       "q4_0",  "q8_0", "q4_K", "q6_K",
                                           "iq4_nl", "tq2_0", "q2_K", "f32"};
  detail::ByteStream in{data, data + size};
  const std::uint8_t meta = in.next();
  struct Tensor {
    std::string name;
    io::Dtype dtype;
    std::vector<std::int64_t> shape;
    std::uint8_t fill;
  };
  std::vector<Tensor> tensors;
  std::int64_t total_bytes = 0;
  for (std::uint8_t name = in.next(); name != 255 && in.at < in.end && tensors.size() < 16;
       name = in.next()) {
    Tensor t{detail::layer_tensor_names()[name % detail::layer_tensor_names().size()],
             static_cast<io::Dtype>(in.next() % 10),
             {},
             0};
    for (int rank = in.next() % 4, d = 0; d < rank; ++d) t.shape.push_back(in.next16() % 4097);
    t.fill = in.next();
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) numel *= d;
    total_bytes += numel * std::int64_t(io::dtype_size(t.dtype));
    const bool repeated = std::any_of(tensors.begin(), tensors.end(),
                                      [&](const Tensor& o) { return o.name == t.name; });
    if (!repeated) tensors.push_back(std::move(t));
  }
  lowbit::detail::require(total_bytes <= (1 << 20), "fuzz description: over 1 MiB of tensors");
  const std::vector<std::uint8_t> pool(in.at, in.end);

  std::string header = "{\"__metadata__\":{";
  const char* method = methods[(meta & 15) % 9];
  const char* gguf_type = gguf_types[(meta >> 4) % 9];
  std::string fields;
  if (*method) fields += std::string("\"method\":\"") + method + "\"";
  if (*gguf_type)
    fields += std::string(fields.empty() ? "" : ",") + "\"gguf_type\":\"" + gguf_type + "\"";
  header += fields + "}";
  std::vector<unsigned char> payload;
  for (const Tensor& t : tensors) {
    const std::size_t width = io::dtype_size(t.dtype), begin = payload.size();
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) numel *= d;
    payload.resize(begin + std::size_t(numel) * width);
    const std::int64_t k = t.fill / 4 + 1;
    for (std::int64_t i = 0; i < numel; ++i) {
      unsigned char* out = payload.data() + begin + std::size_t(i) * width;
      if (t.fill % 4 == 0) {
        for (std::size_t b = 0; b < width; ++b)
          out[b] = pool.empty() ? 0 : pool[(std::size_t(i) * width + b) % pool.size()];
        continue;
      }
      const std::int64_t v = t.fill % 4 == 1 ? i % k : t.fill % 4 == 2 ? i / k : t.fill / 4;
      detail::store_value(t.dtype, v, out);
    }
    header += ",\"" + t.name + "\":{\"dtype\":\"" + io::dtype_name(t.dtype) + "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d)
      header += (d ? "," : "") + std::to_string(t.shape[d]);
    header += "],\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(payload.size()) + "]}";
  }
  header += "}";
  std::vector<unsigned char> bytes(8);
  const std::uint64_t header_size = header.size();
  std::memcpy(bytes.data(), &header_size, 8);
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return io::SafetensorsReader::from_bytes(std::move(bytes), "<fuzz layer file>");
}

// Every reader of a layer or checkpoint file on the described file: the
// inputs `lowbit quantize` reads, the result `lowbit gemv` reads (packed for
// the kernel as gemv packs it), and the GPTQ, AWQ and BPDQ linears.
inline void read_layer_file(const std::uint8_t* data, std::size_t size) {
  const io::SafetensorsReader file = layer_file_from_description(data, size);
  attempt([&] { return io::read_layer_inputs(file); });
  const Index in_features =
      file.contains("Q") && file.info("Q").shape.size() == 2 ? file.info("Q").shape[1] : 64;
  attempt([&] {
    const io::QuantizedLayer layer = io::read_quantized_layer(file, in_features);
    if (layer.int8) return layer.int8->rows();
    return (layer.outliers ? pack_bitplanes(layer.planes, *layer.outliers)
                           : pack_bitplanes(layer.planes))
        .rows();
  });
  for (int bits : {2, 3, 4, 8})
    for (bool v2 : {false, true})
      attempt([&] { return io::read_gptq_linear(file, "l", bits, v2); });
  attempt([&] { return io::read_awq_linear(file, "l"); });
  attempt([&] { return io::read_bpdq_linear(file, "l"); });
  attempt([&] { return io::read_linear_bias(file, "l", 32); });
}

}  // namespace lowbit::fuzz
