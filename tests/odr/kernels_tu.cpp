// One kernel translation unit of the ODR test, compiled once per flag set
// with LOWBIT_ODR_TU naming it (CMakeLists.txt). Everything here has internal
// linkage, so the copies do not collide; what they share is the library's.
#include "expected_isa.hpp"
#include "odr.hpp"

namespace lowbit::odr {
namespace {

Outputs run(const Inputs& in) {
  const PackedBitplanes& w = *in.w;
  Outputs out;
  out.bitplane_isa = bitplane_kernels.isa;
  out.int8_isa = int8_kernels.isa;
  out.expected_bitplane_isa = test::expected_bitplane_isa();
  out.expected_int8_isa = test::expected_int8_isa();
  out.bitplane = &bitplane_kernels;
  out.int8 = &int8_kernels;
  for (TableType type : {TableType::int8, TableType::f32}) {
    BitplaneContext ctx(w, in.x.rows(), type);
    MatrixF y(in.x.rows(), w.rows());
    bitplane_load(w, in.x.data(), in.x.rows(), in.x.cols(), ctx);
    bitplane_multiply(w, ctx, y.data(), w.rows(), 0, w.rows());
    out.y_bitplane.push_back(y);
  }
  out.y_bitplane_gemm = bitplane_gemm(w, in.x);
  out.y_int8 = MatrixF(in.x8.rows(), in.w8->rows());
  int8_gemm(*in.w8, in.x8, out.y_int8, 0, in.w8->rows());
  out.y_int8_checked = int8_gemm(*in.w8, in.x8);
  return out;
}

const Registration registration(TranslationUnit{LOWBIT_ODR_TU, &run});

}  // namespace
}  // namespace lowbit::odr
