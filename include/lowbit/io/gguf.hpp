// GGUF v3 reading (memory-mapped) and writing: llama.cpp's model file.
//
// Layout (ggml docs/gguf.md; everything little-endian): "GGUF", version u32,
// tensor count u64, key count u64; the keys, each a string (u64 length, bytes),
// a value type i32 and the value (arrays: element type i32, count u64, the
// elements; arrays may nest); the tensor infos, each a name, n_dims u32, the
// dims as u64 (ggml's ne: dims[0] is the contiguous one, the length of a
// row), a ggml type i32 (core/ggml_types.hpp) and an offset u64 into the data
// section; padding to the alignment (`general.alignment`, u32, default 32);
// the data section, every tensor at an offset that is a multiple of it.
//
// The reader treats every file as hostile: truncation anywhere, a bad magic or
// version, counts that cannot fit in the bytes left, bad value types, bools
// other than 0 and 1, empty or duplicate keys, arrays nested deeper than
// kGgufMaxArrayDepth, a non-u32 or non-power-of-two alignment, more than 4
// dims, negative or overflowing dims, unknown tensor types, rows that are not
// whole blocks, unaligned, out-of-range or overlapping data: each is a
// lowbit::Error naming the file, the key or tensor, and what was expected.
// Every count is checked against the bytes left before anything is allocated.
//
// The reader follows the spec where ggml's reader is narrower: tensors in any
// order of offsets, no padding after the last tensor, nested arrays. The
// writer lays tensors out as ggml's own writer does (in order, each padded to
// the alignment, the last one too), which ggml's reader requires; ggml cannot
// read nested arrays, so files for llama.cpp must not hold them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_types.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/file_bytes.hpp"
#include "lowbit/io/ggml_blocks.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lowbit/io/gguf.hpp assumes a little-endian host"
#endif

namespace lowbit::io {

// The metadata value types (gguf.h `enum gguf_type`).
enum class GgufType : std::int32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

constexpr std::uint32_t kGgufVersion = 3;
constexpr std::uint32_t kGgufDefaultAlignment = 32;
constexpr int kGgufMaxArrayDepth = 16;
constexpr std::size_t kGgufMaxTensorName = 64;  // the spec's limit; ggml's reader wants < 64

inline const char* gguf_type_name(GgufType type) {
  static const char* const names[] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                      "bool", "str", "arr", "u64", "i64", "f64"};
  const auto i = static_cast<std::size_t>(type);
  return i < 13 ? names[i] : "?";
}

// Bytes of one number or bool; 0 for strings and arrays.
inline std::size_t gguf_scalar_size(GgufType type) {
  switch (type) {
    case GgufType::u8:
    case GgufType::i8:
    case GgufType::boolean:
      return 1;
    case GgufType::u16:
    case GgufType::i16:
      return 2;
    case GgufType::u32:
    case GgufType::i32:
    case GgufType::f32:
      return 4;
    case GgufType::u64:
    case GgufType::i64:
    case GgufType::f64:
      return 8;
    default:
      return 0;
  }
}

// The C++ type of each GGUF scalar type.
template <class T>
struct GgufTypeOf;
template <>
struct GgufTypeOf<std::uint8_t> {
  static constexpr GgufType value = GgufType::u8;
};
template <>
struct GgufTypeOf<std::int8_t> {
  static constexpr GgufType value = GgufType::i8;
};
template <>
struct GgufTypeOf<std::uint16_t> {
  static constexpr GgufType value = GgufType::u16;
};
template <>
struct GgufTypeOf<std::int16_t> {
  static constexpr GgufType value = GgufType::i16;
};
template <>
struct GgufTypeOf<std::uint32_t> {
  static constexpr GgufType value = GgufType::u32;
};
template <>
struct GgufTypeOf<std::int32_t> {
  static constexpr GgufType value = GgufType::i32;
};
template <>
struct GgufTypeOf<float> {
  static constexpr GgufType value = GgufType::f32;
};
template <>
struct GgufTypeOf<bool> {
  static constexpr GgufType value = GgufType::boolean;
};
template <>
struct GgufTypeOf<std::uint64_t> {
  static constexpr GgufType value = GgufType::u64;
};
template <>
struct GgufTypeOf<std::int64_t> {
  static constexpr GgufType value = GgufType::i64;
};
template <>
struct GgufTypeOf<double> {
  static constexpr GgufType value = GgufType::f64;
};

