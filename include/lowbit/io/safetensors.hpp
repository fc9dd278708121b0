// safetensors reading (memory-mapped) and writing.
//
// Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// mapping tensor names to {dtype, shape, data_offsets} (offsets relative to
// the data section) plus an optional "__metadata__" string map, then the data.
//
// The reader treats every file as hostile: it rejects truncated files, header
// lengths beyond the file, malformed or deeply nested JSON, duplicate names,
// unknown dtypes, negative or overflowing shapes, offsets out of range or
// overlapping, and shapes whose byte size disagrees with the offsets, always
// with a lowbit::Error naming the file, the tensor and the problem.
//
// Needs nlohmann/json (Debian: nlohmann-json3-dev); the core headers do not.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/file_bytes.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lowbit/io/safetensors.hpp assumes a little-endian host"
#endif

namespace lowbit::io {

enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64:
      return "F64";
    case Dtype::F32:
      return "F32";
    case Dtype::F16:
      return "F16";
    case Dtype::BF16:
      return "BF16";
    case Dtype::I64:
      return "I64";
    case Dtype::I32:
      return "I32";
    case Dtype::I16:
      return "I16";
    case Dtype::I8:
      return "I8";
    case Dtype::U8:
      return "U8";
    case Dtype::BOOL:
      return "BOOL";
  }
  return "?";
}

inline std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64:
    case Dtype::I64:
      return 8;
    case Dtype::F32:
    case Dtype::I32:
      return 4;
    case Dtype::F16:
    case Dtype::BF16:
    case Dtype::I16:
      return 2;
    case Dtype::I8:
    case Dtype::U8:
    case Dtype::BOOL:
      return 1;
  }
  return 0;
}

inline std::optional<Dtype> parse_dtype(const std::string& name) {
  for (Dtype d : {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::I32,
                  Dtype::I16, Dtype::I8, Dtype::U8, Dtype::BOOL})
    if (name == dtype_name(d)) return d;
  return std::nullopt;
}

inline bool is_float_dtype(Dtype d) {
  return d == Dtype::F64 || d == Dtype::F32 || d == Dtype::F16 || d == Dtype::BF16;
}

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0;  // byte offsets into the data section
  std::size_t end = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  std::string shape_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

namespace detail {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;  // as the reference safetensors crate
constexpr int kMaxJsonDepth = 64;

inline std::uint64_t read_u64_le(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// nlohmann's parser recurses per nesting level; bound the depth first so a
// header of a million '[' cannot overflow the stack.
inline int json_nesting_depth(const char* text, std::size_t size) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < size; ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

inline std::uint64_t json_unsigned(const nlohmann::json& value, const std::string& where) {
  lowbit::detail::require(
      value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0),
      where, ": expected a non-negative integer, got ", value.dump());
  return value.get<std::uint64_t>();
}

}  // namespace detail

class SafetensorsReader {
 public:
  // Memory-maps the file and validates its whole header.
  explicit SafetensorsReader(const std::string& path)
      : SafetensorsReader(MappedBytes::map(path), path) {}

  // Reads from a buffer it keeps (tests, fuzzing, in-memory files).
  static SafetensorsReader from_bytes(std::vector<unsigned char> bytes,
                                      std::string source = "<memory>") {
    return SafetensorsReader(MappedBytes::adopt(std::move(bytes)), std::move(source));
  }

