// The single-layer tensor layout of the `lowbit` tool: one linear (or a few
// sharing one input) with its calibration data goes in, a method's result
// comes out, every part a safetensors tensor with a fixed name. Outside
// checks read these names; this header is the one place that spells them.
//
// Inputs (read_layer_inputs, add_layer_inputs), any float dtype:
//   W [out, in]              the weight (required)
//   W2, W3, ... [out', in]   further linears sharing the input (AWQ, SmoothQuant)
//   X [tokens, in]           calibration activations
//   H [in, in]               Hessian proxy (else 2/N X^T X where needed)
//   G [out, in]              gradient magnitudes (TACQ)
//   ln_weight, ln_bias [in]  a preceding LayerNorm; ln_weight alone: an RMSNorm
// When W is F64 the reader also keeps W, W2..., X and the norm in double.
//
// Outputs (add_* below; the first linear's tensors are unsuffixed, linear i's
// carry linear_suffix(i): Q_2, Wq_2, W8_2, ...):
//   Q [out, in] F32           the dequantized weight as the model sees it
//   uniform      qint I32 [out, in], scale and zero F32 [groups, out], g_idx I32 [in];
//                perm I32 [in] (act-order processing order)
//   bit planes   B U8 [k, out, in], c F32 [groups, k+1, out] (bias last),
//                B_packed I32 [ceil(in/32), k, out] (bit j of a word is column 32t+j)
//   sparse part  mask U8 [out, in], outlier_rowptr I32 [out+1], outlier_col I32 [nnz],
//                outlier_val F16 or F32 [nnz]
//   AWQ          the uniform tensors of Wq (the codes of clip(W diag(s)), acting on x / s),
//                Wq, q_scales, q_zeros, clip_max_val [out, groups] per linear,
//                scales [in], search_loss_history F64 [grid]
//   SmoothQuant  scales [in], W_smoothed, W2_smoothed, ... [out, in], W8 I8 [out, in],
//                w8_scale [out] per linear
//   BPDQ         init_scale8, init_zero8 [groups, out]; final_perm, global_perm I32 with GAR
//   ggml blocks  gguf_blocks U8 [out, row bytes]: ggml's bytes of the type that the
//                metadata key gguf_type names
//   norms        ln_weight<suffix>, ln_bias<suffix> [in] (_scaled for AWQ, _smoothed for
//   SmoothQuant)
//
// read_quantized_layer() reads back what a kernel multiplies (the first
// linear), as the metadata 'method' says the file stores it: bit planes from
// B_packed and c, the uniform tensors or ggml blocks (+ the sparse part), or
// SmoothQuant's int8 W8, with AWQ's and SmoothQuant's input scales. Inputs
// are checked as strictly: every tensor finite, ln_* of rank 1, no further
// linear after a gap. A required tensor that is absent throws MissingTensor
// (the tool's exit code 2); any other inconsistency throws lowbit::Error
// naming the file and the tensor.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/calibration.hpp"
#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/io/bpdq_format.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/ggml_blocks.hpp"
#include "lowbit/io/safetensors.hpp"
#include "lowbit/quant/awq.hpp"
#include "lowbit/quant/bpdq.hpp"
#include "lowbit/quant/smoothquant.hpp"

namespace lowbit::io {

// A tensor the layout requires is absent from the file.
class MissingTensor : public Error {
 public:
  using Error::Error;
};

// "" for linear 0 (W), "_2" for W2, "_3" for W3, ...
inline std::string linear_suffix(std::size_t linear) {
  return linear == 0 ? "" : "_" + std::to_string(linear + 1);
}

// --- inputs ----------------------------------------------------------------

struct LayerInputs {
  MatrixF w;                           // W, out x in
  std::vector<MatrixF> extra_weights;  // W2, W3, ...
  std::optional<MatrixF> x;            // X, tokens x in
  std::optional<MatrixD> h;            // H, in x in
  std::optional<MatrixF> g;            // G, out x in
  std::optional<VectorF> ln_weight;    // a preceding LayerNorm (or RMSNorm: no bias)
  std::optional<VectorF> ln_bias;

