#include "pipeline/prepare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "chunker/chunker.h"
#include "engine/chat.h"
#include "engine/tokenizer.h"
#include "pipeline/memory.h"
#include "pipeline/output_dir.h"
#include "pipeline/run_report.h"
#include "pipeline/summarize.h"
#include "pipeline/token_counter.h"

namespace abridge::pipeline {
namespace {

namespace fs = std::filesystem;

bool is_pdf(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".pdf";
}

// The document's bytes, read once through one descriptor (open_input: links kept inside its input
// directory): a regular file (not a FIFO or a device, not waited on), at most `max_bytes`, read to its end
// as it is now. Everything after reads these bytes, never the path again.
// Its permission bits as read are set in `input` (its summary mirrors them).
std::string read_document_bytes(SummaryInput& input, size_t max_bytes) {
  const Fd fd(open_input(input));
  std::string bytes = read_regular_fd(fd.get(), max_bytes);
  if (bytes.empty()) throw Error("empty file");
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0) input.mode = st.st_mode & 07777;
  return bytes;
}

// Tokens of an outline section's summary.
int64_t section_tokens(const SummarizeOptions& o) { return std::max<int64_t>(48, o.summary_tokens / 4); }

// The document's top-level sections (as the extractive summarizer lists them).
std::vector<OutlineSection> top_sections(const std::string& text, const chunker::TokenCounter& counter) {
  ExtractiveOptions eo;
  eo.max_tokens = 16;  // the listing is what is wanted here, not the summary
  std::vector<OutlineSection> out;
  for (const SectionSummary& s : summarize_extractive(text, counter, eo).sections) out.push_back({s.title, s.begin, s.end, ""});
  return out;
}

std::string plan_document(PreparedDoc& d, const SummaryRules& rules) {
  const SummarizeOptions& o = *rules.options;
  const TokenizerCounter counter(*rules.tokenizer);
  if (o.outline) d.sections = top_sections(d.text, counter);
  MergeRule merge;
  merge.instruction = rules.prompts.merge(d.lang);
  merge.room = rules.context - o.summary_tokens - 256 - rules.count(merge.instruction);
  merge.count = [&rules](std::string_view s) { return rules.count(s) + 8; };  // + its "Part N: " label
  merge.join = [lang = d.lang](const std::vector<std::string>& parts) { return Prompts::join(parts, lang); };

  const std::string single = rules.prompts.single(d.lang);
  const int64_t overhead = rules.count(single) + 64;
  if (d.input_tokens + overhead + o.summary_tokens <= rules.context) {
    // One pass: the whole document in one prompt (the engine prefills it in chunks).
    PlanRequest r{0, 0, single, chunker::clean_text(d.text), {}, 0};
    r.prompt_ids = rules.encode_request(d.lang, r.instruction, r.text);
    if (static_cast<int64_t>(r.prompt_ids.size()) + o.summary_tokens <= rules.context) {
      d.plan.emplace(std::move(r), std::move(merge));
      if (d.sections.size() > 1) {  // one extra request per section (a single section is the summary itself)
        std::vector<PlanRequest> side;
        for (const OutlineSection& sec : d.sections) {
          PlanRequest q{kSideLevel, 0, rules.prompts.section(d.lang, sec.title, section_tokens(o)),
                        chunker::clean_text(std::string_view(d.text).substr(sec.begin, sec.end - sec.begin)), {}, section_tokens(o)};
          q.prompt_ids = rules.encode_request(d.lang, q.instruction, q.text);
          side.push_back(std::move(q));
        }
        d.plan->add_side_requests(std::move(side));
      }
      return {};
    }
  }
  chunker::Options co;
  co.max_tokens = static_cast<size_t>(std::max<int64_t>(
      chunker::kMinBudget, std::min<int64_t>(rules.chunk_tokens, rules.context - overhead - o.summary_tokens - 64)));
  const auto chunks = chunker::chunk_text(d.text, counter, co);
  if (chunks.empty()) return "no text to summarize";
  std::vector<PlanPiece> pieces;
  std::vector<PlanRequest> map;
  for (size_t k = 0; k < chunks.size(); ++k) {
    pieces.push_back({chunks[k].start, chunks[k].end, chunks[k].section, static_cast<int64_t>(chunks[k].tokens), ""});
    PlanRequest r{0, k, rules.prompts.chunk(d.lang, chunks[k].section), chunks[k].text, {}, 0};
    r.prompt_ids = rules.encode_request(d.lang, r.instruction, r.text);
    if (static_cast<int64_t>(r.prompt_ids.size()) + o.summary_tokens > rules.context)
      return "a prompt of " + std::to_string(r.prompt_ids.size()) + " tokens does not fit the context of " +
             std::to_string(rules.context) + " tokens";
    map.push_back(std::move(r));
  }
  d.plan.emplace(std::move(pieces), std::move(map), std::move(merge));
  return {};
}

}  // namespace

