// Quantizes a small matrix, converts it to bit planes, round-trips it through
// safetensors in memory, and checks the results agree: the targets' include
// paths and dependencies (Eigen for lowbit::lowbit, nlohmann/json for
// lowbit::io). It includes the headers it uses, not the umbrella ones: the
// tests compile those, every header is installed, and the umbrella would
// make each consumer compile the whole library (four times the CPU time).
#include <lowbit/core/bitplane_weights.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/quant/rtn.hpp>

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
