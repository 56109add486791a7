#include "util/test_hooks.h"

#include <cstdlib>

#include "util/check.h"

namespace dsmoe::test_hooks {
namespace {

// A whole decimal integer, or nothing.
std::optional<int64_t> integer(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return v;
}

// "A:B" of the variable `name` split at its last colon, or nothing when it is unset or empty.
std::optional<std::pair<std::string, std::string>> pair_of(const char* name, const char* form) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  const std::string text(value);
  const size_t colon = text.rfind(':');
  DSMOE_CHECK(colon != std::string::npos && colon > 0, name, ": expected ", form, ", got '", text, "'");
  return std::make_pair(text.substr(0, colon), text.substr(colon + 1));
}

RankStep rank_step(const char* name) {
  const auto p = pair_of(name, "RANK:STEP");
  if (!p) return {};
  const auto rank = integer(p->first), step = integer(p->second);
  DSMOE_CHECK(rank && step, name, ": expected RANK:STEP, got '", p->first, ":", p->second, "'");
  return {*rank, *step};
}

}  // namespace

RankStep fail_at() { return rank_step("DSMOE_FAIL_AT"); }
RankStep stall_at() { return rank_step("DSMOE_STALL_AT"); }

std::vector<int64_t> nan_at() {
  std::vector<int64_t> steps;
  const char* value = std::getenv("DSMOE_NAN_AT");
  if (!value) return steps;
  const std::string list(value);
  for (size_t at = 0; at <= list.size();) {
    const size_t end = std::min(list.find(',', at), list.size());
    const auto step = integer(list.substr(at, end - at));
    DSMOE_CHECK(step, "DSMOE_NAN_AT: expected STEP[,STEP...], got '", list, "'");
    steps.push_back(*step);
    at = end + 1;
  }
  return steps;
}

std::optional<DiskFull> disk_full() {
  const auto p = pair_of("DSMOE_DISK_FULL", "FILE:STEP");
  if (!p) return std::nullopt;
  const auto step = integer(p->second);
  DSMOE_CHECK(step, "DSMOE_DISK_FULL: expected FILE:STEP, got '", p->first, ":", p->second, "'");
  return DiskFull{p->first, *step};
}

}  // namespace dsmoe::test_hooks
