// The official BPDQ checkpoint layout of bit planes and coefficients
// (KingdalfGoodman/BPDQ, BPDQ._pack_lutgemm_int32):
//   B  int32 [ceil(in/32), k, out]: bit j of B[t, p, r] is plane p of weight (r, 32 t + j),
//      so bit 31 makes the word negative;
//   c  [groups, k + 1, out]: the coefficients with the bias last (BitPlaneWeights::coeffs).
// The official code needs in % 32 == 0; other widths are padded with zero bits.
// The format has no column permutation: a g_idx travels as its own tensor.
//
// File level (add_bpdq_linear / read_bpdq_linear), as in the published BPDQ
// checkpoints (BPDQTorchLinear in KingdalfGoodman/BPDQ): one linear is
//   <linear>.B     int32 [ceil(in / 32), k, out]
//   <linear>.c     [groups, k + 1, out] in bf16 (the official payload is cast to
//                  the model dtype, bf16 in the released models), fp16 (the
//                  dtype of BPDQTorchLinear's buffers) or F32
//   <linear>.bias  fp16 [out], optional (checkpoint.hpp)
// Our coefficients are double; storing rounds each to the nearest value of the
// chosen dtype: relative error at most 2^-8 in bf16, 2^-11 in fp16 (for normal
// values; above 65504 fp16 overflows, which throws), 2^-24 in F32. Planes are
// exact, so a file read and written again in the same dtype is bit-identical.
// Weights with a g_idx are rejected when writing: the format cannot say so, and
// official readers would silently use contiguous groups (keep act-order GPTQ
// results in the GPTQ format). So is an in_features that is not a multiple of
// 32: the official kernels require it, and the file could not record a
// narrower width (its padding would silently become weights of a wider layer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/safetensors.hpp"

