# Compile options for the project's own programs (tests, benchmarks, the tool).
# The library target itself never imposes flags on its consumers.
include(CheckCXXSourceCompiles)

add_library(lowbit_project_options INTERFACE)
target_compile_options(lowbit_project_options INTERFACE -Wall -Wextra -Wpedantic)
# The references round every float operation separately; fusing a*b+c into an
# FMA changes the last bit of grid scales. Engines may contract freely (the
# results stay within tolerance); our tests check bit-exactness.
target_compile_options(lowbit_project_options INTERFACE -ffp-contract=off)
if(LOWBIT_WERROR)
  target_compile_options(lowbit_project_options INTERFACE -Werror)
endif()

set(_lowbit_arch "")
if(LOWBIT_ARCH_FLAGS)
  separate_arguments(_lowbit_arch UNIX_COMMAND "${LOWBIT_ARCH_FLAGS}")
elseif(LOWBIT_NATIVE AND NOT CMAKE_CROSSCOMPILING)
  set(_lowbit_arch -march=native)
endif()
target_compile_options(lowbit_project_options INTERFACE ${_lowbit_arch})

# GCC 12 reports false (maybe-)uninitialized warnings inside its own AVX-512
# intrinsic headers when Eigen is compiled for AVX-512 (GCC bug 105593);
# builds without AVX-512 keep both warnings.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  string(REPLACE ";" " " CMAKE_REQUIRED_FLAGS "${_lowbit_arch}")
  check_cxx_source_compiles("#ifndef __AVX512F__\n#error no AVX-512\n#endif\nint main() {}"
                            LOWBIT_ARCH_HAS_AVX512)
  unset(CMAKE_REQUIRED_FLAGS)
  if(LOWBIT_ARCH_HAS_AVX512)
    target_compile_options(lowbit_project_options INTERFACE -Wno-uninitialized -Wno-maybe-uninitialized)
  endif()
endif()

if(LOWBIT_FORCE_SCALAR)
  target_compile_definitions(lowbit_project_options INTERFACE LOWBIT_FORCE_SCALAR)
endif()
if(LOWBIT_SANITIZE)
  target_compile_options(lowbit_project_options INTERFACE
      -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(lowbit_project_options INTERFACE -fsanitize=address,undefined)
endif()
find_package(OpenMP QUIET)
if(OpenMP_CXX_FOUND)
  target_link_libraries(lowbit_project_options INTERFACE OpenMP::OpenMP_CXX)
endif()
target_link_libraries(lowbit_project_options INTERFACE lowbit::io)

# Each source file of the tests and the tool parses GoogleTest, Eigen and the
# headers it uses, and compiles the same inline library code; a unity build
# compiles them in batches (one #include of each file), so every batch does
# that once.
set(CMAKE_UNITY_BUILD ${LOWBIT_UNITY_BUILD})
set(CMAKE_UNITY_BUILD_BATCH_SIZE ${LOWBIT_UNITY_BATCH_SIZE})
