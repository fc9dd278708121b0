// Ctrl-C and SIGTERM: the tool stops at once, whatever it is computing, and
// removes the temporary files of outputs it was writing (io::StagedFile), so
// an interrupted run leaves no debris and exits 130 (SIGINT) or 143 (SIGTERM).
// While outputs are being renamed into place the signal waits, so a set of
// outputs appears whole or not at all (one that comes after they are in place
// still exits 130 or 143, and leaves them).
#pragma once

namespace lowbit::cli {

void install_interrupt_handlers();

// Defers SIGINT and SIGTERM while alive; one that arrived meanwhile then ends
// the program as above.
class HoldInterrupts {
 public:
  HoldInterrupts();
  ~HoldInterrupts();
  HoldInterrupts(const HoldInterrupts&) = delete;
  HoldInterrupts& operator=(const HoldInterrupts&) = delete;
};

}  // namespace lowbit::cli
