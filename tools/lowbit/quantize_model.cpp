#include "quantize_model.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/model/gguf_model.hpp>
#include <lowbit/model/gguf_tokenizer.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/hf_export.hpp>
#include <lowbit/model/llama2c.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <lowbit/model/task_gradients.hpp>
#include <sstream>

#include "interrupts.hpp"
#include "merge.hpp"
#include "methods.hpp"
#include "options.hpp"

namespace lowbit::cli {
namespace {

// One line per step when stderr is not a terminal; a redrawn bar when it is.
class Progress {
 public:
  explicit Progress(int total) : total_(total), tty_(isatty(fileno(stderr)) != 0) {}
  void step(const std::string& what) {
    const double elapsed = seconds();
    const double left = done_ == 0 ? 0.0 : elapsed / done_ * (total_ - done_);
    char line[160];
    if (tty_) {
      constexpr int width = 30;
      const int filled = width * done_ / total_;
      std::snprintf(line, sizeof line, "\r[%s%s] %3d%%  %-24s  %5.1fs left  ",
                    std::string(static_cast<std::size_t>(filled), '#').c_str(),
                    std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                    100 * done_ / total_, what.c_str(), left);
    } else {
      std::snprintf(line, sizeof line, "[%d/%d] %s (%.1fs elapsed, %.1fs left)\n", done_ + 1,
                    total_, what.c_str(), elapsed, left);
    }
    std::cerr << line << std::flush;
    ++done_;
  }
  void finish() {
    if (tty_) std::cerr << "\r" << std::string(80, ' ') << "\r";
    std::cerr << "quantized " << total_ << " groups of linears in " << seconds() << " s\n";
  }

