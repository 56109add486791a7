// Thin RAII layer over the serial HDF5 C API (nothing MPI-specific, so the io code builds
// against serial and parallel HDF5 alike). Failures throw dsmoe::Error naming the object;
// callers prefix the file path.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe::h5 {

// Stops HDF5 from printing its error stack to stderr; errors surface as exceptions instead.
void silence_errors();
// ": <the operating system's message>" (": No space left on device") of the innermost failed
// system call on HDF5's current error stack, or "" when the failure was not one. Appended to
// the errors below, so a full disk or a failed write says so.
std::string why();

// Owns one hid_t and releases it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { close(); }
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  herr_t close();  // the status matters for H5Fclose, which writes the file out

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// File access list with the given library-version bounds.
Handle file_access(H5F_libver_t low, H5F_libver_t high);
// No flock() on open: a writer that readers' shared locks must never stop (metrics.h5).
void without_file_locking(hid_t fapl);
Handle create_file(const std::string& path, hid_t fapl = H5P_DEFAULT);  // truncates
// An invalid Handle when the file cannot be opened (missing, not HDF5, truncated, locked).
Handle open_file(const std::string& path, unsigned flags, hid_t fapl = H5P_DEFAULT);

// Whether every component of `path` (relative to loc, '/'-separated) exists.
bool exists(hid_t loc, const std::string& path);
Handle open_group(hid_t loc, const std::string& path);
Handle create_group(hid_t loc, const std::string& path);  // with missing parent groups

// Creates a dataset (and missing parent groups). extend_rows > 0 makes dim 0 unlimited,
// chunked by extend_rows rows; extend_columns (with extend_rows, for a float type) makes dim 1
// unlimited too, and cells that no write reached read as NaN.
Handle create_dataset(hid_t loc, const std::string& path, hid_t file_type,
                      const std::vector<int64_t>& dims, int64_t extend_rows = 0,
                      bool extend_columns = false);
Handle open_dataset(hid_t loc, const std::string& path);
std::vector<int64_t> shape(hid_t dset);
// Whether reading the dataset copies one byte range of its file and nothing more: contiguous
// storage in that file (no external files), float32 little-endian (no conversion).
bool plain_float32(hid_t dset);
std::string shape_str(const std::vector<int64_t>& dims);  // "[64, 32]"

// Rows [row0, row0 + block[0]) of a dataset; block is the shape of the contiguous buffer.
void write_rows(hid_t dset, hid_t mem_type, int64_t row0, const std::vector<int64_t>& block,
                const void* data);
void read_rows(hid_t dset, hid_t mem_type, int64_t row0, const std::vector<int64_t>& block,
               void* data);
void set_rows(hid_t dset, int64_t rows);                      // resizes dim 0
void set_columns(hid_t dset, int64_t columns);                // resizes dim 1
void append_row(hid_t dset, hid_t mem_type, const void* row);  // one more row

// Attributes; writing replaces an existing attribute of the same name. Strings are stored
// as variable-length UTF-8 (h5py reads them as str); fixed-length strings read back too.
void write_attr(hid_t loc, const std::string& name, const std::string& value);
void write_attr_int(hid_t loc, const std::string& name, int value);
void write_attr_int64(hid_t loc, const std::string& name, int64_t value);
void write_attr_double(hid_t loc, const std::string& name, double value);
bool has_attr(hid_t loc, const std::string& name);
std::string read_attr_string(hid_t loc, const std::string& name);  // at most 64 MiB
int64_t read_attr_int64(hid_t loc, const std::string& name);
double read_attr_double(hid_t loc, const std::string& name);

}  // namespace dsmoe::h5
