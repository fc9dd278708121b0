// How a quantizer reports on its run: the progress callback of the
// long-running ones (GPTQ, BPDQ, AWQ, TACQ) and the wall time every report
// holds. progress(done, total) is called on the calling thread after each
// step of work, with done rising to total; what a step is (a block of
// columns, a search candidate) is documented by each config.
#pragma once

#include <chrono>
#include <functional>

#include "lowbit/core/types.hpp"

namespace lowbit {

using Progress = std::function<void(Index done, Index total)>;

namespace detail {

// Counts the steps of a run and reports each to `progress` (when set).
class ProgressCounter {
 public:
  ProgressCounter(const Progress& progress, Index total) : progress_(progress), total_(total) {}
  void step() {
    ++done_;
    if (progress_) progress_(done_, total_);
  }

 private:
  const Progress& progress_;
  Index total_;
  Index done_ = 0;
};

// Started at construction; seconds() is the wall time since.
class Stopwatch {
 public:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace detail
}  // namespace lowbit