  // The same tensors in double, when W is stored as F64: methods with a double
  // path (AWQ, SmoothQuant) then compute as the f64 reference runs do.
  struct Double {
    MatrixD w;
    std::vector<MatrixD> extra_weights;
    std::optional<MatrixD> x;
    std::optional<VectorD> ln_weight;
    std::optional<VectorD> ln_bias;
  };
  std::optional<Double> f64;

  // H as given, else 2/N X^T X; MissingTensor when neither H nor X is present.
  MatrixD hessian() const {
    if (h) return *h;
    if (!x)
      throw MissingTensor(
          "this method needs calibration data: tensor 'H' (in x in) or 'X' (tokens x in)");
    Calibration calibration(x->cols());
    calibration.add(*x);
    return calibration.hessian();
  }
};

namespace detail {

template <class Scalar>
VectorT<Scalar> read_vector(const SafetensorsReader& file, const std::string& name) {
  const std::vector<double> v = file.doubles(name);
  VectorT<Scalar> out(static_cast<Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(static_cast<Index>(i)) = static_cast<Scalar>(v[i]);
  return out;
}

// The double copies of the layer's tensors, read again from the file.
inline LayerInputs::Double read_double_inputs(const SafetensorsReader& file,
                                              const LayerInputs& in) {
  LayerInputs::Double d;
  d.w = file.matrix_d("W");
  for (std::size_t k = 0; k < in.extra_weights.size(); ++k)
    d.extra_weights.push_back(file.matrix_d("W" + std::to_string(k + 2)));
  if (in.x) d.x = file.matrix_d("X");
  if (in.ln_weight) d.ln_weight = read_vector<double>(file, "ln_weight");
  if (in.ln_bias) d.ln_bias = read_vector<double>(file, "ln_bias");
  return d;
}

template <class Derived>
void add_vector(SafetensorsWriter& out, const std::string& name,
                const Eigen::MatrixBase<Derived>& values, Dtype dtype = Dtype::F32) {
  const VectorD v = values.template cast<double>();
  out.add_floats(name, {v.size()}, v.data(), static_cast<std::size_t>(v.size()), dtype);
}

// A float input tensor with every value finite (an F64 value beyond float's
// range reads as inf and is refused here too).
inline MatrixF read_finite_matrix(const SafetensorsReader& file, const std::string& name) {
  MatrixF m = file.matrix(name);
  lowbit::detail::require_finite(m, (file.source() + ": tensor '" + name + "'").c_str());
  return m;
}

// W followed by digits: the name of a further linear (W2, W3, ...).
inline bool is_further_linear_name(const std::string& name) {
  return name.size() > 1 && name[0] == 'W' &&
         name.find_first_not_of("0123456789", 1) == std::string::npos;
}

}  // namespace detail

inline LayerInputs read_layer_inputs(const SafetensorsReader& file) {
  using lowbit::detail::require;
  if (!file.contains("W"))
    throw MissingTensor(file.source() + ": required tensor 'W' (out x in) is missing");
  LayerInputs in;
  in.w = detail::read_finite_matrix(file, "W");
  const Index cols = in.w.cols();
  auto require_cols = [&](const std::string& name, Index got) {
    require(got == cols, file.source(), ": tensor '", name, "' has ", got,
            " columns, expected in_features = ", cols, " (from W)");
  };
  for (int k = 2; file.contains("W" + std::to_string(k)); ++k) {
    in.extra_weights.push_back(detail::read_finite_matrix(file, "W" + std::to_string(k)));
    require_cols("W" + std::to_string(k), in.extra_weights.back().cols());
  }
  // A further linear after a gap (W3 without W2) would otherwise be dropped.
  const std::string gap = "W" + std::to_string(in.extra_weights.size() + 2);
  for (const std::string& name : file.names()) {
    if (!detail::is_further_linear_name(name) || name == "W") continue;
    bool read = false;
    for (std::size_t k = 0; k < in.extra_weights.size(); ++k)
      read |= name == "W" + std::to_string(k + 2);
    require(read, file.source(), ": tensor '", name,
            "' is not read: further linears are W2, W3, ... without gaps, and ", gap,
            " is missing");
  }
  if (file.contains("X")) {
    in.x = detail::read_finite_matrix(file, "X");
    require_cols("X", in.x->cols());
  }
  if (file.contains("H")) {
    in.h = file.matrix_d("H");
    require(in.h->rows() == cols && in.h->cols() == cols, file.source(), ": tensor 'H' must be ",
            cols, " x ", cols, " (in x in), is ", in.h->rows(), " x ", in.h->cols());
    lowbit::detail::require_finite(*in.h, (file.source() + ": tensor 'H'").c_str());
  }
  if (file.contains("G")) {
    in.g = detail::read_finite_matrix(file, "G");
    require(in.g->rows() == in.w.rows() && in.g->cols() == cols, file.source(),
            ": tensor 'G' must have W's shape ", in.w.rows(), " x ", cols);
  }
  for (const char* name : {"ln_weight", "ln_bias"}) {
    if (!file.contains(name)) continue;
    file.require_rank(name, 1);
    VectorF v = detail::read_vector<float>(file, name);
    require(v.size() == cols, file.source(), ": tensor '", name, "' has ", v.size(),
            " entries, expected in_features = ", cols);
    lowbit::detail::require_finite(v, (file.source() + ": tensor '" + name + "'").c_str());
    (std::string(name) == "ln_weight" ? in.ln_weight : in.ln_bias) = std::move(v);
  }
  if (file.info("W").dtype == Dtype::F64) in.f64 = detail::read_double_inputs(file, in);
  return in;
}

// The tensors of `file` that read_layer_inputs does not read (a warning for
// the tool: golden case files carry their expected outputs beside W and X).
inline std::vector<std::string> unread_layer_tensors(const SafetensorsReader& file) {
  std::vector<std::string> unread;
  for (const std::string& name : file.names())
    if (!detail::is_further_linear_name(name) && name != "W" && name != "X" && name != "H" &&
        name != "G" && name != "ln_weight" && name != "ln_bias")
      unread.push_back(name);
  return unread;
}

// Writes the inputs so that read_layer_inputs gives them back: float tensors
// as F32 (as F64 from the double copies when present), H as F64.
inline void add_layer_inputs(SafetensorsWriter& out, const LayerInputs& in) {
  const LayerInputs::Double* d = in.f64 ? &*in.f64 : nullptr;
  if (d)
    out.add_matrix("W", d->w, Dtype::F64);
  else
    out.add_matrix("W", in.w);
  for (std::size_t k = 0; k < in.extra_weights.size(); ++k) {
    const std::string name = "W" + std::to_string(k + 2);
    if (d)
      out.add_matrix(name, d->extra_weights[k], Dtype::F64);
    else
      out.add_matrix(name, in.extra_weights[k]);
  }
  if (d && d->x)
    out.add_matrix("X", *d->x, Dtype::F64);
  else if (in.x)
    out.add_matrix("X", *in.x);
  if (in.h) out.add_matrix("H", *in.h, Dtype::F64);
  if (in.g) out.add_matrix("G", *in.g);
  if (d && d->ln_weight)
    detail::add_vector(out, "ln_weight", *d->ln_weight, Dtype::F64);
  else if (in.ln_weight)
    detail::add_vector(out, "ln_weight", *in.ln_weight);
  if (d && d->ln_bias)
    detail::add_vector(out, "ln_bias", *d->ln_bias, Dtype::F64);
  else if (in.ln_bias)
    detail::add_vector(out, "ln_bias", *in.ln_bias);
}

// --- outputs ---------------------------------------------------------------

// Q<suffix>: a linear's dequantized weight, out x in.
template <class Derived>
void add_dequantized(SafetensorsWriter& out, const Eigen::MatrixBase<Derived>& q,
                     std::size_t linear = 0) {
  out.add_matrix("Q" + linear_suffix(linear), q);
}

// qint, scale, zero and g_idx (written out even for contiguous groups).
inline void add_uniform(SafetensorsWriter& out, const UniformWeights& w) {
  out.add_matrix("qint", w.codes, Dtype::I32);
  out.add_matrix("scale", w.scale);
  out.add_matrix("zero", w.zero);
  GroupIndex g_idx = w.g_idx;
  if (g_idx.empty())
    for (Index j = 0; j < w.cols(); ++j)
      g_idx.push_back(static_cast<std::int32_t>(j / w.group_size));
  out.add_vector("g_idx", g_idx, Dtype::I32);
}

// gguf_blocks (ggml's bytes) and the metadata key gguf_type.
inline void add_ggml_blocks(SafetensorsWriter& out, const GgmlWeights& w) {
  const std::vector<std::uint8_t> bytes = pack_ggml_blocks(w);
  out.add_raw("gguf_blocks", Dtype::U8,
              {w.rows(), static_cast<std::int64_t>(ggml_row_bytes(w.type, w.cols()))}, bytes.data(),
              bytes.size());
  out.set_metadata("gguf_type", ggml_type_name(w.type));
}

// perm: the act-order processing order (position i holds column perm[i]).
inline void add_column_order(SafetensorsWriter& out, const Permutation& perm) {
  out.add_vector("perm", perm, Dtype::I32);
}

// B (one byte per plane bit), c, and the official packed B_packed.
inline void add_bitplanes(SafetensorsWriter& out, const BitPlaneWeights& w) {
  const std::int64_t k = w.planes, rows = w.rows(), cols = w.cols();
  std::vector<std::uint8_t> planes(static_cast<std::size_t>(k * rows * cols));
  for (std::int64_t p = 0; p < k; ++p)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < cols; ++j)
        planes[static_cast<std::size_t>((p * rows + r) * cols + j)] =
            static_cast<std::uint8_t>((w.codes(r, j) >> p) & 1u);
  out.add_ints("B", {k, rows, cols}, planes.data(), planes.size(), Dtype::U8);
  out.add_floats("c", {w.groups(), k + 1, rows}, w.coeffs.data(),
                 static_cast<std::size_t>(w.coeffs.size()));
  const PackedPlanes packed = pack_bpdq_planes(w);
  out.add_ints("B_packed", packed.shape, packed.words.data(), packed.words.size());
}

// TACQ's kept weights: the mask and the CSR part, values in their precision.
inline void add_outliers(SafetensorsWriter& out, const SparseOutliers& s) {
  out.add_matrix("mask", outlier_mask(s), Dtype::U8);
  out.add_vector("outlier_rowptr", s.row_ptr, Dtype::I32);
  out.add_vector("outlier_col", s.col, Dtype::I32);
  out.add_vector("outlier_val", s.values,
                 s.precision == OutlierPrecision::f16 ? Dtype::F16 : Dtype::F32);
}

// ln_weight<suffix> and, for a LayerNorm, ln_bias<suffix>.
template <class Scalar>
void add_norm(SafetensorsWriter& out, const NormParams<Scalar>& norm, const std::string& suffix) {
  detail::add_vector(out, "ln_weight" + suffix, norm.weight);
  if (norm.has_bias()) detail::add_vector(out, "ln_bias" + suffix, norm.bias);
}

// AWQ's result: the uniform tensors of linear 0's Wq, per linear its Wq
// (dequantized) and grid, the scales and the search losses.
template <class Scalar>
void add_awq(SafetensorsWriter& out, const AwqResult<Scalar>& awq) {
  add_uniform(out, awq.weights[0]);
  for (std::size_t l = 0; l < awq.weights.size(); ++l) {
    const std::string suffix = linear_suffix(l);
    const UniformWeights& q = awq.weights[l];
    out.add_matrix("Wq" + suffix, q.dequantize());
    out.add_matrix("q_scales" + suffix, q.scale.transpose());  // [out, groups] as the reference
    out.add_matrix("q_zeros" + suffix, q.zero.transpose());
    out.add_matrix("clip_max_val" + suffix, awq.report.clip_max_val[l]);
  }
  detail::add_vector(out, "scales", awq.scales);
  detail::add_vector(out, "search_loss_history",
                     Eigen::Map<const VectorD>(awq.report.search.loss.data(),
                                               static_cast<Index>(awq.report.search.loss.size())),
                     Dtype::F64);
}

// SmoothQuant's result for `linears` (the weights it smoothed): the scales,
// per linear the smoothed weight W diag(s) and its int8 form (codes and a
// scale per row).
template <class Scalar>
void add_smoothquant(SafetensorsWriter& out, const SmoothQuantResult<Scalar>& smooth,
                     const std::vector<MatrixRef<Scalar>>& linears) {
  lowbit::detail::require(linears.size() == smooth.weights.size(),
                          "add_smoothquant: ", linears.size(), " linears for ",
                          smooth.weights.size(), " results");
  detail::add_vector(out, "scales", smooth.scales);
  for (std::size_t l = 0; l < smooth.weights.size(); ++l) {
    const std::string suffix = linear_suffix(l);
    out.add_matrix((l == 0 ? "W" : "W" + std::to_string(l + 1)) + "_smoothed",
                   scale_input_channels(linears[l], smooth.scales));
    out.add_matrix("W8" + suffix, smooth.weights[l].values, Dtype::I8);
    detail::add_vector(out, "w8_scale" + suffix, smooth.weights[l].scale);
  }
}

// BPDQ's 8-bit initial grid and, with GAR, its permutations.
inline void add_bpdq_report(SafetensorsWriter& out, const BpdqReport& report) {
  out.add_matrix("init_scale8", report.init_scale);  // [groups, out] as the reference
  out.add_matrix("init_zero8", report.init_zero);
  if (report.hessian.column_order.empty()) return;
  out.add_vector("final_perm", report.hessian.column_order, Dtype::I32);
  out.add_vector("global_perm", report.group_order, Dtype::I32);
}

// --- reading a result back -------------------------------------------------

namespace detail {

inline void require_tensors(const SafetensorsReader& file, const std::vector<std::string>& names,
                            const char* what) {
  for (const std::string& name : names)
    if (!file.contains(name))
      throw MissingTensor(file.source() + ": " + what + " needs tensor '" + name +
                          "', which is missing");
}

// g_idx as stored, or empty when it is the plain j / group_size map.
inline GroupIndex read_g_idx(const SafetensorsReader& file, Index cols, Index group_size) {
  if (!file.contains("g_idx")) return {};
  const TensorInfo& info = file.require_rank("g_idx", 1);
  lowbit::detail::require(info.shape[0] == cols, file.source(), ": tensor 'g_idx' has ",
                          info.shape[0], " entries, expected in_features = ", cols);
  GroupIndex g_idx = file.ints("g_idx");
  for (Index j = 0; j < cols; ++j)
    if (g_idx[static_cast<std::size_t>(j)] != j / group_size) return g_idx;
  return {};
}

}  // namespace detail

// The bit planes of B_packed and c (+ g_idx): the official BPDQ payload.
// in_features is the layer's input width (B_packed pads it to whole words).
inline BitPlaneWeights read_bitplanes(const SafetensorsReader& file, Index in_features) {
  detail::require_tensors(file, {"B_packed", "c"}, "a bit-plane file");
  detail::typed_tensor(file, "B_packed", 3, Dtype::I32);  // as read_bpdq_linear insists
  BitPlaneWeights w = bitplanes_from_bpdq(file.info("B_packed").shape, file.ints("B_packed"),
                                          file.info("c").shape, file.doubles("c"), in_features);
  w.g_idx = detail::read_g_idx(file, in_features, w.group_size);
  w.validate();
  return w;
}

// qint, scale and zero (+ g_idx). The file does not record the bit width:
// the codes get as many bits as their largest value needs.
inline UniformWeights read_uniform(const SafetensorsReader& file, Index in_features) {
  using lowbit::detail::require;
  detail::require_tensors(file, {"qint", "scale", "zero"}, "a uniform file");
  UniformWeights w;
  const TensorInfo& qint = file.require_rank("qint", 2);
  require(qint.shape[1] == in_features, file.source(), ": tensor 'qint' has ", qint.shape[1],
          " columns, x has ", in_features);
  const std::vector<std::int32_t> codes = file.ints("qint");
  w.codes.resize(qint.shape[0], qint.shape[1]);
  int largest = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) {
    require(codes[i] >= 0 && codes[i] <= 255, file.source(), ": tensor 'qint' element ", i, " = ",
            codes[i], " is not a code of 1..8 bits");
    w.codes.data()[i] = static_cast<std::uint8_t>(codes[i]);
    largest = std::max(largest, codes[i]);
  }
  w.bits = 1;
  while ((1 << w.bits) <= largest) ++w.bits;
  w.scale = file.matrix("scale");
  w.zero = file.matrix("zero");
  require(w.scale.rows() >= 1 && in_features % w.scale.rows() == 0, file.source(),
          ": tensor 'scale' has ", w.scale.rows(),
          " groups, which do not divide in_features = ", in_features);
  w.group_size = in_features / w.scale.rows();
  w.g_idx = detail::read_g_idx(file, in_features, w.group_size);
  w.validate();
  return w;
}