template <class T, class = void>
struct IsGgufNumber : std::false_type {};
template <class T>
struct IsGgufNumber<T, std::void_t<decltype(GgufTypeOf<T>::value)>> : std::true_type {};

// A metadata value: a number, bool or string, or an array of one of those or
// of arrays. Numbers and bools are kept as their little-endian bytes.
class GgufValue {
 public:
  template <class T, std::enable_if_t<IsGgufNumber<T>::value, int> = 0>
  GgufValue(T value) : type_(GgufTypeOf<T>::value) {  // NOLINT: implicit on purpose
    append(value);
  }
  GgufValue(std::string value) : type_(GgufType::string), strings_{std::move(value)} {}
  GgufValue(const char* value) : GgufValue(std::string(value)) {}

  // An array of numbers, bools or strings.
  template <class T, std::enable_if_t<IsGgufNumber<T>::value, int> = 0>
  GgufValue(const std::vector<T>& values) : type_(GgufType::array), element_(GgufTypeOf<T>::value) {
    for (const T& v : values) append(v);
  }
  GgufValue(std::vector<std::string> values)
      : type_(GgufType::array), element_(GgufType::string), strings_(std::move(values)) {}
  // An array of arrays.
  static GgufValue nested(std::vector<GgufValue> arrays) {
    for (const GgufValue& a : arrays)
      lowbit::detail::require(a.is_array(),
                              "GgufValue::nested: every element must be an array, got ",
                              gguf_type_name(a.type()));
    GgufValue v;
    v.type_ = GgufType::array;
    v.element_ = GgufType::array;
    v.arrays_ = std::move(arrays);
    return v;
  }

  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::array; }
  GgufType element_type() const { return element_; }  // of an array
  std::size_t size() const {                          // elements of an array
    if (element_ == GgufType::string) return strings_.size();
    if (element_ == GgufType::array) return arrays_.size();
    return bytes_.size() / gguf_scalar_size(element_);
  }
  // "u32", "arr[str]", ...
  std::string type_string() const {
    return is_array() ? std::string("arr[") + gguf_type_name(element_) + "]"
                      : gguf_type_name(type_);
  }

  // T = a number type, bool, std::string, std::vector of those, or
  // std::vector<GgufValue> (the elements of an array of arrays).
  template <class T>
  bool holds() const {
    if constexpr (IsGgufNumber<T>::value)
      return type_ == GgufTypeOf<T>::value;
    else if constexpr (std::is_same_v<T, std::string>)
      return type_ == GgufType::string;
    else
      return is_array() && element_ == vector_element<T>();
  }

  template <class T>
  T get() const {
    lowbit::detail::require(holds<T>(), "GGUF value is ", type_string(),
                            ", not the type requested");
    if constexpr (IsGgufNumber<T>::value)
      return load<T>(0);
    else if constexpr (std::is_same_v<T, std::string>)
      return strings_[0];
    else if constexpr (std::is_same_v<T, std::vector<std::string>>)
      return strings_;
    else if constexpr (std::is_same_v<T, std::vector<GgufValue>>)
      return arrays_;
    else {
      T out(size());
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = load<typename T::value_type>(i);
      return out;
    }
  }

  bool operator==(const GgufValue& o) const {
    return type_ == o.type_ && element_ == o.element_ && bytes_ == o.bytes_ &&
           strings_ == o.strings_ && arrays_ == o.arrays_;
  }
  bool operator!=(const GgufValue& o) const { return !(*this == o); }

 private:
  friend class GgufReader;
  friend class GgufWriter;
  GgufValue() = default;  // the reader fills it in

  template <class V>
  static constexpr GgufType vector_element() {
    using E = typename V::value_type;
    if constexpr (std::is_same_v<E, std::string>)
      return GgufType::string;
    else if constexpr (std::is_same_v<E, GgufValue>)
      return GgufType::array;
    else
      return GgufTypeOf<E>::value;
  }
  template <class T>
  void append(T value) {
    unsigned char raw[sizeof(T)];
    if constexpr (std::is_same_v<T, bool>)
      raw[0] = value ? 1 : 0;
    else
      std::memcpy(raw, &value, sizeof(T));
    bytes_.insert(bytes_.end(), raw, raw + sizeof(T));
  }
  template <class T>
  T load(std::size_t i) const {
    if constexpr (std::is_same_v<T, bool>)
      return bytes_[i] != 0;
    else {
      T v;
      std::memcpy(&v, bytes_.data() + i * sizeof(T), sizeof(T));
      return v;
    }
  }

  GgufType type_ = GgufType::u8;
  GgufType element_ = GgufType::u8;   // arrays
  std::vector<unsigned char> bytes_;  // numbers and bools
  std::vector<std::string> strings_;  // a string, or the elements of a string array
  std::vector<GgufValue> arrays_;     // the elements of an array of arrays
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::f32;
  std::vector<std::int64_t> shape;  // ggml's ne: shape[0] is the length of a row
  std::uint64_t offset = 0;         // into the data section
  std::size_t bytes = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  std::int64_t cols() const { return shape.empty() ? 1 : shape[0]; }
  std::int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }  // every further dim
  std::string shape_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

