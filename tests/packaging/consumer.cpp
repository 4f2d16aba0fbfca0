// A throwaway consumer: proves the installed / add_subdirectory'd package compiles and links.
#include <ropex/ropex.hpp>
#include <cstdio>

int main() {
  const int d_extra = ropex::critical_dimension(128, 4096);
  std::printf("critical_dimension(128, 4096) = %d\n", d_extra);
  return d_extra == 92 ? 0 : 1;
}