 private:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  int total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// The command line, checked before the model is loaded.
struct ModelJob {
  std::string model, out, format, calib;
  std::string task;  // --task: TACQ's task sequences (default: the calibration's)
  model::QuantSpec spec;
  model::Propagation propagation = model::Propagation::quantized;
  int samples = 0, length = 0;
  std::uint64_t max_shard_bytes = 0;
  std::optional<model::LayerRange> layers = std::nullopt;  // --layers: a slice for lowbit merge
  std::string scratch_dir{};  // --scratch-dir: where the residual stream's scratch file goes
};

// --scratch-dir, checked before any work; by default the directory that
// receives --out (the disk the output needs room on anyway; $TMPDIR is often
// a small tmpfs, i.e. RAM), whose problems the output's own staging reports
// first, or $TMPDIR for an --out that is a device or a pipe.
std::string scratch_directory(const Options& o, const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!o.has("scratch-dir")) {
    const fs::file_status target = fs::status(out, ec);
    if (fs::is_character_file(target) || fs::is_fifo(target))
      return fs::temp_directory_path(ec).string();
    const fs::path parent = fs::path(out).lexically_normal().parent_path();
    return parent.empty() ? "." : parent.string();
  }
  const std::string dir = o.text("scratch-dir");
  const std::string what = "quantize-model: option --scratch-dir: '" + dir + "'";
  if (!fs::is_directory(dir, ec))
    throw UsageError(what +
                     " is not a directory (the calibration's residual stream is kept in a "
                     "scratch file there)");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UsageError(what + " is not writable (" + std::strerror(errno) + ")");
  return dir;
}

// --format gguf: every linear in --type (default q4_K) by GPTQ or AWQ
// into the type or by llama.cpp's quantizer (the methods gptq, awq and rtn
// name them), the embeddings by llama.cpp's quantizer, as `llama-quantize
// --pure` stores them.
ModelJob parse_gguf_job(const Options& o, ModelJob job) {
  for (const char* name : {"bits", "group-size", "sym", "max-shard-size"})
    if (o.has(name))
      throw UsageError(std::string("quantize-model: --") + name +
                       " does not apply with --format gguf (--gguf-type fixes the grid)");
  if (job.spec.method == "gptq")
    job.spec.method = "gptq-gguf";
  else if (job.spec.method == "awq")
    job.spec.method = "awq-gguf";
  else if (job.spec.method == "rtn")
    job.spec.method = "llama.cpp";
  else
    throw UsageError(
        "quantize-model: --format gguf takes --method gptq (GPTQ into the type), awq (AWQ's "
        "scales into the type) or rtn (llama.cpp's quantizer, calibration as its importance "
        "matrix), not '" +
        job.spec.method + "'");
  if (job.spec.act_order && job.spec.method != "gptq-gguf")
    throw UsageError("quantize-model: --act-order applies to --method gptq only");
  // --type is the name, --gguf-type the single-layer tool's: either.
  if (o.has("type") && o.has("gguf-type"))
    throw UsageError("quantize-model: give --type or --gguf-type, not both");
  const std::optional<GgmlType> type = gguf_type(o, o.has("type") ? "type" : "gguf-type");
  job.spec.ggml_type = type ? *type : GgmlType::q4_k;
  return job;
}

// The directory formats write a new directory (or fill an empty one; not
// through a symbolic link, which the final rename would replace).
void check_directory_output(const ModelJob& job, const Options& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(job.out, ec);
  if (fs::exists(status) && (!fs::is_directory(status) || !fs::is_empty(job.out, ec)))
    throw UsageError("quantize-model: option --out: '" + job.out +
                     "' exists and is not an empty directory; the " + job.format +
                     " format writes a model directory there (remove it or name another)");
  try {
    model::parse_byte_size(o.text("max-shard-size"));
  } catch (const Error& e) {
    throw UsageError(std::string("quantize-model: option --max-shard-size: ") + e.what());
  }
}

bool is_tacq(const std::string& method) {
  return method == "tacq" || method == "tacq-gradient-free";
}

// --method tacq and tacq-gradient-free: only --format dequantized holds the
// kept fp16 weights (an engine loading a GPTQ checkpoint with extra tensors
// would drop them silently); TACQ's options as `lowbit quantize tacq` names them.
void parse_tacq_options(const Options& o, ModelJob& job) {
  if (!is_tacq(job.spec.method)) {
    for (const char* name : {"task", "fraction", "outlier-dtype", "saliency-from"})
      if (o.has(name))
        throw UsageError(std::string("quantize-model: option --") + name +
                         " applies to --method tacq" +
                         (std::string(name) == "task" ? "" : " and tacq-gradient-free") +
                         " only, not '" + job.spec.method + "'");
    return;
  }
  if (job.format != "dequantized")
    throw UsageError("quantize-model: --method " + job.spec.method +
                     " needs --format dequantized: TACQ keeps some weights in 16 bits beside the "
                     "grid, which the " +
                     job.format + " format cannot hold (its loaders would drop them)");
  if (o.has("task") && job.spec.method != "tacq")
    throw UsageError(
        "quantize-model: option --task applies to --method tacq only (tacq-gradient-free "
        "uses no task gradients)");
  job.task = o.has("task") ? o.text("task") : "";
  job.spec.tacq_fraction = o.real("fraction");
  job.spec.outlier_precision =
      o.text("outlier-dtype") == "f32" ? OutlierPrecision::f32 : OutlierPrecision::f16;
  job.spec.saliency_reference =
      o.text("saliency-from") == "rtn" ? SaliencyReference::rtn : SaliencyReference::gptq;
}

ModelJob parse_job(const Options& o) {
  ModelJob job{o.text("model"),
               o.text("out"),
               o.text("format"),
               o.has("calib") ? o.text("calib") : "",
               "",
               {o.text("method"), o.integer("bits"), o.integer("group-size"), o.flag("act-order")},
               model::Propagation::quantized,
               o.integer("calib-samples"),
               o.integer("calib-length")};
  if (job.length < 2) throw UsageError("quantize-model: option --calib-length must be >= 2");
  if (o.text("calibration") == "float") job.propagation = model::Propagation::float_model;
  if (o.has("layers")) {
    if (job.propagation != model::Propagation::float_model)
      throw UsageError(
          "quantize-model: option --layers needs --calibration float: sequential calibration "
          "calibrates each layer on the quantized layers before it, which a slice does not run");
    const std::pair<int, int> slice = *parse_layer_slice(o.text("layers"));
    job.layers = model::LayerRange{slice.first, slice.second};
  }
  job.scratch_dir = scratch_directory(o, job.out);
  parse_tacq_options(o, job);
  if (job.format == "gguf") return parse_gguf_job(o, std::move(job));
  for (const char* name : {"type", "gguf-type"})
    if (o.has(name))
      throw UsageError(std::string("quantize-model: --") + name + " needs --format gguf");
  if (job.format == "gptq" && job.spec.bits != 2 && job.spec.bits != 3 && job.spec.bits != 4 &&
      job.spec.bits != 8)
    throw UsageError(
        "quantize-model: option --bits: the gptq format packs 2, 3, 4 or 8 bits, got " +
        std::to_string(job.spec.bits));
  if (job.format == "awq" && job.spec.bits != 4)
    throw UsageError("quantize-model: option --bits: the awq format (GEMM) packs 4 bits, got " +
                     std::to_string(job.spec.bits));
  // vLLM's AWQ layers size their scales by in / group_size: -1 has no meaning there.
  if (job.format == "awq" && job.spec.group_size < 1)
    throw UsageError(
        "quantize-model: option --group-size: the awq format needs groups "
        "(e.g. 128), got " +
        std::to_string(job.spec.group_size));
  const std::vector<std::string>& methods = model::checkpoint_methods();
  if (std::find(methods.begin(), methods.end(), job.spec.method) == methods.end() &&
      !is_tacq(job.spec.method)) {
    std::string known;
    for (const std::string& m : methods) known += (known.empty() ? "" : ", ") + m;
    throw UsageError("quantize-model: --method '" + job.spec.method +
                     "' has no plain checkpoint form; use one of: " + known +
                     " (and tacq, tacq-gradient-free with --format dequantized)");
  }
  if (job.format != "bpdq" && job.spec.method == "bpdq")
    throw UsageError(
        "quantize-model: bpdq results are bit planes on a variable grid; use --format bpdq");
  if (job.format == "gptq" && job.spec.method == "awq")
    throw UsageError(
        "quantize-model: awq's grid has zero points of 0, which GPTQ v1 readers misread; use "
        "--format awq");
  if ((job.spec.method == "bpdq" || job.format == "bpdq") && job.spec.bits > 4)
    throw UsageError("quantize-model: option --bits: bpdq takes 1..4 bit planes, got " +
                     std::to_string(job.spec.bits));
  // BPDQ's loader (BPDQTorchLinear) takes these group sizes only.
  const int g = job.spec.group_size;
  if (job.format == "bpdq" && g != 32 && g != 64 && g != 128 && g != 256)
    throw UsageError(
        "quantize-model: option --group-size: the bpdq format takes 32, 64, 128 or "
        "256, got " +
        std::to_string(g));
  if (job.format != "gptq" && job.format != "dequantized" && job.spec.act_order)
    throw UsageError("quantize-model: --act-order groups need a g_idx, which the " + job.format +
                     " format cannot hold");
  if (job.spec.method == "bpdq" && o.flag("sym"))
    throw UsageError("quantize-model: option --sym: bpdq has no uniform grid to make symmetric");
  job.spec.grid.sym = o.flag("sym");
  check_directory_output(job, o);
  job.max_shard_bytes = model::parse_byte_size(o.text("max-shard-size"));
  // v1 stores zero - 1: see lowbit/model/hf_export.hpp.
  job.spec.grid.positive_zero = job.format == "gptq";
  return job;
}

// A directory is a Hugging Face model; a file, a llama2.c checkpoint.
model::ModelSource open_model(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    const std::string method = model::hf_quantization_method(path);
    detail::require(method.empty(), path, ": holds ", method,
                    "-quantized linears; quantize-model needs the float model");
    return model::open_hf(path);
  }
  return model::open_llama2c(path);
}

// Token ids, one sequence per line, separated by whitespace.
std::vector<model::Sequence> read_token_text(const std::string& path) {
  std::ifstream in(path);
  detail::require(static_cast<bool>(in), path, ": cannot open");
  std::vector<model::Sequence> sequences;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    model::Sequence tokens;
    for (std::string word; words >> word;) {
      std::size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
      }
      detail::require(used == word.size() && id >= 0 && id <= INT32_MAX, path, ":", number, ": '",
                      word, "' is not a token id");
      tokens.push_back(static_cast<int>(id));
    }
    if (!tokens.empty()) sequences.push_back(std::move(tokens));
  }
  return sequences;
}

