// One libFuzzer binary, lowbit_fuzz, for every target: the readers and the
// model layer they share compile once, not once per target. The target is
// the name the binary is run by: fuzz_<target>, a symlink to lowbit_fuzz
// that the build makes for each (or LOWBIT_FUZZ_TARGET=<target>).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_main.hpp"

namespace {

using FuzzTarget = int (*)(const std::uint8_t*, std::size_t);

struct NamedTarget {
  const char* name;
  FuzzTarget run;
};

constexpr NamedTarget kFuzzTargets[] = {
    {"safetensors", lowbit::fuzz::fuzz_safetensors}, {"gguf", lowbit::fuzz::fuzz_gguf},
    {"llama2c", lowbit::fuzz::fuzz_llama2c},         {"layer_file", lowbit::fuzz::fuzz_layer_file},
    {"hf_config", lowbit::fuzz::fuzz_hf_config},     {"cli", lowbit::fuzz::fuzz_cli}};

FuzzTarget chosen_fuzz_target = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  std::string name;
  if (const char* env = std::getenv("LOWBIT_FUZZ_TARGET")) {
    name = env;
  } else {
    name = (*argv)[0];
    name = name.substr(name.rfind('/') + 1);  // npos + 1 == 0: no directory
    if (name.rfind("fuzz_", 0) == 0) name = name.substr(5);
  }
  for (const NamedTarget& t : kFuzzTargets)
    if (name == t.name) chosen_fuzz_target = t.run;
  if (chosen_fuzz_target == nullptr) {
    std::fprintf(stderr,
                 "lowbit_fuzz: no fuzz target '%s'; run it as fuzz_<target> (the build's "
                 "symlinks) or with LOWBIT_FUZZ_TARGET=<target>; targets:",
                 name.c_str());
    for (const NamedTarget& t : kFuzzTargets) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chosen_fuzz_target(data, size);
}
