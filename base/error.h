// Errors, in three kinds:
//  - a bug (a broken invariant): ABRIDGE_CHECK aborts with file:line and the values;
//  - an environment failure or bad input (a missing file, a hostile checkpoint, CUDA): throw
//    abridge::Error with one line that names the file or call and, where useful, a hint;
//  - a bad document: the pipeline reports it and the batch goes on (it catches abridge::Error).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace abridge {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "abridge: internal error at %s:%d: check failed: %s%s%s\n", file, line, cond,
               msg.empty() ? "" : ": ", msg.c_str());
  std::abort();
}

}  // namespace abridge

// ABRIDGE_CHECK(cond) or ABRIDGE_CHECK(cond, "what " + std::to_string(value)).
#define ABRIDGE_CHECK(cond, ...)                                                          \
  do {                                                                                    \
    if (!(cond)) ::abridge::check_failed(__FILE__, __LINE__, #cond, std::string{__VA_ARGS__}); \
  } while (0)