// The CSR part (outlier_rowptr, outlier_col, outlier_val), when present.
inline std::optional<SparseOutliers> read_outliers(const SafetensorsReader& file, Index rows,
                                                   Index cols) {
  const std::vector<std::string> names{"outlier_rowptr", "outlier_col", "outlier_val"};
  if (!file.contains(names[0]) && !file.contains(names[1]) && !file.contains(names[2]))
    return std::nullopt;
  detail::require_tensors(file, names, "the sparse outlier part");
  SparseOutliers s;
  s.rows = rows;
  s.cols = cols;
  s.row_ptr = file.ints("outlier_rowptr");
  lowbit::detail::require(static_cast<Index>(s.row_ptr.size()) == rows + 1, file.source(),
                          ": tensor 'outlier_rowptr' has ", s.row_ptr.size(),
                          " entries, expected out_features + 1 = ", rows + 1);
  s.col = file.ints("outlier_col");
  s.values = file.floats("outlier_val");
  s.precision =
      file.info("outlier_val").dtype == Dtype::F16 ? OutlierPrecision::f16 : OutlierPrecision::f32;
  s.validate();
  return s;
}

// W8 and w8_scale: SmoothQuant's int8 weights of the first linear.
inline Int8Weights read_int8(const SafetensorsReader& file, Index in_features) {
  detail::require_tensors(file, {"W8", "w8_scale"}, "a W8A8 file");
  const TensorInfo& info = detail::typed_tensor(file, "W8", 2, Dtype::I8);
  lowbit::detail::require(info.shape[1] == in_features, file.source(), ": tensor 'W8' has ",
                          info.shape[1], " columns, x has ", in_features);
  const std::vector<std::int32_t> values = file.ints("W8");
  Int8Weights w;
  w.values.resize(info.shape[0], info.shape[1]);
  std::transform(values.begin(), values.end(), w.values.data(),
                 [](std::int32_t v) { return static_cast<std::int8_t>(v); });
  detail::typed_tensor(file, "w8_scale", 1);
  w.scale = detail::read_vector<float>(file, "w8_scale");
  w.validate();
  return w;
}

