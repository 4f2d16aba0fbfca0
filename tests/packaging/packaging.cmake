# What a project using ropex meets (included from tests/CMakeLists.txt):
#   packaging_install               ropex installed into a fresh prefix under the build tree
#   packaging_find_package_laws     find_package(ropex) and COMPONENTS laws with Eigen3, nlohmann_json,
#                                   xtensor and xtl hidden, and a program of ropex::laws
#   packaging_find_package          COMPONENTS ropex (xtensor), and a program of the whole library
#   packaging_missing_component     REQUIRED COMPONENTS ropex with Eigen3 hidden stops, naming it
#   packaging_add_subdirectory_laws, packaging_add_subdirectory: the same two programs via add_subdirectory
#   headers_each, headers_all_*     check_headers.sh: the headers under -Wall -Wextra -Wpedantic -Werror,
#                                   with g++ and clang++, with and without OpenMP
set(ROPEX_PKG_SRC ${CMAKE_CURRENT_SOURCE_DIR}/packaging)
set(ROPEX_PKG_DIR ${CMAKE_CURRENT_BINARY_DIR}/packaging)
set(_hide_deps -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON
               -DCMAKE_DISABLE_FIND_PACKAGE_xtensor=ON -DCMAKE_DISABLE_FIND_PACKAGE_xtl=ON)
set(_consumer_options -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER} -DWITH_XTENSOR=$<TARGET_EXISTS:ropex_xtensor>)
if(CMAKE_CXX_COMPILER_LAUNCHER)
  list(APPEND _consumer_options -DCMAKE_CXX_COMPILER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER})
endif()

add_test(NAME packaging_install COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR}
  -DPREFIX=${ROPEX_PKG_DIR}/prefix -P ${ROPEX_PKG_SRC}/install.cmake)
set_tests_properties(packaging_install PROPERTIES FIXTURES_SETUP ropex_installed)

# A test's name, its consumer project (find_package or add_subdirectory), and -D options.
function(ropex_consumer_test name project)
  add_test(NAME ${name}
    COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${ROPEX_PKG_SRC}/${project} ${ROPEX_PKG_DIR}/${name}
      --build-generator ${CMAKE_GENERATOR}
      --build-options ${_consumer_options} ${ARGN}
      --test-command consumer)
  set_tests_properties(${name} PROPERTIES TIMEOUT 600 LABELS packaging)
endfunction()
ropex_consumer_test(packaging_find_package_laws find_package
  -DCMAKE_PREFIX_PATH=${ROPEX_PKG_DIR}/prefix -DCONSUMER=laws ${_hide_deps})
ropex_consumer_test(packaging_find_package find_package -DCMAKE_PREFIX_PATH=${ROPEX_PKG_DIR}/prefix -DCONSUMER=full)
set_tests_properties(packaging_find_package_laws packaging_find_package PROPERTIES FIXTURES_REQUIRED ropex_installed)
ropex_consumer_test(packaging_add_subdirectory_laws add_subdirectory
  -DROPEX_ROOT=${PROJECT_SOURCE_DIR} -DCONSUMER=laws ${_hide_deps})
ropex_consumer_test(packaging_add_subdirectory add_subdirectory -DROPEX_ROOT=${PROJECT_SOURCE_DIR} -DCONSUMER=full)

add_test(NAME packaging_missing_component
  COMMAND ${CMAKE_COMMAND} -S ${ROPEX_PKG_SRC}/missing -B ${ROPEX_PKG_DIR}/packaging_missing_component
    -DCMAKE_PREFIX_PATH=${ROPEX_PKG_DIR}/prefix -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON)
set_tests_properties(packaging_missing_component PROPERTIES FIXTURES_REQUIRED ropex_installed LABELS packaging
  PASS_REGULAR_EXPRESSION "ropex component 'ropex' is unavailable: Eigen3 3.4 not found")

# Header warnings. Every header alone (self-contained) with this build's compiler and OpenMP;
# then all headers and the instantiated templates in one unit per compiler, with and without
# OpenMP. On x86-64 the OpenMP units take the AVX-512/VNNI paths (-march=sapphirerapids) and the
# others the AVX2 paths (-march=alderlake): syntax only, so the build machine's CPU does not matter.
set(_header_flags -isystem ${EIGEN3_INCLUDE_DIR})
foreach(_lib SENTENCEPIECE PCRE2 UTF8PROC)
  if(${_lib}_FOUND)
    list(APPEND _header_flags -DROPEX_HAS_${_lib}=1)
    foreach(_dir IN LISTS ${_lib}_INCLUDE_DIRS)
      list(APPEND _header_flags -isystem ${_dir})
    endforeach()
  endif()
endforeach()
list(APPEND _header_flags -DROPEX_HAS_BLAS=1)
set(_march_omp "")
set(_march_plain "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64)$")
  set(_march_omp -march=sapphirerapids)
  set(_march_plain -march=alderlake)
endif()
set(_check ${ROPEX_PKG_SRC}/check_headers.sh)
add_test(NAME headers_each COMMAND ${_check} each ${CMAKE_CXX_COMPILER} -fopenmp ${_header_flags})
set_tests_properties(headers_each PROPERTIES TIMEOUT 600 LABELS headers)
find_program(ROPEX_GXX NAMES g++)
find_program(ROPEX_CLANGXX NAMES clang++)
foreach(_cxx gxx clangxx)
  string(TOUPPER "ROPEX_${_cxx}" _var)
  if(NOT ${_var})
    message(STATUS "ropex tests: no ${_cxx} found: headers_all_${_cxx}* not registered")
    continue()
  endif()
  add_test(NAME headers_all_${_cxx}_openmp COMMAND ${_check} all ${${_var}} -fopenmp ${_march_omp} ${_header_flags})
  add_test(NAME headers_all_${_cxx} COMMAND ${_check} all ${${_var}} ${_march_plain} ${_header_flags})
  set_tests_properties(headers_all_${_cxx}_openmp headers_all_${_cxx} PROPERTIES TIMEOUT 600 LABELS headers)
endforeach()
