#include "pipeline/memory.h"

#include <sys/mman.h>

#include <atomic>
#include <new>

#include "base/bytes.h"

namespace abridge::pipeline {

std::string out_of_memory_message(uint64_t document_bytes) {
  const std::string times = "up to about " + std::to_string(kDocumentMemoryFactor) + " times ";
  const std::string advice = ": give abridge more memory or split the document)";
  if (document_bytes == 0) return "out of memory (reading a document takes " + times + "its size" + advice;
  return "out of memory (the document is " + format_bytes(document_bytes, 1, ByteUnit::kMiB) + "; reading it takes " +
         times + "that" + advice;
}

std::string error_text(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return "out of memory";
  return e.what();
}

namespace {

std::atomic<void*> g_reserve{nullptr};

void release_reserve_and_throw() {
  if (void* p = g_reserve.exchange(nullptr)) ::munmap(p, kMemoryReserveBytes);
  throw std::bad_alloc();
}

}  // namespace

void arm_memory_reserve() {
  if (g_reserve.load() == nullptr) {
    void* p = ::mmap(nullptr, kMemoryReserveBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      void* expected = nullptr;
      if (!g_reserve.compare_exchange_strong(expected, p)) ::munmap(p, kMemoryReserveBytes);
    }
  }
  std::set_new_handler(release_reserve_and_throw);
}

}  // namespace abridge::pipeline
