#include "io/h5.h"

#include <cmath>
#include <cstring>

#include "util/check.h"

namespace dsmoe::h5 {
namespace {

constexpr size_t kMaxStringAttr = size_t{64} << 20;

// At exit HDF5 closes the files still open; one whose close failed (its last writes hit a full
// disk) then crashes HDF5 1.10 (H5F__close_cb), turning a clear error and exit status 1 into a
// segfault. dsmoe closes its files itself (h5::Handle), so HDF5's exit handler is not needed.
// Runs before main, as H5dont_atexit must come before any other HDF5 call.
[[maybe_unused]] const bool kNoCleanupAtExit = H5dont_atexit() >= 0;

Handle own(hid_t id, Handle::Closer closer, const std::string& what) {
  DSMOE_CHECK(id >= 0, what, why());
  return Handle(id, closer);
}

std::vector<hsize_t> to_hsize(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

Handle link_create_with_parents() {
  Handle lcpl = own(H5Pcreate(H5P_LINK_CREATE), H5Pclose, "cannot create a property list");
  DSMOE_CHECK(H5Pset_create_intermediate_group(lcpl, 1) >= 0, "cannot set a property list");
  return lcpl;
}

Handle scalar_space() { return own(H5Screate(H5S_SCALAR), H5Sclose, "cannot create a dataspace"); }

Handle utf8_string_type() {
  Handle t = own(H5Tcopy(H5T_C_S1), H5Tclose, "cannot create a string type");
  DSMOE_CHECK(H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0,
              "cannot create a string type");
  return t;
}

// Selects rows [row0, row0 + block[0]) of the file space; returns {file space, memory space}.
std::pair<Handle, Handle> select_rows(hid_t dset, int64_t row0, const std::vector<int64_t>& block) {
  Handle fspace = own(H5Dget_space(dset), H5Sclose, "cannot get a dataspace");
  std::vector<hsize_t> start(block.size(), 0), count = to_hsize(block);
  start.at(0) = static_cast<hsize_t>(row0);
  DSMOE_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(),
                                  nullptr) >= 0,
              "cannot select rows ", row0, "..", row0 + block[0]);
  Handle mspace = own(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                      H5Sclose, "cannot create a dataspace");
  return {std::move(fspace), std::move(mspace)};
}

// Resizes dimension `dim` of a chunked dataset to n (`unit`: what it counts).
void set_extent(hid_t dset, size_t dim, int64_t n, const char* unit) {
  std::vector<hsize_t> dims = to_hsize(shape(dset));
  dims.at(dim) = static_cast<hsize_t>(n);
  DSMOE_CHECK(H5Dset_extent(dset, dims.data()) >= 0, "cannot resize a dataset to ", n, " ", unit, why());
}

void write_attr_value(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                      const void* value) {
  if (has_attr(loc, name))
    DSMOE_CHECK(H5Adelete(loc, name.c_str()) >= 0, "cannot replace attribute ", name);
  Handle space = scalar_space();
  Handle attr = own(H5Acreate2(loc, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT),
                    H5Aclose, cat("cannot create attribute ", name));
  DSMOE_CHECK(H5Awrite(attr, mem_type, value) >= 0, "cannot write attribute ", name, why());
}

void read_attr_value(hid_t loc, const std::string& name, hid_t mem_type, void* value) {
  Handle attr = own(H5Aopen(loc, name.c_str(), H5P_DEFAULT), H5Aclose, cat("no attribute ", name));
  DSMOE_CHECK(H5Aread(attr, mem_type, value) >= 0, "cannot read attribute ", name);
}

}  // namespace

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string why() {
  std::string found;
  // Upward: the innermost record (where the failure was detected) comes first.
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        std::string& out = *static_cast<std::string*>(data);
        const char* key = "error message = '";
        const char* p = e->desc ? std::strstr(e->desc, key) : nullptr;
        if (!out.empty() || !p) return 0;
        p += std::strlen(key);
        const char* end = std::strchr(p, '\'');
        out.assign(p, end ? end : p + std::strlen(p));
        return 0;
      },
      &found);
  return found.empty() ? "" : ": " + found;
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    close();
    id_ = o.id_;
    closer_ = o.closer_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

herr_t Handle::close() {
  herr_t status = 0;
  if (id_ >= 0) status = closer_(id_);
  id_ = H5I_INVALID_HID;
  return status;
}

Handle file_access(H5F_libver_t low, H5F_libver_t high) {
  Handle fapl = own(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "cannot create a property list");
  DSMOE_CHECK(H5Pset_libver_bounds(fapl, low, high) >= 0, "cannot set the library version bounds");
  return fapl;
}

void without_file_locking(hid_t fapl) {
  DSMOE_CHECK(H5Pset_file_locking(fapl, false, true) >= 0, "cannot turn file locking off");
}

Handle create_file(const std::string& path, hid_t fapl) {
  return own(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose,
             cat("cannot create ", path));
}

Handle open_file(const std::string& path, unsigned flags, hid_t fapl) {
  return Handle(H5Fopen(path.c_str(), flags, fapl), H5Fclose);
}

bool exists(hid_t loc, const std::string& path) {
  for (size_t end = path.find('/');; end = path.find('/', end + 1)) {
    if (H5Lexists(loc, path.substr(0, end).c_str(), H5P_DEFAULT) <= 0) return false;
    if (end == std::string::npos) return true;
  }
}

Handle open_group(hid_t loc, const std::string& path) {
  return own(H5Gopen2(loc, path.c_str(), H5P_DEFAULT), H5Gclose, cat("cannot open group ", path));
}

