// The instruction-set target of a translation unit: which kernel variants it
// compiles, which of them the unqualified entry points use, and the namespace
// that holds every function whose body depends on the instruction set.
//
// That namespace, LOWBIT_ISA_TARGET (lowbit::isa_avx2, lowbit::isa_scalar,
// ...), is inline, so users never spell it, but it is part of every such
// symbol: translation units compiled with different flags (a dispatcher
// translation unit per instruction set) define different symbols, and the
// linker can neither merge two different kernel bodies under one name nor
// hand code built for a richer instruction set to a poorer translation unit
// (the fix xsimd and Highway apply). The target depends on the compiler's
// instruction-set macros alone; LOWBIT_FORCE_SCALAR selects isa_scalar.
//
// Variants compiled per target (families; the first listed is the default):
//   isa_avx512_vnni  bit-plane avx512, int8 avx512 (VNNI); avx2 (VNNI, EVEX), scalar
//   isa_avx512       bit-plane avx512, int8 avx2; scalar
//   isa_avx2_vnni    avx2 (int8 with AVX-VNNI); scalar
//   isa_avx2         avx2; scalar
//   isa_neon_dotprod neon (int8 with the dot-product extension); scalar
//   isa_neon         neon; scalar
//   isa_scalar       scalar
//
// A variant is a kernel set: a struct Isa in its own detail header
// (bitplane_<family>.hpp, int8_gemm_<family>.hpp) that the generic drivers
// are instantiated with (detail::bitplane::load / multiply, detail::int8::gemm;
// their comments list what an Isa provides). Adding one takes that header,
// its family macro below, and one table line in the public header.
#pragma once

#if !defined(LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP) && !defined(LOWBIT_KERNELS_INT8_GEMM_HPP)
#error "lowbit: include lowbit/kernels/bitplane_lut_gemm.hpp or int8_gemm.hpp, not kernels/detail/"
#endif

#if defined(LOWBIT_FORCE_SCALAR)
#define LOWBIT_ISA_TARGET isa_scalar
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__FMA__) && defined(__F16C__)
#define LOWBIT_ISA_TARGET isa_avx512_vnni
#define LOWBIT_ISA_AVX2 1
#define LOWBIT_ISA_AVX512 1
#define LOWBIT_ISA_AVX512_VNNI 1
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__FMA__) && defined(__F16C__)
#define LOWBIT_ISA_TARGET isa_avx512
#define LOWBIT_ISA_AVX2 1
#define LOWBIT_ISA_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__AVXVNNI__)
#define LOWBIT_ISA_TARGET isa_avx2_vnni
#define LOWBIT_ISA_AVX2 1
#define LOWBIT_ISA_AVX_VNNI 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LOWBIT_ISA_TARGET isa_avx2
#define LOWBIT_ISA_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#define LOWBIT_ISA_TARGET isa_neon_dotprod
#define LOWBIT_ISA_NEON 1
#define LOWBIT_ISA_NEON_DOTPROD 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define LOWBIT_ISA_TARGET isa_neon
#define LOWBIT_ISA_NEON 1
#else
#define LOWBIT_ISA_TARGET isa_scalar
#endif

// The family each kernel's unqualified entry points use.
#if defined(LOWBIT_ISA_AVX512)
#define LOWBIT_ISA_BITPLANE avx512
#elif defined(LOWBIT_ISA_AVX2)
#define LOWBIT_ISA_BITPLANE avx2
#elif defined(LOWBIT_ISA_NEON)
#define LOWBIT_ISA_BITPLANE neon
#else
#define LOWBIT_ISA_BITPLANE scalar
#endif

#if defined(LOWBIT_ISA_AVX512_VNNI)
#define LOWBIT_ISA_INT8 avx512
#elif defined(LOWBIT_ISA_AVX2)
#define LOWBIT_ISA_INT8 avx2
#elif defined(LOWBIT_ISA_NEON)
#define LOWBIT_ISA_INT8 neon
#else
#define LOWBIT_ISA_INT8 scalar
#endif
