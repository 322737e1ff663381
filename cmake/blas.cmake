# blas.cmake -- finds a CBLAS for the semantic-similarity kernel (src/similarity.c)
# and links libcogpipe with it; without one, similarity.c uses its own blocked
# kernel. Owns nothing else. Include it from the top-level CMakeLists.txt after
# the library targets are defined:
#
#   include(cmake/blas.cmake)
#
# Prefers OpenBLAS (Debian: libopenblas-dev, pkg-config "openblas"), then any
# "blas" pkg-config module that comes with a cblas.h. COGPIPE_BLAS=OFF builds
# without one. Included before the targets exist (as a project include), it
# applies itself to the whole directory instead.
option(COGPIPE_BLAS "Use a CBLAS (OpenBLAS if found) for cosine similarity" ON)

if(COGPIPE_BLAS)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CP_BLAS IMPORTED_TARGET openblas)
  if(NOT CP_BLAS_FOUND)
    pkg_check_modules(CP_BLAS IMPORTED_TARGET blas)
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
    message(STATUS "cogpipe: cosine similarity through ${CP_BLAS_MODULE_NAME} ${CP_BLAS_VERSION}")
    if(TARGET cogpipe_objects)
      target_compile_definitions(cogpipe_objects PRIVATE CP_HAVE_CBLAS=1)
      foreach(t cogpipe_objects cogpipe_static cogpipe_shared)
        if(TARGET ${t})
          target_link_libraries(${t} PUBLIC PkgConfig::CP_BLAS)
        endif()
      endforeach()
    else()
      add_compile_definitions(CP_HAVE_CBLAS=1)
      include_directories(${CP_BLAS_INCLUDE_DIRS})
      link_libraries(PkgConfig::CP_BLAS)
    endif()
  else()
    message(STATUS "cogpipe: no CBLAS found; cosine similarity uses the built-in kernel")
  endif()
endif()
