#include "tests/test_support.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace abridge::testing {

// ABRIDGE_SOURCE_DIR and ABRIDGE_BINARY in the environment override the build's paths, so the test
// binaries can run from a copy of the tree on another machine.
static const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::filesystem::path source_path(const std::string& relative) {
  return std::filesystem::path(env_or("ABRIDGE_SOURCE_DIR", ABRIDGE_SOURCE_DIR)) / relative;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out << bytes;
}

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("abridge-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string quote(const std::filesystem::path& path) {
  std::string s(1, '\'');  // not "'" + ...: g++ 12 warns falsely (-Wrestrict) on that form
  s += path.string();
  s += '\'';
  return s;
}

pid_t spawn_abridge(const std::string& args, const std::filesystem::path& stderr_path) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string err = stderr_path.empty() ? std::string("/dev/null") : quote(stderr_path);
    const std::string cmd = std::string("exec ") + quote(env_or("ABRIDGE_BINARY", ABRIDGE_BINARY)) + " " + args +
                            " </dev/null >/dev/null 2>>" + err;
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

std::string abridge_binary() { return env_or("ABRIDGE_BINARY", ABRIDGE_BINARY); }

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

RunResult run_abridge(const std::string& args) { return run_shell(shell_quote(abridge_binary()) + " " + args); }

RunResult run_shell(const std::string& command) {
  TempDir dir;
  const auto out_path = dir / "stdout";
  const auto err_path = dir / "stderr";
  const std::string cmd = "( " + command + " ) </dev/null >" + shell_quote(out_path.string()) + " 2>" +
                          shell_quote(err_path.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

WatchProcess::WatchProcess(const std::string& args, const std::filesystem::path& log) : log_(log) {
  pid_ = spawn_abridge("watch " + args, log);
}

WatchProcess::~WatchProcess() {
  if (pid_ > 0) stop(SIGKILL);
}

std::string WatchProcess::log() const {
  std::error_code ec;
  return std::filesystem::exists(log_, ec) ? read_file(log_) : "";
}

bool WatchProcess::started() const {
  return wait_until([&] { return contains(log(), "documents found"); }, std::chrono::seconds(20));
}

int WatchProcess::stop(int sig) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  const bool ended = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, std::chrono::seconds(30));
  if (!ended) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (!ended) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string make_pdf(const std::vector<std::string>& objects) {
  std::string out = "%PDF-1.4\n";
  std::vector<size_t> offsets;
  for (size_t i = 0; i < objects.size(); ++i) {
    offsets.push_back(out.size());
    out += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const size_t xref = out.size();
  out += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (const size_t off : offsets) {
    char line[32];
    std::snprintf(line, sizeof line, "%010zu 00000 n \n", off);
    out += line;
  }
  out += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R >>\nstartxref\n" +
         std::to_string(xref) + "\n%%EOF\n";
  return out;
}

std::string pdf_stream(const std::string& data) {
  return "<< /Length " + std::to_string(data.size()) + " >>\nstream\n" + data + "\nendstream";
}

namespace {

// UTF-8 to code points (test input is valid UTF-8).
std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? b : b & (0xFF >> (len + 1));
    for (size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string utf16_hex(uint32_t cp) {
  char buf[16];
  if (cp < 0x10000) {
    std::snprintf(buf, sizeof buf, "%04X", cp);
  } else {
    cp -= 0x10000;
    std::snprintf(buf, sizeof buf, "%04X%04X", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
  }
  return buf;
}

bool wide(uint32_t cp) { return (cp >= 0x2E80 && cp <= 0x9FFF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFF00 && cp <= 0xFF60); }

}  // namespace

std::string make_text_layer_pdf(const std::vector<std::vector<std::string>>& pages) {
  std::map<uint32_t, int> cid;  // code point -> glyph id, from 1
  std::vector<uint32_t> order;
  for (const auto& page : pages)
    for (const std::string& line : page)
      for (const uint32_t cp : code_points(line))
        if (cp != '\t' && cid.emplace(cp, static_cast<int>(cid.size()) + 1).second) order.push_back(cp);
  std::string cmap =
      "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
      "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
      "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
      "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n";
  std::string widths;
  for (size_t k = 0; k < order.size(); k += 100) {  // at most 100 entries per bfchar block
    const size_t n = std::min<size_t>(100, order.size() - k);
    cmap += std::to_string(n) + " beginbfchar\n";
    for (size_t j = k; j < k + n; ++j) {
      char id[8];
      std::snprintf(id, sizeof id, "%04X", cid.at(order[j]));
      cmap += std::string("<") + id + "> <" + utf16_hex(order[j]) + ">\n";
      widths += std::to_string(cid.at(order[j])) + " [" + (wide(order[j]) ? "1000" : "500") + "] ";
    }
    cmap += "endbfchar\n";
  }
  cmap += "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend";
  std::vector<std::string> objs = {
      "<< /Type /Catalog /Pages 2 0 R >>", "",
      "<< /Type /Font /Subtype /Type0 /BaseFont /AbridgeTest /Encoding /Identity-H /DescendantFonts [4 0 R] "
      "/ToUnicode 5 0 R >>",
      "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /AbridgeTest /CIDSystemInfo << /Registry (Adobe) "
      "/Ordering (Identity) /Supplement 0 >> /DW 1000 /W [" + widths + "] >>",
      pdf_stream(cmap)};
  std::string kids;
  for (const auto& page : pages) {
    std::string content = "BT /F1 12 Tf\n";
    for (size_t l = 0; l < page.size(); ++l) {
      content += "1 0 0 1 72 " + std::to_string(720 - 16 * static_cast<int>(l)) + " Tm [<";
      for (const uint32_t cp : code_points(page[l])) {
        if (cp == '\t') {
          content += "> -300 <";  // TJ moves left by the number (in 1/1000 em): a negative one widens the gap
          continue;
        }
        char id[8];
        std::snprintf(id, sizeof id, "%04X", cid.at(cp));
        content += id;
      }
      content += ">] TJ\n";
    }
    content += "ET";
    const size_t page_obj = objs.size() + 1;
    kids += std::to_string(page_obj) + " 0 R ";
    objs.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                   "/Contents " + std::to_string(page_obj + 1) + " 0 R >>");
    objs.push_back(pdf_stream(content));
  }
  objs[1] = "<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(pages.size()) + " >>";
  return make_pdf(objs);
}

bool have_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace abridge::testing
