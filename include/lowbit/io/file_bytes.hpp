// Whole files as bytes: memory-mapped read-only (or a buffer held in memory,
// for tests and fuzzing) for the readers, and written atomically.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
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
    out.mapped_ = mapped != nullptr;
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

  // Gives the pages wholly inside bytes [begin, end) back to the page cache
  // (a mapped file only): a reader that has converted a tensor stops counting
  // its bytes as resident, and a later read maps them in again from the file.
  void release(std::size_t begin, std::size_t end) const {
    if (!mapped_ || end > size_) return;
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t first = (begin + page - 1) / page * page, last = end / page * page;
    if (first < last)
      ::madvise(const_cast<unsigned char*>(data_) + first, last - first, MADV_DONTNEED);
  }

 private:
  std::shared_ptr<void> owner_;  // keeps the mapping or buffer alive
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
};

namespace detail {

// The temporary files being written, for a signal handler to remove: fixed
// buffers and lock-free flags, since only async-signal-safe work may run there.
struct TemporaryFiles {
  static constexpr int kSlots = 8;
  static constexpr std::size_t kPathBytes = 4096;
  char path[kSlots][kPathBytes] = {};
  std::atomic<bool> used[kSlots] = {};
  std::atomic<bool> directory[kSlots] = {};  // a staging directory of plain files
};

inline TemporaryFiles& temporary_files() {
  static TemporaryFiles files;
  return files;
}

inline int register_temporary(const std::string& path, bool directory = false) {
  TemporaryFiles& t = temporary_files();
  lowbit::detail::require(path.size() < TemporaryFiles::kPathBytes, path, ": path too long");
  for (int i = 0; i < TemporaryFiles::kSlots; ++i)
    if (!t.used[i].load()) {
      std::memcpy(t.path[i], path.c_str(), path.size() + 1);
      t.directory[i].store(directory);
      t.used[i].store(true);
      return i;
    }
  lowbit::detail::fail(path, ": more than ", TemporaryFiles::kSlots,
                       " files are being written at once");
}

inline void unregister_temporary(int slot) { temporary_files().used[slot].store(false); }

// The file a chain of symbolic links ends at (which may not exist yet).
inline std::string follow_links(const std::string& path) {
  std::filesystem::path p = path;
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code ec;
    if (!std::filesystem::is_symlink(p, ec)) return p.string();
    const std::filesystem::path next = std::filesystem::read_symlink(p, ec);
    lowbit::detail::require(!ec, path, ": cannot read the symbolic link ", p.string());
    p = next.is_absolute() ? next : p.parent_path() / next;
  }
  lowbit::detail::fail(path, ": too many levels of symbolic links");
}

// Writes all of `data` to the open descriptor; false on any error.
inline bool write_all(int fd, const unsigned char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

inline bool write_all(int fd, const std::vector<unsigned char>& data) {
  return write_all(fd, data.data(), data.size());
}

// Writes `size` bytes at `offset` of the open descriptor; false on any error.
inline bool pwrite_all(int fd, std::uint64_t offset, const unsigned char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Removes a directory of plain files with system calls only (open, getdents64,
// unlinkat, rmdir: no allocation), so a signal handler may call it.
inline void remove_flat_directory(const char* path) noexcept {
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    alignas(8) char buffer[4096];
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buffer, sizeof buffer);
      if (n <= 0) break;
      for (long at = 0; at < n;) {
        // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
        unsigned short length = 0;
        std::memcpy(&length, buffer + at + 16, sizeof length);
        const char* name = buffer + at + 19;
        if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) ::unlinkat(fd, name, 0);
        at += length;
      }
    }
    ::close(fd);
  }
  ::rmdir(path);
}

}  // namespace detail

// Removes every temporary file still being written. Async-signal-safe: a
// program's SIGINT/SIGTERM handler calls it before _exit, so an interrupted
// write leaves no debris.
inline void remove_temporary_files() noexcept {
  detail::TemporaryFiles& t = detail::temporary_files();
  for (int i = 0; i < detail::TemporaryFiles::kSlots; ++i) {
    if (!t.used[i].load()) continue;
    if (t.directory[i].load())
      detail::remove_flat_directory(t.path[i]);
    else
      ::unlink(t.path[i]);
  }
}

