// Random bit-plane codes for the kernel benchmarks: their values do not
// change the work. Eight codes from each 64 random bits keep a 7B layer's
// setup to seconds.
#pragma once

#include <cstdint>
#include <lowbit/core/types.hpp>
#include <random>

namespace {

lowbit::CodeMatrix random_plane_codes(int planes, lowbit::Index rows, lowbit::Index cols,
                                      std::mt19937_64& rng) {
  lowbit::CodeMatrix codes(rows, cols);
  const std::uint64_t mask = 0x0101010101010101ull * static_cast<std::uint64_t>((1u << planes) - 1);
  for (lowbit::Index i = 0; i < codes.size(); i += 8) {
    const std::uint64_t bits = rng() & mask;
    for (lowbit::Index b = 0; b < 8 && i + b < codes.size(); ++b)
      codes.data()[i + b] = static_cast<std::uint8_t>(bits >> (8 * b));
  }
  return codes;
}

}  // namespace