// How a result file stores the first linear.
enum class ResultEncoding { uniform, bitplanes, ggml_blocks, int8 };

// The method recorded in the metadata ('method', which every file `lowbit
// quantize` writes) decides, not the tensors a file happens to hold; a file
// without it (the official BPDQ tensors, files written by hand) is read by
// its tensors.
inline ResultEncoding result_encoding(const SafetensorsReader& file) {
  const bool ggml = file.metadata_value("gguf_type").has_value();
  if (const std::optional<std::string> method = file.metadata_value("method")) {
    if (*method == "bpdq") return ResultEncoding::bitplanes;
    if (*method == "smoothquant") return ResultEncoding::int8;
    if (*method == "absmax" || *method == "tacq") return ResultEncoding::uniform;
    if (*method == "rtn" || *method == "gptq" || *method == "awq")
      return ggml ? ResultEncoding::ggml_blocks : ResultEncoding::uniform;
    lowbit::detail::fail(file.source(), ": metadata method = '", *method,
                         "' is not a method lowbit quantize writes (rtn, absmax, gptq, awq, "
                         "smoothquant, tacq, bpdq)");
  }
  if (file.contains("B_packed") || file.contains("c")) return ResultEncoding::bitplanes;
  if (file.contains("gguf_blocks")) return ResultEncoding::ggml_blocks;
  if (file.contains("qint")) return ResultEncoding::uniform;
  throw MissingTensor(file.source() +
                      ": holds neither bit-plane tensors (B_packed, c), uniform tensors "
                      "(qint, scale, zero) nor ggml blocks (gguf_blocks), and no metadata "
                      "'method' says what it holds");
}

