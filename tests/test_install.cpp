// abridge as a user installs it: `cmake --install` into a temporary prefix, then the installed binary,
// man page and samples run or read from there; and the Debian package that `cpack -G DEB` makes of the
// same files: its file list, its Depends (each shared library the binary links, by the Debian package
// that ships it here) and its unpacked binary.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "tests/test_support.h"

using namespace abridge::testing;
namespace fs = std::filesystem;

namespace {

struct Shell {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

Shell sh(const std::string& command) {
  Shell r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// Every regular file under `root`, as a path relative to it.
std::set<std::string> files_under(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), root).string());
  return out;
}

// What an install puts under its prefix: the README's "Install" section.
std::set<std::string> expected_files() {
  std::set<std::string> f = {"bin/abridge",
                             "share/abridge/abridge-watch.service",
                             "share/abridge/cluster/crontab",
                             "share/abridge/cluster/slurm-array.sh",
                             "share/abridge/cluster/k8s-indexed-job.yaml",
                             "share/doc/abridge/README.md",
                             "share/doc/abridge/OPERATIONS.md"};
  if (*ABRIDGE_MAN_PAGE) f.insert(std::string("share/man/man1/") + ABRIDGE_MAN_PAGE);
  return f;
}

const std::string kBuild = ABRIDGE_BUILD_DIR;

// Every install rule is in CMake's default component, "Unspecified". Naming it makes an install write
// its manifest to install_manifest_Unspecified.txt, so these tests leave alone the
// build/install_manifest.txt of the user's own `cmake --install build` (the README's uninstall list).
const std::string kComponent = "Unspecified";

}  // namespace

TEST(Install, IntoATempPrefixGivesAWorkingAbridge) {
  TempDir prefix, out;
  const Shell install = sh(quote(ABRIDGE_CMAKE) + " --install " + quote(kBuild) + " --prefix " + quote(prefix.path()) +
                           " --component " + kComponent);
  ASSERT_EQ(install.exit_code, 0) << install.out;
  EXPECT_EQ(files_under(prefix.path()), expected_files());

  // The installed binary runs from there: the same version as the build's, and a summary.
  const std::string abridge = quote(prefix / "bin/abridge");
  const Shell version = sh(abridge + " --version");
  ASSERT_EQ(version.exit_code, 0) << version.out;
  EXPECT_EQ(version.out, run_abridge("--version").out);
  EXPECT_EQ(version.out.rfind("abridge ", 0), 0u) << version.out;
  const Shell summarize = sh(abridge + " summarize " + quote(source_path("samples/a-scandal-in-bohemia.txt")) +
                             " -o " + quote(out.path()));
  ASSERT_EQ(summarize.exit_code, 0) << summarize.out;
  EXPECT_TRUE(contains(summarize.out, "1 summarized, 0 failed")) << summarize.out;
  EXPECT_GT(read_file(out / "a-scandal-in-bohemia.txt.summary.md").size(), 200u);

  // The samples name the installed binary, not the source tree's default /usr/local/bin.
  const std::string unit = read_file(prefix / "share/abridge/abridge-watch.service");
  EXPECT_TRUE(contains(unit, "ExecStart=" + (prefix / "bin/abridge").string() + " watch ")) << unit;
  EXPECT_TRUE(contains(unit, "sudo cp " + (prefix / "share/abridge/abridge-watch.service").string())) << unit;
  EXPECT_FALSE(contains(unit, "/usr/local/bin")) << unit;
  const std::string cron = read_file(prefix / "share/abridge/cluster/crontab");
  EXPECT_TRUE(contains(cron, (prefix / "bin/abridge").string() + " summarize ")) << cron;
  const auto script = fs::status(prefix / "share/abridge/cluster/slurm-array.sh").permissions();
  EXPECT_NE(script & fs::perms::owner_exec, fs::perms::none);  // still a script to run
}

TEST(Install, TheManPageDocumentsEveryCommandsOptions) {
  if (!*ABRIDGE_MAN_PAGE) GTEST_SKIP() << "help2man was not found when the build was configured: no man page";
  const fs::path page = fs::path(kBuild) / "man" / ABRIDGE_MAN_PAGE;
  const Shell text = sh("gzip -dc " + quote(page));
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_EQ(text.out.rfind(".\\\" DO NOT MODIFY THIS FILE!  It was generated by help2man", 0), 0u) << text.out.substr(0, 200);
  EXPECT_TRUE(contains(text.out, ".TH ABRIDGE \"1\"")) << text.out.substr(0, 400);
  // One part per command, each with its own options (hyphens as roff minus signs).
  for (const char* part : {"abridge summarize", "abridge watch", "abridge tokenize", "abridge chunk", "abridge generate",
                           "abridge model make-random", "abridge model info", "abridge bench engine"})
    EXPECT_TRUE(contains(text.out, std::string(".SS \"") + part + "\"")) << part;
  for (const char* option : {"\\-\\-summary\\-tokens", "\\-\\-no\\-inotify", "\\-\\-max\\-new\\-tokens", "\\-\\-preset",
                             "\\-\\-overlap", "\\-\\-decode", "\\-\\-prefill\\-chunk"})
    EXPECT_TRUE(contains(text.out, option)) << option;
}