namespace detail {

// Reads a GGUF byte by byte; every read names what it reads in its error.
class GgufCursor {
 public:
  GgufCursor(const unsigned char* bytes, std::size_t size, const std::string& source)
      : bytes_(bytes), size_(size), source_(source) {}

  std::size_t position() const { return position_; }
  std::size_t remaining() const { return size_ - position_; }

  const unsigned char* take(std::uint64_t n, const std::string& what) {
    lowbit::detail::require(n <= remaining(), source_, ": truncated: ", what, " needs ", n,
                            " bytes at offset ", position_, ", the file has ", remaining(),
                            " left");
    const unsigned char* p = bytes_ + position_;
    position_ += static_cast<std::size_t>(n);
    return p;
  }

  template <class T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }

  std::string string(const std::string& what) {
    const auto length = read<std::uint64_t>(what + " length");
    const unsigned char* p = take(length, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(length));
  }

  // A count of items of at least `item_bytes` each must fit in what is left.
  std::uint64_t count(std::uint64_t item_bytes, const std::string& what) {
    const auto n = read<std::uint64_t>(what);
    lowbit::detail::require(item_bytes == 0 || n <= remaining() / item_bytes, source_, ": ", what,
                            " = ", n, " cannot fit in the ", remaining(), " bytes left (at least ",
                            item_bytes, " bytes each)");
    return n;
  }

  [[noreturn]] void fail(const std::string& what) const {
    lowbit::detail::fail(source_, ": ", what);
  }

 private:
  const unsigned char* bytes_;
  std::size_t size_;
  const std::string& source_;
  std::size_t position_ = 0;
};

inline bool valid_gguf_type(std::int32_t t) { return t >= 0 && t <= 12; }

// Smallest encoding of one element of a type, to bound a count by the bytes left.
inline std::uint64_t gguf_min_element_bytes(GgufType t) {
  if (t == GgufType::string) return 8;
  if (t == GgufType::array) return 12;
  return gguf_scalar_size(t);
}

}  // namespace detail

class GgufReader {
 public:
  // Memory-maps the file and validates everything but the tensor payloads.
  explicit GgufReader(const std::string& path) : GgufReader(MappedBytes::map(path), path) {}

  static GgufReader from_bytes(std::vector<unsigned char> bytes, std::string source = "<memory>") {
    return GgufReader(MappedBytes::adopt(std::move(bytes)), std::move(source));
  }

  const std::string& source() const { return source_; }
  std::uint32_t version() const { return version_; }
  std::size_t alignment() const { return alignment_; }
  std::size_t data_offset() const { return data_offset_; }

  // Keys and tensors in file order.
  const std::vector<std::string>& keys() const { return keys_; }
  bool contains(const std::string& key) const { return values_.count(key) != 0; }
  const GgufValue& value(const std::string& key) const {
    const auto it = values_.find(key);
    lowbit::detail::require(it != values_.end(), source_, ": key '", key, "' is missing");
    return it->second;
  }
  template <class T>
  T get(const std::string& key) const {
    const GgufValue& v = value(key);
    lowbit::detail::require(v.holds<T>(), source_, ": key '", key, "' is ", v.type_string(),
                            ", not the type requested");
    return v.get<T>();
  }

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains_tensor(const std::string& name) const { return index_.count(name) != 0; }
  const GgufTensorInfo& tensor(const std::string& name) const {
    const auto it = index_.find(name);
    lowbit::detail::require(it != index_.end(), source_, ": tensor '", name, "' is missing");
    return tensors_[it->second];
  }
  const unsigned char* data(const std::string& name) const {
    return file_.data() + data_offset_ + tensor(name).offset;
  }

