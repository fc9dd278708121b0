// fuzz_safetensors (fuzz_main.cpp): any byte string either parses into tensors that read back
// completely, or is rejected with lowbit::Error. Nothing else is allowed. The
// same holds for the checkpoint readers on every linear the file seems to hold.
#include <lowbit/io/awq_format.hpp>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/io/safetensors.hpp>
#include "fuzz_main.hpp"

int lowbit::fuzz::fuzz_safetensors(const std::uint8_t* data, std::size_t size) {
  try {
    const auto reader = lowbit::io::SafetensorsReader::from_bytes({data, data + size});
    for (const std::string& name : reader.names()) {
      const lowbit::io::TensorInfo& t = reader.info(name);
      if (t.numel() > (1 << 20)) continue;
      if (lowbit::io::is_float_dtype(t.dtype))
        (void)reader.floats(name);
      else
        (void)reader.ints(name);
    }
    auto attempt = [](auto&& read) {
      try {
        (void)read();
      } catch (const lowbit::Error&) {
      }
    };
    for (const std::string& name : reader.names()) {
      const std::size_t dot = name.rfind('.');
      if (dot == std::string::npos || reader.info(name).numel() > (1 << 16)) continue;
      const std::string linear = name.substr(0, dot), part = name.substr(dot + 1);
      if (part == "qweight") {
        for (int bits : {2, 3, 4, 8})
          for (bool v2 : {false, true})
            attempt([&] { return lowbit::io::read_gptq_linear(reader, linear, bits, v2); });
        attempt([&] { return lowbit::io::read_awq_linear(reader, linear); });
      }
      if (part == "B") attempt([&] { return lowbit::io::read_bpdq_linear(reader, linear); });
      if (part == "bias") attempt([&] { return lowbit::io::read_linear_bias(reader, linear, 32); });
    }
  } catch (const lowbit::Error&) {
  }
  return 0;
}