// The first linear of a result as a kernel multiplies it: y = (x / s) W^T
// with s = input_scales when present (AWQ, SmoothQuant), else y = x W^T; W is
// `int8` for a W8A8 result (the int8 kernel), else `planes` (+ the sparse part).
struct QuantizedLayer {
  ResultEncoding encoding = ResultEncoding::uniform;
  BitPlaneWeights planes;
  std::optional<SparseOutliers> outliers;
  std::optional<Int8Weights> int8;
  VectorD input_scales;  // [in], the weights act on x / s; empty otherwise
};

namespace detail {

// 'scales' ([in], positive and finite): the input-channel scales of AWQ and SmoothQuant.
inline VectorD read_input_scales(const SafetensorsReader& file, Index in_features) {
  require_tensors(file, {"scales"}, "an AWQ or SmoothQuant result");
  const TensorInfo& info = file.require_rank("scales", 1);
  lowbit::detail::require(info.shape[0] == in_features, file.source(),
                          ": tensor 'scales' (input-channel scales) has ", info.shape[0],
                          " entries, expected in_features = ", in_features);
  const VectorD scales = read_vector<double>(file, "scales");
  for (Index j = 0; j < in_features; ++j)
    lowbit::detail::require(std::isfinite(scales(j)) && scales(j) > 0, file.source(),
                            ": tensor 'scales' element ", j, " = ", scales(j),
                            " is not a positive finite scale");
  return scales;
}

}  // namespace detail