  // A tensor of a block type lowbit decodes, as rows x cols (GgmlWeights).
  GgmlWeights blocks(const std::string& name) const {
    const GgufTensorInfo& t = tensor(name);
    const std::string where = source_ + ": tensor '" + name + "'";
    lowbit::detail::require(find_ggml_block_format(t.type) != nullptr && t.numel() > 0, where, ": ",
                            ggml_type_name(t.type), " ", t.shape_string(),
                            " is not a non-empty tensor of a block type lowbit decodes");
    return unpack_ggml_blocks(t.type, t.rows(), t.cols(), data(name), t.bytes, where);
  }

  // F32, F16, BF16, F64 or a decodable block type as a rows x cols float
  // matrix (block types dequantized bit for bit as ggml does).
  MatrixF matrix(const std::string& name) const {
    const GgufTensorInfo& t = tensor(name);
    if (find_ggml_block_format(t.type)) return blocks(name).dequantize();
    MatrixF out(t.rows(), t.cols());
    const unsigned char* p = data(name);
    for (Index i = 0; i < out.size(); ++i)
      out.data()[i] = load_float(t, p, static_cast<std::size_t>(i));
    return out;
  }

 private:
  GgufReader(MappedBytes file, std::string source)
      : source_(std::move(source)), file_(std::move(file)) {
    detail::GgufCursor cursor(file_.data(), file_.size(), source_);
    read_header(cursor);
    read_tensor_infos(cursor);
    place_data(cursor);
  }

  float load_float(const GgufTensorInfo& t, const unsigned char* p, std::size_t i) const {
    switch (t.type) {
      case GgmlType::f32: {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        return v;
      }
      case GgmlType::f64: {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        return static_cast<float>(v);
      }
      case GgmlType::f16:
      case GgmlType::bf16: {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        return t.type == GgmlType::f16 ? half_to_float(h) : bf16_to_float(h);
      }
      default:
        lowbit::detail::fail(
            source_, ": tensor '", t.name, "' is ", ggml_type_name(t.type),
            ", not a float type (f32, f16, bf16, f64) or a block type lowbit decodes");
    }
  }

  void read_header(detail::GgufCursor& c) {
    const unsigned char* magic = c.take(4, "the magic 'GGUF'");
    if (std::memcmp(magic, "GGUF", 4) != 0) c.fail("not a GGUF file (the magic is not 'GGUF')");
    version_ = c.read<std::uint32_t>("the version");
    if (version_ != 0 && (version_ & 0xFFFFu) == 0)
      c.fail("a byte-swapped (big-endian) GGUF is not supported");
    if (version_ != 2 && version_ != 3)
      c.fail("GGUF version " + std::to_string(version_) + " is not supported (expected 2 or 3)");
    n_tensors_ = c.count(24, "the tensor count");               // name length, n_dims, type, offset
    const std::uint64_t n_keys = c.count(13, "the key count");  // key length, a byte, type, a byte
    for (std::uint64_t i = 0; i < n_keys; ++i) read_key(c, i);
    if (contains("general.alignment")) {
      const GgufValue& a = value("general.alignment");
      if (!a.holds<std::uint32_t>())
        c.fail("key 'general.alignment' must be u32, is " + a.type_string());
      alignment_ = a.get<std::uint32_t>();
      if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
        c.fail("key 'general.alignment' = " + std::to_string(alignment_) +
               " is not a power of two");
    }
  }

  void read_key(detail::GgufCursor& c, std::uint64_t i) {
    std::string key = c.string("key " + std::to_string(i));
    if (key.empty()) c.fail("key " + std::to_string(i) + " is empty");
    if (contains(key)) c.fail("key '" + key + "' appears twice");
    const std::string where = "key '" + key + "'";
    const auto type = c.read<std::int32_t>(where + " value type");
    values_.emplace(key, read_value(c, type, 0, where));
    keys_.push_back(std::move(key));
  }

