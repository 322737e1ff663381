# package.cmake -- CPack settings, so that `cpack -G DEB` in a build tree
# makes a Debian package of what `cmake --install` installs, its Depends
# worked out from the libraries the binaries link (dpkg-shlibdeps), and
# `cpack -G TGZ` a tarball. Owns nothing else; include it from the
# top-level CMakeLists.txt after the install rules:
#
#   include(cmake/package.cmake)
#
# The package installs under CMAKE_INSTALL_PREFIX, the prefix the command
# was built for: configure with -DCMAKE_INSTALL_PREFIX=/usr for a package
# that follows Debian's layout.
set(CPACK_PACKAGE_NAME cogpipe)
set(CPACK_PACKAGE_VENDOR "cogpipe")
set(CPACK_PACKAGE_CONTACT "cogpipe maintainers" CACHE STRING
  "Maintainer of the packages cpack makes")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_STRIP_FILES OFF)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)

# dpkg-shlibdeps sees which libcurl functions the binaries call, not that
# they need 7.85's CURLOPT_PROTOCOLS_STR (cmake/deps.cmake): the Debian
# package that holds the libcurl linked is named with that version too.
find_program(CP_DPKG_QUERY dpkg-query)
set(CP_CURL_LIBRARY "")
foreach(lib ${CP_CURL_LINK_LIBRARIES})
  if(NOT CP_CURL_LIBRARY AND lib MATCHES "/libcurl[^/]*\\.so")
    get_filename_component(CP_CURL_LIBRARY "${lib}" REALPATH)
  endif()
endforeach()
if(CP_DPKG_QUERY AND CP_CURL_LIBRARY)
  execute_process(COMMAND ${CP_DPKG_QUERY} -S "${CP_CURL_LIBRARY}"
    OUTPUT_VARIABLE owner ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND owner MATCHES "^([a-z0-9.+-]+)(:[a-z0-9]+)?: ")
    set(CPACK_DEBIAN_PACKAGE_DEPENDS "${CMAKE_MATCH_1} (>= ${CP_CURL_MIN})")
  endif()
endif()
include(CPack)
