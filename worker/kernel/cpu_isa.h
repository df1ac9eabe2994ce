// The vector instruction set the CPU kernels (fused_cpu.cc, sparse_cpu.cc) run with, chosen once
// at load time from what the CPU supports, and the OpenMP thread helpers they share. No LibTorch.
#ifndef LOGIT_WORKER_KERNEL_CPU_ISA_H_
#define LOGIT_WORKER_KERNEL_CPU_ISA_H_

namespace logit::cpu {

// Ordered: a CPU that has one has the ones below it.
enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best the CPU has (AVX2 needs AVX2 + FMA, AVX-512 needs F + VL + DQ + BW), lowered by the
// environment variable LOGIT_CPU_KERNEL=portable|avx2|avx512; decided once, at load time.
Isa BestIsa();
// The one kernels use now: BestIsa() unless UseKernelIsa lowered it.
Isa CurrentIsa();
// "portable", "avx2" or "avx512".
const char* IsaName(Isa isa);
// The name of CurrentIsa().
const char* KernelIsa();
// Switches to `isa` ("portable", "avx2", "avx512"; "best": BestIsa()) for the kernels that start
// from now on; false (nothing changed) when the CPU lacks it. For tests and benchmarks: the
// per-ISA paths are each compared with the portable one.
bool UseKernelIsa(const char* isa);

// Threads an OpenMP region would use here (LibTorch's at::set_num_threads sets it), this
// thread's number in the current team, and the team's size (1 / 0 / 1 without OpenMP).
int MaxThreads();
int ThreadNum();
int TeamSize();

}  // namespace logit::cpu

#endif  // LOGIT_WORKER_KERNEL_CPU_ISA_H_
