# soname.cmake -- cp_soname(VAR FALLBACK LIB...): sets VAR to the SONAME of
# the first of the library files LIB... that has one, read with objdump, or
# to FALLBACK. Libraries that libcogpipe loads on first use (libcurl, a
# CBLAS) are opened by that name, so that the run time finds whichever build
# of them the system selects, as the dynamic linker would have.
function(cp_soname var fallback)
  set(name "")
  if(CMAKE_OBJDUMP)
    foreach(lib ${ARGN})
      if(NOT name AND EXISTS "${lib}")
        execute_process(COMMAND ${CMAKE_OBJDUMP} -p "${lib}"
          OUTPUT_VARIABLE dump ERROR_QUIET RESULT_VARIABLE rc)
        if(rc EQUAL 0 AND dump MATCHES "SONAME +([^ \n]+)")
          set(name "${CMAKE_MATCH_1}")
        endif()
      endif()
    endforeach()
  endif()
  if(NOT name)
    set(name "${fallback}")
  endif()
  set(${var} "${name}" PARENT_SCOPE)
endfunction()
