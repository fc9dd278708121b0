// `lowbit gemv`: y = x W^T through the bit-plane lookup-table kernel, for any
// file `lowbit quantize` writes.
#include "gemv.hpp"

#include <chrono>
#include <lowbit/io/layer_file.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <sstream>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

int run_gemv(const Options& options) {
  const io::SafetensorsReader weights_file(options.text("in"));
  const io::SafetensorsReader x_file(options.text("x"));
  const std::string out_path = options.text("out");
  const bool exact = options.flag("exact");
  apply_threads(options);

  const char* x_name = x_file.contains("x") ? "x" : "X";
  if (!x_file.contains(x_name))
    throw UsageError(x_file.source() + ": tensor 'x' (or 'X'), tokens x in_features, is missing");
  MatrixF x = x_file.matrix(x_name);
  // Q (out x in) is in every file `lowbit quantize` writes: it says what width x must have
  // before the layer's groups are checked against x's.
  if (weights_file.contains("Q")) {
    const std::int64_t in = weights_file.require_rank("Q", 2).shape[1];
    detail::require(x.cols() == in, x_file.source(), ": tensor '", x_name, "' has ", x.cols(),
                    " columns; the layer in ", weights_file.source(), " has in_features = ", in);
  }

  const io::QuantizedLayer layer = io::read_quantized_layer(weights_file, x.cols());
  // AWQ's codes act on x / s (an engine folds 1/s into the preceding norm).
  for (Index j = 0; j < layer.input_scales.size(); ++j)
    x.col(j) = (x.col(j).cast<double>() / layer.input_scales(j)).cast<float>();

  const auto start = std::chrono::steady_clock::now();
  const BitplanePackConfig config{exact ? CoefficientStorage::f32 : CoefficientStorage::f16};
  const PackedBitplanes w = [&] {
    try {
      return layer.outliers ? pack_bitplanes(layer.planes, *layer.outliers, config)
                            : pack_bitplanes(layer.planes, config);
    } catch (const Error& e) {
      if (exact || std::string(e.what()).find("overflows fp16") == std::string::npos) throw;
      throw Error(weights_file.source() + ": " + e.what() +
                  " (lowbit gemv --exact keeps coefficients in f32)");
    }
  }();
  BitplaneContext ctx(w, std::max<Index>(1, std::min<Index>(x.rows(), 16)),
                      exact ? TableType::f32 : TableType::int8);
  MatrixF y(x.rows(), w.rows());
  bitplane_gemm(w, x, y, ctx);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  io::SafetensorsWriter out;
  out.add_matrix("y", y);
  out.set_metadata("kernel", bitplane_kernels.isa);
  out.set_metadata("tables", exact ? "f32" : "int8");
  out.set_metadata("coefficients", exact ? "f32" : "f16");
  out.set_metadata("planes", std::to_string(w.planes()));
  out.set_metadata("group_size", std::to_string(w.group_size()));
  out.set_metadata("outliers", std::to_string(w.outliers()));
  std::ostringstream time;
  time << seconds;
  out.set_metadata("seconds", time.str());
  out.write(out_path);
  return 0;
}

}  // namespace

Command gemv_command() {
  return {"gemv",
          "y = x W^T with the bit-plane lookup-table kernel. --in is any file `lowbit quantize`\n"
          "writes: bit-plane tensors B_packed and c (+ g_idx), or uniform qint, scale, zero\n"
          "(+ g_idx), or gguf_blocks (+ metadata gguf_type), plus outlier_rowptr (I32 [out+1]), "
          "outlier_col (I32), outlier_val\n"
          "(F16/F32) when present; only the first linear (the unsuffixed tensors) is multiplied.\n"
          "--x holds x or X ([tokens, in], any float dtype); the output holds y ([tokens, out],\n"
          "F32). AWQ results: x is divided by their input-channel 'scales' first (their codes\n"
          "act on x / s). Default: int8 tables and f16 coefficients (error bound in\n"
          "kernels/bitplane_lut_gemm.hpp); --exact: float tables and f32 coefficients.",
          {required_option("in"), required_option("x"), required_option("out"), option("exact"),
           option("threads")},
          run_gemv};
}

}  // namespace lowbit::cli
