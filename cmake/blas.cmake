# blas.cmake -- finds a CBLAS for the semantic-similarity kernel (src/similarity.c)
# without linking it: libcogpipe gets only the CBLAS's cblas.h and its runtime
# SONAME, and similarity.c dlopen()s the library the first time it computes a
# product, falling back to its own blocked kernel when it cannot. (Linked, the
# BLAS would be loaded by every command: OpenBLAS costs some 3 MiB of RSS and
# starts threads that spin for a tenth of a second at process start.) Owns
# nothing else. Include it from the top-level CMakeLists.txt after the library
# targets are defined:
#
#   include(cmake/blas.cmake)
#
# Prefers OpenBLAS (Debian: libopenblas-dev, pkg-config "openblas"), then any
# "blas" pkg-config module that comes with a cblas.h. COGPIPE_BLAS=OFF builds
# without one. Included before the targets exist (as a project include), it
# applies itself to the whole directory instead.
#
# Sets CP_BLAS_FOUND, CP_BLAS_MODULE_NAME and CP_BLAS_SONAME; defines
# CP_HAVE_CBLAS=1, CP_BLAS_SONAME="..." and, for OpenBLAS (whose thread-count
# functions similarity.c also uses), CP_BLAS_OPENBLAS=1.
option(COGPIPE_BLAS "Use a CBLAS (OpenBLAS if found) for cosine similarity" ON)

if(COGPIPE_BLAS)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CP_BLAS openblas)
  if(NOT CP_BLAS_FOUND)
    pkg_check_modules(CP_BLAS blas)
    if(CP_BLAS_FOUND)
      include(CheckIncludeFile)
      set(CMAKE_REQUIRED_INCLUDES ${CP_BLAS_INCLUDE_DIRS})
      check_include_file(cblas.h CP_HAVE_CBLAS_H)
      unset(CMAKE_REQUIRED_INCLUDES)
      if(NOT CP_HAVE_CBLAS_H)
        set(CP_BLAS_FOUND FALSE)
      endif()
    endif()
  endif()
  if(CP_BLAS_FOUND)
    # Debian switches between OpenBLAS's pthread, openmp and serial builds
    # with alternatives; the SONAME finds the selected one.
    include(${CMAKE_CURRENT_LIST_DIR}/soname.cmake)
    if(CP_BLAS_MODULE_NAME STREQUAL "openblas")
      cp_soname(CP_BLAS_SONAME "libopenblas.so.0" ${CP_BLAS_LINK_LIBRARIES})
    else()
      cp_soname(CP_BLAS_SONAME "libblas.so.3" ${CP_BLAS_LINK_LIBRARIES})
    endif()
    set(CP_BLAS_DEFS CP_HAVE_CBLAS=1 CP_BLAS_SONAME="${CP_BLAS_SONAME}")
    if(CP_BLAS_MODULE_NAME STREQUAL "openblas")
      list(APPEND CP_BLAS_DEFS CP_BLAS_OPENBLAS=1)
    endif()
    message(STATUS "cogpipe: cosine similarity through ${CP_BLAS_MODULE_NAME} "
                   "${CP_BLAS_VERSION}, loaded on first use as ${CP_BLAS_SONAME}")
    if(TARGET cogpipe_objects)
      target_compile_definitions(cogpipe_objects PRIVATE ${CP_BLAS_DEFS})
      target_include_directories(cogpipe_objects PRIVATE ${CP_BLAS_INCLUDE_DIRS})
    else()
      add_compile_definitions(${CP_BLAS_DEFS})
      include_directories(${CP_BLAS_INCLUDE_DIRS})
      link_libraries(${CMAKE_DL_LIBS})
    endif()
  else()
    message(STATUS "cogpipe: no CBLAS found; cosine similarity uses the built-in kernel")
  endif()
endif()
