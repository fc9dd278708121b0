#include "interrupts.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <lowbit/io/file_bytes.hpp>

namespace lowbit::cli {
namespace {

std::atomic<bool> holding{false};
std::atomic<int> deferred{0};

[[noreturn]] void stop(int signal) {
  io::remove_temporary_files();
  ::_exit(128 + signal);
}

// Runs on whichever thread receives the signal (OpenMP workers included):
// only async-signal-safe calls.
extern "C" void on_signal(int signal) {
  if (holding.load()) {
    deferred.store(signal);
    return;
  }
  stop(signal);
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

HoldInterrupts::HoldInterrupts() { holding.store(true); }

HoldInterrupts::~HoldInterrupts() {
  holding.store(false);
  if (const int signal = deferred.load()) stop(signal);
}

}  // namespace lowbit::cli