TEST(Install, DebianPackageHasTheFilesAndTheLibrariesItNeeds) {
  TempDir dir;
  const Shell pack = sh("cd " + quote(dir.path()) + " && " + quote(ABRIDGE_CPACK) + " -G DEB --config " +
                        quote(kBuild + "/CPackConfig.cmake") + " -B " + quote(dir.path()) +
                        " -D 'CPACK_INSTALL_CMAKE_PROJECTS=" + kBuild + ";abridge;" + kComponent + ";/'");
  ASSERT_EQ(pack.exit_code, 0) << pack.out;
  std::vector<fs::path> debs;
  for (const auto& e : fs::directory_iterator(dir.path()))
    if (e.path().extension() == ".deb") debs.push_back(e.path());
  ASSERT_EQ(debs.size(), 1u) << pack.out;
  const std::string deb = quote(debs[0]);

  // The file list: the install's files under /usr.
  const Shell list = sh("dpkg-deb --fsys-tarfile " + deb + " | tar -t");
  ASSERT_EQ(list.exit_code, 0) << list.out;
  std::set<std::string> files;
  for (const std::string& line : lines_of(list.out))
    if (line.back() != '/') files.insert(line);
  std::set<std::string> expected;
  for (const std::string& f : expected_files()) expected.insert("./usr/" + f);
  EXPECT_EQ(files, expected) << list.out;

  // Depends: for each library the binary links directly, the package that ships the copy it loads
  // here (the loader's path, so that /lib32/libm.so.6 of libc6-i386 does not count).
  const Shell depends = sh("dpkg-deb -f " + deb + " Depends");
  ASSERT_EQ(depends.exit_code, 0) << depends.out;
  std::set<std::string> depended;  // "libc6 (>= 2.34), libzstd1 (>= 1.5.2)" -> {libc6, libzstd1}
  {
    std::string list = depends.out;
    for (char& c : list)
      if (c == ',' || c == '|') c = '\n';
    for (const std::string& item : lines_of(list)) {
      std::istringstream words(item);
      std::string name;
      if (words >> name) depended.insert(name);
    }
  }
  const Shell needed = sh("readelf -d " + quote(ABRIDGE_BINARY) + " | sed -n 's/.*Shared library: \\[\\(.*\\)\\]/\\1/p'");
  ASSERT_EQ(needed.exit_code, 0) << needed.out;
  ASSERT_FALSE(lines_of(needed.out).empty()) << needed.out;
  for (const std::string& soname : lines_of(needed.out)) {
    if (soname.rfind("libcu", 0) == 0) continue;  // CUDA's libraries: from NVIDIA, in no Debian package
    const Shell loaded = sh("ldd " + quote(ABRIDGE_BINARY) + " | awk '$1 == \"" + soname + "\" { print $3 }'");
    const fs::path path = lines_of(loaded.out).empty() ? fs::path() : fs::path(lines_of(loaded.out)[0]);
    ASSERT_TRUE(path.is_absolute()) << soname << ": " << loaded.out;
    // By directory and name, not the whole path: /lib and /usr/lib are one on a merged-/usr system.
    const Shell owner = sh("dpkg -S '*/" + path.parent_path().filename().string() + "/" + soname + "' | head -n 1 | cut -d: -f1");
    ASSERT_EQ(owner.exit_code, 0) << soname << ": " << owner.out;
    std::string package = owner.out.substr(0, owner.out.find('\n'));
    ASSERT_FALSE(package.empty()) << soname;
    EXPECT_EQ(depended.count(package), 1u) << soname << " (from " << package << ") is not in Depends: " << depends.out;
  }

  // Unpacked, it runs, and its unit names /usr/bin/abridge.
  const Shell unpack = sh("dpkg-deb -x " + deb + " " + quote(dir / "root"));
  ASSERT_EQ(unpack.exit_code, 0) << unpack.out;
  const Shell version = sh(quote(dir / "root/usr/bin/abridge") + " --version");
  EXPECT_EQ(version.exit_code, 0) << version.out;
  EXPECT_EQ(version.out, run_abridge("--version").out);
  EXPECT_TRUE(contains(read_file(dir / "root/usr/share/abridge/abridge-watch.service"), "ExecStart=/usr/bin/abridge watch "));
}