bool is_safetensors(const std::string& path) {
  return path.size() >= 12 && path.substr(path.size() - 12) == ".safetensors";
}

// The rows of a safetensors token tensor (I32 or I64, [sequences, length]).
std::vector<model::Sequence> read_token_rows(const io::SafetensorsReader& file,
                                             const std::string& path, const std::string& name) {
  const io::TensorInfo& ids = file.require_rank(name, 2);
  detail::require(ids.dtype == io::Dtype::I32 || ids.dtype == io::Dtype::I64, path, ": tensor '",
                  name, "' must be I32 or I64, has ", io::dtype_name(ids.dtype));
  const std::vector<std::int32_t> flat = file.ints(name);
  std::vector<model::Sequence> rows;
  for (std::int64_t s = 0; s < ids.shape[0]; ++s)
    rows.emplace_back(flat.begin() + s * ids.shape[1], flat.begin() + (s + 1) * ids.shape[1]);
  return rows;
}

// Token ids as --calib and --task take them: safetensors input_ids or text;
// at least one sequence.
std::vector<model::Sequence> read_token_ids(const std::string& path) {
  std::vector<model::Sequence> sequences =
      is_safetensors(path) ? read_token_rows(io::SafetensorsReader(path), path, "input_ids")
                           : read_token_text(path);
  detail::require(!sequences.empty(), path, ": holds no token sequences");
  return sequences;
}

