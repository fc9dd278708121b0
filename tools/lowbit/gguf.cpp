#include "gguf.hpp"

#include <iostream>
#include <lowbit/io/gguf.hpp>
#include <lowbit/io/safetensors.hpp>
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
