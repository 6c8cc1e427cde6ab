# What `cmake --install` puts where, and the Debian package (`cpack -G DEB`) made of the same files:
#   bin/abridge
#   share/man/man1/abridge.1.gz             from the binary's --help, when help2man is found
#   share/abridge/abridge-watch.service     the systemd unit, ExecStart naming bin/abridge here
#   share/abridge/cluster/...               the cron, Slurm and Kubernetes samples
#   share/doc/abridge/README.md, OPERATIONS.md
include(GNUInstallDirs)

install(TARGETS abridge RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

find_program(ABRIDGE_HELP2MAN help2man)
find_program(ABRIDGE_GZIP gzip)
set(ABRIDGE_MAN_PAGE "")
if(ABRIDGE_HELP2MAN)
  if(ABRIDGE_GZIP)
    set(ABRIDGE_MAN_PAGE ${CMAKE_BINARY_DIR}/man/abridge.1.gz)
  else()
    set(ABRIDGE_MAN_PAGE ${CMAKE_BINARY_DIR}/man/abridge.1)
  endif()
  add_custom_command(
    OUTPUT ${ABRIDGE_MAN_PAGE}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
    COMMAND ${CMAKE_COMMAND} -DABRIDGE=$<TARGET_FILE:abridge> -DHELP2MAN=${ABRIDGE_HELP2MAN}
            -DGZIP=${ABRIDGE_GZIP} -DOUT=${ABRIDGE_MAN_PAGE} -P ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake
    DEPENDS abridge ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake
    COMMENT "Writing the abridge(1) man page from --help"
    VERBATIM)
  add_custom_target(abridge_man_page ALL DEPENDS ${ABRIDGE_MAN_PAGE})
  install(FILES ${ABRIDGE_MAN_PAGE} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
  message(STATUS "abridge: man page from --help with ${ABRIDGE_HELP2MAN}")
else()
  message(STATUS "abridge: help2man not found, no man page (apt-get install help2man)")
endif()

install(CODE "
  set(ABRIDGE_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(ABRIDGE_SCRATCH_DIR \"${CMAKE_BINARY_DIR}\")
  set(ABRIDGE_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(ABRIDGE_DATADIR \"${CMAKE_INSTALL_DATADIR}\")
  set(ABRIDGE_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/install_samples.cmake\")")
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/OPERATIONS.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The Debian package. Its Depends are worked out by dpkg-shlibdeps from the libraries the binary
# links (libc6, libstdc++6, Boost.Program_options, Poco, poppler-cpp, utf8proc, zstd), so they follow
# the build machine's versions; a CUDA build's NVIDIA libraries come from no Debian package and are
# left out (--ignore-missing-info), so that package needs the CUDA runtime installed beside it.
set(ABRIDGE_PACKAGE_CONTACT "abridge maintainers <abridge@localhost>" CACHE STRING
    "Maintainer field of the Debian package")
set(CPACK_PACKAGE_NAME abridge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${ABRIDGE_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "summarize very long documents (PDF, text; English, Chinese) in batch")
set(CPACK_PACKAGE_DESCRIPTION
    "abridge summarizes very long documents from a shell, from cron or by watching a directory, with its
own inference engine for Qwen3 models (CPU and CUDA) or a built-in extractive engine that needs no GPU
and no weights.")
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION text)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_STRIP_FILES ON)
include(CPack)
