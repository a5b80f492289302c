"""Where a compiled step's time goes: per-HLO-op host times from a JAX trace.

``profile_step(run, hlo_text, repeats)`` calls ``run()`` ``repeats`` times
under ``jax.profiler.trace``, reads the trace back with
``jax.profiler.ProfileData`` and keeps the events whose names are instructions
of ``hlo_text`` (the compiled module's ``as_text()``; on the CPU backend each
executed thunk is one event named after its HLO instruction). Each
instruction is classified from the HLO itself:

* **phase**: ``backward`` when an op inside it carries a ``transpose(...)``
  op name (JAX's reverse-mode), ``forward`` when it carries ``jvp(...)``
  only, ``other`` otherwise (the optimizer update, schedules, metrics);
* **kind**: ``dot`` (a dot or convolution inside), ``gather/scatter``,
  ``copy/transpose`` (data movement only), ``reduce``, ``elementwise`` or
  the leaf's opcode (``sort``, ``rng``...);
* **dot FLOPs** from the dot's shapes (2 x output elements x contracted
  size), so each phase's matmuls get a GFLOP/s.

Container thunks (``while``, ``conditional``, ``call``) are not counted:
their bodies' thunks are. Times are per step (summed over threads, so with
intra-op threads the op total can exceed the wall time); the first traced run
is left out.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import math
import os
import re
import tempfile
import time
from typing import Callable, Dict, List, Optional

import jax

_CONTAINERS = {"while", "conditional", "call", "async-start", "async-done"}
_MOVES = {"copy", "transpose", "bitcast", "parameter", "reshape", "broadcast", "constant",
          "tuple", "get-tuple-element", "slice", "concatenate", "pad", "iota"}
_GATHER = {"gather", "scatter", "dynamic-slice", "dynamic-update-slice", "select-and-scatter"}
_COMP_RE = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INST_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_SHAPE_RE = re.compile(r"^[a-z]+\d*\[([\d,]*)\]")


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  type_str: str
  operands: List[str]
  op_name: str = ""
  calls: List[str] = dataclasses.field(default_factory=list)
  attrs: str = ""


def _split_type(rest: str):
  """``rest`` = 'TYPE opcode(operands), attrs' -> (type, opcode, after)."""
  if rest.startswith("("):
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        break
    type_str, tail = rest[:i + 1], rest[i + 1:].lstrip()
  else:
    type_str, _, tail = rest.partition(" ")
  m = re.match(r"([a-z][\w\-]*)\((.*)$", tail)
  if not m:
    return type_str, "", ""
  return type_str, m.group(1), m.group(2)


def parse_hlo(hlo_text: str) -> Dict[str, Dict[str, Instruction]]:
  """Computations of an HLO module's text: {computation: {instruction: Instruction}}."""
  comps: Dict[str, Dict[str, Instruction]] = {}
  current = None
  for line in hlo_text.splitlines():
    m = _COMP_RE.match(line)
    if m and "=" not in line.split("(")[0]:
      current = comps.setdefault(m.group(1), {})
      continue
    if line.strip() == "}":
      current = None
      continue
    if current is None:
      continue
    m = _INST_RE.match(line)
    if not m:
      continue
    type_str, opcode, after = _split_type(m.group(2))
    if not opcode:
      continue
    depth, end = 1, len(after)
    for i, ch in enumerate(after):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        end = i
        break
    operands = re.findall(r"%([\w.\-]+)", after[:end])
    attrs = after[end + 1:]
    op_name = re.search(r'op_name="([^"]*)"', attrs)
    calls = []
    for key in re.finditer(r"\b(?:calls|body|condition|to_apply|branch_computations)="
                           r"(\{[^}]*\}|%?[\w.\-]+)", attrs):
      calls += re.findall(r"%?([\w.\-]+)", key.group(1))
    current[m.group(1)] = Instruction(m.group(1), opcode, type_str, operands,
                                      op_name.group(1) if op_name else "", calls, attrs)
  return comps


def _dims(type_str: str) -> Optional[List[int]]:
  m = _SHAPE_RE.match(type_str)
  if not m:
    return None
  return [int(d) for d in m.group(1).split(",") if d]


def dot_flops(inst: Instruction, comp: Dict[str, Instruction]) -> float:
  """2 x output elements x contracted size of a dot (0 if shapes are unknown)."""
  out = _dims(inst.type_str)
  lhs = comp.get(inst.operands[0]) if inst.operands else None
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", inst.attrs)
  if out is None or lhs is None or contracting is None:
    return 0.0
  lhs_dims = _dims(lhs.type_str)
  if lhs_dims is None:
    return 0.0
  k = math.prod(lhs_dims[int(d)] for d in contracting.group(1).split(",") if d)
  return 2.0 * math.prod(out) * k


@dataclasses.dataclass
class OpInfo:
  name: str
  phase: str
  kind: str
  flops: float
  op_name: str
  type_str: str


