# libmetaformer.so: the C API (include/metaformer.h) over the static engine, plus what
# `cmake --install` puts in place: the CLI, the library, the header, a CMake package
# (find_package(metaformer) -> metaformer::metaformer) and a pkg-config file (metaformer.pc).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The engine's static libraries go into a shared object: they must be position-independent.
set_target_properties(mf_formats mf_engine PROPERTIES POSITION_INDEPENDENT_CODE ON)

add_library(mf_capi SHARED src/capi/metaformer_c.cpp)
set_target_properties(mf_capi PROPERTIES
  OUTPUT_NAME metaformer
  EXPORT_NAME metaformer
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)
target_compile_options(mf_capi PRIVATE ${MF_WARNINGS})
target_include_directories(mf_capi PUBLIC
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(mf_capi PRIVATE mf_engine)
# Only the mf_* C functions are exported: the engine's C++ symbols (and those of fmt, oneDNN's
# wrappers, ...) stay inside, so the library cannot clash with a program's own copies of them.
target_link_options(mf_capi PRIVATE -Wl,--exclude-libs,ALL -Wl,--no-undefined)
add_library(metaformer::metaformer ALIAS mf_capi)

install(TARGETS metaformer RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS mf_capi EXPORT metaformerTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES include/metaformer.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT metaformerTargets NAMESPACE metaformer:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/metaformer)
configure_package_config_file(cmake/metaformerConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/metaformerConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/metaformer)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/metaformerConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/metaformerConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/metaformerConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/metaformer)
# The .pc file locates the prefix from its own folder, so `cmake --install --prefix DIR` works.
file(RELATIVE_PATH MF_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(cmake/metaformer.pc.in ${CMAKE_CURRENT_BINARY_DIR}/metaformer.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/metaformer.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
