#include "sweep/name_template.h"

#include "util/check.h"

namespace dsmoe {

std::string expand_template(const std::string& tmpl, const std::map<std::string, std::string>& fields,
                            const std::string& context) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] == '}') throw Error(cat(context, ": unmatched '}' in '", tmpl, "'"));
    if (tmpl[i] != '{') {
      out += tmpl[i];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    DSMOE_CHECK(close != std::string::npos, context, ": unmatched '{' in '", tmpl, "'");
    const std::string field = tmpl.substr(i + 1, close - i - 1);
    auto it = fields.find(field);
    if (it == fields.end()) {
      std::string known;
      for (const auto& [name, value] : fields) known += (known.empty() ? "" : ", ") + name;
      throw Error(cat(context, ": unknown field {", field, "} in '", tmpl, "' (known: ", known, ")"));
    }
    out += it->second;
    i = close;
  }
  return out;
}

std::string run_name_problem(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return "'" + name + "' cannot name a run folder";
  for (char c : name)
    if (c == '/' || c == '\\' || c == ' ' || static_cast<unsigned char>(c) < 32)
      return "'" + name + "' has a character run folders may not have (slash, space or control)";
  return "";
}

}  // namespace dsmoe
