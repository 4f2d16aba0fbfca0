# cmake -DBUILD_DIR=<ropex build> -DPREFIX=<dir> -P install.cmake: installs ropex's library
# (headers and CMake package) into a fresh PREFIX, so no file of an earlier layout is left there.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" --component Unspecified
                COMMAND_ERROR_IS_FATAL ANY)
