// The scaling laws and the RoPE math on the standard library alone (CMake target ropex::laws):
// no Eigen, no JSON, so a program that only predicts bases and limits needs nothing else.
#pragma once
#include <ropex/config.hpp>
#include <ropex/error.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>
#include <ropex/presets.hpp>
#include <ropex/rope/frequencies.hpp>
#include <ropex/rope/apply.hpp>