void check_vocabulary(const std::string& path, const std::vector<model::Sequence>& sequences,
                      const model::Config& c) {
  for (std::size_t s = 0; s < sequences.size(); ++s)
    for (int id : sequences[s])
      detail::require(id >= 0 && id < c.vocab_size, path, ": sequence ", s, " holds token ", id,
                      ", outside the vocabulary of ", c.vocab_size);
}

// The calibration sequences of --calib: the first --calib-samples sequences,
// each cut to --calib-length tokens, every id within the vocabulary.
std::vector<model::Sequence> read_calibration(const ModelJob& job, const model::Config& c) {
  std::vector<model::Sequence> sequences = read_token_ids(job.calib);
  if (static_cast<int>(sequences.size()) > job.samples) sequences.resize(std::size_t(job.samples));
  const int length = std::min(job.length, c.seq_len);
  for (model::Sequence& sequence : sequences)
    if (static_cast<int>(sequence.size()) > length) sequence.resize(std::size_t(length));
  check_vocabulary(job.calib, sequences, c);
  return sequences;
}

// TACQ's task of --task, whole sequences (each within the model's context).
// A safetensors `labels` tensor follows Hugging Face's convention: -100 is
// a position the loss skips, any other value must be the token there; it
// becomes TaskSample::mask (position t counts the prediction of token t).
std::vector<model::TaskSample> read_task(const std::string& path, const model::Config& c) {
  const std::vector<model::Sequence> sequences = read_token_ids(path);
  check_vocabulary(path, sequences, c);
  std::vector<model::Sequence> labels;
  if (is_safetensors(path)) {
    const io::SafetensorsReader file(path);
    if (file.contains("labels")) {
      detail::require(file.info("labels").shape == file.info("input_ids").shape, path,
                      ": tensor 'labels' must have the shape of 'input_ids'");
      labels = read_token_rows(file, path, "labels");
    }
  }
  std::vector<model::TaskSample> task;
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const model::Sequence& tokens = sequences[s];
    detail::require(tokens.size() >= 2 && tokens.size() <= std::size_t(c.seq_len), path,
                    ": sequence ", s, " has ", tokens.size(), " tokens; TACQ's task takes 2 to ",
                    c.seq_len, " (the model's context)");
    model::TaskSample sample{tokens, {}};
    if (!labels.empty()) {
      bool counted = false;
      for (std::size_t t = 0; t < tokens.size(); ++t) {
        const int label = labels[s][t];
        detail::require(label == -100 || label == tokens[t], path, ": labels[", s, "][", t, "] is ",
                        label, ": expected -100 (not in the loss) or the token there, ", tokens[t]);
        sample.mask.push_back(label != -100);
        counted = counted || (t > 0 && label != -100);
      }
      detail::require(counted, path, ": sequence ", s,
                      " has no label after its first token (all -100): it counts no prediction");
    }
    task.push_back(std::move(sample));
  }
  return task;
}

