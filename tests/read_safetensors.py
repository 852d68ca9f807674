"""Reads a safetensors file with numpy alone, following the format's layout: a
little-endian u64 header size, a JSON header, then raw little-endian data."""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64}

with open(sys.argv[1], "rb") as f:
    data = f.read()
(n,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8 : 8 + n])
body = data[8 + n :]
meta = header.pop("__metadata__", {})
end = 0
for name in sorted(header):
    e = header[name]
    begin, stop = e["data_offsets"]
    end = max(end, stop)
    arr = np.frombuffer(body[begin:stop], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
    print(name, arr.dtype, tuple(arr.shape), float(arr.sum()))
assert end == len(body), "data past the last tensor"
print("metadata", " ".join(f"{k}={v}" for k, v in sorted(meta.items())))