def classify(comps: Dict[str, Dict[str, Instruction]]) -> Dict[str, OpInfo]:
  """Phase, kind and dot FLOPs of every instruction that can be a leaf thunk."""
  def inside(comp_name, seen):
    out = []
    for inst in comps.get(comp_name, {}).values():
      out.append((inst, comp_name))
      for c in inst.calls:
        if c not in seen:
          seen.add(c)
          out.extend(inside(c, seen))
    return out

  infos = {}
  for comp_name, comp in comps.items():
    for inst in comp.values():
      if inst.opcode in _CONTAINERS or inst.opcode in ("parameter", "constant",
                                                        "get-tuple-element", "tuple",
                                                        "bitcast"):
        continue
      members = [(inst, comp_name)]
      if inst.opcode == "fusion" or inst.opcode == "custom-call":
        for c in inst.calls:
          members.extend(inside(c, {c}))
      names = [m.op_name for m, _ in members if m.op_name]
      if any("transpose(" in n for n in names):
        phase = "backward"
      elif any("jvp(" in n for n in names):
        phase = "forward"
      else:
        phase = "other"
      opcodes = {m.opcode for m, _ in members}
      flops = sum(dot_flops(m, comps[c]) for m, c in members if m.opcode == "dot")
      if opcodes & {"dot", "convolution"}:
        kind = "dot"
      elif opcodes & _GATHER:
        kind = "gather/scatter"
      elif opcodes - {"fusion"} <= _MOVES:
        kind = "copy/transpose"
      elif "reduce" in opcodes or "reduce-window" in opcodes:
        kind = "reduce"
      elif inst.opcode in ("sort", "rng", "rng-bit-generator", "custom-call"):
        kind = inst.opcode
      else:
        kind = "elementwise"
      main = max(names, key=len) if names else ""
      infos[inst.name] = OpInfo(inst.name, phase, kind, flops, main, inst.type_str)
  return infos


def _trace_events(run: Callable[[], object], repeats: int):
  with tempfile.TemporaryDirectory() as tmp:
    walls = []
    with jax.profiler.trace(tmp):
      for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        walls.append(time.perf_counter() - t0)
    files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    if not files:
      raise RuntimeError("jax.profiler.trace wrote no .xplane.pb file")
    data = jax.profiler.ProfileData.from_file(files[0])
    events = []
    for plane in data.planes:
      for line in plane.lines:
        for ev in line.events:
          stats = dict(ev.stats)
          events.append((ev.name, ev.duration_ns, stats.get("hlo_module"),
                         stats.get("program_id"), stats.get("run_id"), ev.start_ns))
  return events, walls


def profile_step(run: Callable[[], object], hlo_text: str, repeats: int = 3,
                 top: int = 15, top_per_group: int = 3) -> Dict[str, object]:
  """Per-step time of ``run()`` by phase and kind of HLO op, and the top ops.

  ``run`` must execute the compiled module ``hlo_text`` came from (and be warm:
  compile it before). Seconds per step are means over the traced runs after
  the first (``repeats`` >= 2; ``runs_counted`` says how many).
  """
  infos = classify(parse_hlo(hlo_text))
  module = re.search(r"^HloModule ([\w.\-]+)", hlo_text, re.M)
  events, walls = _trace_events(run, repeats)
  # Thunk events carry their module, program and run ids: keep this module's,
  # of its programs (the same jitted function compiled for other shapes) the
  # one that ran most, and of its runs every complete one but the first (the
  # first traced run pays the profiler's start-up).
  events = [e for e in events if e[0] in infos
            and (module is None or e[2] in (None, module.group(1)))]
  programs = collections.Counter(e[3] for e in events)
  program = programs.most_common(1)[0][0] if programs else None
  runs = collections.defaultdict(list)
  for e in events:
    if e[3] == program:
      runs[e[4]].append(e)
  if not runs:
    raise RuntimeError(
        "The trace has no thunk events of this module: run() must execute the "
        "compiled module hlo_text came from (on the CPU backend).")
  size = collections.Counter(len(v) for v in runs.values()).most_common(1)[0][0]
  ordered = sorted((v for v in runs.values() if len(v) == size),
                   key=lambda v: min(e[5] for e in v))
  kept = ordered[1:] if len(ordered) > 1 else ordered
  per_op = collections.Counter()
  calls = collections.Counter()
  for run_events in kept:
    for name, ns, *_ in run_events:
      per_op[name] += ns * 1e-9 / len(kept)
      calls[name] += 1
  by_phase = collections.Counter()
  by_kind = collections.Counter()
  by_phase_kind = collections.Counter()
  dot_flops_phase = collections.Counter()
  dot_time_phase = collections.Counter()
  for name, sec in per_op.items():
    info = infos[name]
    by_phase[info.phase] += sec
    by_kind[info.kind] += sec
    by_phase_kind[f"{info.phase}/{info.kind}"] += sec
    if info.kind == "dot":
      dot_flops_phase[info.phase] += info.flops * calls[name] / len(kept)
      dot_time_phase[info.phase] += sec
  def row(name, sec):
    info = infos[name]
    return {"op": name, "phase": info.phase, "kind": info.kind,
            "ms_per_step": 1e3 * sec, "type": info.type_str[:80],
            "op_name": info.op_name[-120:],
            "gflop_per_s": (info.flops * calls[name] / len(kept) / sec / 1e9
                            if info.flops and sec else None)}

  top_ops = [row(name, sec) for name, sec in per_op.most_common(top)]
  top_by_group = collections.defaultdict(list)
  for name, sec in per_op.most_common():
    group = f"{infos[name].phase}/{infos[name].kind}"
    if len(top_by_group[group]) < top_per_group:
      top_by_group[group].append(row(name, sec))
  return {
      "wall_s_per_step": (sum(walls[1:]) / (len(walls) - 1) if len(walls) > 1
                          else walls[0]),
      "runs_counted": len(kept),
      "op_s_per_step": sum(per_op.values()),
      "ops_seen": len(per_op),
      "by_phase_s": dict(by_phase),
      "by_kind_s": dict(by_kind),
      "by_phase_kind_s": dict(sorted(by_phase_kind.items(), key=lambda kv: -kv[1])),
      "dot_gflop_per_s_by_phase": {p: dot_flops_phase[p] / dot_time_phase[p] / 1e9
                                   for p in dot_time_phase if dot_time_phase[p] > 0},
      "dot_gflop_per_step_by_phase": {p: v / 1e9 for p, v in dot_flops_phase.items()},
      "top_ops": top_ops,
      "top_ops_by_group": dict(top_by_group),
  }
