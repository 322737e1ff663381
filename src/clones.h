/*
 * clones.h -- CP_CLONES marks a hot loop to be compiled for several x86-64
 * vector widths, the widest the CPU has picked at load time. Off under
 * AddressSanitizer, whose instrumentation the resolvers do not survive.
 */
#ifndef CP_CLONES_H
#define CP_CLONES_H

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CP_NO_CLONES
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(CP_NO_CLONES)
#define CP_NO_CLONES
#endif
#if defined(__x86_64__) && defined(__has_attribute) && !defined(CP_NO_CLONES)
#if __has_attribute(target_clones)
#define CP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CP_CLONES
#define CP_CLONES
#endif

#endif
