"""Two small cyclic topologies of the Mininet tests: a triangle whose spanning tree carries every path the
loader computed (STP blocks its slowest link), and a square that no spanning tree can carry."""

CYCLE = """
name: cyc
sites:
  - {name: a, layer: antenna, radio: {delay_ms: 1}, compute: {cpu_cores: 1}}
  - {name: b, layer: co}
  - {name: c, layer: dc, compute: {cpu_cores: 1}}
links:
  - {a: a, b: b, delay_ms: 1}
  - {a: b, b: c, delay_ms: 2}
  - {a: a, b: c, delay_ms: 4}
"""
SQUARE = """
name: square
sites:
  - {name: a1, layer: antenna, radio: {delay_ms: 1}}
  - {name: a2, layer: antenna, radio: {delay_ms: 1}}
  - {name: c1, layer: dc, compute: {cpu_cores: 1}}
  - {name: c2, layer: dc, compute: {cpu_cores: 1}}
links:
  - {a: a1, b: c1, delay_ms: 1}
  - {a: c1, b: a2, delay_ms: 1.5}
  - {a: a2, b: c2, delay_ms: 1}
  - {a: c2, b: a1, delay_ms: 1.7}
"""
