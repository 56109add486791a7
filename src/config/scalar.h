// Reading and writing one YAML scalar as a typed config value. read_scalar returns the
// problem ("expected an integer, got 'abc'") or "" on success; show_scalar gives text that
// read_scalar reads back to the same value.
#pragma once
#include <cstdint>
#include <string>

namespace dsmoe::config_internal {

std::string read_scalar(const std::string& text, int& out);
std::string read_scalar(const std::string& text, int64_t& out);
std::string read_scalar(const std::string& text, uint64_t& out);
std::string read_scalar(const std::string& text, double& out);
std::string read_scalar(const std::string& text, bool& out);
std::string read_scalar(const std::string& text, std::string& out);  // UTF-8 text only
bool valid_utf8(const std::string& text);

std::string show_scalar(int v);
std::string show_scalar(int64_t v);
std::string show_scalar(uint64_t v);
std::string show_scalar(double v);  // always with a '.', so YAML 1.1 readers see a float too
std::string show_scalar(bool v);
std::string show_scalar(const std::string& v);

// What a value of the type is called in "expected ..." messages.
const char* type_name(int);
const char* type_name(int64_t);
const char* type_name(uint64_t);
const char* type_name(double);
const char* type_name(bool);
const char* type_name(const std::string&);

}  // namespace dsmoe::config_internal