// gguf_blocks as the type its metadata gguf_type names, in_features wide.
inline GgmlWeights read_ggml_blocks(const SafetensorsReader& file, Index in_features) {
  const std::optional<std::string> name = file.metadata_value("gguf_type");
  lowbit::detail::require(name.has_value(), file.source(),
                          ": tensor 'gguf_blocks' needs the metadata key gguf_type");
  const std::optional<GgmlType> type = parse_ggml_type(*name);
  lowbit::detail::require(type && find_ggml_block_format(*type), file.source(),
                          ": metadata gguf_type = '", *name,
                          "' is not a block type lowbit decodes");
  const TensorInfo& info = file.require_rank("gguf_blocks", 2);
  lowbit::detail::require(info.dtype == Dtype::U8, file.source(),
                          ": tensor 'gguf_blocks' must be U8, is ", dtype_name(info.dtype));
  const std::string where = file.source() + ": tensor 'gguf_blocks'";
  return unpack_ggml_blocks(*type, info.shape[0], in_features, file.data("gguf_blocks"),
                            info.end - info.begin, where);
}

inline QuantizedLayer read_quantized_layer(const SafetensorsReader& file, Index in_features) {
  QuantizedLayer layer;
  layer.encoding = result_encoding(file);
  const std::optional<std::string> method = file.metadata_value("method");
  switch (layer.encoding) {
    case ResultEncoding::bitplanes:
      layer.planes = read_bitplanes(file, in_features);
      break;
    case ResultEncoding::ggml_blocks:
      layer.planes = to_bitplanes(read_ggml_blocks(file, in_features));
      break;
    case ResultEncoding::uniform:
      layer.planes = to_bitplanes(read_uniform(file, in_features));
      break;
    case ResultEncoding::int8:
      layer.int8 = read_int8(file, in_features);
      break;
  }
  if (!method || *method == "tacq")
    layer.outliers = read_outliers(file, layer.planes.rows(), layer.planes.cols());
  if (method && (*method == "awq" || *method == "smoothquant"))
    layer.input_scales = detail::read_input_scales(file, in_features);
  else if (!method && file.contains("scales"))
    lowbit::detail::fail(file.source(),
                         ": tensor 'scales' in a file without metadata 'method': whether the "
                         "weights act on x / scales (AWQ, SmoothQuant) is not recorded");
  return layer;
}

}  // namespace lowbit::io