  GgufValue read_value(detail::GgufCursor& c, std::int32_t type_id, int depth,
                       const std::string& where) {
    if (!detail::valid_gguf_type(type_id))
      c.fail(where + ": invalid value type " + std::to_string(type_id));
    const auto type = static_cast<GgufType>(type_id);
    GgufValue v;
    v.type_ = type;
    if (type == GgufType::string) {
      v.strings_.push_back(c.string(where));
    } else if (type != GgufType::array) {
      read_scalars(c, type, 1, where, v);
    } else {
      if (depth >= kGgufMaxArrayDepth)
        c.fail(where + ": arrays nested deeper than " + std::to_string(kGgufMaxArrayDepth) +
               " levels");
      const auto element = c.read<std::int32_t>(where + " array type");
      if (!detail::valid_gguf_type(element))
        c.fail(where + ": invalid array type " + std::to_string(element));
      v.element_ = static_cast<GgufType>(element);
      const std::uint64_t n =
          c.count(detail::gguf_min_element_bytes(v.element_), where + " array length");
      if (v.element_ == GgufType::string)
        for (std::uint64_t i = 0; i < n; ++i) v.strings_.push_back(c.string(where + " element"));
      else if (v.element_ == GgufType::array)
        for (std::uint64_t i = 0; i < n; ++i)
          v.arrays_.push_back(read_value(c, element, depth + 1, where));
      else
        read_scalars(c, v.element_, n, where, v);
    }
    return v;
  }

  static void read_scalars(detail::GgufCursor& c, GgufType type, std::uint64_t n,
                           const std::string& where, GgufValue& v) {
    const unsigned char* p = c.take(n * gguf_scalar_size(type), where);
    v.bytes_.assign(p, p + n * gguf_scalar_size(type));
    if (type == GgufType::boolean)
      for (unsigned char b : v.bytes_)
        if (b > 1) c.fail(where + ": a bool must be 0 or 1, found " + std::to_string(b));
  }

  void read_tensor_infos(detail::GgufCursor& c) {
    for (std::uint64_t i = 0; i < n_tensors_; ++i) {
      GgufTensorInfo t;
      t.name = c.string("tensor " + std::to_string(i) + " name");
      const std::string where = "tensor '" + t.name + "'";
      if (t.name.empty()) c.fail("tensor " + std::to_string(i) + " has an empty name");
      if (t.name.size() > kGgufMaxTensorName)
        c.fail(where + ": the name is longer than " + std::to_string(kGgufMaxTensorName) +
               " bytes");
      if (contains_tensor(t.name)) c.fail(where + " appears twice");
      const auto n_dims = c.read<std::uint32_t>(where + " n_dims");
      if (n_dims > 4) c.fail(where + ": " + std::to_string(n_dims) + " dims, at most 4 allowed");
      for (std::uint32_t d = 0; d < n_dims; ++d) t.shape.push_back(read_dim(c, t.shape, where));
      const auto type = c.read<std::int32_t>(where + " type");
      const std::optional<GgmlTypeTraits> traits = find_ggml_type(type);
      if (!traits) c.fail(where + ": unknown ggml type " + std::to_string(type));
      t.type = traits->type;
      if (t.cols() % traits->block_size != 0)
        c.fail(where + ": " + traits->name + " rows must hold multiples of " +
               std::to_string(traits->block_size) + " weights, shape " + t.shape_string());
      const auto blocks = static_cast<std::uint64_t>(t.numel() / traits->block_size);
      if (blocks > SIZE_MAX / traits->type_size) c.fail(where + ": the size in bytes overflows");
      t.bytes = static_cast<std::size_t>(blocks) * traits->type_size;
      t.offset = c.read<std::uint64_t>(where + " offset");
      index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }
  }

  static std::int64_t read_dim(detail::GgufCursor& c, const std::vector<std::int64_t>& before,
                               const std::string& where) {
    const auto dim = c.read<std::uint64_t>(where + " dim");
    std::uint64_t product = 1;
    for (std::int64_t d : before) product *= static_cast<std::uint64_t>(d);
    if (dim > static_cast<std::uint64_t>(INT64_MAX) ||
        (dim != 0 && product > static_cast<std::uint64_t>(INT64_MAX) / dim))
      c.fail(where + ": dim " + std::to_string(dim) + " makes the element count overflow");
    return static_cast<std::int64_t>(dim);
  }