Handle create_group(hid_t loc, const std::string& path) {
  Handle lcpl = link_create_with_parents();
  return own(H5Gcreate2(loc, path.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
             cat("cannot create group ", path));
}

Handle create_dataset(hid_t loc, const std::string& path, hid_t file_type,
                      const std::vector<int64_t>& dims, int64_t extend_rows, bool extend_columns) {
  std::vector<hsize_t> cur = to_hsize(dims), max = cur;
  Handle dcpl = own(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "cannot create a property list");
  if (extend_rows > 0) {
    max.at(0) = H5S_UNLIMITED;
    std::vector<hsize_t> chunk = cur;
    chunk[0] = static_cast<hsize_t>(extend_rows);
    DSMOE_CHECK(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()) >= 0,
                "cannot set the chunking of ", path);
  }
  if (extend_columns) {
    DSMOE_CHECK(extend_rows > 0, "internal: ", path, " extends its columns but not its rows");
    max.at(1) = H5S_UNLIMITED;
    const double nan = std::nan("");
    DSMOE_CHECK(H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &nan) >= 0, "cannot set the fill value of ", path);
  }
  Handle space = own(H5Screate_simple(static_cast<int>(cur.size()), cur.data(), max.data()),
                     H5Sclose, cat("cannot create the dataspace of ", path));
  Handle lcpl = link_create_with_parents();
  return own(H5Dcreate2(loc, path.c_str(), file_type, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose,
             cat("cannot create dataset ", path));
}

Handle open_dataset(hid_t loc, const std::string& path) {
  return own(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), H5Dclose, cat("cannot open dataset ", path));
}

std::vector<int64_t> shape(hid_t dset) {
  Handle space = own(H5Dget_space(dset), H5Sclose, "cannot get a dataspace");
  int rank = H5Sget_simple_extent_ndims(space);
  DSMOE_CHECK(rank >= 0, "cannot get the rank of a dataset");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  DSMOE_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr) >= 0,
              "cannot get the shape of a dataset");
  return {dims.begin(), dims.end()};
}

bool plain_float32(hid_t dset) {
  Handle dcpl = own(H5Dget_create_plist(dset), H5Pclose, "cannot get the properties of a dataset");
  Handle type = own(H5Dget_type(dset), H5Tclose, "cannot get the type of a dataset");
  return H5Pget_layout(dcpl) == H5D_CONTIGUOUS && H5Pget_external_count(dcpl) == 0 &&
         H5Tequal(type, H5T_IEEE_F32LE) > 0;
}

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

void write_rows(hid_t dset, hid_t mem_type, int64_t row0, const std::vector<int64_t>& block,
                const void* data) {
  auto [fspace, mspace] = select_rows(dset, row0, block);
  DSMOE_CHECK(H5Dwrite(dset, mem_type, mspace, fspace, H5P_DEFAULT, data) >= 0,
              "cannot write rows ", row0, "..", row0 + block.at(0), why());
}

void read_rows(hid_t dset, hid_t mem_type, int64_t row0, const std::vector<int64_t>& block,
               void* data) {
  auto [fspace, mspace] = select_rows(dset, row0, block);
  DSMOE_CHECK(H5Dread(dset, mem_type, mspace, fspace, H5P_DEFAULT, data) >= 0,
              "cannot read rows ", row0, "..", row0 + block.at(0), why());
}

void set_rows(hid_t dset, int64_t rows) { set_extent(dset, 0, rows, "rows"); }

void set_columns(hid_t dset, int64_t columns) { set_extent(dset, 1, columns, "columns"); }

void append_row(hid_t dset, hid_t mem_type, const void* row) {
  std::vector<int64_t> block = shape(dset);
  int64_t rows = block.at(0);
  set_rows(dset, rows + 1);
  block[0] = 1;
  write_rows(dset, mem_type, rows, block, row);
}

void write_attr(hid_t loc, const std::string& name, const std::string& value) {
  Handle type = utf8_string_type();
  const char* p = value.c_str();
  write_attr_value(loc, name, type, type, &p);
}

void write_attr_int(hid_t loc, const std::string& name, int value) {
  write_attr_value(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &value);
}

void write_attr_int64(hid_t loc, const std::string& name, int64_t value) {
  write_attr_value(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void write_attr_double(hid_t loc, const std::string& name, double value) {
  write_attr_value(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

bool has_attr(hid_t loc, const std::string& name) { return H5Aexists(loc, name.c_str()) > 0; }

std::string read_attr_string(hid_t loc, const std::string& name) {
  Handle attr = own(H5Aopen(loc, name.c_str(), H5P_DEFAULT), H5Aclose, cat("no attribute ", name));
  Handle type = own(H5Aget_type(attr), H5Tclose, cat("cannot read attribute ", name));
  DSMOE_CHECK(H5Tget_class(type) == H5T_STRING, "attribute ", name, " is not a string");
  if (H5Tis_variable_str(type) > 0) {
    char* p = nullptr;
    DSMOE_CHECK(H5Aread(attr, type, &p) >= 0, "cannot read attribute ", name);
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  const size_t size = H5Tget_size(type);
  DSMOE_CHECK(size > 0 && size <= kMaxStringAttr, "attribute ", name, " is a string of ", size,
              " bytes (at most ", kMaxStringAttr, ")");
  std::string s(size, '\0');
  DSMOE_CHECK(H5Aread(attr, type, s.data()) >= 0, "cannot read attribute ", name);
  s.resize(std::strlen(s.c_str()));  // fixed-length strings are NUL-padded
  return s;
}

int64_t read_attr_int64(hid_t loc, const std::string& name) {
  int64_t v = 0;
  read_attr_value(loc, name, H5T_NATIVE_INT64, &v);
  return v;
}

double read_attr_double(hid_t loc, const std::string& name) {
  double v = 0;
  read_attr_value(loc, name, H5T_NATIVE_DOUBLE, &v);
  return v;
}

}  // namespace dsmoe::h5
