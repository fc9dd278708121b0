#include "merge.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <lowbit/io/file_bytes.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/hf_export.hpp>
#include <memory>

#include "interrupts.hpp"

namespace lowbit::cli {

namespace {

constexpr const char* kGgufSliceBegin = "lowbit.slice.begin";
constexpr const char* kGgufSliceEnd = "lowbit.slice.end";
constexpr const char* kGgufSliceLayers = "lowbit.slice.n_layers";
constexpr const char* kGgufSliceFingerprint = "lowbit.slice.fingerprint";

bool is_gguf_slice_key(const std::string& key) { return key.rfind("lowbit.slice.", 0) == 0; }

struct Slice {
  std::string path;
  SliceRecord record;
  std::size_t input;  // its place among the SLICE arguments
};

std::string layer_span(int begin, int end) {
  return end - begin == 1 ? "layer " + std::to_string(begin)
                          : "layers " + std::to_string(begin) + ".." + std::to_string(end - 1);
}

// The first key where two fingerprints differ, for the error message.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key()) || b[it.key()] != it.value())
      return it.key() + " is " + it.value().dump() + " there, " +
             (b.contains(it.key()) ? b[it.key()].dump() : "absent") + " here";
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key())) return it.key() + " is absent there";
  return "they agree";
}

// Sorts the slices by their first layer and checks that they come from one
// model and one set of options and cover every layer exactly once.
void check_slices(std::vector<Slice>& slices) {
  std::sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) {
    return a.record.layers.begin < b.record.layers.begin;
  });
  const Slice& first = slices.front();
  const int n = first.record.n_layers;
  int covered = 0;
  const Slice* previous = nullptr;
  for (const Slice& s : slices) {
    const model::LayerRange& r = s.record.layers;
    detail::require(s.record.fingerprint == first.record.fingerprint && s.record.n_layers == n,
                    s.path, ": a slice of another model or other options than ", first.path, " (",
                    first_difference(first.record.fingerprint, s.record.fingerprint), ")");
    detail::require(r.begin >= covered, "two slices hold ",
                    layer_span(r.begin, std::min(covered, r.end)), ": ",
                    previous ? previous->path : "", " and ", s.path);
    detail::require(r.begin == covered, "no slice holds ", layer_span(covered, r.begin),
                    " of the model's ", n, " (", s.path, " starts at layer ", r.begin, ")");
    covered = r.end;
    previous = &s;
  }
  detail::require(covered == n, "no slice holds ", layer_span(covered, n), " of the model's ", n,
                  " (the last, ", previous->path, ", ends before)");
}

SliceRecord parse_record(const nlohmann::json& j, const std::string& where) {
  const auto integer = [&](const nlohmann::json& v, const char* what) {
    detail::require(
        v.is_number_integer() && v.get<long long>() >= 0 && v.get<long long>() < 1000000, where,
        ": '", what, "' must be a layer count or index, got ", v.dump());
    return v.get<int>();
  };
  detail::require(
      j.is_object() && j.contains("layers") && j["layers"].is_array() && j["layers"].size() == 2 &&
          j.contains("n_layers") && j.contains("fingerprint") && j["fingerprint"].is_object(),
      where, ": expected {\"layers\": [A, B], \"n_layers\": N, \"fingerprint\": {...}}");
  SliceRecord r{{integer(j["layers"][0], "layers"), integer(j["layers"][1], "layers")},
                integer(j["n_layers"], "n_layers"),
                j["fingerprint"]};
  detail::require(r.layers.begin < r.layers.end && r.layers.end <= r.n_layers, where, ": layers ",
                  r.layers.begin, ":", r.layers.end, " are not a slice of ", r.n_layers, " layers");
  return r;
}

// --- directories (gptq, awq, bpdq) ---

struct DirectorySlice {
  SliceRecord record;
  std::vector<std::vector<std::string>> groups;
  std::unique_ptr<model::detail::HfTensors> tensors;
};