  // The data section starts at the next multiple of the alignment; every
  // tensor must be aligned, inside the file, and apart from every other.
  void place_data(detail::GgufCursor& c) {
    const std::size_t end = c.position();
    data_offset_ = n_tensors_ == 0 ? end : (end + alignment_ - 1) / alignment_ * alignment_;
    const std::size_t data_size = file_.size() >= data_offset_ ? file_.size() - data_offset_ : 0;
    if (n_tensors_ > 0 && data_offset_ > file_.size())
      c.fail("the data section would start at " + std::to_string(data_offset_) +
             ", past the end of the file");
    std::vector<const GgufTensorInfo*> order;
    for (const GgufTensorInfo& t : tensors_) {
      const std::string where = "tensor '" + t.name + "'";
      if (t.offset % alignment_ != 0)
        c.fail(where + ": offset " + std::to_string(t.offset) +
               " is not a multiple of the alignment " + std::to_string(alignment_));
      if (t.offset > data_size || t.bytes > data_size - t.offset)
        c.fail(where + ": " + std::to_string(t.bytes) + " bytes at offset " +
               std::to_string(t.offset) + " run past the data section of " +
               std::to_string(data_size) + " bytes");
      order.push_back(&t);
    }
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i - 1]->offset + order[i - 1]->bytes > order[i]->offset)
        c.fail("tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
  }

  std::string source_;
  MappedBytes file_;
  std::uint32_t version_ = 0;
  std::uint64_t n_tensors_ = 0;
  std::size_t alignment_ = kGgufDefaultAlignment;
  std::size_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> values_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

// Writes a GGUF whole in memory (bytes(), write()) or streamed into a file,
// so that a model's tensors need not be in memory at once: the header lists
// every tensor with its offset, so a streamed file declares every tensor
// (declare_tensor) before start() writes the header; add_tensor then writes
// each one's bytes at its offset, in any order, and finish() checks that none
// is missing. Tensors are laid out in the order they are declared or added;
// the bytes are the same either way.
class GgufWriter {
 public:
  // A power of two and a multiple of 8 (the spec's rule); written as
  // general.alignment when it is not the default 32.
  explicit GgufWriter(std::uint32_t alignment = kGgufDefaultAlignment) : alignment_(alignment) {
    lowbit::detail::require(alignment >= 8 && (alignment & (alignment - 1)) == 0,
                            "GgufWriter: alignment must be a power of two >= 8, got ", alignment);
    if (alignment != kGgufDefaultAlignment) set("general.alignment", alignment);
  }

  // Adds a key, or replaces its value in place.
  void set(const std::string& key, GgufValue value) {
    lowbit::detail::require(!key.empty(), "GgufWriter: empty key");
    require_header_open("key '" + key + "'");
    lowbit::detail::require(key != "general.alignment" || value == GgufValue(alignment_),
                            "GgufWriter: general.alignment is set by the constructor");
    const auto it =
        std::find_if(kv_.begin(), kv_.end(), [&](const auto& e) { return e.first == key; });
    if (it != kv_.end())
      it->second = std::move(value);
    else
      kv_.emplace_back(key, std::move(value));
  }

  // A tensor whose bytes add_tensor gives later; shape in ggml's order
  // (shape[0] is the length of a row), 1 to 4 dims.
  void declare_tensor(const std::string& name, GgmlType type, std::vector<std::int64_t> shape) {
    require_header_open("tensor '" + name + "'");
    const std::string where = "GgufWriter: tensor '" + name + "'";
    lowbit::detail::require(find(name) == nullptr, where, " declared twice");
    const std::size_t bytes = tensor_bytes(name, type, shape);
    tensors_.push_back({{name, type, std::move(shape), next_offset_, bytes}, {}, false});
    next_offset_ += padded(bytes);
  }

  // Raw bytes of a tensor of any ggml type: one declared before (same type
  // and shape), or, until start(), a new one.
  void add_tensor(const std::string& name, GgmlType type, std::vector<std::int64_t> shape,
                  const void* data, std::size_t bytes) {
    const std::string where = "GgufWriter: tensor '" + name + "'";
    lowbit::detail::require(stage_ != Stage::finished, where, ": written after finish()");
    Tensor* t = find(name);
    if (t == nullptr) {
      lowbit::detail::require(stage_ == Stage::open, where,
                              ": written but never declared (a streamed file declares every "
                              "tensor before start())");
      check_bytes(where, bytes, tensor_bytes(name, type, shape));
      declare_tensor(name, type, std::move(shape));
      t = &tensors_.back();
    } else {
      lowbit::detail::require(!t->added, where, " added twice");
      lowbit::detail::require(t->info.type == type && t->info.shape == shape, where,
                              ": declared as ", describe(t->info.type, t->info.shape), ", given ",
                              describe(type, shape));
      check_bytes(where, bytes, t->info.bytes);
    }
    const auto* p = static_cast<const unsigned char*>(data);
    if (stage_ == Stage::streaming)
      write_data(*t, p);
    else
      t->data.assign(p, p + bytes);
    t->added = true;
  }

