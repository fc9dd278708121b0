// fuzz_gguf (fuzz_main.cpp): any byte string either parses as a GGUF whose values and
// tensors read back completely, or is rejected with lowbit::Error.
#include <lowbit/io/gguf.hpp>
#include "fuzz_main.hpp"

int lowbit::fuzz::fuzz_gguf(const std::uint8_t* data, std::size_t size) {
  try {
    const auto reader = lowbit::io::GgufReader::from_bytes({data, data + size});
    for (const std::string& key : reader.keys()) {
      const lowbit::io::GgufValue& v = reader.value(key);
      if (v.holds<std::string>()) (void)v.get<std::string>();
      if (v.holds<std::vector<std::string>>()) (void)v.get<std::vector<std::string>>();
    }
    for (const lowbit::io::GgufTensorInfo& t : reader.tensors()) {
      if (t.numel() == 0 || t.numel() > (1 << 20)) continue;
      try {
        (void)reader.matrix(t.name);
      } catch (const lowbit::Error&) {
      }
    }
  } catch (const lowbit::Error&) {
  }
  return 0;
}
