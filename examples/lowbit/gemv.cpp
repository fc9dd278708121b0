// `lowbit gemv`: y = x W^T through the bit-plane lookup-table kernel, for any
// file `lowbit quantize` writes.
#include "gemv.hpp"

#include <chrono>
#include <cmath>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <optional>
#include <sstream>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

void require_tensors(const io::SafetensorsReader& file, const std::vector<std::string>& names, const char* what) {
  for (const std::string& name : names)
    if (!file.contains(name))
      throw UsageError(file.source() + ": " + what + " needs tensor '" + name + "', which is missing");
}

// g_idx as stored, or empty when it is the plain j / group_size map.
GroupIndex read_g_idx(const io::SafetensorsReader& file, Index cols, Index group_size) {
  if (!file.contains("g_idx")) return {};
  const io::TensorInfo& info = file.require_rank("g_idx", 1);
  detail::require(info.shape[0] == cols, file.source(), ": tensor 'g_idx' has ", info.shape[0],
                  " entries, expected in_features = ", cols);
  GroupIndex g_idx = file.ints("g_idx");
  for (Index j = 0; j < cols; ++j)
    if (g_idx[static_cast<std::size_t>(j)] != j / group_size) return g_idx;
  return {};
}

// Bit-plane tensors: the official BPDQ checkpoint layout (B_packed, c) and g_idx.
BitPlaneWeights read_bitplanes(const io::SafetensorsReader& file, Index cols) {
  require_tensors(file, {"B_packed", "c"}, "a bit-plane file");
  BitPlaneWeights w = io::bitplanes_from_bpdq(file.info("B_packed").shape, file.ints("B_packed"),
                                              file.info("c").shape, file.doubles("c"), cols);
  w.g_idx = read_g_idx(file, cols, w.group_size);
  w.validate();
  return w;
}

// Uniform tensors: qint (out x in), scale and zero ([groups, out]), g_idx.
// The codes need no more planes than their largest value has bits.
BitPlaneWeights read_uniform(const io::SafetensorsReader& file, Index cols) {
  require_tensors(file, {"qint", "scale", "zero"}, "a uniform file");
  UniformWeights w;
  const io::TensorInfo& qint = file.require_rank("qint", 2);
  detail::require(qint.shape[1] == cols, file.source(), ": tensor 'qint' has ", qint.shape[1],
                  " columns, x has ", cols);
  const std::vector<std::int32_t> codes = file.ints("qint");
  w.codes.resize(qint.shape[0], qint.shape[1]);
  int largest = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) {
    detail::require(codes[i] >= 0 && codes[i] <= 255, file.source(), ": tensor 'qint' element ", i, " = ",
                    codes[i], " is not a code of 1..8 bits");
    w.codes.data()[i] = static_cast<std::uint8_t>(codes[i]);
    largest = std::max(largest, codes[i]);
  }
  w.bits = 1;
  while ((1 << w.bits) <= largest) ++w.bits;
  w.scale = file.matrix("scale");
  w.zero = file.matrix("zero");
  detail::require(w.scale.rows() >= 1 && cols % w.scale.rows() == 0, file.source(), ": tensor 'scale' has ",
                  w.scale.rows(), " groups, which do not divide in_features = ", cols);
  w.group_size = cols / w.scale.rows();
  w.g_idx = read_g_idx(file, cols, w.group_size);
  return to_bitplanes(w);
}

std::optional<SparseOutliers> read_outliers(const io::SafetensorsReader& file, Index rows, Index cols) {
  const std::vector<std::string> names{"outlier_rowptr", "outlier_col", "outlier_val"};
  if (!file.contains(names[0]) && !file.contains(names[1]) && !file.contains(names[2])) return std::nullopt;
  require_tensors(file, names, "the sparse outlier part");
  SparseOutliers s;
  s.rows = rows;
  s.cols = cols;
  s.row_ptr = file.ints("outlier_rowptr");
  detail::require(static_cast<Index>(s.row_ptr.size()) == rows + 1, file.source(), ": tensor 'outlier_rowptr' has ",
                  s.row_ptr.size(), " entries, expected out_features + 1 = ", rows + 1);
  s.col = file.ints("outlier_col");
  s.values = file.floats("outlier_val");
  s.precision = file.info("outlier_val").dtype == io::Dtype::F16 ? OutlierPrecision::f16 : OutlierPrecision::f32;
  s.validate();
  return s;
}

// AWQ results (`lowbit quantize awq`) store the codes of W diag(s), which act
// on x / s (an engine folds 1/s into the preceding norm): the tool applies the
// input-channel scales `scales` ([in]) to x so that y = x Q^T.
void apply_awq_scales(const io::SafetensorsReader& file, MatrixF& x) {
  if (!file.contains("scales") || !file.contains("qint")) return;
  const io::TensorInfo& info = file.require_rank("scales", 1);
  detail::require(info.shape[0] == x.cols(), file.source(), ": tensor 'scales' (AWQ input-channel scales) has ",
                  info.shape[0], " entries, expected in_features = ", x.cols());
  const std::vector<double> s = file.doubles("scales");
  for (Index j = 0; j < x.cols(); ++j) {
    const double scale = s[static_cast<std::size_t>(j)];
    detail::require(std::isfinite(scale) && scale > 0, file.source(), ": tensor 'scales' element ", j, " = ", scale,
                    " is not a positive finite scale");
    x.col(j) = (x.col(j).cast<double>() / scale).cast<float>();
  }
}

}  // namespace

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

  const bool bitplane = weights_file.contains("B_packed") || weights_file.contains("c");
  if (!bitplane && !weights_file.contains("qint"))
    throw UsageError(weights_file.source() +
                     ": holds neither bit-plane tensors (B_packed, c) nor uniform tensors (qint, scale, zero)");
  const BitPlaneWeights planes = bitplane ? read_bitplanes(weights_file, x.cols()) : read_uniform(weights_file, x.cols());
  const std::optional<SparseOutliers> outliers = read_outliers(weights_file, planes.rows(), planes.cols());
  if (!bitplane) apply_awq_scales(weights_file, x);

  const auto start = std::chrono::steady_clock::now();
  const BitplanePackConfig config{exact ? CoefficientStorage::f32 : CoefficientStorage::f16};
  const PackedBitplanes w = outliers ? pack_bitplanes(planes, *outliers, config) : pack_bitplanes(planes, config);
  BitplaneContext ctx(w, std::max<Index>(1, std::min<Index>(x.rows(), 16)), exact ? TableType::f32 : TableType::int8);
  MatrixF y(x.rows(), w.rows());
  bitplane_gemm(w, x, y, ctx);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

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

}  // namespace lowbit::cli
