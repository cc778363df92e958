// Moved to common/cpu/cpu_features.h (CPU and CUDA sources live in separate folders). This forward is
// temporary: delete it once csrc/ep_iteration/cpu/ep_iteration.cpp includes the new path.
#pragma once
#include "common/cpu/cpu_features.h"
