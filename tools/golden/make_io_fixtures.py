#!/usr/bin/env python3
"""Writes the small .npy and .safetensors fixtures of tests/data/io/ with real numpy, and the
safetensors file by hand from the format description (8-byte little-endian header length, JSON
header, data). Run with Debian's python3-numpy:  /usr/bin/python3 tools/golden/make_io_fixtures.py
"""
import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'tests', 'data', 'io')


def main():
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, 'f4_2x3.npy'), (np.arange(6, dtype=np.float32) * 0.5).reshape(2, 3))
    np.save(os.path.join(OUT, 'f8_4.npy'), np.array([0.0, 1.0, 2.0, -1.5], dtype=np.float64))
    np.save(os.path.join(OUT, 'f2_3.npy'), np.array([1.0, -2.0, 0.25], dtype=np.float16))
    np.save(os.path.join(OUT, 'f4_scalar.npy'), np.array(42.0, dtype=np.float32))
    with open(os.path.join(OUT, 'f4_v2.npy'), 'wb') as f:
        np.lib.format.write_array(f, np.arange(4, dtype=np.float32).reshape(1, 2, 2), version=(2, 0))

    f32 = (np.arange(6, dtype=np.float32) + 0.5).reshape(2, 3)
    f16 = np.array([1.0, -0.5, 2.0], dtype=np.float16)
    bf16 = (np.array([1.0, -2.0, 3.0], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    i64 = np.array([-1, 0, 7], dtype=np.int64)
    tensors = [('f32', 'F32', f32), ('f16', 'F16', f16), ('bf16', 'BF16', bf16), ('i64', 'I64', i64)]
    header, data, off = {'__metadata__': {'written_by': 'make_io_fixtures.py'}}, b'', 0
    for name, dtype, arr in tensors:
        raw = arr.tobytes()
        header[name] = {'dtype': dtype, 'shape': list(arr.shape), 'data_offsets': [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    with open(os.path.join(OUT, 'sample.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + data)


if __name__ == '__main__':
    main()
