// `lowbit gemv`: y = x W^T through the bit-plane lookup-table kernel, for any
// file `lowbit quantize` writes.
#include "gemv.hpp"

#include <chrono>
#include <lowbit/io/layer_file.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/kernels/int8_gemm.hpp>
#include <sstream>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

// y = x W^T through the bit-plane kernel; its configuration goes into `out`'s metadata.
MatrixF multiply_bitplanes(const io::QuantizedLayer& layer, const MatrixF& x, bool exact,
                           const std::string& source, io::SafetensorsWriter& out) {
  const BitplanePackConfig config{exact ? CoefficientStorage::f32 : CoefficientStorage::f16};
  const PackedBitplanes w = [&] {
    try {
      return layer.outliers ? pack_bitplanes(layer.planes, *layer.outliers, config)
                            : pack_bitplanes(layer.planes, config);
    } catch (const Error& e) {
      if (exact || std::string(e.what()).find("overflows fp16") == std::string::npos) throw;
      throw Error(source + ": " + e.what() + " (lowbit gemv --exact keeps coefficients in f32)");
    }
  }();
  BitplaneContext ctx(w, std::max<Index>(1, std::min<Index>(x.rows(), 16)),
                      exact ? TableType::f32 : TableType::int8);
  MatrixF y(x.rows(), w.rows());
  bitplane_gemm(w, x, y, ctx);
  out.set_metadata("kernel", bitplane_kernels.isa);
  out.set_metadata("tables", exact ? "f32" : "int8");
  out.set_metadata("coefficients", exact ? "f32" : "f16");
  out.set_metadata("planes", std::to_string(w.planes()));
  out.set_metadata("group_size", std::to_string(w.group_size()));
  out.set_metadata("outliers", std::to_string(w.outliers()));
  return y;
}

// y = x W^T for W8A8 weights: x quantized per token on the int8 kernel, or
// (--exact) x as it is against the dequantized W8.
MatrixF multiply_int8(const Int8Weights& w, const MatrixF& x, bool exact,
                      io::SafetensorsWriter& out) {
  out.set_metadata("kernel",
                   exact ? std::string("dense f32") : std::string("int8 ") + int8_kernels.isa);
  out.set_metadata("activations", exact ? "f32" : "int8 per token");
  if (exact) return x * w.dequantize().transpose();
  return int8_gemm(w, quantize_activations(x));
}

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
  // AWQ's codes and SmoothQuant's W8 act on x / s (an engine folds 1/s into the preceding norm).
  for (Index j = 0; j < layer.input_scales.size(); ++j)
    x.col(j) = (x.col(j).cast<double>() / layer.input_scales(j)).cast<float>();

  io::SafetensorsWriter out;
  const auto start = std::chrono::steady_clock::now();
  if (layer.int8)
    out.add_matrix("y", multiply_int8(*layer.int8, x, exact, out));
  else
    out.add_matrix("y", multiply_bitplanes(layer, x, exact, weights_file.source(), out));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ostringstream time;
  time << seconds;
  out.set_metadata("seconds", time.str());
  out.write(out_path);
  return 0;
}

}  // namespace

Command gemv_command() {
  return {"gemv",
          "y = x W^T for the first linear (the unsuffixed tensors) of any file `lowbit quantize`\n"
          "writes, read as its metadata 'method' says: bpdq as bit planes B_packed (I32) and c\n"
          "(+ g_idx); rtn, absmax, gptq, awq and tacq as uniform qint, scale, zero (+ g_idx), or\n"
          "gguf_blocks when the metadata names a gguf_type; tacq with its outliers\n"
          "(outlier_rowptr, outlier_col, outlier_val); smoothquant as W8 (I8) and w8_scale on\n"
          "the int8 kernel (x quantized per token). AWQ and SmoothQuant results act on x / s:\n"
          "x is divided by their input-channel 'scales' first. A file without 'method' (the\n"
          "official BPDQ tensors) is read by its tensors. --x holds x or X ([tokens, in], any\n"
          "float dtype); the output holds y ([tokens, out], F32). Default: the bit-plane\n"
          "lookup-table kernel with int8 tables and f16 coefficients (error bound in\n"
          "kernels/bitplane_lut_gemm.hpp); --exact: float tables and f32 coefficients (for W8A8:\n"
          "x unquantized against the dequantized W8).",
          {required_option("in"), required_option("x"), required_option("out"), option("exact"),
           option("threads")},
          run_gemv};
}

}  // namespace lowbit::cli