// The calibration file by content (FNV-1a), as slices from machines with
// other paths to it must agree; "sampled" without one.
std::string calibration_identity(const std::string& path) {
  if (path.empty()) return "sampled by the float model";
  const io::MappedBytes bytes = io::MappedBytes::map(path);
  std::uint64_t hash = 14695981039346656037ull;
  for (std::size_t i = 0; i < bytes.size(); ++i) hash = (hash ^ bytes.data()[i]) * 1099511628211ull;
  char text[40];
  std::snprintf(text, sizeof text, "fnv1a64:%016llx", static_cast<unsigned long long>(hash));
  return text;
}

// A method that reads no activations (rtn into a checkpoint) gets none: a
// --calib file is still checked, but no sequence is sampled or run.
std::vector<model::Sequence> calibration_sequences(const ModelJob& job,
                                                   const model::ModelSource& source) {
  const bool reads = model::activation_use(job.spec.method) != model::ActivationUse::nothing;
  if (!job.calib.empty()) {
    std::vector<model::Sequence> sequences = read_calibration(job, source.globals.config);
    if (!reads) sequences.clear();
    return sequences;
  }
  if (!reads) {
    std::cerr << "quantize-model: --method " << job.spec.method
              << " reads no calibration: no sequences sampled\n";
    return {};
  }
  const int length = std::min(job.length, source.globals.config.seq_len);
  std::cerr << "quantize-model: no --calib given: calibrating on " << job.samples
            << " sequences of " << length << " tokens the float model samples itself\n";
  return model::sample_sequences(source, job.samples, length, 1.0f, 1);
}

// What a slice is, for lowbit merge: its layers and what every slice of the
// checkpoint must share (the model, and every option that changes the output).
SliceRecord slice_record(const ModelJob& job, const model::Model& globals) {
  const model::Config& c = globals.config;
  nlohmann::json fingerprint = {
      {"model", model::hf_llama_config(c, globals.tied())},
      {"format", job.format},
      {"method", job.spec.method},
      {"bits", job.spec.bits},
      {"group_size", job.spec.group_size},
      {"act_order", job.spec.act_order},
      {"sym", job.spec.grid.sym},
      {"gguf_type", job.spec.ggml_type ? ggml_type_name(*job.spec.ggml_type) : ""},
      {"max_shard_bytes", job.max_shard_bytes},
      {"calibration", "float"},
      {"calib_samples", job.samples},
      {"calib_length", job.length},
      {"calib", calibration_identity(job.calib)}};
  if (is_tacq(job.spec.method))
    fingerprint["tacq"] = {
        {"fraction", job.spec.tacq_fraction},
        {"outlier_dtype", job.spec.outlier_precision == OutlierPrecision::f16 ? "f16" : "f32"},
        {"saliency_from", job.spec.saliency_reference == SaliencyReference::gptq ? "gptq" : "rtn"},
        {"task", job.task.empty() ? "the calibration sequences" : calibration_identity(job.task)}};
  if (std::filesystem::is_directory(job.model))
    fingerprint["source_config"] = model::detail::read_json_object(job.model + "/config.json");
  return {*job.layers, c.n_layers, fingerprint};
}

using LayerDone = std::function<void(int layer, const model::Layer& quantized)>;