DirectorySlice read_directory_slice(const std::string& path) {
  const std::string file = path + "/" + kSliceFile;
  detail::require(std::filesystem::is_regular_file(file), path, ": no ", kSliceFile,
                  ": not a slice written by quantize-model --layers");
  const nlohmann::json j = model::detail::read_json_object(file);
  DirectorySlice s;
  s.record = parse_record(j, file);
  detail::require(j.contains("tensors") && j["tensors"].is_array(), file,
                  ": 'tensors' must be an array of arrays of tensor names");
  for (const nlohmann::json& group : j["tensors"]) {
    detail::require(group.is_array() && !group.empty(), file,
                    ": 'tensors' must be an array of arrays of tensor names");
    std::vector<std::string> names;
    for (const nlohmann::json& name : group) {
      detail::require(name.is_string(), file, ": a tensor name must be a string, got ",
                      name.dump());
      names.push_back(name.get<std::string>());
    }
    s.groups.push_back(std::move(names));
  }
  s.tensors = std::make_unique<model::detail::HfTensors>(path);
  return s;
}

// The files of a directory slice besides its tensors and record: configs,
// tokenizer; the same in every slice, and copied as they are.
std::vector<std::string> plain_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard =
        name.rfind("model", 0) == 0 &&
        (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0);
    if (shard || name == "model.safetensors.index.json" || name == kSliceFile) continue;
    detail::require(entry.is_regular_file(), entry.path().string(), ": expected a regular file");
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<unsigned char> file_contents(const std::string& path) {
  const io::MappedBytes bytes = io::MappedBytes::map(path);
  return {bytes.data(), bytes.data() + bytes.size()};
}

void merge_directories(const std::string& out, const std::vector<std::string>& paths) {
  std::vector<DirectorySlice> inputs;
  std::vector<Slice> slices;
  for (const std::string& p : paths) {
    inputs.push_back(read_directory_slice(p));
    slices.push_back({p, inputs.back().record, slices.size()});
  }
  check_slices(slices);
  const std::string& first = slices[0].path;
  const nlohmann::json& shard_size = slices[0].record.fingerprint["max_shard_bytes"];
  detail::require(shard_size.is_number_unsigned() && shard_size.get<std::uint64_t>() > 0, first,
                  "/", kSliceFile, ": fingerprint.max_shard_bytes must be a positive integer");
  const std::vector<std::string> files = plain_files(first);
  for (const Slice& s : slices)
    detail::require(plain_files(s.path) == files, s.path, ": holds other files than ", first,
                    " besides its tensors");
  io::StagedDirectory directory(out);
  model::HfShardWriter shards(shard_size.get<std::uint64_t>(), directory);
  // Every slice stays mapped until the shards holding its tensors are written.
  for (const Slice& s : slices)
    for (const std::vector<std::string>& group : inputs[s.input].groups) {
      io::SafetensorsWriter tensors;
      for (const std::string& name : group) {
        const io::SafetensorsReader& file = inputs[s.input].tensors->shard_of(name);
        const io::TensorInfo& t = file.info(name);
        tensors.add_borrowed(name, t.dtype, t.shape, file.data(name), t.end - t.begin);
      }
      shards.add(std::move(tensors));
    }
  shards.finish();
  for (const std::string& name : files) {
    const std::vector<unsigned char> bytes = file_contents(first + "/" + name);
    for (const Slice& s : slices)
      detail::require(file_contents(s.path + "/" + name) == bytes, s.path, "/", name,
                      " differs from ", first, "/", name);
    directory.add(name, bytes);
  }
  const HoldInterrupts hold;
  directory.commit();
}

// --- GGUF ---

SliceRecord read_gguf_record(const io::GgufReader& file) {
  const auto number = [&](const char* key) {
    detail::require(file.contains(key), file.source(), ": no key ", key,
                    ": not a slice written by quantize-model --layers");
    return file.get<std::uint32_t>(key);
  };
  const std::uint32_t begin = number(kGgufSliceBegin), end = number(kGgufSliceEnd),
                      n = number(kGgufSliceLayers);
  detail::require(file.contains(kGgufSliceFingerprint), file.source(), ": no key ",
                  kGgufSliceFingerprint);
  const nlohmann::json fingerprint =
      nlohmann::json::parse(file.get<std::string>(kGgufSliceFingerprint), nullptr, false);
  return parse_record({{"layers", {begin, end}}, {"n_layers", n}, {"fingerprint", fingerprint}},
                      file.source());
}