  // A rows x cols matrix stored as F32, F16 or BF16.
  void add_matrix(const std::string& name, const MatrixFRef& m, GgmlType type = GgmlType::f32) {
    lowbit::detail::require(
        type == GgmlType::f32 || type == GgmlType::f16 || type == GgmlType::bf16,
        "GgufWriter: tensor '", name, "': add_matrix stores f32, f16 or bf16, not ",
        ggml_type_name(type));
    const std::size_t item = ggml_type_traits(type).type_size;
    std::vector<unsigned char> bytes(static_cast<std::size_t>(m.size()) * item);
    for (Index r = 0, i = 0; r < m.rows(); ++r)
      for (Index c = 0; c < m.cols(); ++c, ++i) {
        const float v = m(r, c);
        const std::uint16_t h = type == GgmlType::f16 ? float_to_half(v) : float_to_bf16(v);
        std::memcpy(
            bytes.data() + static_cast<std::size_t>(i) * item,
            type == GgmlType::f32 ? static_cast<const void*>(&v) : static_cast<const void*>(&h),
            item);
      }
    add_tensor(name, type, {m.cols(), m.rows()}, bytes.data(), bytes.size());
  }

  void add_blocks(const std::string& name, const GgmlWeights& w) {
    const std::vector<std::uint8_t> bytes = pack_ggml_blocks(w);
    add_tensor(name, w.type, {w.cols(), w.rows()}, bytes.data(), bytes.size());
  }

  // The whole file, every tensor added (not a streaming writer).
  std::vector<unsigned char> bytes() const {
    lowbit::detail::require(stage_ == Stage::open,
                            "GgufWriter: bytes() of a writer that streams to a file");
    require_every_tensor_added();
    std::vector<unsigned char> out = header();
    const std::size_t data_offset = out.size();
    out.resize(data_offset + next_offset_, 0);
    for (const Tensor& t : tensors_)
      std::copy(t.data.begin(), t.data.end(),
                out.begin() + static_cast<std::ptrdiff_t>(data_offset + t.info.offset));
    return out;
  }

  void write(const std::string& path) const { write_file_atomically(path, bytes()); }

  // Writes the header (keys and every tensor declared or added so far) into
  // `file`, and the tensors already added; from here add_tensor writes each
  // declared tensor into it. `file` must outlive the writer's use of it; the
  // caller commits it after finish().
  void start(StagedFile& file) {
    require_header_open("start()");
    const std::vector<unsigned char> head = header();
    file.write_at(0, head.data(), head.size());
    file_ = &file;
    data_offset_ = head.size();
    stage_ = Stage::streaming;
    for (Tensor& t : tensors_)
      if (t.added) {
        write_data(t, t.data.data());
        t.data = {};
      }
  }

  // Checks that every declared tensor was written; the file is then complete.
  void finish() {
    lowbit::detail::require(stage_ == Stage::streaming, "GgufWriter: finish() without start()");
    require_every_tensor_added();
    stage_ = Stage::finished;
    file_ = nullptr;
  }

 private:
  struct Tensor {
    GgufTensorInfo info;              // offset into the data section
    std::vector<unsigned char> data;  // until streamed, or for bytes()
    bool added;
  };
  enum class Stage { open, streaming, finished };
  static constexpr unsigned char kMagic[4] = {'G', 'G', 'U', 'F'};

  std::size_t padded(std::size_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }

  Tensor* find(const std::string& name) {
    for (Tensor& t : tensors_)
      if (t.info.name == name) return &t;
    return nullptr;
  }

  void require_header_open(const std::string& what) const {
    lowbit::detail::require(stage_ == Stage::open, "GgufWriter: ", what,
                            ": the header is written already (start() was called)");
  }