// One output file, written in two steps so several outputs can appear
// together: the bytes are written (all at once, or piece by piece at their
// offsets with write_at, so a large file never has to be in memory), commit()
// puts them under the final name, and an uncommitted StagedFile removes what
// it wrote.
//   - a regular file (or none yet) is replaced atomically: the bytes go to a
//     temporary file beside it, renamed over it on commit;
//   - a symbolic link is followed: its target is replaced the same way;
//   - a character device or a FIFO (/dev/null, a pipe) is written through at
//     commit, never replaced (its bytes wait in memory, as a pipe cannot seek);
//   - anything else (a directory, a block device, a socket) is refused.
class StagedFile {
 public:
  // An empty file: write_at gives its bytes.
  explicit StagedFile(const std::string& path) : path_(path) {
    target_ = detail::follow_links(path);
    struct stat st {};
    if (::stat(target_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      lowbit::detail::require(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode), path,
                              ": not a regular file, a character device or a FIFO; "
                              "refusing to write over it");
      write_through_ = true;
      return;
    }
    temporary_ = target_ + ".tmp" + std::to_string(::getpid());
    slot_ = detail::register_temporary(temporary_);
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      const int error = errno;
      detail::unregister_temporary(slot_);
      slot_ = -1;
      lowbit::detail::fail(path, ": cannot create ", temporary_, " (", std::strerror(error), ")");
    }
  }
  StagedFile(const std::string& path, const std::vector<unsigned char>& data) : StagedFile(path) {
    write_at(0, data.data(), data.size());
  }
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile() { discard(); }

  // Writes `size` bytes at `offset`; bytes never written read as zeros.
  void write_at(std::uint64_t offset, const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    if (write_through_) {
      lowbit::detail::require(offset <= SIZE_MAX - size, path_, ": offset ", offset,
                              " is too large");
      const auto end = static_cast<std::size_t>(offset) + size;
      if (through_.size() < end) through_.resize(end, 0);
      std::copy(p, p + size, through_.begin() + static_cast<std::ptrdiff_t>(offset));
      return;
    }
    lowbit::detail::require(fd_ >= 0, path_, ": written after commit");
    if (!detail::pwrite_all(fd_, offset, p, size)) {
      const int error = errno;
      discard();
      lowbit::detail::fail(path_, ": write failed (", std::strerror(error), ")");
    }
  }

  void commit() {
    if (write_through_) {
      write_through_ = false;
      const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
      lowbit::detail::require(fd >= 0, path_, ": cannot open (", std::strerror(errno), ")");
      const bool written = detail::write_all(fd, through_);
      lowbit::detail::require(::close(fd) == 0 && written, path_, ": write failed");
      return;
    }
    const bool closed = ::close(fd_) == 0;
    fd_ = -1;
    if (!closed) {
      discard();
      lowbit::detail::fail(path_, ": write failed");
    }
    if (std::rename(temporary_.c_str(), target_.c_str()) != 0) {
      const int error = errno;
      discard();
      lowbit::detail::fail(path_, ": cannot rename the temporary file into place (",
                           std::strerror(error), ")");
    }
    detail::unregister_temporary(slot_);
    slot_ = -1;
  }

 private:
  void discard() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (slot_ < 0) return;
    std::remove(temporary_.c_str());
    detail::unregister_temporary(slot_);
    slot_ = -1;
  }

  std::string path_, target_, temporary_;
  std::vector<unsigned char> through_;  // the bytes for a device or FIFO
  bool write_through_ = false;
  int fd_ = -1;    // the open temporary file until commit
  int slot_ = -1;  // the registered temporary file, -1 when none
};

// Writes one file as StagedFile describes (atomically for regular files).
inline void write_file_atomically(const std::string& path, const std::vector<unsigned char>& data) {
  StagedFile(path, data).commit();
}

// A new directory written file by file, so no file needs to stay in memory:
// files go into `dir.tmpPID` beside `dir` as they are added, and commit()
// renames that into place, so the directory appears whole or not at all.
// `dir` must not exist or be an empty directory (which it replaces). Until
// committed, the destructor and remove_temporary_files() (a signal handler)
// remove the staging directory. Signals are the caller's to hold around
// commit().
class StagedDirectory {
 public:
  explicit StagedDirectory(const std::string& dir) : dir_(dir) {
    namespace fs = std::filesystem;
    fs::path target = fs::path(dir).lexically_normal();
    if (!target.has_filename()) target = target.parent_path();
    target_ = target.string();
    staging_ = target_ + ".tmp" + std::to_string(::getpid());
    std::error_code ec;
    fs::remove_all(staging_, ec);
    lowbit::detail::require(fs::create_directory(staging_, ec), dir, ": cannot create ", staging_,
                            " (", ec.message(), ")");
    slot_ = detail::register_temporary(staging_, true);
  }
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;
  ~StagedDirectory() { discard(); }

  // Writes the file `name` (a plain name) of the directory.
  void add(const std::string& name, const std::vector<unsigned char>& bytes) {
    add(name, [&](const PieceWriter& write) { write(bytes.data(), bytes.size()); });
  }
  // Writes the file `name` from pieces: `pieces(write)` calls write(data,
  // size) for each in order, so the file never needs to be whole in memory.
  using PieceWriter = std::function<void(const unsigned char* data, std::size_t size)>;
  void add(const std::string& name, const std::function<void(const PieceWriter&)>& pieces) {
    const std::string path = staging_ + "/" + name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) fail("cannot create " + path + " (" + std::strerror(errno) + ")");
    bool written = true;
    try {
      pieces([&](const unsigned char* data, std::size_t size) {
        written = written && detail::write_all(fd, data, size);
      });
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0 || !written) fail("writing " + path + " failed");
  }
  // Renames a file already added.
  void rename(const std::string& from, const std::string& to) {
    const std::string a = staging_ + "/" + from, b = staging_ + "/" + to;
    if (std::rename(a.c_str(), b.c_str()) != 0)
      fail("cannot rename " + a + " to " + b + " (" + std::strerror(errno) + ")");
  }
  void commit() {
    if (std::rename(staging_.c_str(), target_.c_str()) != 0)
      fail("cannot rename " + staging_ + " into place (" + std::strerror(errno) + ")");
    detail::unregister_temporary(slot_);
    slot_ = -1;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    discard();
    lowbit::detail::fail(dir_, ": ", what);
  }
  void discard() noexcept {
    if (slot_ < 0) return;
    std::error_code ignored;
    std::filesystem::remove_all(staging_, ignored);
    detail::unregister_temporary(slot_);
    slot_ = -1;
  }

  std::string dir_, target_, staging_;
  int slot_ = -1;
};

}  // namespace lowbit::io
