// Quantizes a small matrix, converts it to bit planes, round-trips it through
// safetensors in memory, and checks the results agree.
#include <lowbit/io.hpp>
#include <lowbit/lowbit.hpp>

#include <cstdio>

int main() {
  const lowbit::MatrixF w = lowbit::MatrixF::Random(8, 64);
  lowbit::RtnConfig config;
  config.bits = 3;
  config.group_size = 32;
  const lowbit::UniformWeights q = lowbit::quantize_rtn(w, config).weights;
  const lowbit::MatrixF dequantized = q.dequantize();
  if (lowbit::to_bitplanes(q).dequantize() != dequantized) return std::puts("bit planes differ"), 1;

  lowbit::io::SafetensorsWriter writer;
  writer.add_matrix("Q", dequantized);
  const auto reader = lowbit::io::SafetensorsReader::from_bytes(writer.bytes());
  if (reader.matrix("Q") != dequantized) return std::puts("safetensors round trip differs"), 1;
  std::puts("lowbit consumer: ok");
  return 0;
}
