# The Python module (`import metaformer`, docs/python.md): the extension metaformer._core, built with
# Debian's pybind11 over the same static engine as the CLI and the C API, plus the pure-Python
# package around it (python/metaformer/).
#
# METAFORMER_PYTHON: AUTO builds it when pybind11 and Python's development files are found, ON
# requires them, OFF leaves it out.
set(METAFORMER_PYTHON AUTO CACHE STRING "Build the Python module: AUTO, ON or OFF")
set_property(CACHE METAFORMER_PYTHON PROPERTY STRINGS AUTO ON OFF)
if(METAFORMER_PYTHON STREQUAL "OFF")
  message(STATUS "Python module: off (METAFORMER_PYTHON=OFF)")
  return()
endif()
# An extension built with AddressSanitizer cannot be loaded by an uninstrumented python3 (the ASan
# runtime must come first), so the sanitizer build leaves it out unless asked for.
if(METAFORMER_SANITIZE AND METAFORMER_PYTHON STREQUAL "AUTO")
  message(STATUS "Python module: off (sanitizer build; METAFORMER_PYTHON=ON to build it anyway)")
  return()
endif()

# The system's interpreter (what a fresh Debian machine has, and what its python3-numpy and
# pybind11-dev belong to), not the first python3 on PATH (a pyenv or venv without numpy).
if(NOT DEFINED Python_EXECUTABLE AND EXISTS /usr/bin/python3)
  set(Python_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python interpreter the module is built for")
endif()
set(_mf_python_quiet QUIET)
if(METAFORMER_PYTHON STREQUAL "ON")
  set(_mf_python_quiet)
endif()
find_package(Python 3.8 COMPONENTS Interpreter Development.Module ${_mf_python_quiet})
if(Python_FOUND)
  find_package(pybind11 2.6 CONFIG ${_mf_python_quiet})
endif()
if(NOT Python_FOUND OR NOT pybind11_FOUND)
  if(METAFORMER_PYTHON STREQUAL "ON")
    message(FATAL_ERROR "METAFORMER_PYTHON=ON but pybind11 or Python's development files were not found "
                        "(Debian: apt-get install pybind11-dev python3-dev)")
  endif()
  message(STATUS "Python module: off (needs pybind11-dev and python3-dev)")
  return()
endif()

# The CLI's code goes into the extension too (train runs its subcommand): position-independent.
set_target_properties(mf_cli PROPERTIES POSITION_INDEPENDENT_CODE ON)

set(MF_PYTHON_BUILD_DIR ${CMAKE_BINARY_DIR}/python)
file(GLOB MF_PYTHON_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/src/*.cpp)
pybind11_add_module(mf_python MODULE ${MF_PYTHON_SOURCES})
set_target_properties(mf_python PROPERTIES
  OUTPUT_NAME _core
  LIBRARY_OUTPUT_DIRECTORY ${MF_PYTHON_BUILD_DIR}/metaformer)
target_compile_options(mf_python PRIVATE ${MF_WARNINGS})
target_link_libraries(mf_python PRIVATE mf_cli)
# As libmetaformer.so: the engine's C++ symbols stay inside the extension.
target_link_options(mf_python PRIVATE -Wl,--exclude-libs,ALL)

# The pure-Python files next to the extension in the build tree, so that PYTHONPATH=build/python
# imports the package as installed (copied on every build, so edits show up without re-configuring).
file(GLOB MF_PYTHON_FILES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/metaformer/*.py)
set(_mf_python_copies)
foreach(f ${MF_PYTHON_FILES})
  get_filename_component(name ${f} NAME)
  add_custom_command(OUTPUT ${MF_PYTHON_BUILD_DIR}/metaformer/${name}
    COMMAND ${CMAKE_COMMAND} -E copy_if_different ${f} ${MF_PYTHON_BUILD_DIR}/metaformer/${name}
    DEPENDS ${f} VERBATIM)
  list(APPEND _mf_python_copies ${MF_PYTHON_BUILD_DIR}/metaformer/${name})
endforeach()
add_custom_target(mf_python_files ALL DEPENDS ${_mf_python_copies})
add_dependencies(mf_python mf_python_files)

# Where the interpreter looks for packages under the install prefix, relative to it so that
# `cmake --install --prefix DIR` follows: Debian's python3 reads PREFIX/lib/python3.X/dist-packages
# for /usr/local (its "posix_local" scheme), other Pythons PREFIX/lib/python3.X/site-packages.
if(NOT DEFINED METAFORMER_PYTHON_INSTALL_DIR)
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c
      "import sysconfig; local = 'posix_local' in sysconfig.get_scheme_names(); p = sysconfig.get_path('platlib', 'posix_local' if local else 'posix_prefix', vars={'base': '/P', 'platbase': '/P'}); print(p.replace('/P/local/', '').replace('/P/', ''))"
    OUTPUT_VARIABLE _mf_python_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _mf_python_rc)
  if(NOT _mf_python_rc EQUAL 0 OR _mf_python_dir STREQUAL "")
    set(_mf_python_dir lib/python${Python_VERSION_MAJOR}.${Python_VERSION_MINOR}/site-packages)
  endif()
  set(METAFORMER_PYTHON_INSTALL_DIR ${_mf_python_dir} CACHE STRING
      "Where `cmake --install` puts the metaformer package (relative to the prefix, or absolute)")
endif()
# Its own component, so that scripts/setup.sh can install just the module:
# `cmake --install build --component python`.
install(TARGETS mf_python LIBRARY DESTINATION ${METAFORMER_PYTHON_INSTALL_DIR}/metaformer COMPONENT python)
install(FILES ${MF_PYTHON_FILES} DESTINATION ${METAFORMER_PYTHON_INSTALL_DIR}/metaformer COMPONENT python)
message(STATUS "Python module: on (${Python_EXECUTABLE} ${Python_VERSION}, installs into "
               "PREFIX/${METAFORMER_PYTHON_INSTALL_DIR})")

# The pytest tests (python/tests) against the build tree, when pytest is there.
if(METAFORMER_TESTS)
  execute_process(COMMAND ${Python_EXECUTABLE} -c "import pytest, numpy" RESULT_VARIABLE _mf_no_pytest
                  OUTPUT_QUIET ERROR_QUIET)
  if(_mf_no_pytest EQUAL 0)
    add_test(NAME Python.Pytest
      COMMAND ${Python_EXECUTABLE} -m pytest -q -p no:cacheprovider ${CMAKE_CURRENT_SOURCE_DIR}/python/tests)
    set_tests_properties(Python.Pytest PROPERTIES TIMEOUT 300
      ENVIRONMENT "PYTHONPATH=${MF_PYTHON_BUILD_DIR};METAFORMER_CLI=$<TARGET_FILE:metaformer>;PYTHONDONTWRITEBYTECODE=1")
  else()
    message(STATUS "Python tests: off (needs python3-pytest and python3-numpy)")
  endif()
endif()
