#!/usr/bin/env python3
"""Counts the BPF instructions wg_ingress / wg_egress execute on one established IPv4 TCP ACK
that hits its flow cache slot (docs/benchmarks.md), by interpreting the object's
`llvm-objdump-22 -d -r` output: maps and helpers are stubbed (the active word, the clock, a
stats slot, and a flow cache slot built to match the packet; every other map lookup is NULL).

    python3 testkit/tools/bpf_insns.py OBJECT [ingress|egress] [LAYOUT]

LAYOUT: omit for the current FlowSlot (ebpf/src/flowcache.rs), `base` for the layout of
c28aac8, or a Python file that packs the slot's fields after the key into `s` (see
`current_layout` below). SYN=1 sends a SYN instead (it bypasses the cache); STOP_AT=<map>
stops at the first lookup of that map and prints the count so far; TRACE=<file> writes the
executed instructions. A developer tool: extend the stubs when the hit path gains a map.
"""
import re, subprocess, struct, sys, collections, os
obj = sys.argv[1]; hook = sys.argv[2] if len(sys.argv) > 2 else 'ingress'
dis = subprocess.run(['llvm-objdump-22', '-d', '-r', obj], capture_output=True, text=True).stdout
funcs = {}; cur = None; last = None; starts = {}
sect = None
for line in dis.splitlines():
    ms = re.match(r'^Disassembly of section (.*):$', line)
    if ms: sect = ms.group(1); continue
    m = re.match(r'^([0-9a-f]+) <(.*)>:$', line)
    if m: cur = m.group(2); funcs[cur] = {}; base = None; continue
    m = re.match(r'^\s+(\d+):\t((?:[0-9a-f]{2} ?){8,16})', line)
    if m and cur:
        idx = int(m.group(1)); b = bytes.fromhex(m.group(2).replace(' ', ''))
        if base is None: base = idx; starts[(sect, idx)] = cur
        funcs[cur][idx - base] = [b, None]; last = (cur, idx - base); continue
    m = re.match(r'^\s+[0-9a-f]+:\s+(R_BPF_\S+)\s+(\S+)', line)
    if m and last: funcs[last[0]][last[1]][1] = m.group(2)
M = (1 << 64) - 1
def s64(x): x &= M; return x - (1 << 64) if x >> 63 else x
def s32(x): x &= 0xffffffff; return x - (1 << 32) if x >> 31 else x

class Ptr:
    def __init__(s, reg, off): s.reg, s.off = reg, off
    def __repr__(s): return f'Ptr({s.reg},{s.off})'

MAC = bytes([2,0,0,0,0,0x0a]); GW = bytes([2,0,0,0,0,1])
src = bytes([192,0,2,10]); dst = bytes([198,51,100,1]); sport, dport = 1024, 1024
if hook == 'egress':
    emac, esrc, edst, esp, edp = MAC, dst, src, dport, sport; emac_src = GW; emac_dst = MAC
else:
    emac_src, emac_dst, esrc, edst, esp, edp = MAC, GW, src, dst, sport, dport
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 1, 0x4000, 64, 6, 0, esrc, edst)
tcp = struct.pack('!HHIIBBHHH', esp, edp, 1, 1, 0x50, 0x02 if os.environ.get('SYN') else 0x10, 1000, 0, 0)
frame = emac_dst + emac_src + b'\x08\x00' + ip + tcp
IFINDEX = 7; NOW = 5_000_000_000; JIF = 1234; GEN = 1
mem = {'pkt': bytearray(frame), 'stack': bytearray(512), 'ctx': bytearray(256)}
ptrs = collections.defaultdict(dict)
struct.pack_into('<I', mem['ctx'], 0, len(frame)); struct.pack_into('<I', mem['ctx'], 0x28, IFINDEX)
def key_words():
    a = esrc + bytes(12); b = edst + bytes(12)
    w = struct.unpack('<QQ', a) + struct.unpack('<QQ', b)
    ports = struct.unpack('<I', struct.pack('!HH', esp, edp))[0]
    meta = ports | 6 << 32 | 4 << 40 | (0 if hook == 'ingress' else 1) << 48
    return w + (meta,)
