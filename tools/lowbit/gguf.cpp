#include "gguf.hpp"

#include <iostream>
#include <lowbit/io/gguf.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/gguf_model.hpp>
#include <sstream>

namespace lowbit::cli {
namespace {

template <class T>
void write_number(std::ostream& out, T value) {
  if constexpr (std::is_same_v<T, bool>)
    out << (value ? "true" : "false");
  else if constexpr (sizeof(T) == 1)
    out << static_cast<int>(value);
  else
    out << value;
}

// Calls f(T{}) with the C++ type of a GGUF number or bool type.
template <class F>
void with_number_type(io::GgufType type, F f) {
  switch (type) {
    case io::GgufType::u8:
      return f(std::uint8_t{});
    case io::GgufType::i8:
      return f(std::int8_t{});
    case io::GgufType::u16:
      return f(std::uint16_t{});
    case io::GgufType::i16:
      return f(std::int16_t{});
    case io::GgufType::u32:
      return f(std::uint32_t{});
    case io::GgufType::i32:
      return f(std::int32_t{});
    case io::GgufType::u64:
      return f(std::uint64_t{});
    case io::GgufType::i64:
      return f(std::int64_t{});
    case io::GgufType::f32:
      return f(float{});
    case io::GgufType::f64:
      return f(double{});
    case io::GgufType::boolean:
      return f(bool{});
    default:
      throw std::logic_error("with_number_type: not a number type");
  }
}

// A value as text: numbers in full precision, strings as they are (quoted
// inside arrays), arrays as [a, b, ...] with at most `limit` elements shown.
std::string format_value(const io::GgufValue& v, std::size_t limit) {
  std::ostringstream out;
  out.precision(17);
  if (v.type() == io::GgufType::string) return v.get<std::string>();
  if (!v.is_array()) {
    with_number_type(v.type(), [&](auto t) { write_number(out, v.get<decltype(t)>()); });
    return out.str();
  }
  const std::size_t shown = std::min(limit, v.size());
  out << "[";
  if (v.element_type() == io::GgufType::string) {
    const std::vector<std::string> items = v.get<std::vector<std::string>>();
    for (std::size_t i = 0; i < shown; ++i) out << (i ? ", " : "") << '"' << items[i] << '"';
  } else if (v.element_type() == io::GgufType::array) {
    const std::vector<io::GgufValue> items = v.get<std::vector<io::GgufValue>>();
    for (std::size_t i = 0; i < shown; ++i) out << (i ? ", " : "") << format_value(items[i], limit);
  } else {
    with_number_type(v.element_type(), [&](auto t) {
      const auto items = v.get<std::vector<decltype(t)>>();
      for (std::size_t i = 0; i < shown; ++i) {
        if (i) out << ", ";
        write_number(out, static_cast<decltype(t)>(items[i]));
      }
    });
  }
  if (shown < v.size()) out << ", ... (" << v.size() << " elements)";
  out << "]";
  return out.str();
}

int run_info(const Options& options) {
  const io::GgufReader file(options.text("in"));
  std::cout << file.source() << ": GGUF v" << file.version() << ", alignment " << file.alignment()
            << ", " << file.keys().size() << " metadata keys, " << file.tensors().size()
            << " tensors\n";
  for (const std::string& key : file.keys()) {
    const io::GgufValue& v = file.value(key);
    std::cout << "  " << key << " (" << v.type_string() << ") = " << format_value(v, 8) << "\n";
  }
  for (const io::GgufTensorInfo& t : file.tensors())
    std::cout << "  tensor " << t.name << " " << ggml_type_name(t.type) << " " << t.shape_string()
              << " at " << t.offset << ", " << t.bytes << " bytes\n";
  return 0;
}

// Every tensor as F32 under its GGUF name, shaped as ggml's ne reversed
// (rows first); every metadata value as text.
int run_dequantize(const Options& options) {
  const io::GgufReader file(options.text("in"));
  io::SafetensorsWriter out;
  for (const io::GgufTensorInfo& t : file.tensors()) {
    std::vector<std::int64_t> shape(t.shape.rbegin(), t.shape.rend());
    const MatrixF m = file.matrix(t.name);
    out.add_floats(t.name, shape, m.data(), static_cast<std::size_t>(m.size()));
  }
  for (const std::string& key : file.keys())
    out.set_metadata(key, format_value(file.value(key), static_cast<std::size_t>(-1)));
  out.write(options.text("out"));
  return 0;
}

// Token ids separated by commas.
std::vector<int> parse_tokens(const std::string& text) {
  std::vector<int> tokens;
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    std::size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || item.empty() || id < 0 || id > INT32_MAX)
      throw UsageError("option --tokens: '" + item + "' is not a token id");
    tokens.push_back(static_cast<int>(id));
  }
  if (tokens.empty()) throw UsageError("option --tokens: no token ids");
  return tokens;
}

// The logits lowbit computes for a token sequence on a LLaMA GGUF model, its
// linears on the kernels: to hold against llama.cpp's on the same file.
int run_logits(const Options& options) {
  const std::vector<int> tokens = parse_tokens(options.text("tokens"));
  const model::Model m = model::load_all(model::open_gguf(options.text("in")));
  lowbit::detail::require(static_cast<int>(tokens.size()) <= m.config.seq_len,
                          "--tokens: ", tokens.size(), " tokens exceed the model's context of ",
                          m.config.seq_len);
  model::KvCache cache(m.config, static_cast<int>(tokens.size()));
  const MatrixF logits = model::forward(m, cache, tokens);
  io::SafetensorsWriter out;
  out.add_floats("logits", {logits.rows(), logits.cols()}, logits.data(),
                 static_cast<std::size_t>(logits.size()));
  out.write(options.text("out"));
  return 0;
}

}  // namespace

Command gguf_info_command() {
  return {"gguf info",
          "lists a GGUF file: its version and alignment, every metadata key with its type and\n"
          "value (arrays: the first 8 elements), every tensor with its ggml type, shape (ne,\n"
          "row length first), offset and size.",
          {required_option("in")},
          run_info};
}

Command gguf_dequantize_command() {
  return {"gguf dequantize",
          "writes every tensor of a GGUF file, decoded by lowbit to F32 (block types bit for bit\n"
          "as ggml dequantizes them), under its GGUF name with the shape reversed (rows first),\n"
          "and every metadata value as text in the safetensors metadata. A tensor of a type\n"
          "lowbit cannot decode is an error naming it.",
          {required_option("in"), required_option("out")},
          run_dequantize};
}

}  // namespace lowbit::cli

namespace lowbit::cli {

Command gguf_logits_command() {
  return {"gguf logits",
          "runs a LLaMA-architecture GGUF model (written by quantize-model --format gguf or by\n"
          "llama.cpp's converter) on the token ids of --tokens (comma-separated) with lowbit's\n"
          "forward pass, its linears on the bit-plane kernel, and writes the logits, tensor\n"
          "`logits` F32 [tokens, vocab], to --out.",
          {required_option("in"), required_option("tokens"), required_option("out")},
          run_logits};
}

}  // namespace lowbit::cli
