// Umbrella header: everything ropex offers on the CPU. Never includes the CUDA backend.
#pragma once
#include <ropex/laws.hpp>
#include <ropex/rope/scaling.hpp>