// TACQ's G over `task`: the backward pass of each sample runs through every
// layer, so the whole float model is loaded for it (in F32) and dropped
// after; G (4 bytes per linear weight) stays while the layers are quantized.
model::TaskGradients tacq_task_gradients(const model::ModelSource& source,
                                         const std::vector<model::TaskSample>& task,
                                         const std::string& from) {
  std::cerr << "quantize-model: task gradients of the float model over " << task.size()
            << " sequences (" << from << ")\n";
  const model::Model float_model = model::load_all(source);
  const model::TaskGradients g =
      model::task_gradients(float_model, task, [](std::size_t done, std::size_t total) {
        if (done == total || done % 8 == 0)
          std::cerr << "task gradients: " << done << "/" << total << " sequences\n";
      });
  std::cerr << "task gradients: mean loss " << g.loss << "\n";
  return g;
}

// Quantizes the model one layer at a time, each read from the checkpoint
// when its turn comes and dropped after: `linear_done` receives every linear
// as it is quantized, `layer_done` the layer after (its norms and biases,
// which the checkpoint methods leave alone). Returns the bits per weight.
double quantize_layers(const model::ModelSource& source, const ModelJob& job,
                       const model::QuantDone& linear_done, const LayerDone& layer_done) {
  const model::Config& c = source.globals.config;
  // --task before the calibration and the slow part, so its errors come first.
  const std::vector<model::TaskSample> task =
      job.task.empty() ? std::vector<model::TaskSample>{} : read_task(job.task, c);
  const std::vector<model::Sequence> calibration = calibration_sequences(job, source);
  model::SequentialQuantizer quantizer(
      c, model::embed_stream(source.globals, calibration, {job.scratch_dir}), job.spec,
      job.propagation);
  std::optional<model::TaskGradients> gradients;
  if (job.spec.method == "tacq") {
    gradients = job.task.empty() ? tacq_task_gradients(source, model::next_token_task(calibration),
                                                       "the calibration's, next-token loss")
                                 : tacq_task_gradients(source, task, job.task);
    quantizer.use_task_gradients(&*gradients);
  }
  const model::LayerRange layers = job.layers.value_or(model::LayerRange{});
  const int end = std::min(layers.end, c.n_layers);
  Progress progress((end - layers.begin) * static_cast<int>(model::linear_groups().size()));
  for (int l = 0; l < end; ++l) {
    if (!layers.contains(l)) {  // a later slice's inputs: the float forward only
      std::cerr << "layer " << l << ": the float forward only (before --layers)\n";
      quantizer.skip_next(source.layer(l));
      continue;
    }
    const model::Layer quantized = quantizer.quantize_next(
        source.layer(l),
        [&](int layer, const std::string& names) {
          progress.step("layer " + std::to_string(layer) + " " + names);
        },
        linear_done);
    layer_done(l, quantized);
  }
  progress.finish();
  return quantizer.bits_per_weight();
}

// --format gptq, awq, bpdq or dequantized: a Hugging Face model directory
// (lowbit/model/hf_export.hpp).
void write_hf_directory(const ModelJob& job, const model::ModelSource& padded) {
  model::HfQuantization quant;
  quant.format = job.format;
  quant.bits = job.spec.bits;
  quant.group_size = job.spec.group_size;
  quant.desc_act = job.spec.act_order;
  quant.sym = job.spec.grid.sym;
  quant.damp_percent = DampingConfig{}.percdamp;  // what the methods use
  // Shards are written as they fill, into OUT.tmpPID, renamed to OUT at the end.
  io::StagedDirectory directory(job.out);
  model::HfDirectoryWriter out(
      padded.globals, std::filesystem::is_directory(job.model) ? job.model : "", quant,
      job.max_shard_bytes, directory, job.layers.value_or(model::LayerRange{}));
  const double bits_per_weight = quantize_layers(
      padded, job,
      [&](int layer, model::LinearKind kind, const model::QuantizedLinear& r) {
        if (job.format == "dequantized")
          out.add_linear(layer, kind, model::effective_weight(r));
        else if (job.format == "bpdq")
          out.add_linear(layer, kind, *r.planes);
        else
          out.add_linear(layer, kind, *r.uniform);
      },
      [&](int layer, const model::Layer& quantized) { out.add_layer_rest(layer, quantized); });
  out.finish();
  if (job.layers)
    directory.add(kSliceFile,
                  slice_file_bytes(slice_record(job, padded.globals), out.tensor_groups()));
  {
    const HoldInterrupts hold;
    directory.commit();
  }
  std::cerr << "wrote " << job.out << "/ (" << bits_per_weight
            << " bits per weight over the linears"
            << (job.format == "dequantized" ? " as quantized; stored dequantized, in float" : "")
            << ")\n";
}

