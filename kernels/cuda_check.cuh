// CUDA_CHECK, CUBLAS_CHECK and NCCL_CHECK: DSMOE_CHECK on a CUDA, cuBLAS or NCCL status, with its name.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "util/check.h"

#define CUDA_CHECK(call)                                                                         \
  do {                                                                                           \
    cudaError_t err_ = (call);                                                                   \
    DSMOE_CHECK(err_ == cudaSuccess, "CUDA error in ", #call, ": ", cudaGetErrorString(err_));   \
  } while (0)

#define CUBLAS_CHECK(call)                                                                          \
  do {                                                                                              \
    cublasStatus_t st_ = (call);                                                                    \
    DSMOE_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS error in ", #call, ": ", cublasGetStatusString(st_)); \
  } while (0)

#define NCCL_CHECK(call)                                                                      \
  do {                                                                                        \
    ncclResult_t nr_ = (call);                                                                \
    DSMOE_CHECK(nr_ == ncclSuccess, "NCCL error in ", #call, ": ", ncclGetErrorString(nr_));  \
  } while (0)
