// Opening a path the user typed (OUT_DIR, --report FILE) one component at a time, so that a symbolic
// link someone else planted on the way is never followed, and what is checked is what is used: every
// folder is opened relative to the one before it with O_NOFOLLOW, never looked up again by name.
//
// The owner rule is Linux's fs.protected_symlinks made unconditional: a link is followed only when it
// belongs to root or to the user abridge runs as. (The kernel applies it only in sticky world-writable
// folders such as /tmp, and only when the sysctl is on, which many containers leave off.) Links you or
// root made (`/srv -> /data`, `/dev/stdout`) work; a link another user planted in a shared folder is
// refused, naming its owner.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "base/fd.h"

namespace abridge::pipeline {

// Whether a symbolic link owned by `uid` may be followed: root's, or the effective user's.
bool link_owner_trusted(uid_t uid);

struct WalkedPath {
  Fd dir;             // the folder holding the last component: O_RDONLY where it can be read, else O_PATH
  std::string name;   // the last component ("." for "/" or "."); never a link when follow_last
  bool exists = false;
  struct stat st {};  // what is at dir/name, not followed (when it exists)
};

// Walks `path` from "/" or the working directory. Each folder on the way is opened with
// openat(O_NOFOLLOW | O_DIRECTORY) from the one before; each link on the way (and the last component,
// when `follow_last`) is followed only under link_owner_trusted(), at most 40 of them (the kernel's
// bound). `fence` (a folder's stat, or null): once the walk is inside that folder, no link at all is
// followed (OUT_DIR's own rule, for a --report path inside OUT_DIR). A missing last component is not an
// error (exists = false); a missing folder on the way is.
// Throws abridge::Error("PATH: reason"), naming the link or folder at fault when it is not PATH itself.
WalkedPath walk_path(const std::string& path, bool follow_last, const struct stat* fence = nullptr);

}  // namespace abridge::pipeline