// --format gguf (model/gguf_model.hpp): one file llama.cpp loads.
void write_gguf(const ModelJob& job, const model::ModelSource& padded) {
  const model::Config& c = padded.globals.config;
  const GgmlType type = *job.spec.ggml_type;
  io::GgufWriter out;
  model::add_gguf_metadata(out, c, type, std::filesystem::path(job.model).stem().string());
  // A model directory's tokenizer before the slow part, so its errors come first.
  const bool tokenizer = std::filesystem::is_directory(job.model) &&
                         model::add_gguf_tokenizer(out, job.model, c.vocab_size);
  if (!tokenizer) model::add_gguf_no_tokenizer(out);
  out.set("general.quantized_by", "lowbit quantize-model --method " + job.spec.method);
  // Every tensor is known before quantizing, so the header goes first and
  // each tensor into OUT.tmpPID as it comes: the output never sits in memory.
  const model::LayerRange layers = job.layers.value_or(model::LayerRange{});
  model::declare_gguf_tensors(out, padded.globals, type, padded.layer(0), layers);
  if (job.layers) set_gguf_slice_keys(out, slice_record(job, padded.globals));
  io::StagedFile file(job.out);
  out.start(file);
  if (layers.holds_globals()) model::add_gguf_globals(out, padded.globals, type);
  const double bits_per_weight = quantize_layers(
      padded, job,
      [&](int layer, model::LinearKind kind, const model::QuantizedLinear& r) {
        model::add_gguf_linear(out, c, layer, kind, r);
      },
      [&](int layer, const model::Layer& quantized) {
        model::add_gguf_layer_vectors(out, c, layer, quantized);
      });
  out.finish();
  {
    const HoldInterrupts hold;
    file.commit();
  }
  std::cerr << "wrote " << job.out << " (" << ggml_type_name(type) << ", " << bits_per_weight
            << " bits per weight over the linears"
            << (tokenizer ? "" : "; no tokenizer: llama.cpp runs it on token ids") << ")\n";
}

int run_quantize_model(const Options& options) {
  const ModelJob job = parse_job(options);
  // Decoding-size products and small layers: more threads cost more than they
  // save unless asked for (the results are the same for any thread count).
  apply_threads(options);
  // Zero hidden units (exact) up to a multiple of 64: whole groups, whole
  // ggml block-32 rows. (One copy of the embeddings, not two.)
  const model::ModelSource padded = model::pad_hidden(open_model(job.model), 64);
  const int n_layers = padded.globals.config.n_layers;
  if (job.layers && job.layers->end > n_layers)
    throw UsageError("quantize-model: option --layers: " + options.text("layers") +
                     " reaches past the model's " + std::to_string(n_layers) +
                     " layers (A:B with B <= " + std::to_string(n_layers) + ")");
  if (job.format == "gguf")
    write_gguf(job, padded);
  else
    write_hf_directory(job, padded);
  return 0;
}

}  // namespace

