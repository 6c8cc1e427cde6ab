// Memory: what reading and summarizing one document takes, and the one line for running out of it.
//
// The figures are measured (docs/OPERATIONS.md, "Memory"): peak resident memory with the extractive
// engine or `abridge chunk` is about 100 MiB of abridge's own (the tokenizer's tables) plus at most
// kDocumentMemoryFactor times the document's text for prose; text of very short lines (a word a line)
// takes up to about 20 times. A model's weights and KV cache come on top (docs/OPERATIONS.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

namespace abridge::pipeline {

inline constexpr int kDocumentMemoryFactor = 6;
// --max-document-size: documents larger are refused before a byte is read (default 512 MiB; at most
// 2 GiB, which takes some 12 GiB to summarize).
inline constexpr int64_t kDefaultMaxDocumentMiB = 512;
inline constexpr int64_t kMaxDocumentMiB = 2048;

// "out of memory (the document is 512.0 MiB; reading it takes up to about 6 times that: give abridge
// more memory or split the document)"; without the size when `document_bytes` is 0 (not known).
std::string out_of_memory_message(uint64_t document_bytes);

// e.what(), except "out of memory" for std::bad_alloc (whose what() is "std::bad_alloc").
std::string error_text(const std::exception& e);

// Maps kMemoryReserveBytes of address space (untouched: no resident memory) and installs a new-handler
// that unmaps it when an allocation fails, then throws std::bad_alloc. The unwinding that follows
// has that room: destructors that allocate (nlohmann::json's, freeing a half-parsed document) and
// the error line itself would otherwise fail too, and an exception out of a destructor aborts.
// Called at start, and again once a document that ran out of memory is let go. Thread-safe.
void arm_memory_reserve();
inline constexpr size_t kMemoryReserveBytes = size_t{8} << 20;

}  // namespace abridge::pipeline
