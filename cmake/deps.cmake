# deps.cmake -- finds the libraries libcogpipe links and gathers them in one
# interface target, cogpipe_deps, for the library, its tests and its fuzz
# build alike. Every one is linked the ordinary way, so that ldd, the
# installed cogpipe.pc and a distribution's packaging tools (dpkg-shlibdeps,
# rpm's find-requires) see it. Owns nothing else. Include it from the
# top-level CMakeLists.txt before the library targets:
#
#   include(cmake/deps.cmake)
#   target_link_libraries(cogpipe_objects PUBLIC cogpipe_deps)
#
# Found with pkg-config (DESIGN 2): lua5.4, libuv, libutf8proc, libxxhash,
# libcurl (CP_CURL_MIN or later) and libcrypto (OpenSSL 3); optionally a
# CBLAS (cmake/blas.cmake). Sets, for cogpipe.pc.in, CP_PC_REQUIRES_PRIVATE
# (the pkg-config modules linked but not named by cogpipe.pc's Requires)
# and CP_PC_LIBS_PRIVATE (the rest, as -l flags).
find_package(PkgConfig REQUIRED)
pkg_check_modules(CP_DEPS REQUIRED IMPORTED_TARGET
  lua5.4 libuv libutf8proc libxxhash)
find_library(CP_MATH m)

# libcurl 7.85.0 brought CURLOPT_PROTOCOLS_STR, which keeps requests to http
# and https; every other option src/http.c sets is older. (http.c checks
# the same version in the headers and in the library a process runs with.)
set(CP_CURL_MIN 7.85.0)
pkg_check_modules(CP_CURL QUIET IMPORTED_TARGET libcurl)
if(NOT CP_CURL_FOUND)
  message(FATAL_ERROR "cogpipe needs libcurl ${CP_CURL_MIN} or later, found by "
    "pkg-config as 'libcurl', and found none (Debian: apt-get install "
    "libcurl4-openssl-dev; or set PKG_CONFIG_PATH to where libcurl.pc is)")
endif()
if(CP_CURL_VERSION VERSION_LESS CP_CURL_MIN)
  message(FATAL_ERROR "libcurl ${CP_CURL_VERSION} is too old: cogpipe needs "
    "${CP_CURL_MIN} or later, the first with CURLOPT_PROTOCOLS_STR, which "
    "keeps requests to http and https (found: ${CP_CURL_LINK_LIBRARIES})")
endif()

set(CP_CRYPTO_MIN 3.0)
pkg_check_modules(CP_CRYPTO QUIET IMPORTED_TARGET libcrypto)
if(NOT CP_CRYPTO_FOUND OR CP_CRYPTO_VERSION VERSION_LESS CP_CRYPTO_MIN)
  message(FATAL_ERROR "cogpipe needs libcrypto from OpenSSL ${CP_CRYPTO_MIN} or "
    "later, found by pkg-config as 'libcrypto' (found: "
    "${CP_CRYPTO_VERSION}${CP_CRYPTO_LINK_LIBRARIES}; Debian: apt-get install "
    "libssl-dev)")
endif()
message(STATUS "cogpipe: libcurl ${CP_CURL_VERSION}, libcrypto ${CP_CRYPTO_VERSION}")

add_library(cogpipe_deps INTERFACE)
target_link_libraries(cogpipe_deps INTERFACE
  PkgConfig::CP_DEPS PkgConfig::CP_CURL PkgConfig::CP_CRYPTO ${CP_MATH})

# lua5.4 and libuv are cogpipe.pc's Requires (cogpipe.h uses their types).
set(CP_PC_REQUIRES_PRIVATE "libutf8proc libxxhash libcurl libcrypto")
set(CP_PC_LIBS_PRIVATE "-lm")

include(${CMAKE_CURRENT_LIST_DIR}/blas.cmake)