std::vector<int32_t> SummaryRules::encode_request(Language lang, const std::string& instruction,
                                                  const std::string& text) const {
  const std::vector<engine::ChatMessage> messages = {{"system", prompts.system(lang)}, {"user", instruction + "\n\n" + text}};
  return engine::encode_chat(*tokenizer, messages);
}

std::string SummaryRules::cache_key(const PlanRequest& r) const {
  // "2": entries carry a zstd checksum; older ones (without) are simply not found.
  return sha256_hex("2\n" + param_key + "\n" + std::to_string(r.level) + "\n" + r.instruction + "\n" + r.text);
}

int64_t SummaryRules::count(std::string_view text) const {
  return text.empty() ? 0 : static_cast<int64_t>(tokenizer->count(text, engine::AddedTokens::kPlain));
}

PreparedDoc prepare_document(const SummaryInput& input, const SummaryRules& rules, const OutputDir& out) {
  const SummarizeOptions& o = *rules.options;
  PreparedDoc d;
  d.input = input;
  d.started = std::chrono::steady_clock::now();
  uint64_t document_bytes = static_cast<uint64_t>(std::max<int64_t>(input.bytes, 0));  // as found, then as read
  try {
    std::string bytes = read_document_bytes(d.input, rules.read.max_bytes);  // read once: hashed, then decoded
    document_bytes = bytes.size();
    d.sha = sha256_hex(bytes);
    d.job_key = sha256_hex(d.sha + "\n" + rules.param_key + "\n" + o.format);
    if (!o.force && out.up_to_date(input.output_rel, d.job_key, summary_mode(d.input.mode, d.input.reach))) {
      d.state = PreparedDoc::State::kUpToDate;
      return d;
    }
    Document doc;
    if (is_pdf(input.path)) {
      doc = read_pdf(std::move(bytes), rules.read);  // in the bounded child; OCR where the page has no text
    } else {
      doc = read_text(std::move(bytes), rules.read);  // the bytes hashed above, decoded and cleaned
    }
    d.text = std::move(doc.text);
    d.encoding = std::move(doc.encoding);
    d.page_starts = std::move(doc.page_starts);
    d.ocr_pages = std::move(doc.ocr_pages);
    d.ocr_languages = std::move(doc.ocr_languages);
    if (!d.ocr_pages.empty()) {
      Document shown;
      shown.ocr_pages = d.ocr_pages;
      shown.ocr_languages = d.ocr_languages;
      d.notes.push_back(describe_ocr(shown) + " read by OCR");
    }
    if (d.text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) throw Error("no text in the document");
    d.lang = o.lang == "zh" ? Language::kChinese : o.lang == "en" ? Language::kEnglish : detect_language(d.text);
    d.input_tokens = rules.count(d.text);
    if (!rules.llm) {
      const TokenizerCounter counter(*rules.tokenizer);
      ExtractiveOptions eo;
      eo.max_tokens = o.summary_tokens;
      eo.outline = o.outline;
      eo.section_tokens = section_tokens(o);
      const ExtractiveSummary s = summarize_extractive(d.text, counter, eo);
      if (s.text.empty()) throw Error("no sentences to summarize");
      d.summary = s.text;
      for (const auto& [b, e] : s.spans) d.pieces.push_back({b, e, "", 0, d.text.substr(b, e - b)});
      for (const ExtractedSentence& x : s.sentences) d.sentences.push_back({x.begin, x.end, x.section});
      if (o.outline)
        for (const SectionSummary& sec : s.sections) d.sections.push_back({sec.title, sec.begin, sec.end, sec.text});
      d.state = PreparedDoc::State::kSummarized;
      return d;
    }
    const std::string why = plan_document(d, rules);
    if (!why.empty()) throw Error(why);
    d.state = PreparedDoc::State::kPlanned;
  } catch (const std::bad_alloc&) {
    // A document larger than the memory it needs (docs/OPERATIONS.md): its text and plan go at once,
    // and the batch goes on with the next one.
    const auto started = d.started;
    d = PreparedDoc{};
    d.input = input;
    d.started = started;
    d.state = PreparedDoc::State::kFailed;
    d.error = out_of_memory_message(document_bytes);
    arm_memory_reserve();  // for the next one
  } catch (const std::exception& e) {
    // Anything one document does (a filesystem_error, a length_error on a hostile file) fails that document.
    d.state = PreparedDoc::State::kFailed;
    d.error = e.what();
    if (d.error.empty()) d.error = "cannot be read";
  }
  return d;
}