DIR = None
def flowslot():
    layout = sys.argv[3] if len(sys.argv) > 3 else 'current'
    s = bytearray(128)
    struct.pack_into('<5Q', s, 0, *key_words())
    devmac = MAC
    if layout == 'current':
        # deadline, scope, dev_mac, pending, count_mask, reply
        struct.pack_into('<QQQQQI', s, 40, NOW + 500_000_000, GEN | IFINDEX << 32,
                         int.from_bytes(devmac + b'\0\0', 'little'), 3 << 36 | 120, (1 << 64) - 1, 0)
    elif layout == 'base':
        struct.pack_into('<QQQIIIBB6sI', s, 40, NOW - 10, NOW - 10, 100, GEN, 600, 3, 2, 1, devmac, IFINDEX)
    else:
        exec(open(layout).read(), {'s': s, 'struct': struct, 'NOW': NOW, 'GEN': GEN, 'MAC': devmac, 'IFINDEX': IFINDEX})
    return s
mapvals = {}
class Stop(Exception): pass
def lookup(name, keyp):
    if os.environ.get('STOP_AT') == name: raise Stop()
    if name not in mapvals:
        if name == 'WG_ACTIVE_V2': v = bytearray(struct.pack('<I', 0 | GEN << 1))
        elif name == 'WG_CLOCK_V1': v = bytearray(struct.pack('<QQ', JIF, NOW))
        elif name == 'WG_FLOWCACHE_V1': v = flowslot()
        elif name in ('WG_STATS_V1', 'WG_CONFIG_V3', 'WG_PAYREQ'): v = bytearray(512)
        else: print('lookup of', name, '-> NULL'); return 0
        mem[name] = v; mapvals[name] = 1
    return Ptr(name, 0)
regs = [0] * 11; regs[1] = Ptr('ctx', 0); regs[10] = Ptr('stack', 512)
import os
TRACE = os.environ.get('TRACE'); trace = []
count = collections.Counter(); calls = collections.Counter()
def load(p, size):
    if not isinstance(p, Ptr): raise Exception(f'load from scalar {p}')
    if size == 8 and p.off in ptrs[p.reg]: return ptrs[p.reg][p.off]
    if p.reg == 'ctx' and p.off == 0x4c: return Ptr('pkt', 0)
    if p.reg == 'ctx' and p.off == 0x50: return Ptr('pkt', len(frame))
    b = mem[p.reg][p.off:p.off + size]
    if len(b) < size: raise Exception(f'oob {p} {size}')
    return int.from_bytes(b, 'little')
