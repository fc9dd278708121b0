#include "methods.hpp"

#include <lowbit/io/bpdq_format.hpp>
#include <sstream>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::cli {

const std::vector<Method>& all_methods() {
  static const std::vector<Method> methods{rtn_method(), absmax_method(), gptq_method(), awq_method(),
                                           smoothquant_method(), tacq_method(), bpdq_method()};
  return methods;
}

const Method* find_method(const std::string& name) {
  for (const Method& m : all_methods())
    if (m.name == name) return &m;
  return nullptr;
}

MatrixD LayerInputs::hessian() const {
  if (h) return *h;
  if (!x) throw UsageError("this method needs calibration data: tensor 'H' (in x in) or 'X' (tokens x in)");
  Calibration calibration(x->cols());
  calibration.add(*x);
  return calibration.hessian();
}

namespace {

VectorF read_vector(const io::SafetensorsReader& file, const std::string& name) {
  const std::vector<float> v = file.floats(name);
  return Eigen::Map<const VectorF>(v.data(), static_cast<Index>(v.size()));
}

VectorD read_vector_d(const io::SafetensorsReader& file, const std::string& name) {
  const std::vector<double> v = file.doubles(name);
  return Eigen::Map<const VectorD>(v.data(), static_cast<Index>(v.size()));
}

// The double copies of the layer's tensors, read again from the file.
LayerInputs::Double load_double(const io::SafetensorsReader& file, const LayerInputs& in) {
  LayerInputs::Double d;
  d.w = file.matrix_d("W");
  for (std::size_t k = 0; k < in.extra_weights.size(); ++k)
    d.extra_weights.push_back(file.matrix_d("W" + std::to_string(k + 2)));
  if (in.x) d.x = file.matrix_d("X");
  if (in.ln_weight) d.ln_weight = read_vector_d(file, "ln_weight");
  if (in.ln_bias) d.ln_bias = read_vector_d(file, "ln_bias");
  return d;
}

}  // namespace

LayerInputs load_inputs(const io::SafetensorsReader& file) {
  if (!file.contains("W")) throw UsageError(file.source() + ": required tensor 'W' (out x in) is missing");
  LayerInputs in;
  in.w = file.matrix("W");
  const Index cols = in.w.cols();
  auto require_cols = [&](const char* name, Index got) {
    detail::require(got == cols, file.source(), ": tensor '", name, "' has ", got,
                    " columns, expected in_features = ", cols, " (from W)");
  };
  for (int k = 2; file.contains("W" + std::to_string(k)); ++k) {
    in.extra_weights.push_back(file.matrix("W" + std::to_string(k)));
    require_cols(("W" + std::to_string(k)).c_str(), in.extra_weights.back().cols());
  }
  if (file.contains("X")) {
    in.x = file.matrix("X");
    require_cols("X", in.x->cols());
  }
  if (file.contains("H")) {
    in.h = file.matrix_d("H");
    detail::require(in.h->rows() == cols && in.h->cols() == cols, file.source(),
                    ": tensor 'H' must be ", cols, " x ", cols, " (in x in), is ", in.h->rows(),
                    " x ", in.h->cols());
  }
  if (file.contains("G")) {
    in.g = file.matrix("G");
    detail::require(in.g->rows() == in.w.rows() && in.g->cols() == cols, file.source(),
                    ": tensor 'G' must have W's shape ", in.w.rows(), " x ", cols);
  }
  for (const char* name : {"ln_weight", "ln_bias"}) {
    if (!file.contains(name)) continue;
    VectorF v = read_vector(file, name);
    detail::require(v.size() == cols, file.source(), ": tensor '", name, "' has ", v.size(),
                    " entries, expected in_features = ", cols);
    (std::string(name) == "ln_weight" ? in.ln_weight : in.ln_bias) = std::move(v);
  }
  if (file.info("W").dtype == io::Dtype::F64) in.f64 = load_double(file, in);
  return in;
}

void add_uniform_tensors(MethodResult& result, const UniformWeights& weights) {
  result.tensors.add_matrix("qint", weights.codes, io::Dtype::I32);
  result.tensors.add_matrix("scale", weights.scale);
  result.tensors.add_matrix("zero", weights.zero);
  GroupIndex g_idx = weights.g_idx;
  if (g_idx.empty())
    for (Index j = 0; j < weights.cols(); ++j) g_idx.push_back(static_cast<std::int32_t>(j / weights.group_size));
  result.tensors.add_vector("g_idx", g_idx, io::Dtype::I32);
}

void add_bitplane_tensors(MethodResult& result, const BitPlaneWeights& weights) {
  const std::int64_t k = weights.planes, out = weights.rows(), in = weights.cols();
  std::vector<std::uint8_t> planes(static_cast<std::size_t>(k * out * in));
  for (std::int64_t p = 0; p < k; ++p)
    for (std::int64_t r = 0; r < out; ++r)
      for (std::int64_t j = 0; j < in; ++j)
        planes[static_cast<std::size_t>((p * out + r) * in + j)] =
            static_cast<std::uint8_t>((weights.codes(r, j) >> p) & 1u);
  result.tensors.add_ints("B", {k, out, in}, planes.data(), planes.size(), io::Dtype::U8);
  result.tensors.add_floats("c", {weights.groups(), k + 1, out}, weights.coeffs.data(),
                            static_cast<std::size_t>(weights.coeffs.size()));
  const io::PackedPlanes packed = io::pack_bpdq_planes(weights);
  result.tensors.add_ints("B_packed", packed.shape, packed.words.data(), packed.words.size());
}

std::string linear_suffix(std::size_t linear) {
  return linear == 0 ? "" : "_" + std::to_string(linear + 1);
}

void add_vector_tensor(MethodResult& result, const std::string& name, const VectorD& values,
                       io::Dtype dtype) {
  result.tensors.add_floats(name, {values.size()}, values.data(), static_cast<std::size_t>(values.size()), dtype);
}

std::optional<double> relative_output_error(const LayerInputs& inputs, const MatrixF& q) {
  const MatrixD w = inputs.w.cast<double>();
  const MatrixD dw = w - q.cast<double>();
  if (inputs.x) {
    const MatrixD x = inputs.x->cast<double>();
    return (dw * x.transpose()).norm() / (w * x.transpose()).norm();
  }
  if (inputs.h) {
    const MatrixD& h = *inputs.h;
    return std::sqrt((dw * h).cwiseProduct(dw).sum() / (w * h).cwiseProduct(w).sum());
  }
  return std::nullopt;
}

void apply_threads(const Options& options) {
  const int threads = options.integer("threads", 0);
  if (options.has("threads") && threads < 1) throw UsageError("option --threads: expected >= 1");
  if (threads > 0) {
    Eigen::setNbThreads(threads);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
  }
}

std::string format_bool(bool value) { return value ? "true" : "false"; }

std::string format_double(double value) {
  std::ostringstream text;
  for (int digits = 6; digits <= 17; ++digits) {
    text.str("");
    text.precision(digits);
    text << value;
    if (std::stod(text.str()) == value) break;
  }
  return text.str();
}

}  // namespace lowbit::cli
