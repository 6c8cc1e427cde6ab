// The one clean-up step every document goes through after it is decoded (text files) or extracted (PDFs),
// before the chunker, the extractive engine or a model sees it. It changes characters, not structure:
// line and page breaks stay where they are, except that a word broken at a line end is made whole
// on the first line.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace abridge::pipeline {

enum class TextSource { kTextFile, kPdf };

// Returns `text` (UTF-8; invalid bytes pass through unchanged) with:
//  - line breaks that are not '\n': VT (U+000B, a manual line break in Word and FileMaker exports), NEL
//    (U+0085) and LINE SEPARATOR (U+2028) become '\n'; PARAGRAPH SEPARATOR (U+2029) becomes "\n\n";
//  - compatibility ligatures and presentation forms folded to their letters (NFKC of these characters
//    only: U+FB00-FB06 ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ, U+FB13-FB17 Armenian, IJ ij, DŽ..nj and DZ..dz, Hebrew and Arabic
//    presentation forms); full NFKC is not applied, as it would turn full-width CJK punctuation
//    into ASCII;
//  - soft hyphens (U+00AD) removed; one at a line end joins the word across the break;
//  - a hyphen ('-' or U+2010) at a line end between letters or digits: the word is joined across the
//    break, keeping the hyphen or not by keep_line_end_hyphen() with what the rest of the document says;
//  - kPdf only: no spaces between two Han/kana characters, nor before or after CJK punctuation (PDF
//    producers position the characters of justified CJK lines one by one; poppler reads wide gaps as
//    spaces).
// A word is joined across a line break by moving its second part up: "infor-\nmation is" becomes
// "information\nis" (or "information" followed by the next line's break when nothing else is on it). Form
// feeds (page breaks) are never crossed, so the byte offsets of pages can be found after normalizing.
// Memory: `text` is taken over and changed in place where it can be; at most one more copy of the text
// (when a character changes) and counts of the words around line-end hyphens are held.
std::string normalize_text(std::string text, TextSource source);

// How often each word, and each hyphenated pair of words, occurs in a document. Words are runs of
// letters, marks and digits, lower-cased; "well-known" within a line counts as the compound
// "well-known", not as "well" and "known". The parts of a word broken at a line end do not count.
class WordCounts {
 public:
  explicit WordCounts(std::string_view text) : WordCounts(text, nullptr) {}
  // Only the words and compounds (lower case) in `only`, when not null: the counts take memory for
  // what is asked, not for every distinct word of a long document.
  WordCounts(std::string_view text, const std::unordered_set<std::string>* only);
  int word(const std::string& lower) const;      // as a word of its own
  int compound(const std::string& lower) const;  // "a-b" written with the hyphen within a line

 private:
  std::unordered_map<std::string, int> words_, compounds_;
};

// What the rest of a document says about a line that ends "...before-" followed by a line that starts
// "after...": counts from WordCounts, without this occurrence.
struct HyphenEvidence {
  std::string before, after;  // the letters/digits on either side of the hyphen, as written
  int joined = 0;             // "beforeafter" as one word
  int hyphenated = 0;         // "before-after" within a line
  int before_alone = 0;       // "before" as a word of its own
  int after_alone = 0;        // "after" as a word of its own
};
HyphenEvidence hyphen_evidence(const WordCounts& counts, std::string_view before, std::string_view after);

// Whether a line-end hyphen is part of the word ("well-\nknown" -> "well-known") rather than a break the
// typesetter made ("infor-\nmation" -> "information"). Dictionary-free; in order:
//  1. a digit on either side keeps it (numbers are not hyphenated: "32-bit", "COVID-19");
//  2. a capital after a part with lower-case letters keeps it ("Anglo-Saxon", "non-English");
//  3. a part of one letter keeps it (hyphenation leaves at least two letters on each line: "e-mail");
//  4. the document's own spelling decides: the form it uses more often elsewhere, joined or hyphenated;
//  5. otherwise it is kept when both parts are words of their own elsewhere in the document ("well",
//     "known"), and dropped when either is not ("infor", "mation").
// Measured on the real PDFs of tests/data by breaking, in turn, every hyphenated compound and every word
// of six letters or more (at each point that leaves two letters on each side) at a line end, the counts
// left without that occurrence: see tests/test_reading.cpp (HyphenRule.OnTheRealPdfs) for the figures.
bool keep_line_end_hyphen(const HyphenEvidence& e);

}  // namespace abridge::pipeline