  const std::string& source() const { return source_; }
  // Tensor names in data-offset order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  std::optional<std::string> metadata_value(const std::string& key) const {
    const auto it = metadata_.find(key);
    if (it == metadata_.end()) return std::nullopt;
    return it->second;
  }

  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    lowbit::detail::require(it != tensors_.end(), source_, ": tensor '", name, "' is missing");
    return it->second;
  }

  const unsigned char* data(const std::string& name) const { return data_ + info(name).begin; }

  // Lets the tensor's bytes leave memory once read (MappedBytes::release);
  // reading them again is still valid.
  void release(const std::string& name) const {
    const TensorInfo& t = info(name);
    const std::size_t offset = static_cast<std::size_t>(data_ - bytes_);
    file_.release(offset + t.begin, offset + t.end);
  }
  // Only the bytes of elements first..first+count-1 (as floats(name, first, count) read).
  void release(const std::string& name, std::size_t first, std::size_t count) const {
    const TensorInfo& t = info(name);
    const std::size_t begin =
        static_cast<std::size_t>(data_ - bytes_) + t.begin + first * dtype_size(t.dtype);
    file_.release(begin, std::min(begin + count * dtype_size(t.dtype),
                                  static_cast<std::size_t>(data_ - bytes_) + t.end));
  }

  // Any float dtype, converted to float (F64 rounds), flattened row-major.
  std::vector<float> floats(const std::string& name) const { return convert<float>(name); }
  std::vector<double> doubles(const std::string& name) const { return convert<double>(name); }
  // Elements first..first+count-1 of the flattened tensor only (rows of a
  // large matrix read when needed).
  std::vector<float> floats(const std::string& name, std::size_t first, std::size_t count) const {
    return convert<float>(name, first, count);
  }

  // Any integer or bool dtype, converted to int32 (I64 values must fit).
  std::vector<std::int32_t> ints(const std::string& name) const {
    const TensorInfo& t = info(name);
    lowbit::detail::require(!is_float_dtype(t.dtype), source_, ": tensor '", name,
                            "' must have an integer dtype, has ", dtype_name(t.dtype));
    std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
    const unsigned char* p = data_ + t.begin;
    for (std::size_t i = 0; i < out.size(); ++i) {
      std::int64_t v = 0;
      switch (t.dtype) {
        case Dtype::I64:
          v = load<std::int64_t>(p, i);
          break;
        case Dtype::I32:
          v = load<std::int32_t>(p, i);
          break;
        case Dtype::I16:
          v = load<std::int16_t>(p, i);
          break;
        case Dtype::I8:
          v = load<std::int8_t>(p, i);
          break;
        default:
          v = p[i];
          break;  // U8, BOOL
      }
      lowbit::detail::require(v >= INT32_MIN && v <= INT32_MAX, source_, ": tensor '", name,
                              "' element ", i, " = ", v, " does not fit in int32");
      out[i] = static_cast<std::int32_t>(v);
    }
    return out;
  }

  // A rank-2 float tensor as a row-major matrix.
  MatrixF matrix(const std::string& name) const {
    const TensorInfo& t = require_rank(name, 2);
    const std::vector<float> v = floats(name);
    return Eigen::Map<const MatrixF>(v.data(), t.shape[0], t.shape[1]);
  }
  MatrixD matrix_d(const std::string& name) const {
    const TensorInfo& t = require_rank(name, 2);
    const std::vector<double> v = doubles(name);
    return Eigen::Map<const MatrixD>(v.data(), t.shape[0], t.shape[1]);
  }

  const TensorInfo& require_rank(const std::string& name, std::size_t rank) const {
    const TensorInfo& t = info(name);
    lowbit::detail::require(t.shape.size() == rank, source_, ": tensor '", name,
                            "' must have rank ", rank, ", has shape ", t.shape_string());
    return t;
  }

 private:
  SafetensorsReader(MappedBytes file, std::string source)
      : source_(std::move(source)), file_(std::move(file)) {
    bytes_ = file_.data();
    size_ = file_.size();
    parse();
  }

  template <class T>
  static T load(const unsigned char* p, std::size_t i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    return v;
  }

  template <class Out>
  std::vector<Out> convert(const std::string& name, std::size_t first = 0,
                           std::size_t count = SIZE_MAX) const {
    const TensorInfo& t = info(name);
    lowbit::detail::require(is_float_dtype(t.dtype), source_, ": tensor '", name,
                            "' must have a float dtype (F64, F32, F16, BF16), has ",
                            dtype_name(t.dtype));
    const std::size_t numel = static_cast<std::size_t>(t.numel());
    if (count == SIZE_MAX) count = numel - std::min(first, numel);
    lowbit::detail::require(first <= numel && count <= numel - first, source_, ": tensor '", name,
                            "': elements ", first, "..", first + count, " are outside its ", numel);
    std::vector<Out> out(count);
    const unsigned char* p = data_ + t.begin + first * dtype_size(t.dtype);
    for (std::size_t i = 0; i < out.size(); ++i) {
      switch (t.dtype) {
        case Dtype::F64:
          out[i] = static_cast<Out>(load<double>(p, i));
          break;
        case Dtype::F32:
          out[i] = static_cast<Out>(load<float>(p, i));
          break;
        case Dtype::F16:
          out[i] = static_cast<Out>(half_to_float(load<std::uint16_t>(p, i)));
          break;
        default:
          out[i] = static_cast<Out>(bf16_to_float(load<std::uint16_t>(p, i)));
          break;
      }
    }
    return out;
  }

  void parse() {
    using lowbit::detail::require;
    require(size_ >= 8, source_, ": truncated file (", size_,
            " bytes; the 8-byte header length is missing)");
    const std::uint64_t header_len = detail::read_u64_le(bytes_);
    require(header_len <= detail::kMaxHeaderBytes, source_, ": header length ", header_len,
            " exceeds the limit of ", detail::kMaxHeaderBytes, " bytes");
    require(header_len <= size_ - 8, source_, ": header length ", header_len,
            " runs past the end of the file (", size_, " bytes)");
    const char* text = reinterpret_cast<const char*>(bytes_ + 8);
    const std::size_t text_len = static_cast<std::size_t>(header_len);
    data_ = bytes_ + 8 + text_len;
    const std::size_t data_size = size_ - 8 - text_len;
    const nlohmann::json header = parse_header(text, text_len);

    std::vector<TensorInfo> list;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& entry = it.value();
      if (name == "__metadata__") {
        require(entry.is_object(), source_, ": __metadata__ must be an object of strings");
        for (auto m = entry.begin(); m != entry.end(); ++m) {
          require(m.value().is_string(), source_, ": __metadata__ value of '", m.key(),
                  "' must be a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      list.push_back(parse_entry(name, entry, data_size));
    }
    std::sort(list.begin(), list.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (std::size_t i = 1; i < list.size(); ++i)
      require(list[i - 1].end <= list[i].begin, source_, ": tensors '", list[i - 1].name, "' and '",
              list[i].name, "' overlap in the data section");
    for (TensorInfo& t : list) {
      names_.push_back(t.name);
      tensors_.emplace(t.name, std::move(t));
    }
  }

  // The header as the format defines it: JSON beginning with '{' (so no
  // byte-order mark), padded at the end with spaces only; nlohmann would stop
  // at a NUL and skip a BOM, and let a repeated key overwrite the first, so
  // these are checked here. Keys must be unique within every object.
  nlohmann::json parse_header(const char* text, std::size_t size) const {
    using lowbit::detail::require;
    require(size > 0 && text[0] == '{', source_, ": header must begin with '{', found ",
            size ? "byte " + std::to_string(static_cast<unsigned char>(text[0])) : "nothing");
    require(std::memchr(text, '\0', size) == nullptr, source_,
            ": header holds a NUL byte (only spaces may pad it)");
    require(detail::json_nesting_depth(text, size) <= detail::kMaxJsonDepth, source_,
            ": header JSON is nested deeper than ", detail::kMaxJsonDepth, " levels");
    nlohmann::json header;
    std::vector<std::set<std::string>> keys;  // per open object
    std::string duplicate;
    try {
      header = nlohmann::json::parse(
          text, text + size, [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
            using Event = nlohmann::json::parse_event_t;
            if (event == Event::object_start) keys.emplace_back();
            if (event == Event::object_end) keys.pop_back();
            if (event == Event::key && !keys.back().insert(parsed.get<std::string>()).second &&
                duplicate.empty())
              duplicate = parsed.get<std::string>();
            return true;
          });
    } catch (const nlohmann::json::exception& e) {
      lowbit::detail::fail(source_, ": malformed JSON header (", e.what(), ")");
    }
    require(duplicate.empty(), source_, ": header has the key '", duplicate,
            "' twice in one object");
    require(header.is_object(), source_, ": header must be a JSON object");
    return header;
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& entry,
                         std::size_t data_size) const {
    using lowbit::detail::require;
    const std::string where = source_ + ": tensor '" + name + "'";
    require(entry.is_object(), where, ": entry must be an object");
    require(entry.contains("dtype") && entry["dtype"].is_string(), where,
            ": 'dtype' must be a string");
    require(entry.contains("shape") && entry["shape"].is_array(), where,
            ": 'shape' must be an array");
    require(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                entry["data_offsets"].size() == 2,
            where, ": 'data_offsets' must be an array of two integers");
    TensorInfo t;
    t.name = name;
    const std::string dtype = entry["dtype"].get<std::string>();
    const std::optional<Dtype> parsed = parse_dtype(dtype);
    require(parsed.has_value(), where, ": unknown dtype '", dtype,
            "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
    t.dtype = *parsed;
    std::uint64_t numel = 1;
    for (const nlohmann::json& d : entry["shape"]) {
      const std::uint64_t dim = detail::json_unsigned(d, where + " shape");
      require(dim <= static_cast<std::uint64_t>(INT64_MAX) &&
                  (dim == 0 || numel <= static_cast<std::uint64_t>(INT64_MAX) / dim),
              where, ": shape overflows");
      numel *= dim;
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    const std::uint64_t begin = detail::json_unsigned(entry["data_offsets"][0], where + " offset");
    const std::uint64_t end = detail::json_unsigned(entry["data_offsets"][1], where + " offset");
    require(begin <= end && end <= data_size, where, ": data_offsets [", begin, ", ", end,
            "] outside the data section of ", data_size, " bytes");
    const std::uint64_t item = dtype_size(t.dtype);
    require(numel <= static_cast<std::uint64_t>(INT64_MAX) / item && numel * item == end - begin,
            where, ": shape ", t.shape_string(), " x ", dtype, " needs ", numel, " x ", item,
            " bytes but data_offsets span ", end - begin);
    t.begin = static_cast<std::size_t>(begin);
    t.end = static_cast<std::size_t>(end);
    return t;
  }

  std::string source_;
  MappedBytes file_;
  const unsigned char* bytes_ = nullptr;
  std::size_t size_ = 0;
  const unsigned char* data_ = nullptr;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // Raw little-endian bytes of a tensor (copied).
  void add_raw(const std::string& name, Dtype dtype, std::vector<std::int64_t> shape,
               const void* data, std::size_t nbytes) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    add_entry(name, {dtype, std::move(shape), std::vector<unsigned char>(bytes, bytes + nbytes),
                     nullptr, nbytes});
  }

  // The same, moved in (bytes built for this tensor alone).
  void add_raw(const std::string& name, Dtype dtype, std::vector<std::int64_t> shape,
               std::vector<unsigned char>&& bytes) {
    const std::size_t nbytes = bytes.size();
    add_entry(name, {dtype, std::move(shape), std::move(bytes), nullptr, nbytes});
  }

  // The same, not copied: `data` must stay valid until the file is written
  // (a merge streams mapped inputs into a shard this way).
  void add_borrowed(const std::string& name, Dtype dtype, std::vector<std::int64_t> shape,
                    const unsigned char* data, std::size_t nbytes) {
    add_entry(name, {dtype, std::move(shape), {}, data, nbytes});
  }

  // Moves the tensors of `other` (its metadata aside) after this one's.
  void append(SafetensorsWriter&& other) {
    for (const std::string& name : other.order_)
      add_entry(name, std::move(other.entries_.at(name)));
    other = SafetensorsWriter();
  }

  // Float values stored as F64, F32, F16 or BF16.
  template <class T>
  void add_floats(const std::string& name, std::vector<std::int64_t> shape, const T* values,
                  std::size_t count, Dtype dtype = Dtype::F32) {
    lowbit::detail::require(is_float_dtype(dtype), "SafetensorsWriter: tensor '", name,
                            "': ", dtype_name(dtype), " is not a float dtype");
    std::vector<unsigned char> bytes(count * dtype_size(dtype));
    store_floats(values, count, dtype, bytes.data());
    add_raw(name, dtype, std::move(shape), std::move(bytes));
  }

  // `count` values as a float dtype stores them, into count * dtype_size bytes at `out`.
  template <class T>
  static void store_floats(const T* values, std::size_t count, Dtype dtype, unsigned char* out) {
    for (std::size_t i = 0; i < count; ++i) {
      unsigned char* p = out + i * dtype_size(dtype);
      const double v = static_cast<double>(values[i]);
      if (dtype == Dtype::F64)
        store(p, v);
      else if (dtype == Dtype::F32)
        store(p, static_cast<float>(v));
      else if (dtype == Dtype::F16)
        store(p, float_to_half(static_cast<float>(v)));
      else
        store(p, float_to_bf16(static_cast<float>(v)));
    }
  }

  // Integer values stored as I64, I32, I16, I8, U8 or BOOL (range-checked).
  template <class T>
  void add_ints(const std::string& name, std::vector<std::int64_t> shape, const T* values,
                std::size_t count, Dtype dtype = Dtype::I32) {
    lowbit::detail::require(!is_float_dtype(dtype), "SafetensorsWriter: tensor '", name,
                            "': ", dtype_name(dtype), " is not an integer dtype");
    std::vector<unsigned char> bytes(count * dtype_size(dtype));
    for (std::size_t i = 0; i < count; ++i) {
      const std::int64_t v = static_cast<std::int64_t>(values[i]);
      unsigned char* p = bytes.data() + i * dtype_size(dtype);
      auto fits = [&](std::int64_t lo, std::int64_t hi) {
        lowbit::detail::require(v >= lo && v <= hi, "SafetensorsWriter: tensor '", name, "' value ",
                                v, " does not fit ", dtype_name(dtype));
      };
      switch (dtype) {
        case Dtype::I64:
          store(p, v);
          break;
        case Dtype::I32:
          fits(INT32_MIN, INT32_MAX);
          store(p, static_cast<std::int32_t>(v));
          break;
        case Dtype::I16:
          fits(INT16_MIN, INT16_MAX);
          store(p, static_cast<std::int16_t>(v));
          break;
        case Dtype::I8:
          fits(INT8_MIN, INT8_MAX);
          store(p, static_cast<std::int8_t>(v));
          break;
        case Dtype::U8:
          fits(0, 255);
          store(p, static_cast<std::uint8_t>(v));
          break;
        default:
          fits(0, 1);
          store(p, static_cast<std::uint8_t>(v));
          break;
      }
    }
    add_raw(name, dtype, std::move(shape), bytes.data(), bytes.size());
  }

  // A matrix (any Eigen expression) with shape [rows, cols], row-major.
  template <class Derived>
  void add_matrix(const std::string& name, const Eigen::DenseBase<Derived>& m,
                  Dtype dtype = Dtype::F32) {
    using Scalar = typename Derived::Scalar;
    const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = m;
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(rm.rows()),
                                    static_cast<std::int64_t>(rm.cols())};
    if (is_float_dtype(dtype))
      add_floats(name, std::move(shape), rm.data(), static_cast<std::size_t>(rm.size()), dtype);
    else
      add_ints(name, std::move(shape), rm.data(), static_cast<std::size_t>(rm.size()), dtype);
  }

  template <class T>
  void add_vector(const std::string& name, const std::vector<T>& v, Dtype dtype) {
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(v.size())};
    if (is_float_dtype(dtype))
      add_floats(name, std::move(shape), v.data(), v.size(), dtype);
    else
      add_ints(name, std::move(shape), v.data(), v.size(), dtype);
  }

  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // The tensors added so far, in order, and their data's size in bytes.
  const std::vector<std::string>& names() const { return order_; }
  std::uint64_t data_bytes() const {
    std::uint64_t total = 0;
    for (const auto& entry : entries_) total += entry.second.size;
    return total;
  }

  // The complete file in pieces, each passed to write(data, size) in order
  // (no copy of the tensors): wider dtypes first so every tensor is
  // naturally aligned, header padded with spaces to a multiple of 8.
  template <class Write>
  void write_pieces(Write&& write) const {
    const std::vector<std::string> order = file_order();
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (const std::string& name : order) {
      const Entry& e = entries_.at(name);
      header[name] = {{"dtype", dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.size}}};
      offset += e.size;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    unsigned char length[8];
    for (int i = 0; i < 8; ++i)
      length[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
    write(length, sizeof length);
    write(reinterpret_cast<const unsigned char*>(text.data()), text.size());
    for (const std::string& name : order) {
      const Entry& e = entries_.at(name);
      if (e.size != 0) write(e.bytes(), e.size);
    }
  }

  // The complete file as bytes.
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out;
    out.reserve(data_bytes() + 4096);
    write_pieces([&](const unsigned char* p, std::size_t n) { out.insert(out.end(), p, p + n); });
    return out;
  }

  // Atomically: an interrupted write never leaves a partial file under `path`.
  void write(const std::string& path) const { write_file_atomically(path, bytes()); }

 private:
  struct Entry {
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> owned;  // a copy, or
    const unsigned char* borrowed;     // the caller's bytes
    std::size_t size;
    const unsigned char* bytes() const { return borrowed ? borrowed : owned.data(); }
  };

  void add_entry(const std::string& name, Entry e) {
    lowbit::detail::require(!name.empty() && name != "__metadata__",
                            "SafetensorsWriter: invalid tensor name '", name, "'");
    lowbit::detail::require(entries_.count(name) == 0, "SafetensorsWriter: tensor '", name,
                            "' added twice");
    std::int64_t numel = 1;
    for (std::int64_t d : e.shape) {
      lowbit::detail::require(d >= 0, "SafetensorsWriter: tensor '", name, "' has a negative dim");
      numel *= d;
    }
    lowbit::detail::require(static_cast<std::size_t>(numel) * dtype_size(e.dtype) == e.size,
                            "SafetensorsWriter: tensor '", name, "' holds ", e.size,
                            " bytes, its shape needs ", numel * dtype_size(e.dtype));
    order_.push_back(name);
    entries_.emplace(name, std::move(e));
  }

  template <class T>
  static void store(unsigned char* p, T v) {
    std::memcpy(p, &v, sizeof v);
  }

  std::vector<std::string> file_order() const {
    std::vector<std::string> order = order_;
    std::stable_sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
      return dtype_size(entries_.at(a).dtype) > dtype_size(entries_.at(b).dtype);
    });
    return order;
  }

  std::vector<std::string> order_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lowbit::io
