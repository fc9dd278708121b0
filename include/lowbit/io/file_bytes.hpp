// Whole files as bytes: memory-mapped read-only (or a buffer held in memory,
// for tests and fuzzing) for the readers, and written atomically.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"

namespace lowbit::io {

class MappedBytes {
 public:
  MappedBytes() = default;

  // Throws lowbit::Error naming the path when it cannot be opened or mapped.
  static MappedBytes map(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    lowbit::detail::require(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      lowbit::detail::fail(path, ": not a regular file");
    }
    const std::size_t size = static_cast<std::size_t>(st.st_size);
    void* mapped = nullptr;
    if (size > 0) {
      mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (mapped == MAP_FAILED) {
        ::close(fd);
        lowbit::detail::fail(path, ": mmap failed (", std::strerror(errno), ")");
      }
    }
    ::close(fd);
    MappedBytes out;
    out.owner_ = std::shared_ptr<void>(mapped, [size](void* p) {
      if (p) ::munmap(p, size);
    });
    out.data_ = static_cast<const unsigned char*>(mapped);
    out.size_ = size;
    return out;
  }

  static MappedBytes adopt(std::vector<unsigned char> bytes) {
    auto buffer = std::make_shared<std::vector<unsigned char>>(std::move(bytes));
    MappedBytes out;
    out.data_ = buffer->data();
    out.size_ = buffer->size();
    out.owner_ = std::shared_ptr<void>(buffer, buffer.get());
    return out;
  }

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  std::shared_ptr<void> owner_;  // keeps the mapping or buffer alive
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// Writes to a temporary file beside `path`, then renames it into place, so an
// interrupted write never leaves a partial file under the final name.
inline void write_file_atomically(const std::string& path, const std::vector<unsigned char>& data) {
  const std::string temporary = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    lowbit::detail::require(static_cast<bool>(out), path, ": cannot create ", temporary);
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      lowbit::detail::fail(path, ": write failed");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    lowbit::detail::fail(path, ": cannot rename the temporary file into place (",
                         std::strerror(errno), ")");
  }
}

}  // namespace lowbit::io
