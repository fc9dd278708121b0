// The ODR test's interface between its translation units: kernels_tu.cpp is
// compiled once per instruction-set flag set (CMakeLists.txt) and registers a
// function that runs the kernels its own unqualified calls select; the main
// translation unit (test_odr.cpp) compares them. Only ISA-independent types
// cross: packed weights, int8 operands, results, kernel tables.
#pragma once

#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/kernels/int8_gemm.hpp>
#include <string>
#include <vector>

namespace lowbit::odr {

struct Inputs {
  const PackedBitplanes* w = nullptr;
  MatrixF x;  // tokens x w->cols()
  const Int8Weights* w8 = nullptr;
  Int8Activations x8;
};

struct Outputs {
  std::string bitplane_isa, int8_isa;                    // lowbit::bitplane_kernels / int8_kernels
  std::string expected_bitplane_isa, expected_int8_isa;  // from the compiler's macros
  const BitplaneKernels* bitplane = nullptr;             // &lowbit::bitplane_kernels
  const Int8Kernels* int8 = nullptr;                     // &lowbit::int8_kernels
  std::vector<MatrixF> y_bitplane;  // bitplane_load + multiply: int8, f32 tables
  MatrixF y_bitplane_gemm;          // bitplane_gemm (int8 tables)
  MatrixF y_int8;                   // int8_gemm, row range
  MatrixF y_int8_checked;           // int8_gemm, checked
};

struct TranslationUnit {
  std::string name;
  Outputs (*run)(const Inputs&);
};

std::vector<TranslationUnit>& translation_units();

struct Registration {
  explicit Registration(TranslationUnit tu) { translation_units().push_back(std::move(tu)); }
};

}  // namespace lowbit::odr
