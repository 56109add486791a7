// Run and variant names from templates such as "{variant}-s{seed}".
#pragma once
#include <map>
#include <string>

namespace dsmoe {

// Replaces every {field} of `tmpl` by fields[field]. An unknown field or an unmatched brace is
// an error starting with `context` ("file:line: key").
std::string expand_template(const std::string& tmpl, const std::map<std::string, std::string>& fields,
                            const std::string& context);

// "" when `name` can be a folder name of its own, else the problem.
std::string run_name_problem(const std::string& name);

}  // namespace dsmoe
