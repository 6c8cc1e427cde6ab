# Install-time script: copies the systemd unit and the cron, Slurm and Kubernetes samples to
# <prefix>/<datadir>/abridge/ with the paths in them made true for this install. In the source tree
# they name /usr/local/bin/abridge (the default prefix) and each other by their source paths; a
# Debian package installs to /usr, `cmake --install --prefix DIR` to DIR. Runs at install time, not
# configure time, because only then is the prefix known (cpack and --prefix set it late).
#
# Set before it runs (install(CODE)): ABRIDGE_SOURCE_DIR, ABRIDGE_BINDIR, ABRIDGE_DATADIR,
# ABRIDGE_DOCDIR (the GNUInstallDirs values, relative to the prefix or absolute), ABRIDGE_SCRATCH_DIR
# (a writable directory: the build tree).

function(abridge_full_path out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

abridge_full_path(bindir "${ABRIDGE_BINDIR}")
abridge_full_path(datadir "${ABRIDGE_DATADIR}/abridge")
abridge_full_path(docdir "${ABRIDGE_DOCDIR}")

# A scratch copy per install: two installs at once (a test beside a package build) never share one.
string(RANDOM LENGTH 12 tag)
set(scratch "${ABRIDGE_SCRATCH_DIR}/abridge-samples-${tag}")
foreach(sample abridge-watch.service cluster/crontab cluster/slurm-array.sh cluster/k8s-indexed-job.yaml)
  file(READ "${ABRIDGE_SOURCE_DIR}/samples/${sample}" text)
  string(REPLACE "/usr/local/bin/abridge" "${bindir}/abridge" text "${text}")
  string(REPLACE "samples/" "${datadir}/" text "${text}")
  string(REPLACE "docs/OPERATIONS.md" "${docdir}/OPERATIONS.md" text "${text}")
  get_filename_component(subdir "${sample}" DIRECTORY)
  get_filename_component(name "${sample}" NAME)
  set(destination "${datadir}")
  if(subdir)
    string(APPEND destination "/${subdir}")
  endif()
  file(WRITE "${scratch}/${sample}" "${text}")
  # file(INSTALL) honours DESTDIR, prints the usual "-- Installing:" line and records the file in
  # install_manifest.txt, as install(FILES) would.
  if(name MATCHES "\\.sh$")
    set(permissions PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  else()
    set(permissions PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
  file(INSTALL DESTINATION "${destination}" TYPE FILE ${permissions} FILES "${scratch}/${sample}")
endforeach()
file(REMOVE_RECURSE "${scratch}")