namespace lowbit::io {

struct PackedPlanes {
  std::vector<std::int64_t> shape;  // {ceil(in / 32), k, out}
  std::vector<std::int32_t> words;  // row-major over shape
};

inline PackedPlanes pack_bpdq_planes(const BitPlaneWeights& w) {
  w.validate();
  const Index out = w.rows(), in = w.cols(), k = w.planes, blocks = (in + 31) / 32;
  PackedPlanes packed{{blocks, k, out},
                      std::vector<std::int32_t>(static_cast<std::size_t>(blocks * k * out))};
  for (Index t = 0; t < blocks; ++t)
    for (Index p = 0; p < k; ++p)
      for (Index r = 0; r < out; ++r) {
        std::uint32_t word = 0;
        for (Index j = 0; j < 32 && 32 * t + j < in; ++j)
          word |= static_cast<std::uint32_t>((w.codes(r, 32 * t + j) >> p) & 1u) << j;
        packed.words[static_cast<std::size_t>((t * k + p) * out + r)] =
            static_cast<std::int32_t>(word);
      }
  return packed;
}

// Rebuilds BitPlaneWeights from official tensors. `coeffs` is c flattened
// row-major from [groups, k + 1, out]; in_features defaults to 32 * B.shape[0].
inline BitPlaneWeights bitplanes_from_bpdq(const std::vector<std::int64_t>& b_shape,
                                           const std::vector<std::int32_t>& b_words,
                                           const std::vector<std::int64_t>& c_shape,
                                           const std::vector<double>& coeffs,
                                           Index in_features = -1) {
  using lowbit::detail::require;
  require(b_shape.size() == 3, "BPDQ tensor B: expected shape [in/32, k, out], got rank ",
          b_shape.size());
  require(c_shape.size() == 3, "BPDQ tensor c: expected shape [groups, k+1, out], got rank ",
          c_shape.size());
  const std::int64_t blocks = b_shape[0], k = b_shape[1], out = b_shape[2];
  require(k >= 1 && k <= 8, "BPDQ tensor B: planes (dim 1) must be 1..8, got ", k);
  require(blocks >= 1 && out >= 1, "BPDQ tensor B: empty shape");
  require(static_cast<std::int64_t>(b_words.size()) == blocks * k * out, "BPDQ tensor B: holds ",
          b_words.size(), " words, its shape needs ", blocks * k * out);
  const Index in = in_features < 0 ? 32 * blocks : in_features;
  require(in > 32 * (blocks - 1) && in <= 32 * blocks, "BPDQ: in_features ", in,
          " does not match B's ", blocks, " words of 32 columns");
  require(c_shape[1] == k + 1, "BPDQ tensor c: dim 1 is ", c_shape[1], ", expected k+1 = ", k + 1,
          " (from B)");
  require(c_shape[2] == out, "BPDQ tensor c: dim 2 is ", c_shape[2], ", expected out = ", out,
          " (from B)");
  const std::int64_t groups = c_shape[0];
  require(groups >= 1 && in % groups == 0, "BPDQ tensor c: ", groups,
          " groups do not divide in_features = ", in);
  require(static_cast<std::int64_t>(coeffs.size()) == groups * (k + 1) * out,
          "BPDQ tensor c: holds ", coeffs.size(), " values, its shape needs ",
          groups * (k + 1) * out);
  BitPlaneWeights w;
  w.planes = static_cast<int>(k);
  w.group_size = in / groups;
  w.codes.setZero(out, in);
  for (Index t = 0; t < blocks; ++t)
    for (Index p = 0; p < k; ++p)
      for (Index r = 0; r < out; ++r) {
        const auto word =
            static_cast<std::uint32_t>(b_words[static_cast<std::size_t>((t * k + p) * out + r)]);
        for (Index j = 0; j < 32; ++j) {
          const bool bit = (word >> j) & 1u;
          if (32 * t + j < in)
            w.codes(r, 32 * t + j) |= static_cast<std::uint8_t>(bit << p);
          else
            require(!bit, "BPDQ tensor B: padding bit set beyond in_features = ", in);
        }
      }
  w.coeffs = Eigen::Map<const MatrixD>(coeffs.data(), groups * (k + 1), out);
  w.validate();
  return w;
}

// Adds `<linear>.B` and `<linear>.c` (c in `coeff_dtype`: BF16, F16 or F32).
inline void add_bpdq_linear(SafetensorsWriter& out, const std::string& linear,
                            const BitPlaneWeights& w, Dtype coeff_dtype = Dtype::BF16) {
  using lowbit::detail::require;
  require(coeff_dtype == Dtype::BF16 || coeff_dtype == Dtype::F16 || coeff_dtype == Dtype::F32,
          "add_bpdq_linear: '", linear, "': c is stored as BF16, F16 or F32, not ",
          dtype_name(coeff_dtype));
  require(w.g_idx.empty(), "add_bpdq_linear: '", linear,
          "' has a g_idx (act-order groups), which the BPDQ format cannot hold");
  require(w.cols() % 32 == 0, "add_bpdq_linear: '", linear,
          "': in_features must be a multiple of 32 in BPDQ checkpoints, got ", w.cols());
  const PackedPlanes planes = pack_bpdq_planes(w);
  std::vector<double> c(static_cast<std::size_t>(w.coeffs.size()));
  for (Index i = 0; i < w.coeffs.size(); ++i)
    c[static_cast<std::size_t>(i)] = detail::stored_value(w.coeffs.data()[i], coeff_dtype,
                                                          "add_bpdq_linear: '" + linear + ".c'");
  out.add_ints(linear + ".B", planes.shape, planes.words.data(), planes.words.size(), Dtype::I32);
  out.add_floats(linear + ".c", {w.groups(), w.planes + 1, w.rows()}, c.data(), c.size(),
                 coeff_dtype);
}

// Reads the BPDQ linear `linear` (c in any float dtype); in_features is
// 32 * B.shape[0].
inline BitPlaneWeights read_bpdq_linear(const SafetensorsReader& file, const std::string& linear) {
  const TensorInfo& b = detail::linear_tensor(file, linear, "B", 3, Dtype::I32);
  const TensorInfo& c = detail::linear_tensor(file, linear, "c", 3);
  // Each tensor is checked against the other (and its values) by the converter;
  // its messages name B and c, so prefix the file and the linear.
  try {
    return bitplanes_from_bpdq(b.shape, file.ints(b.name), c.shape, file.doubles(c.name));
  } catch (const Error& e) {
    lowbit::detail::fail(file.source(), ": linear '", linear, "': ", e.what());
  }
}

}  // namespace lowbit::io
