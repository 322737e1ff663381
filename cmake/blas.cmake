# blas.cmake -- an optional CBLAS for the semantic-similarity kernel
# (src/similarity.c), found with CMake's FindBLAS and linked into
# cogpipe_deps (cmake/deps.cmake, which includes this file). Without one,
# similarity.c uses its own kernel, with the same results up to float
# rounding. Owns nothing else.
#
# COGPIPE_BLAS is OFF unless asked for (-DCOGPIPE_BLAS=ON); asked for, a
# missing CBLAS is an error. FindBLAS's own variables choose among several
# (BLA_VENDOR=Generic links Debian's alternatives-managed libblas.so.3; the
# default, OpenBLAS when it is installed, links libopenblas.so.0, itself one
# of three builds Debian switches between). Only a BLAS whose cblas.h
# declares cblas_sgemm and whose library defines it counts.
#
# Why off by default: linked, OpenBLAS is loaded and initialised by every
# process, whether it compares vectors or not -- some 36 MiB of address
# space, and a thread per core that takes a 128 MiB buffer at once. Under
# an address-space limit (ulimit -v) too small for those buffers such a
# thread retries for ever and the process cannot even exit, where cogpipe
# promises an error. A build that wants OpenBLAS's speed for large semantic
# passes turns it on and runs with OPENBLAS_NUM_THREADS=1 where memory is
# limited (libcogpipe holds OpenBLAS to one thread and runs its own).
#
# Adds to cogpipe_deps the BLAS libraries, the directory of cblas.h and the
# definition CP_HAVE_CBLAS=1, and to CP_PC_LIBS_PRIVATE the libraries as -l
# flags (FindBLAS finds files, not pkg-config modules).
set(CP_CBLAS_FOUND FALSE)
option(COGPIPE_BLAS "Link a CBLAS (FindBLAS) for cosine similarity" OFF)
if(COGPIPE_BLAS)
  find_package(BLAS QUIET)
  if(BLAS_FOUND)
    # Debian keeps OpenBLAS's cblas.h in a directory of each build's own.
    find_path(CP_CBLAS_INCLUDE_DIR cblas.h
      PATH_SUFFIXES openblas openblas-pthread "${CMAKE_LIBRARY_ARCHITECTURE}/openblas-pthread")
    if(CP_CBLAS_INCLUDE_DIR)
      include(CheckCSourceCompiles)
      set(CMAKE_REQUIRED_INCLUDES ${CP_CBLAS_INCLUDE_DIR})
      set(CMAKE_REQUIRED_LIBRARIES ${BLAS_LIBRARIES} ${BLAS_LINKER_FLAGS})
      check_c_source_compiles([=[
        #include <cblas.h>
        int main(void) {
          float a[1] = {1}, c[1] = {0};
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, 1, 1, 1.0f, a, 1, a, 1,
                      0.0f, c, 1);
          return c[0] == 1.0f ? 0 : 1;
        }]=] CP_HAVE_CBLAS_SGEMM)
      unset(CMAKE_REQUIRED_INCLUDES)
      unset(CMAKE_REQUIRED_LIBRARIES)
      set(CP_CBLAS_FOUND ${CP_HAVE_CBLAS_SGEMM})
    endif()
  endif()
endif()

if(COGPIPE_BLAS AND NOT CP_CBLAS_FOUND)
  message(FATAL_ERROR "COGPIPE_BLAS is ON but no CBLAS was found (a BLAS library "
    "with cblas_sgemm and its cblas.h; Debian: apt-get install libopenblas-dev). "
    "Install one, or configure with -DCOGPIPE_BLAS=OFF to use the built-in kernel.")
elseif(COGPIPE_BLAS)
  target_link_libraries(cogpipe_deps INTERFACE ${BLAS_LIBRARIES} ${BLAS_LINKER_FLAGS})
  target_include_directories(cogpipe_deps INTERFACE ${CP_CBLAS_INCLUDE_DIR})
  target_compile_definitions(cogpipe_deps INTERFACE CP_HAVE_CBLAS=1)
  # The same libraries for a static link through pkg-config.
  foreach(lib ${BLAS_LIBRARIES} ${BLAS_LINKER_FLAGS})
    if(lib MATCHES "^-")
      string(APPEND CP_PC_LIBS_PRIVATE " ${lib}")
    elseif(lib MATCHES "^(.*)/lib([^/]+)\\.(so|a)(\\.[0-9.]+)?$")
      set(dir "${CMAKE_MATCH_1}")
      set(name "${CMAKE_MATCH_2}")
      if(NOT dir IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
        string(APPEND CP_PC_LIBS_PRIVATE " -L${dir}")
      endif()
      string(APPEND CP_PC_LIBS_PRIVATE " -l${name}")
    else()
      message(WARNING "cogpipe.pc: cannot name the BLAS library '${lib}' for static links")
    endif()
  endforeach()
  message(STATUS "cogpipe: cosine similarity through the CBLAS in ${BLAS_LIBRARIES}")
else()
  message(STATUS "cogpipe: cosine similarity through the built-in kernel (COGPIPE_BLAS=OFF)")
endif()
