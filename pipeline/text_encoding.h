// The bytes of a text file to UTF-8: byte-order marks, UTF-16 without one, legacy encodings (detected by
// uchardet, converted by glibc's iconv), and files that are not text at all.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace abridge::pipeline {

struct DecodedText {
  std::string text;      // UTF-8 (with keep_invalid_utf8, invalid bytes of a UTF-8 file stay as they are)
  std::string encoding;  // what the bytes were read as: "UTF-8", "UTF-16LE", "GB18030", "WINDOWS-1252", ...
};

// The least evidence detect_encoding() needs: bytes of 0x80 and above in the file. Measured with uchardet
// 0.0.7 on windows of real translations (dpkg's Chinese, Japanese, Korean, Russian, Czech, Polish, German,
// French catalogs) re-encoded in their legacy encodings: from 32 such bytes on, a multi-byte guess
// (GB18030, Big5, Shift_JIS, EUC-KR) decodes the window correctly 99.6% of the time (96.6% from 16, 44%
// from 8); a single-byte code page 98.7% from 16 (92% from 4).
inline constexpr size_t kMinMultiByteEvidence = 32;
inline constexpr size_t kMinSingleByteEvidence = 16;

// Reads `bytes` as text. In order:
//  1. `forced` (an iconv name, e.g. "GBK", "latin1", "UTF-16LE") when not empty: converted strictly.
//  2. A byte-order mark: UTF-8, UTF-16LE/BE, UTF-32LE/BE.
//  3. UTF-16 without a mark: NUL bytes on one parity of offsets only (every ASCII character of UTF-16LE
//     text has its NUL at an odd offset), either endianness.
//  4. Not text: more than kMaxControlShare of the bytes are NUL or control characters other than tab,
//     line ends, form feed and ESC (ANSI colours).
//  5. Valid UTF-8.
//  6. Otherwise uchardet names the encoding, and it is used when its guess converts without error and the
//     file holds enough evidence (above). A label is widened to the superset Windows writes (the WHATWG
//     encoding standard's choice): SHIFT_JIS -> CP932, EUC-KR/UHC -> CP949, BIG5 -> BIG5-HKSCS,
//     GB2312/GBK -> GB18030, ISO-8859-1 -> WINDOWS-1252, ISO-8859-9 -> WINDOWS-1254.
// A leading U+FEFF left by a conversion is dropped. Throws abridge::Error with one line (no path) for a
// file that is not text, that is not valid in the forced or marked encoding, or whose encoding cannot be
// told with confidence; the last names the likely candidates and --encoding. With keep_invalid_utf8, a
// file that is not text is still refused, but one that cannot be identified is read as UTF-8 with its
// invalid bytes kept (the chunker replaces them in place).
DecodedText decode_text(std::string bytes, const std::string& forced = "", bool keep_invalid_utf8 = false);

// Throws abridge::Error("unknown encoding 'NAME' ...") when iconv cannot convert from `name`.
void check_encoding_name(const std::string& name);

// Share of NUL/control bytes above which a file is not text (see decode_text, step 4). Text in any
// encoding has almost none; executables, images, archives and office files have 10% and more (the bytes
// of compressed data are near uniform, and 27 of the 256 values are such controls).
inline constexpr double kMaxControlShare = 0.05;

// The detector's guess alone, widened as above ("" when it has none), for tests and messages.
std::string detect_encoding(std::string_view bytes);

}  // namespace abridge::pipeline