void merge_gguf(const std::string& out, const std::vector<std::string>& paths) {
  std::vector<io::GgufReader> inputs;
  std::vector<Slice> slices;
  for (const std::string& p : paths) {
    inputs.emplace_back(p);
    slices.push_back({p, read_gguf_record(inputs.back()), slices.size()});
  }
  check_slices(slices);
  std::vector<const io::GgufReader*> files;  // in layer order
  for (const Slice& s : slices) files.push_back(&inputs[s.input]);
  const io::GgufReader& first = *files.front();
  io::GgufWriter writer(static_cast<std::uint32_t>(first.alignment()));
  for (const io::GgufReader* file : files) {
    const io::GgufReader& f = *file;
    detail::require(f.keys() == first.keys(), f.source(), ": its metadata keys differ from ",
                    first.source(), "'s");
    for (const std::string& key : first.keys())
      detail::require(is_gguf_slice_key(key) || f.value(key) == first.value(key), f.source(),
                      ": metadata key ", key, " differs from ", first.source(), "'s");
  }
  for (const std::string& key : first.keys())
    if (!is_gguf_slice_key(key) && key != "general.alignment") writer.set(key, first.value(key));
  for (const io::GgufReader* f : files)
    for (const io::GgufTensorInfo& t : f->tensors()) writer.declare_tensor(t.name, t.type, t.shape);
  io::StagedFile staged(out);
  writer.start(staged);
  for (const io::GgufReader* f : files)
    for (const io::GgufTensorInfo& t : f->tensors())
      writer.add_tensor(t.name, t.type, t.shape, f->data(t.name), t.bytes);
  writer.finish();
  const HoldInterrupts hold;
  staged.commit();
}

int run_merge(const Options& o) {
  const std::string out = o.text("out");
  const std::vector<std::string>& paths = o.operands();
  if (paths.empty()) throw UsageError("merge: no slices given (lowbit merge OUT SLICE...)");
  std::size_t directories = 0;
  for (const std::string& p : paths) {
    detail::require(std::filesystem::exists(p), p, ": no such slice");
    directories += std::filesystem::is_directory(p);
  }
  detail::require(directories == 0 || directories == paths.size(),
                  "merge: the slices mix formats: directories (gptq, awq, bpdq) and GGUF files; ",
                  "give the slices of one quantize-model --format");
  if (directories == 0) {
    merge_gguf(out, paths);
  } else {
    std::error_code ec;
    const auto status = std::filesystem::symlink_status(out, ec);
    if (std::filesystem::exists(status) &&
        (!std::filesystem::is_directory(status) || !std::filesystem::is_empty(out, ec)))
      throw UsageError("merge: option --out: '" + out +
                       "' exists and is not an empty directory; merge writes a model directory "
                       "there (remove it or name another)");
    merge_directories(out, paths);
  }
  std::cerr << "merged " << paths.size() << " slices into " << out << "\n";
  return 0;
}

}  // namespace

std::vector<unsigned char> slice_file_bytes(const SliceRecord& record,
                                            const std::vector<std::vector<std::string>>& groups) {
  return model::hf_json_bytes({{"layers", {record.layers.begin, record.layers.end}},
                               {"n_layers", record.n_layers},
                               {"fingerprint", record.fingerprint},
                               {"tensors", groups}});
}

void set_gguf_slice_keys(io::GgufWriter& out, const SliceRecord& record) {
  out.set(kGgufSliceBegin, static_cast<std::uint32_t>(record.layers.begin));
  out.set(kGgufSliceEnd, static_cast<std::uint32_t>(record.layers.end));
  out.set(kGgufSliceLayers, static_cast<std::uint32_t>(record.n_layers));
  out.set(kGgufSliceFingerprint, record.fingerprint.dump());
}

Command merge_command() {
  return {"merge",
          "joins the slices that quantize-model --layers A:B wrote (each SLICE a directory of\n"
          "--format gptq, awq or bpdq, or a GGUF file; any order) into OUT, the checkpoint a\n"
          "single quantize-model run with the same options writes, byte for byte. The slices\n"
          "must come from one model and one set of options and cover every layer exactly once.\n"
          "OUT may also come first without --out. Tensors go from the memory-mapped slices\n"
          "to OUT without a copy in memory; OUT appears whole or not at all.",
          {required_option("out")},
          run_merge,
          "SLICE..."};
}

}  // namespace lowbit::cli
