# Build-time script: writes the abridge(1) man page from the binary's own help, so the page and
# `--help` cannot disagree. help2man turns `abridge --help` and `--version` into NAME, SYNOPSIS and
# DESCRIPTION; each command's `--help` (the commands as `abridge --help` lists them, with the
# subcommands it names in quotes, e.g. 'model info') becomes a part of a COMMANDS section.
#
#   cmake -DABRIDGE=path/to/abridge -DHELP2MAN=path/to/help2man -DGZIP=path/to/gzip (may be empty)
#         -DOUT=path/to/abridge.1[.gz] -P man_page.cmake

foreach(var ABRIDGE HELP2MAN OUT)
  if(NOT ${var})
    message(FATAL_ERROR "man_page.cmake: -D${var}=... is required")
  endif()
endforeach()

execute_process(COMMAND "${ABRIDGE}" --help OUTPUT_VARIABLE main_help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "man_page.cmake: '${ABRIDGE} --help' failed (${rc})")
endif()

# The "Commands:" block of the main help: the lines up to the next blank line.
string(REGEX MATCH "\nCommands:\n(.*)" block "${main_help}")
string(REGEX REPLACE "\n\n.*" "" block "${CMAKE_MATCH_1}")
string(REGEX MATCHALL "(^|\n)  [a-z][a-z-]*" names "${block}")
set(commands "")
foreach(name IN LISTS names)
  string(STRIP "${name}" name)
  # A command whose description names its subcommands ('model info') is documented per subcommand.
  string(REGEX MATCHALL "'${name} [a-z][a-z-]*'" subs "${block}")
  if(subs)
    foreach(sub IN LISTS subs)
      string(REPLACE "'" "" sub "${sub}")
      list(APPEND commands "${sub}")
    endforeach()
  else()
    list(APPEND commands "${name}")
  endif()
endforeach()
if(NOT commands)
  message(FATAL_ERROR "man_page.cmake: no commands found in '${ABRIDGE} --help'")
endif()

# Roff in no-fill mode: backslashes escaped, hyphens as minus signs (so options can be searched and
# copied), a line that would start with a control character guarded.
set(include_text "[COMMANDS]\nEach command's options, as `abridge COMMAND --help` prints them.\n")
foreach(command IN LISTS commands)
  separate_arguments(words UNIX_COMMAND "${command}")
  execute_process(COMMAND "${ABRIDGE}" ${words} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "man_page.cmake: '${ABRIDGE} ${command} --help' failed (${rc})")
  endif()
  string(REPLACE "\\" "\\e" help "${help}")
  string(REPLACE "-" "\\-" help "${help}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
  string(APPEND include_text ".SS \"abridge ${command}\"\n.nf\n${help}.fi\n")
endforeach()

get_filename_component(out_dir "${OUT}" DIRECTORY)
string(REGEX REPLACE "\\.gz$" "" page "${OUT}")
file(WRITE "${out_dir}/abridge.h2m" "${include_text}")
execute_process(
  COMMAND "${HELP2MAN}" --no-info --section 1
          --name "summarize very long documents with Qwen3 models, in batch"
          --include "${out_dir}/abridge.h2m" --output "${page}" "${ABRIDGE}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "man_page.cmake: help2man failed (${rc})")
endif()
if(NOT page STREQUAL OUT)
  if(NOT GZIP)
    message(FATAL_ERROR "man_page.cmake: ${OUT} needs gzip")
  endif()
  # -n: no name or time stamp in the header, so the same page gives the same bytes.
  execute_process(COMMAND "${GZIP}" -9 -n -f "${page}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "man_page.cmake: gzip failed (${rc})")
  endif()
endif()
