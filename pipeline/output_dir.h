// OUT_DIR: the one place abridge writes. Summaries, the run lock, the summary cache and the done
// records (under OUT_DIR/.abridge/) all go through this class, shared by `summarize` and `watch`.
//
// Every file is created relative to a directory descriptor opened without following links
// (O_NOFOLLOW on each path component), written to an unpredictable temporary name (O_CREAT | O_EXCL,
// ".abridge-tmp-" and 12 random hex digits, a pattern no user file has), fsync'd and renamed into
// place, then the directory is fsync'd: a crash never leaves a half-written file, and a link planted
// anywhere inside OUT_DIR is never written through (a link at the final name is replaced, not followed).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::pipeline {

class OutputDir {
 public:
  // Opens OUT_DIR (creating it and .abridge/{cache,done}) and takes the run lock: an exclusive flock on
  // the OUT_DIR directory itself and on OUT_DIR/.abridge (checked to be the folder at that name once
  // locked), so a cleaner that deletes .abridge/lock or all of .abridge does not let a second run in.
  // With `wait`, waits for another run to finish (saying so on `err`) until give_up() turns true.
  // OUT_DIR's path is walked with walk_path() (a link on it, or OUT_DIR as a link, is followed only when
  // it belongs to root or to the user running abridge), and an OUT_DIR owned by another user (not root)
  // is refused. Throws abridge::Error when OUT_DIR cannot be made, is refused or is not a folder.
  //
  // A cleaner that deletes .abridge (or its cache/ or done/) while this object lives: the next write
  // makes them again (and locks the new .abridge), so a long `watch` goes on; the lock on OUT_DIR itself
  // held all along. Reads in between find nothing (a cache miss, "not up to date").
  OutputDir(const std::string& path, bool wait, std::ostream& err, const std::function<bool()>& give_up = {});
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  // Empty when this process holds the lock; otherwise "another abridge run (pid N)": nothing else may
  // be called then.
  const std::string& held_by_other() const { return held_by_other_; }
  const std::string& path() const { return path_; }
  // OUT_DIR's identity (st_dev, st_ino), e.g. as the fence of a --report path (atomic_file.h).
  struct stat folder_stat() const;

  // Removes the temporary files of runs killed mid-write (only the ".abridge-tmp-XXXXXXXXXXXX" pattern,
  // anywhere under OUT_DIR, never through a link). Call with the lock held. Returns how many.
  size_t remove_stale_temp_files() const;

  // The summary cache: zstd frames with a content checksum under .abridge/cache/KEY.zst.
  struct CacheEntry {
    std::optional<std::string> value;  // the cached text
    bool damaged = false;              // an entry was there but failed its checksum or did not decode
  };
  CacheEntry cache_get(const std::string& key) const;
  void cache_put(const std::string& key, std::string_view value) const;  // throws abridge::Error

  // True when the done record of output `rel` (relative to OUT_DIR) names `job_key` and the output holds
  // exactly the bytes it was written with. An up-to-date output whose permission bits are wider than
  // `mode` is narrowed to them (a summary written before its input was made private, or by an older
  // version). Never throws: anything odd means "not up to date".
  bool up_to_date(const std::string& rel, const std::string& job_key, mode_t mode = 0644) const;
  // Records `rel` as done for `job_key` (with the sha256 of `body`), then writes the output with
  // permission bits `mode` (the umask applies). The record comes first: a run killed between the two
  // finds them disagreeing and summarizes again. Parent folders are created, the i-th of rel's folders
  // with 0700 | folder_modes[i] (0755 where none is given); an existing one is left as it is. A link or
  // non-folder on the way is an error. Throws abridge::Error.
  void write_output(const std::string& rel, std::string_view body, const std::string& job_key,
                    const std::string& source, mode_t mode = 0644,
                    const std::vector<mode_t>& folder_modes = {}) const;

 private:
  void open_and_lock(bool wait, std::ostream& err, const std::function<bool()>& give_up);
  void open_state_children() const;
  bool state_intact() const;
  void restore_state() const;
  template <class Write>
  void with_state(const Write& write) const;
  void close_all();

  std::string path_;
  int dir_fd_ = -1;
  // .abridge, .abridge/cache and .abridge/done: guarded by state_mu_ (shared to use them, unique to open
  // them again after a cleaner deleted them).
  mutable std::shared_mutex state_mu_;
  mutable int state_fd_ = -1, cache_fd_ = -1, done_fd_ = -1;
  std::string held_by_other_;
};

// The permission bits of a summary, mirrored from its input so that no one can read a summary of a file
// they could not read: owner read-write (abridge's file), and read for group or others only where the
// input's own bits give it (`input_mode` & 0044) and they can search every folder on its way (`reach`:
// group 0010, others 0001, as SummaryInput::reach). Write bits are never given.
mode_t summary_mode(mode_t input_mode, mode_t reach);

// sha256 of bytes, lowercase hex.
std::string sha256_hex(std::string_view bytes);

}  // namespace abridge::pipeline
