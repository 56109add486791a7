# Writes OUT, the definition of dsmoe::source_version() (src/util/version.h): VERSION where given
# (-DDSMOE_SOURCE_VERSION=... at configure), else `git describe --always --dirty` of SOURCE_DIR,
# else "unknown". Only a changed text is written, so an unchanged version rebuilds nothing.
if(NOT VERSION)
  execute_process(COMMAND git -C "${SOURCE_DIR}" describe --always --dirty --abbrev=12
                  OUTPUT_VARIABLE VERSION OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR VERSION STREQUAL "")
    set(VERSION "unknown")
  endif()
endif()
set(content "#include \"util/version.h\"\n\nconst char* dsmoe::source_version() { return \"${VERSION}\"; }\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUT}" "${content}")
endif()
