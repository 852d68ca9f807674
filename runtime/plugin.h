// Loading plugins: shared libraries speaking the C ABI of plugins/weft_plugin.h. A plugin
// adds ops, kernels and devices to the one registry; a refused plugin leaves nothing
// behind. Graphs name the plugins they need ("requires"); weft never loads a library
// because a graph file says so: the user passes --plugin PATH or lists it in
// WEFT_PLUGIN_PATH.
#pragma once

#include <string>
#include <vector>

#include "plugins/weft_plugin.h"
#include "runtime/tensor.h"

namespace weft {

struct LoadedPlugin {
  std::string name, version, path;
  std::vector<std::string> ops;
};

// Loads one plugin. Throws Error naming the library and why it was refused.
const LoadedPlugin& load_plugin(const std::string& path);
// Loads every library listed in WEFT_PLUGIN_PATH (colon-separated), then `paths`.
void load_plugins(const std::vector<std::string>& paths);
// Checks one op definition as load_plugin does (its names and the JSON texts of its
// attribute schema, gradient subgraph and test spec) and registers nothing. Throws Error
// naming `origin` and why the op would be refused.
void check_op_def(const weft_op_def& def, const std::string& origin);
const std::vector<LoadedPlugin>& loaded_plugins();
const LoadedPlugin* find_plugin(const std::string& name);

// Devices registered by plugins (kind 1, 2, ...). The CPU (kind 0) is not listed.
struct DeviceDef {
  int kind;
  std::string name, plugin;
  weft_device_def fns;
};
const DeviceDef* find_device(int kind);
const std::vector<DeviceDef>& devices();

}  // namespace weft