def store(p, size, v):
    for o in range(p.off - 7, p.off + size): ptrs[p.reg].pop(o, None)
    if isinstance(v, Ptr):
        assert size == 8; ptrs[p.reg][p.off] = v; return
    mem[p.reg][p.off:p.off + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(size, 'little')
SZ = {0: 4, 8: 2, 0x10: 1, 0x18: 8}
def run(fname, depth=0):
    insns = funcs[fname]; pc = 0
    saved = regs[6:10]
    while True:
        b, rel = insns[pc]; op = b[0]; dst = b[1] & 15; srcr = b[1] >> 4
        off = struct.unpack('<h', b[2:4])[0]; imm = struct.unpack('<i', b[4:8])[0]
        cls = op & 7; count[fname] += 1
        if TRACE: trace.append((fname, pc))
        if op == 0x18:
            regs[dst] = ('map', rel) if rel else ((imm & 0xffffffff) | (struct.unpack('<I', b[12:16])[0] << 32))
            pc += 2; continue
        if cls in (4, 7):
            alu = op & 0xf0; x = regs[srcr] if op & 8 and alu != 0xd0 else imm
            a = regs[dst]
            if alu == 0xb0:
                if cls == 7: regs[dst] = x if isinstance(x, Ptr) else x & M
                else: regs[dst] = x & 0xffffffff
            elif isinstance(a, Ptr) or isinstance(x, Ptr):
                if alu == 0x00: regs[dst] = Ptr(a.reg, a.off + x) if isinstance(a, Ptr) else Ptr(x.reg, x.off + a)
                elif alu == 0x10 and isinstance(x, Ptr): regs[dst] = a.off - x.off
                elif alu == 0x10: regs[dst] = Ptr(a.reg, a.off - x)
                else: raise Exception(f'ptr alu {alu:x} at {fname}+{pc}')
            elif alu == 0xd0:
                v = a
                if op == 0xdc:
                    n = imm // 8; v = int.from_bytes((v & ((1 << imm) - 1)).to_bytes(n, 'little'), 'big')
                else: v &= (1 << imm) - 1
                regs[dst] = v
            else:
                w = 64 if cls == 7 else 32; mk = (1 << w) - 1
                a &= mk; x &= mk
                if alu == 0x00: r = a + x
                elif alu == 0x10: r = a - x
                elif alu == 0x20: r = a * x
                elif alu == 0x30: r = a // x if x else 0
                elif alu == 0x40: r = a | x
                elif alu == 0x50: r = a & x
                elif alu == 0x60: r = a << (x & (w - 1))
                elif alu == 0x70: r = a >> (x & (w - 1))
                elif alu == 0x80: r = -a
                elif alu == 0x90: r = a % x if x else a
                elif alu == 0xa0: r = a ^ x
                elif alu == 0xc0: r = ((s64(a) if w == 64 else s32(a)) >> (x & (w - 1)))
                else: raise Exception(f'alu {op:x}')
                regs[dst] = r & mk
            pc += 1; continue
        if cls == 1:
            regs[dst] = load(Ptr(regs[srcr].reg, regs[srcr].off + off), SZ[op & 0x18]); pc += 1; continue
        if cls == 3:
            store(Ptr(regs[dst].reg, regs[dst].off + off), SZ[op & 0x18], regs[srcr]); pc += 1; continue
        if cls == 2:
            store(Ptr(regs[dst].reg, regs[dst].off + off), SZ[op & 0x18], imm); pc += 1; continue
        if cls in (5, 6):
            j = op & 0xf0
            if j == 0x90:
                regs[6:10] = saved; return regs[0]
            if j == 0x80:
                if srcr == 1 or rel and not rel.startswith('WG'):
                    target = rel
                    if target == '.text': target = starts[('.text', imm + 1)]
                    if target is None or target not in funcs:
                        # local call: find function containing pc+imm+1 (same function)
                        raise Exception(f'local call at {fname}+{pc}')
                    calls[target] += 1; r6 = regs[6:10]
                    regs[0] = run(target, depth + 1); regs[6:10] = r6
                    regs[1:6] = [0] * 5; pc += 1; continue
                calls[imm] += 1
                if imm == 1: regs[0] = lookup(regs[1][1], regs[2])
                elif imm == 118: regs[0] = JIF
                elif imm == 160: regs[0] = NOW
                elif imm == 39: regs[0] = 0
                elif imm == 12: regs[0] = 0
                else: raise Exception(f'helper {imm} at {fname}+{pc}')
                regs[1:6] = [0] * 5; pc += 1; continue
            a = regs[dst]; x = regs[srcr] if op & 8 else imm
            if j == 0x00: pc += 1 + off; continue
            if isinstance(a, Ptr) or isinstance(x, Ptr):
                if isinstance(a, Ptr) and isinstance(x, Ptr): a, x = a.off, x.off
                elif isinstance(a, Ptr): a, x = 1, x  # non-null
                else: a, x = a, 1
            w = 64 if cls == 5 else 32; mk = (1 << w) - 1
            ua, ux = a & mk, x & mk
            sa = s64(ua) if w == 64 else s32(ua); sx = s64(ux) if w == 64 else s32(ux)
            t = {0x10: ua == ux, 0x20: ua > ux, 0x30: ua >= ux, 0x40: ua & ux != 0, 0x50: ua != ux,
                 0x60: sa > sx, 0x70: sa >= sx, 0xa0: ua < ux, 0xb0: ua <= ux, 0xc0: sa < sx,
                 0xd0: sa <= sx}[j]
            pc += 1 + (off if t else 0); continue
        raise Exception(f'op {op:x}')
entry = 'wg_ingress' if hook == 'ingress' else 'wg_egress'
try:
    ret = run(entry)
except Stop:
    print(f'stopped at {os.environ["STOP_AT"]}: insns {sum(count.values())}'); sys.exit(0)
stats = mem.get('WG_STATS_V1', bytearray(8))
nz = [(i // 8, int.from_bytes(stats[i:i+8], 'little')) for i in range(0, 512, 8) if int.from_bytes(stats[i:i+8], 'little')]
fs = mem.get('WG_FLOWCACHE_V1')
print(f'{hook}: verdict {ret}, insns {sum(count.values())} {dict(count)}, helpers {dict(calls)}, stats {nz}')
if fs: print("slot after:", fs[40:88].hex(), flush=True)

if TRACE:
    txt = {}
    cur=None; base=None
    for line in dis.splitlines():
        m = re.match(r'^([0-9a-f]+) <(.*)>:$', line)
        if m: cur = m.group(2); base=None; continue
        m = re.match(r'^\s+(\d+):\t(?:[0-9a-f]{2} ?){8,16}\s*(.*)', line)
        if m and cur:
            idx=int(m.group(1))
            if base is None: base=idx
            txt[(cur, idx-base)] = m.group(2)
    with open(TRACE,'w') as f:
        for t in trace: f.write(f'{t[1]:5d} {txt.get(t,"?")}\n')
