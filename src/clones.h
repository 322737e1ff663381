/*
 * clones.h -- CP_CLONES marks a hot loop to be compiled for several x86-64
 * vector widths, the widest the CPU has picked at load time. Only where the
 * build found the toolchain can (CP_HAVE_TARGET_CLONES: a configure test of
 * IFUNC, which musl and macOS lack), and never under a sanitizer, whose
 * runtimes are not ready for the resolvers that run before main.
 */
#ifndef CP_CLONES_H
#define CP_CLONES_H

#if defined(CP_HAVE_TARGET_CLONES) && defined(__x86_64__)
#define CP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CP_CLONES
#endif

#endif