  void require_every_tensor_added() const {
    for (const Tensor& t : tensors_)
      lowbit::detail::require(t.added, "GgufWriter: tensor '", t.info.name,
                              "' was declared but its bytes were never added");
  }

  static std::string describe(GgmlType type, const std::vector<std::int64_t>& shape) {
    GgufTensorInfo t;
    t.shape = shape;
    return std::string(ggml_type_name(type)) + " " + t.shape_string();
  }

  static void check_bytes(const std::string& where, std::size_t bytes, std::size_t expected) {
    lowbit::detail::require(bytes == expected, where, ": holds ", bytes, " bytes, its shape needs ",
                            expected);
  }

  // The bytes a tensor of this name, type and shape holds; throws for a bad one.
  static std::size_t tensor_bytes(const std::string& name, GgmlType type,
                                  const std::vector<std::int64_t>& shape) {
    const std::string where = "GgufWriter: tensor '" + name + "'";
    lowbit::detail::require(!name.empty() && name.size() < kGgufMaxTensorName, where,
                            ": the name must have 1 to ", kGgufMaxTensorName - 1,
                            " bytes (ggml's limit)");
    lowbit::detail::require(!shape.empty() && shape.size() <= 4, where,
                            ": expected 1 to 4 dims, got ", shape.size());
    std::int64_t numel = 1;
    for (std::int64_t d : shape) {
      lowbit::detail::require(d >= 0, where, ": negative dim ", d);
      numel *= d;
    }
    const GgmlTypeTraits& traits = ggml_type_traits(type);
    lowbit::detail::require(shape[0] % traits.block_size == 0, where, ": ", traits.name,
                            " rows must hold multiples of ", traits.block_size, " weights, got ",
                            shape[0]);
    return static_cast<std::size_t>(numel / traits.block_size) * traits.type_size;
  }

  // A tensor's bytes and the zeros that pad it, at its place in the file.
  void write_data(const Tensor& t, const unsigned char* data) {
    const std::uint64_t at = data_offset_ + t.info.offset;
    file_->write_at(at, data, t.info.bytes);
    const std::vector<unsigned char> zeros(padded(t.info.bytes) - t.info.bytes, 0);
    file_->write_at(at + t.info.bytes, zeros.data(), zeros.size());
  }

  // Keys and tensor infos, padded to the alignment: where the data begins.
  std::vector<unsigned char> header() const {
    std::vector<unsigned char> out(std::begin(kMagic), std::end(kMagic));
    put(out, kGgufVersion);
    put(out, static_cast<std::uint64_t>(tensors_.size()));
    put(out, static_cast<std::uint64_t>(kv_.size()));
    for (const auto& [key, value] : kv_) {
      put_string(out, key);
      put(out, static_cast<std::int32_t>(value.type()));
      put_value(out, value);
    }
    for (const Tensor& t : tensors_) {
      put_string(out, t.info.name);
      put(out, static_cast<std::uint32_t>(t.info.shape.size()));
      for (std::int64_t d : t.info.shape) put(out, static_cast<std::uint64_t>(d));
      put(out, static_cast<std::int32_t>(t.info.type));
      put(out, t.info.offset);
    }
    out.resize(padded(out.size()), 0);
    return out;
  }

  template <class T>
  static void put(std::vector<unsigned char>& out, T v) {
    unsigned char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    out.insert(out.end(), raw, raw + sizeof(T));
  }
  static void put_string(std::vector<unsigned char>& out, const std::string& s) {
    put(out, static_cast<std::uint64_t>(s.size()));
    out.insert(out.end(), s.begin(), s.end());
  }
  static void put_value(std::vector<unsigned char>& out, const GgufValue& v) {
    if (v.is_array()) {
      put(out, static_cast<std::int32_t>(v.element_type()));
      put(out, static_cast<std::uint64_t>(v.size()));
    }
    for (const std::string& s : v.strings_) put_string(out, s);
    for (const GgufValue& a : v.arrays_)
      put_value(out, a);  // elements of an array carry no type tag
    out.insert(out.end(), v.bytes_.begin(), v.bytes_.end());
  }

  std::uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  std::uint64_t next_offset_ = 0;  // where the next tensor goes in the data section
  Stage stage_ = Stage::open;
  StagedFile* file_ = nullptr;  // while streaming
  std::uint64_t data_offset_ = 0;
};

}  // namespace lowbit::io
