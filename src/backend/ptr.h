// A pointer into backend memory that knows how its elements are stored: in the compute type T,
// or in bf16 (2 bytes; the CUDA backend's storage of activations under precision: bf16, see
// Backend::bf16_storage()). Offsets count elements of the storage, so `p + i` is element i either
// way. A T* converts to it implicitly, so code that never stores bf16 passes plain pointers.
// Ptr<const T> is the read-only pointer; a Ptr<T> converts to it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "util/check.h"

namespace dsmoe {

template <typename T>
class Ptr {
  static constexpr bool kConst = std::is_const_v<T>;
  using Void = std::conditional_t<kConst, const void, void>;
  using Byte = std::conditional_t<kConst, const char, char>;

 public:
  Ptr() = default;
  Ptr(std::nullptr_t) {}
  Ptr(T* p) : p_(p) {}
  template <typename U, typename = std::enable_if_t<kConst && std::is_same_v<const U, T> && !std::is_const_v<U>>>
  Ptr(const Ptr<U>& o) : p_(o.raw()), bf16_(o.is_bf16()) {}
  static Ptr bf16(Void* p) {
    Ptr r;
    r.p_ = p;
    r.bf16_ = true;
    return r;
  }

  bool is_bf16() const { return bf16_; }
  size_t element_bytes() const { return bf16_ ? 2 : sizeof(T); }
  Void* raw() const { return p_; }
  // The pointer in the compute type; only for elements stored in it.
  T* get() const {
    DSMOE_ASSERT(!bf16_);
    return static_cast<T*>(p_);
  }
  explicit operator bool() const { return p_ != nullptr; }
  Ptr operator+(int64_t i) const {
    Ptr r = *this;
    r.p_ = static_cast<Byte*>(p_) + i * static_cast<int64_t>(element_bytes());
    return r;
  }

 private:
  Void* p_ = nullptr;
  bool bf16_ = false;
};

}  // namespace dsmoe
