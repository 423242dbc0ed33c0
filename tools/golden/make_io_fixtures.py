#!/usr/bin/env python3
"""Writes the small fixtures of tests/data/io/, copies them into the fuzz seed corpora, and adds
handmade seeds (valid and malformed) to fuzz/corpus/{safetensors,npy}/.

The .npy files come from real numpy (numpy.save and numpy.lib.format.write_array); the .safetensors
file is written by hand from the format description (8-byte little-endian header length, JSON
header padded with spaces to a multiple of 8 bytes, then the raw little-endian data), so that the C++
reader is checked against an independent writer. Run with Debian's python3-numpy:

    /usr/bin/python3 tools/golden/make_io_fixtures.py
"""
import json
import os
import shutil
import struct

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
OUT = os.path.join(ROOT, 'tests', 'data', 'io')
CORPUS = os.path.join(ROOT, 'fuzz', 'corpus')


def write_npy_fixtures():
    np.save(os.path.join(OUT, 'f4_2x3.npy'), (np.arange(6, dtype=np.float32) * 0.5).reshape(2, 3))
    np.save(os.path.join(OUT, 'f8_4.npy'), np.array([0.0, 1.0, 2.0, -1.5], dtype=np.float64))
    # float16 specials: the smallest subnormal, -0.0 and inf must convert exactly.
    np.save(os.path.join(OUT, 'f2_3.npy'), np.array([1.0, -2.0, 0.25, 2.0**-24, -0.0, np.inf], dtype=np.float16))
    np.save(os.path.join(OUT, 'f4_scalar.npy'), np.array(42.0, dtype=np.float32))
    with open(os.path.join(OUT, 'f4_v2.npy'), 'wb') as f:
        np.lib.format.write_array(f, np.arange(4, dtype=np.float32).reshape(1, 2, 2), version=(2, 0))


def write_safetensors_fixture():
    f32 = (np.arange(6, dtype=np.float32) + 0.5).reshape(2, 3)
    f16 = np.array([1.0, -0.5, 2.0**-24, -np.inf, -0.0], dtype=np.float16)
    # bfloat16 is the upper half of a float32; 1.01 truncates to 1 + 2^-7.
    bf16 = (np.array([1.0, -2.0, 3.0, 1.01], dtype='<f4').view('<u4') >> 16).astype('<u2')
    i64 = np.array([-1, 0, 7, -(1 << 40)], dtype='<i8')
    tensors = [('f32', 'F32', f32), ('f16', 'F16', f16), ('bf16', 'BF16', bf16), ('i64', 'I64', i64)]
    header, data = {'__metadata__': {'written_by': 'make_io_fixtures.py'}}, b''
    for name, dtype, arr in tensors:
        raw = arr.astype(arr.dtype.newbyteorder('<')).tobytes()
        header[name] = {'dtype': dtype, 'shape': list(arr.shape), 'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(os.path.join(OUT, 'sample.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + data)


def safetensors_image(header, data=b''):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack('<Q', len(h)) + h + data


def npy_image(header, data=b'', major=1):
    h = header.encode()
    size = struct.pack('<H', len(h)) if major == 1 else struct.pack('<I', len(h))
    return b'\x93NUMPY' + bytes([major, 0]) + size + h + data


def write_fuzz_seeds():
    """Handmade seeds for the fuzzers: valid files that reach every dtype and syntax branch, and
    malformed ones just past each check."""
    st = os.path.join(CORPUS, 'safetensors')
    dtypes = [('F64', 8), ('F32', 4), ('F16', 2), ('BF16', 2), ('I64', 8), ('I32', 4), ('I16', 2), ('I8', 1),
              ('U64', 8), ('U32', 4), ('U16', 2), ('U8', 1), ('BOOL', 1), ('F8_E4M3', 1)]
    header, off = {}, 0
    for i, (dtype, size) in enumerate(dtypes):
        header['t%d' % i] = {'dtype': dtype, 'shape': [2], 'data_offsets': [off, off + 2 * size]}
        off += 2 * size
    header['empty'] = {'dtype': 'F32', 'shape': [0, 3], 'data_offsets': [off, off]}
    seeds = {
        'all_dtypes.safetensors': safetensors_image(json.dumps(header), bytes(range(off))),
        'overlap.safetensors': safetensors_image(
            '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)),
        'past_end.safetensors': safetensors_image('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', bytes(8)),
        'bad_dtype.safetensors': safetensors_image('{"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}', bytes(16)),
        'nested.safetensors': safetensors_image('{"__metadata__":' + '[' * 70 + ']' * 70 + '}'),
        'metadata.safetensors': safetensors_image('{"__metadata__":{"k":"v","\u00e9":"\"x\""}}'),
        'not_json.safetensors': safetensors_image('{"a":{"dtype":"F32",'),
        # An empty tensor name is valid; the writer once refused it, breaking the fuzzer's round trip.
        'regression_empty_name.safetensors': safetensors_image('{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                                                               bytes(4)),
    }
    for name, image in seeds.items():
        with open(os.path.join(st, name), 'wb') as f:
            f.write(image)

    npy = os.path.join(CORPUS, 'npy')
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }"
    seeds = {
        'big_endian.npy': npy_image(d % ('>f4', 'False', '(2,)'), bytes(8)),
        'fortran.npy': npy_image(d % ('<f4', 'True', '(2, 2)'), bytes(16)),
        'short_data.npy': npy_image(d % ('<f8', 'False', '(3,)'), bytes(16)),
        'int64.npy': npy_image(d % ('<i8', 'False', '(1,)'), bytes(8)),
        'bad_dict.npy': npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", bytes(8)),
        'v3_six_dims.npy': npy_image("{\"shape\": (1, 2, 1, 1, 1, 2), \"descr\": \"<f2\", \"fortran_order\": False}\n",
                                     bytes(8), major=3),
    }
    for name, image in seeds.items():
        with open(os.path.join(npy, name), 'wb') as f:
            f.write(image)


def main():
    os.makedirs(OUT, exist_ok=True)
    write_npy_fixtures()
    write_safetensors_fixture()
    for name in sorted(os.listdir(OUT)):
        kind = 'npy' if name.endswith('.npy') else 'safetensors'
        shutil.copy(os.path.join(OUT, name), os.path.join(CORPUS, kind, name))
    write_fuzz_seeds()


if __name__ == '__main__':
    main()
