# Included by CMakeLists.txt in a fuzz build (-DFLEETSNAP_FUZZ=ON, clang).
# One executable per target; each is also a ctest test labelled `fuzz`: a
# short smoke (FLEETSNAP_FUZZ_SMOKE seconds) on its committed corpus.
set(FLEETSNAP_FUZZ_SMOKE 10 CACHE STRING "Seconds of each fuzz target's ctest smoke")
pkg_check_modules(LUALIB REQUIRED lua5.4)

foreach(target json journal tree readers)
  add_executable(fuzz_${target} fuzz/fuzz_${target}.c fuzz/lua_env.c fuzz/tmp.c)
  target_compile_options(fuzz_${target} PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_${target} PRIVATE -fsanitize=fuzzer)
  target_compile_definitions(fuzz_${target} PRIVATE FLEETSNAP_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  target_link_libraries(fuzz_${target} PRIVATE fleetsnap_engine_static ${LUALIB_LINK_LIBRARIES} m)
  # New inputs go to a scratch corpus in the build; the committed one
  # (second directory) is only read.
  add_test(NAME fuzz_${target}
    COMMAND sh -c "rm -rf \"$0\" && mkdir -p \"$0\" && exec \"$1\" -max_total_time=${FLEETSNAP_FUZZ_SMOKE} -print_final_stats=1 \"$0\" \"$2\""
      ${CMAKE_BINARY_DIR}/smoke-corpus/${target} $<TARGET_FILE:fuzz_${target}> ${CMAKE_SOURCE_DIR}/fuzz/corpus/${target})
  set_tests_properties(fuzz_${target} PROPERTIES LABELS "fuzz" TIMEOUT 120
    ENVIRONMENT "FLEETSNAP_SOURCE=${CMAKE_SOURCE_DIR}")
endforeach()
