// GPTQ and AWQ into ggml's K-quants against llama.cpp's own quantizer, side by side
// on the same layer and calibration: llama.cpp runs as a separate program,
// ../shared/peer-bench's quant_layer (built against ggml by its build.sh), so
// nothing here links ggml. Prints a Markdown table: bits/w, relative output
// error ||(W - Q) X^T|| / ||W X^T|| (through H), and seconds.
//
//   gguf_versus_llama_cpp QUANT_LAYER [LAYER.safetensors [TENSOR]]
//
// With a layer file (tensors W or TENSOR, and X) that layer, else the
// benchmarks' synthetic 4096 x 4096 layer. llama.cpp's importance matrix is
// the per-column sum of squared activations (llama-imatrix's), N/2 diag(H).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/quant/awq_ggml.hpp>
#include <lowbit/quant/gptq_ggml.hpp>
#include <string>

#include "synthetic_layer.hpp"

namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void write_floats(const std::string& path, const float* data, Index count) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, sizeof(float), static_cast<std::size_t>(count), f) !=
                static_cast<std::size_t>(count))
    throw lowbit::Error("cannot write " + path);
  std::fclose(f);
}

RowMajorF read_floats(const std::string& path, Index rows, Index cols) {
  RowMajorF m(rows, cols);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f || std::fread(m.data(), sizeof(float), static_cast<std::size_t>(m.size()), f) !=
                static_cast<std::size_t>(m.size()))
    throw lowbit::Error("cannot read " + path);
  std::fclose(f);
  return m;
}

struct LlamaCppRun {
  std::string bits_per_weight;
  MatrixF q;
  double seconds = 0;
};

// quant_layer W.f32 ROWS COLS IMATRIX.f32|- TYPE OUT.f32 (row-major float32
// files), which prints bits/w; the time includes starting the process.
LlamaCppRun run_llama_cpp(const std::string& quant_layer, const std::string& dir, const Layer& l,
                          bool with_imatrix, lowbit::GgmlType type) {
  const std::string q_path = dir + "/q.f32";
  const std::string command = quant_layer + " " + dir + "/w.f32 " + std::to_string(l.w.rows()) +
                              " " + std::to_string(l.w.cols()) + " " +
                              (with_imatrix ? dir + "/imatrix.f32" : "-") + " " +
                              lowbit::ggml_type_name(type) + " " + q_path;
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = ::popen(command.c_str(), "r");
  char line[64] = "";
  const bool read = pipe && std::fgets(line, sizeof line, pipe);
  if (!pipe || ::pclose(pipe) != 0 || !read) throw lowbit::Error("failed: " + command);
  LlamaCppRun run;
  run.seconds = seconds_since(start);
  run.bits_per_weight = std::string(line, std::strcspn(line, "\n"));
  run.q = read_floats(q_path, l.w.rows(), l.w.cols());
  return run;
}

Layer layer_from_file(const std::string& path, const std::string& tensor, Index& tokens) {
  const lowbit::io::SafetensorsReader file(path);
  Layer l;
  l.w = file.matrix(tensor);
  l.x = file.matrix("X");
  tokens = l.x.rows();
  lowbit::Calibration calibration(l.w.cols());
  calibration.add(l.x);
  l.h = calibration.hessian();
  l.h_float = l.h.cast<float>();
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s QUANT_LAYER [LAYER.safetensors [TENSOR]]\n", argv[0]);
    return 2;
  }
  try {
    Index tokens = kTokens;
    const Layer l = argc > 2 ? layer_from_file(argv[2], argc > 3 ? argv[3] : "W", tokens) : layer();
    const std::string dir = "/tmp/gguf_versus_llama_cpp_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    const RowMajorF w = l.w;
    write_floats(dir + "/w.f32", w.data(), w.size());
    const lowbit::VectorF imatrix =
        (0.5 * static_cast<double>(tokens) * l.h.diagonal()).cast<float>();
    write_floats(dir + "/imatrix.f32", imatrix.data(), imatrix.size());
    std::printf(
        "| type | bits/w | llama.cpp | llama.cpp + imatrix | lowbit AWQ into the type "
        "| lowbit GPTQ into the type | ratios to + imatrix | seconds: llama.cpp + imatrix, "
        "AWQ, GPTQ |\n"
        "|---|---|---|---|---|---|---|---|\n");
    for (lowbit::GgmlType type :
         {lowbit::GgmlType::q2_k, lowbit::GgmlType::q3_k, lowbit::GgmlType::q4_k,
          lowbit::GgmlType::q5_k, lowbit::GgmlType::q6_k}) {
      const LlamaCppRun plain = run_llama_cpp(argv[1], dir, l, false, type);
      const LlamaCppRun weighted = run_llama_cpp(argv[1], dir, l, true, type);
      lowbit::AwqGgmlConfig awq_config;
      awq_config.type = type;
      auto start = std::chrono::steady_clock::now();
      const MatrixF awq = lowbit::quantize_awq_ggml({l.w}, l.x, awq_config).effective_weight(0);
      const double awq_seconds = seconds_since(start);
      lowbit::GptqGgmlConfig config;
      config.type = type;
      start = std::chrono::steady_clock::now();
      const MatrixF gptq = lowbit::quantize_gptq_ggml(l.w, l.h, config).dequantize();
      const double gptq_seconds = seconds_since(start);
      const double reference = relative_output_error(l, weighted.q);
      const double awq_error = relative_output_error(l, awq),
                   error = relative_output_error(l, gptq);
      std::printf("| %s | %s | %.4f | %.4f | %.4f | %.4f | %.2f, %.2f | %.2f, %.2f, %.2f |\n",
                  lowbit::ggml_type_name(type), plain.bits_per_weight.c_str(),
                  relative_output_error(l, plain.q), reference, awq_error, error,
                  awq_error / reference, error / reference, weighted.seconds, awq_seconds,
                  gptq_seconds);
      std::fflush(stdout);
    }
    std::filesystem::remove_all(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_versus_llama_cpp: %s\n", e.what());
    return 1;
  }
  return 0;
}