void fill_outline(PreparedDoc& d, const DocPlan& plan) {
  if (d.sections.empty()) return;
  if (!plan.side_summaries().empty()) {
    for (size_t k = 0; k < d.sections.size() && k < plan.side_summaries().size(); ++k) d.sections[k].summary = plan.side_summaries()[k];
  } else if (!plan.pieces().empty()) {
    for (OutlineSection& sec : d.sections) {
      std::string joined;
      for (const PlanPiece& p : plan.pieces())
        if (p.start >= sec.begin && p.start < sec.end && !p.summary.empty()) joined += (joined.empty() ? "" : "\n\n") + p.summary;
      sec.summary = joined;
    }
  } else if (d.sections.size() == 1) {
    d.sections[0].summary = plan.summary();
  }
}

namespace {

// The 1-based page of byte `offset` of a PDF's text; 0 when the document has no pages.
int64_t page_of(const PreparedDoc& d, size_t offset) {
  if (d.page_starts.empty()) return 0;
  return std::upper_bound(d.page_starts.begin(), d.page_starts.end(), offset) - d.page_starts.begin();
}

}  // namespace

std::string render_output(const PreparedDoc& d, const SummaryRules& rules, double seconds) {
  const SummarizeOptions& o = *rules.options;
  using nlohmann::json;
  auto pages = [&](size_t begin, size_t end) {  // {"first_page", "last_page"} of a PDF's span; null otherwise
    if (d.page_starts.empty()) return std::pair<json, json>(nullptr, nullptr);
    return std::pair<json, json>(page_of(d, begin), page_of(d, end > begin ? end - 1 : begin));
  };
  if (o.format == "txt") return d.summary + "\n";
  if (o.format == "md") {
    std::string md = "# " + shown_path(fs::path(d.input.path).filename().string()) + "\n\n" + d.summary + "\n";
    if (!d.sections.empty()) {
      md += "\n## Sections\n";
      for (const OutlineSection& sec : d.sections) {
        const auto [first, last] = pages(sec.begin, sec.end);
        std::string where;
        if (!first.is_null()) where = first == last ? " (page " + first.dump() + ")" : " (pages " + first.dump() + "–" + last.dump() + ")";
        md += "\n### " + (sec.title.empty() ? std::string("Before the first heading") : sec.title) + where + "\n\n" +
              (sec.summary.empty() ? std::string("(no summary)") : sec.summary) + "\n";
      }
    }
    return md;
  }
  json chunks = json::array();
  for (const PlanPiece& p : d.pieces) {
    const auto [first, last] = pages(p.start, p.end);
    chunks.push_back({{"start", p.start}, {"end", p.end}, {"first_page", first}, {"last_page", last}, {"section", p.section},
                      {"tokens", p.tokens}, {"summary", p.summary}});
  }
  json sentences = json::array();
  for (const SourceSpan& x : d.sentences) {
    const auto [first, last] = pages(x.begin, x.end);
    sentences.push_back({{"start", x.begin}, {"end", x.end}, {"first_page", first}, {"last_page", last}, {"section", x.section}});
  }
  json sections = json::array();
  for (const OutlineSection& sec : d.sections) {
    const auto [first, last] = pages(sec.begin, sec.end);
    sections.push_back({{"title", sec.title}, {"start", sec.begin}, {"end", sec.end}, {"first_page", first},
                        {"last_page", last}, {"summary", sec.summary}});
  }
  json input = {{"encoding", d.encoding.empty() ? json(nullptr) : json(d.encoding)}, {"pages", d.page_starts.size()},
                {"page_starts", d.page_starts}, {"ocr_pages", d.ocr_pages}, {"ocr_languages", d.ocr_languages}};
  json j = {{"summary", d.summary},
                  {"chunks", chunks},
                  {"input", input},
                  {"source", shown_path(d.input.path)},
                  {"sha256", d.sha},
                  {"model", rules.model_label},
                  {"prompt", rules.prompts.custom() ? shown_path(o.prompt_file)
                                                    : "built-in (" + std::string(language_code(d.lang)) + ")"},
                  {"parameters", json::parse(rules.parameters)},
                  {"language", language_code(d.lang)},
                  {"tokens", {{"input", d.input_tokens}, {"generated", d.generated_tokens}}},
                  {"timings", {{"seconds", seconds}}}};
  if (!d.sentences.empty()) j["sentences"] = sentences;
  if (o.outline) j["sections"] = sections;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace abridge::pipeline