Command quantize_model_command() {
  return {
      "quantize-model",
      "every linear of a llama2.c checkpoint (a file) or a Hugging Face model directory\n"
      "(LLaMA, Mistral, Qwen2; safetensors, sharded or not, in F32, F16 or BF16)\n"
      "quantized layer by layer, each layer read when its turn comes. --format gptq writes\n"
      "the Hugging Face GPTQ (v1) model directory OUT that transformers, vLLM and GPTQModel\n"
      "load: config.json with quantization_config, quantize_config.json, safetensors\n"
      "shards of at most --max-shard-size, the source's tokenizer files; other tensors in\n"
      "the source's dtype (F16 from llama2.c); every zero point >= 1, as v1 readers need.\n"
      "--format awq writes the same directory with AutoAWQ's GEMM layout (4 bits; vLLM,\n"
      "transformers and AutoAWQ load it), quant_config.json, other tensors in F16; with\n"
      "--method awq the scales are folded into the norms, v_proj (when every head has its\n"
      "own values) and up_proj, as AutoAWQ's checkpoints hold them.\n"
      "--format bpdq writes the same directory in BPDQ's layout (planes B, coefficients c in\n"
      "bf16; 1..4 planes, group size 32..256) that BPDQ's GPTQModel loads.\n"
      "--format gguf writes a GGUF file\n"
      "llama.cpp loads, with a model directory's tokenizer (tokenizer.model or\n"
      "tokenizer.json), every matrix in --type (or --gguf-type; default q4_K) with\n"
      "llama.cpp's fallback for rows its blocks do not divide; --method gptq quantizes\n"
      "into that type with GPTQ, awq with AWQ's scales (folded into the norms), rtn with\n"
      "llama.cpp's quantizer. Calibration: the token ids of --calib, else sequences the\n"
      "float model samples itself (rtn into a directory reads none); --calibration\n"
      "sequential calibrates each layer on the outputs of the quantized layers before it,\n"
      "float on the float model's. The hidden dimension is padded with zero units to a\n"
      "multiple of 64 (exact). Methods: the ones whose result is a plain uniform or\n"
      "bit-plane linear.\n"
      "--format dequantized writes the directory of the source model (its config.json,\n"
      "tokenizer files, tensor names, shards; no quantization_config) with every linear's\n"
      "effective weights, scale x (q - zero) plus TACQ's kept weights, in the source's\n"
      "dtype (F32 for llama2.c): any float loader runs the quantized model; no storage saved.\n"
      "--method tacq (TACQ with the task gradients of the float model; --task FILE: token ids\n"
      "as --calib takes them, safetensors with optional labels, -100 = not in the loss;\n"
      "default the calibration sequences, next-token loss) and tacq-gradient-free (an\n"
      "activation proxy for the gradients) need --format dequantized: no engine's format holds\n"
      "their 16-bit kept weights. tacq holds the whole float model (F32) and G, 4 bytes per\n"
      "linear weight, while the gradients run, then G beside one layer at a time.\n"
      "--layers A:B (Python's slice: layers A..B-1; needs --calibration float) writes a\n"
      "slice of OUT: the float model still runs through the layers before A for their\n"
      "inputs; only A..B-1 are quantized and written, with the embeddings, final norm and\n"
      "lm_head in the slice that starts at 0. lowbit merge joins slices covering every\n"
      "layer into what one run writes, byte for byte.\n"
      "--scratch-dir DIR: the residual stream of the calibration sequences (tokens x hidden\n"
      "floats: 8.6 GB for a 70B model on 128 x 2048 tokens) is kept in an unnamed scratch\n"
      "file there, reserved in full before the work starts and gone when the run ends,\n"
      "whose pages the kernel writes back and reclaims; default: the directory --out goes\n"
      "in ($TMPDIR when --out is a device or a pipe; a tmpfs holds it in RAM).",
      {required_option("model"),
       required_option("out"),
       option("method", "gptq"),
       option("bits", "4"),
       option("group-size", "32"),
       option("format", "gptq"),
       option("act-order"),
       option("sym"),
       option("max-shard-size", "5GB"),
       option("calib"),
       option("calib-samples", "32"),
       option("calib-length", "64"),
       option("calibration", "sequential"),
       option("layers"),
       option("type"),
       option("gguf-type"),
       option("task"),
       option("fraction", "0.0035"),
       option("outlier-dtype", "f16"),
       option("saliency-from", "gptq"),
       option("threads", "1"),
       option("scratch-dir")},
      run_quantize_model};
}

}  // namespace lowbit::cli
