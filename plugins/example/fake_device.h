/* What the example plugin's host-fake device counts, read by weft's tests through
 * `weft_example_fake_stats` (looked up with dlsym): what crossed between the host and the
 * device, and what is alive on it. */
#ifndef WEFT_EXAMPLE_FAKE_DEVICE_H
#define WEFT_EXAMPLE_FAKE_DEVICE_H

#include <stdint.h>

typedef struct weft_example_fake_stats_t {
  int64_t copies_to_host, copies_from_host, bytes_to_host, bytes_from_host;
  int64_t syncs, launches;
  int64_t allocations, live_allocations;
  int64_t states_created, live_states;
} weft_example_fake_stats_t;

#endif
