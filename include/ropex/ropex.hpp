// Umbrella header: everything ropex offers on the CPU. Never includes the CUDA backend.
#pragma once
#include <ropex/config.hpp>
#include <ropex/error.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>
#include <ropex/presets.hpp>
#include <ropex/rope/frequencies.hpp>
#include <ropex/rope/scaling.hpp>
#include <ropex/rope/apply.hpp>
