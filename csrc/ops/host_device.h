#pragma once
// FAILATLAS_HD marks the helpers that the CPU kernels and the CUDA kernels share (host and device code
// alike); headers that use it include no torch headers, so nvcc compiles them in every checkout.

#ifndef FAILATLAS_HD
#ifdef __CUDACC__
#define FAILATLAS_HD __host__ __device__
#else
#define FAILATLAS_HD
#endif
#endif
